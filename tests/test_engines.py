"""The predictor's engines with a real model: llama.cpp running SmolLM2-135M-Instruct, and the extractive engine."""

from __future__ import annotations

import pytest

from inference.engines import ExtractiveEngine, GenerationRequest, LlamaCppEngine
from ragfn.core.errors import ConfigError
from ragfn.llm.client import build_messages
from ragfn.retrieval.context import Passage

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def llama(gguf_model):
    engine = LlamaCppEngine(gguf_model, threads=2)
    engine.load()
    return engine


def ask(text: str, **options) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": text}], **options)


def test_generates_text_and_stops_at_max_tokens(llama):
    pieces = list(llama.stream(ask("Name three colours.", max_tokens=12)))
    text = "".join(p.text for p in pieces)
    assert text.strip() and pieces[-1].finish_reason == "length"
    assert pieces[-1].usage["completion_tokens"] == 12
    assert all(p.finish_reason is None for p in pieces[:-1])


def test_stop_sequences_end_the_answer_before_them(llama):
    pieces = list(llama.stream(ask("Count from 1 to 10, one number per line.", max_tokens=60, stop=("5",))))
    text = "".join(p.text for p in pieces)
    assert "4" in text and "5" not in text and pieces[-1].finish_reason == "stop"


def test_greedy_decoding_is_repeatable(llama):
    request = ask("What is Python?", max_tokens=16)
    assert "".join(p.text for p in llama.stream(request)) == "".join(p.text for p in llama.stream(request))


def test_sampling_penalties_reach_llama_cpp(llama, gguf_model, monkeypatch):
    from inference.settings import PredictorSettings, build_engine

    for key, value in {"ENGINE": "llamacpp", "MODEL": str(gguf_model), "THREADS": "2", "REPEAT_PENALTY": "1.8",
                       "FREQUENCY_PENALTY": "0.5"}.items():
        monkeypatch.setenv(f"RAGFN_LLM_{key}", value)
    penalised = build_engine(PredictorSettings())
    assert penalised.penalties == {"repeat_penalty": 1.8, "frequency_penalty": 0.5, "presence_penalty": 0.0}
    penalised.load()
    request = ask("Write the word apple twenty times.", max_tokens=40)
    plain = "".join(p.text for p in llama.stream(request))  # llama.cpp's defaults: no penalty
    # greedy decoding repeats itself exactly (above), so a different text means the penalties took effect
    assert "".join(p.text for p in penalised.stream(request)) != plain


def test_closing_the_stream_cancels_and_frees_the_model(llama):
    stream = llama.stream(ask("Write a long story about a dragon.", max_tokens=200))
    first = [next(stream) for _ in range(3)]
    stream.close()  # what a client disconnect does
    assert all(p.finish_reason is None for p in first)
    # the lock was released: the next request runs at once rather than waiting for 200 tokens
    assert list(llama.stream(ask("Say hi.", max_tokens=4)))[-1].finish_reason == "length"


def test_a_missing_or_broken_model_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no GGUF model"):
        LlamaCppEngine(tmp_path / "nothing.gguf").load()
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ConfigError, match="cannot load"):
        LlamaCppEngine(broken).load()


def test_extractive_engine_streams_a_cited_answer_from_the_passages():
    passages = [Passage(1, "lists.md#0", "file:///docs/lists.md", "Lists", 0, 42,
                        "To sort a list in place, call list.sort().", 0.9)]
    request = GenerationRequest(build_messages("How do I sort a list?", passages), max_tokens=50)
    pieces = list(ExtractiveEngine().stream(request))
    assert "".join(p.text for p in pieces) == "To sort a list in place, call list.sort(). [1]"
    assert pieces[-1].finish_reason == "stop"
    assert len(list(ExtractiveEngine().stream(GenerationRequest(request.messages, max_tokens=3)))) == 3
