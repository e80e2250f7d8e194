"""The embedder with the real offline MiniLM: batching by length changes speed, never results."""

from __future__ import annotations

import numpy as np
import pytest

from ragfn.ingest.embedding import FastEmbedder, plan_batches

TEXTS = ["short", "a somewhat longer sentence about Python generators and iterators",
         "mid length text here", "x " * 300, "another short one", "Decorators wrap functions. " * 8]


@pytest.mark.unit
def test_plan_batches_covers_everything_in_order_within_the_limit():
    lengths = sorted([3, 3, 4, 5, 40, 41, 42, 200, 201, 256] * 7)
    runs = plan_batches(lengths, max_batch=8)
    assert runs[0][0] == 0 and runs[-1][1] == len(lengths)
    assert all(a[1] == b[0] for a, b in zip(runs, runs[1:]))
    assert all(0 < end - start <= 8 for start, end in runs)
    # short texts are never padded to the long ones: no run mixes length 3 with length 256
    assert all(lengths[end - 1] - lengths[start] < 200 for start, end in runs)
    assert plan_batches([], 8) == []


@pytest.mark.unit
def test_plan_batches_beats_fixed_batches_on_padding():
    lengths = sorted(np.random.default_rng(1).integers(5, 256, size=300).tolist())
    padded = lambda runs: sum((e - s) * lengths[e - 1] for s, e in runs)  # noqa: E731
    fixed = [(s, min(s + 32, len(lengths))) for s in range(0, len(lengths), 32)]
    assert padded(plan_batches(lengths, 32)) <= padded(fixed)


@pytest.mark.integration
def test_sorted_batching_returns_the_same_vectors_in_input_order(model_dir):
    embedder = FastEmbedder("sentence-transformers/all-MiniLM-L6-v2", model_path=str(model_dir), batch_size=2)
    batched = embedder.embed(TEXTS)
    one_by_one = np.stack([embedder.embed([t])[0] for t in TEXTS])
    assert batched.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert embedder.embed([]).shape == (0, 384)


@pytest.mark.integration
def test_matches_sentence_transformers_reference_direction(model_dir):
    """Paraphrases land closer than unrelated text: the offline int8 model is a working MiniLM."""
    embedder = FastEmbedder("sentence-transformers/all-MiniLM-L6-v2", model_path=str(model_dir))
    a, b, c = embedder.embed(["How do I reverse a list in Python?", "Reversing a Python list",
                              "The weather in Lisbon is sunny"])
    assert float(a @ b) > 0.7 > 0.2 > float(a @ c)
