"""Ingestion benchmark: ragfn against the raw fastembed embedder and a LlamaIndex IngestionPipeline, in one run.

    .venv/bin/python bench/ingest.py [--subset faq|howto|library|all] [--limit-mb N] [--threads N]

Corpus: the Python 3.11 documentation sources from Debian's python3.11-doc (scripts/fetch_corpus.py).
Every system uses the offline all-MiniLM-L6-v2 ONNX folder through fastembed with the same onnxruntime
threads (fastembed's default, None, unless --threads), and a Chroma PersistentClient in its own temporary
folder. Models are loaded and warmed up before any clock starts. Systems that are compared take turns in
rounds, so a busy (shared) machine slows them alike. Results: bench/results/ingest.json; see docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from fetch_corpus import sources_dir
from offline import offline_model_dir

from ragfn.core.config import OFFLINE_MODEL, Settings
from ragfn.core.errors import RagfnError
from ragfn.core.uris import to_uri
from ragfn.eventing.events import ChunkBatch
from ragfn.ingest.loaders import load_document
from ragfn.ingest.pipeline import chunk_change, embed_batch, index_batch
from ragfn.ingest.storage_events import ObjectChange
from ragfn.ingest.walk import IngestReport, ingest
from ragfn.serve.runtime import Runtime

HOME = Path(os.environ.get("RAGFN_HOME", REPO / ".ragfn"))
EDIT = " This sentence was added by the re-ingest benchmark to change one paragraph."
WARM = ["warm up", "a somewhat longer sentence to warm up the session with a second shape " * 3,
        "and a long one that fills most of the window " * 30]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def timed(record: dict, name: str):
    """Wall and process CPU seconds of a section; the load average shows how busy the (shared) machine was."""
    log(f"-- {name} ...")
    load, wall, cpu = os.getloadavg()[0], time.perf_counter(), time.process_time()
    yield
    record[name] = {"wall_s": round(time.perf_counter() - wall, 3), "cpu_s": round(time.process_time() - cpu, 3),
                    "loadavg_1m": [round(load, 2), round(os.getloadavg()[0], 2)]}
    log(f"   {name}: {record[name]['wall_s']:.1f}s (load {load:.1f} -> {os.getloadavg()[0]:.1f})")


def corpus_files(subset: str, limit_mb: float | None) -> list[Path]:
    root = sources_dir(HOME / "corpora")
    files = sorted((root if subset == "all" else root / subset).rglob("*.rst.txt"))
    if limit_mb is not None:  # whole files, in path order, until the limit is reached
        kept, size = [], 0
        for f in files:
            if size >= limit_mb * 1e6:
                break
            kept.append(f)
            size += f.stat().st_size
        files = kept
    if not files:
        sys.exit(f"error: no *.rst.txt files for subset {subset!r}")
    return files


def groups_of(items: list, size: Callable[[object], int], at_least: int) -> list[list]:
    """Consecutive items in groups whose sizes add up to at least `at_least` (the last may be smaller)."""
    groups: list[list] = [[]]
    for item in items:
        if sum(size(i) for i in groups[-1]) >= at_least:
            groups.append([])
        groups[-1].append(item)
    return groups


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args, self.tmp = args, tmp
        self.model_dir = offline_model_dir(HOME)
        self.files = corpus_files(args.subset, args.limit_mb)
        self.corpus_bytes = sum(f.stat().st_size for f in self.files)
        self.times: dict = {}
        self._shared = None

    def settings(self, name: str) -> Settings:
        # 200-token chunks with 32 overlap, as when docs/benchmarks.md's figures were taken (the default is now
        # 96/16, chosen for retrieval quality); batch 32; the model, threads and a fresh home.
        return Settings(home=self.tmp / name, embed_model=OFFLINE_MODEL, embed_model_path=self.model_dir,
                        embed_threads=self.args.threads, chunk_tokens=200, chunk_overlap_tokens=32, file_roots=[sources_dir(HOME / "corpora"), self.tmp])

    def runtime(self, name: str) -> Runtime:
        """A Runtime with an empty Chroma of its own; all share one warmed-up embedder (Runtime caches clients
        as cached_properties, so seeding the instance dict is how a second Runtime reuses the loaded model)."""
        rt = Runtime(self.settings(name))
        if self._shared is None:
            rt.embedder.warm_up()
            rt.embedder.embed(WARM)
            self._shared = rt.embedder
        rt.__dict__["embedder"] = self._shared
        rt.index.warm_up()
        rt.token_counter.count("warm up")
        return rt

    def load_models(self) -> None:
        from fastembed import TextEmbedding
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.embeddings.fastembed import FastEmbedEmbedding

        self.rt_e2e = self.runtime("ragfn-e2e")
        self.raw = TextEmbedding(OFFLINE_MODEL, specific_model_path=str(self.model_dir), threads=self.args.threads)
        list(self.raw.embed(WARM))
        # FastEmbedEmbedding.__init__ forwards its **kwargs to TextEmbedding(...) (pydantic ignores the extra
        # field), so specific_model_path reaches fastembed exactly as ragfn passes it: no private attribute is set.
        self.li_embed = FastEmbedEmbedding(model_name=OFFLINE_MODEL, threads=self.args.threads,
                                           specific_model_path=str(self.model_dir))
        assert self.li_embed._model.model._specific_model_path == str(self.model_dir)
        self.li_embed.get_text_embedding_batch(WARM)
        # SentenceSplitter loads tiktoken when built, nltk's punkt on its first long paragraph: load both now.
        SentenceSplitter().split_text("A sentence that repeats. " * 800)
        self.max_tokens = self.raw.model.tokenizer.truncation["max_length"]  # what fastembed really embeds

    def llamaindex_store(self, name: str):
        import chromadb
        from llama_index.vector_stores.chroma import ChromaVectorStore

        client = chromadb.PersistentClient(path=str(self.tmp / name))
        collection = client.get_or_create_collection(name, metadata={"hnsw:space": "cosine"})  # as ragfn's
        return ChromaVectorStore(chroma_collection=collection), collection

    def take_turns(self, label: str, rounds: list[list], systems: dict[str, Callable[[int, list], None]]) -> None:
        """Each system does each round, in rotating order; its time is the sum over rounds (wall and CPU)."""
        names = list(systems)
        totals = {name: {"wall_s": 0.0, "cpu_s": 0.0, "rounds_wall_s": []} for name in names}
        load = os.getloadavg()[0]
        log(f"-- {label}: {len(rounds)} rounds, the systems take turns ...")
        for i, group in enumerate(rounds):
            for name in names[i % len(names):] + names[:i % len(names)]:
                wall, cpu = time.perf_counter(), time.process_time()
                systems[name](i, group)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                totals[name]["wall_s"] += wall
                totals[name]["cpu_s"] += cpu
                totals[name]["rounds_wall_s"].append(round(wall, 3))
            log(f"   round {i + 1}/{len(rounds)}: " + ", ".join(f"{n} {totals[n]['rounds_wall_s'][-1]:.1f}s"
                                                             for n in names) + f"  (load {os.getloadavg()[0]:.1f})")
        for name, total in totals.items():
            self.times[name] = {"wall_s": round(total["wall_s"], 3), "cpu_s": round(total["cpu_s"], 3),
                                "loadavg_1m": [round(load, 2), round(os.getloadavg()[0], 2)],
                                "rounds_wall_s": total["rounds_wall_s"]}

    # -- end to end: each system's own reading and chunking ---------------------------------------------------------

    def end_to_end(self) -> tuple[dict, dict, list]:
        """ragfn.ingest on the files vs LlamaIndex's IngestionPipeline([SentenceSplitter(), FastEmbedEmbedding])
        into Chroma, documents read by SimpleDirectoryReader; both take turns over groups of files."""
        from llama_index.core import SimpleDirectoryReader
        from llama_index.core.ingestion import IngestionPipeline
        from llama_index.core.node_parser import SentenceSplitter

        store, collection = self.llamaindex_store("li-e2e")
        pipeline = IngestionPipeline(transformations=[SentenceSplitter(), self.li_embed], vector_store=store)
        merged, nodes, self.li_documents = IngestReport(), [], {}

        def ragfn(i: int, group: list[Path]) -> None:
            report = ingest([str(f) for f in group], self.rt_e2e, collection="bench")
            merged.outcomes |= report.outcomes
            merged.errors |= report.errors
            merged.chunks_embedded += report.chunks_embedded

        def llamaindex(i: int, group: list[Path]) -> None:
            documents = SimpleDirectoryReader(input_files=[str(f) for f in group]).load_data()
            nodes.extend(pipeline.run(documents=documents))
            self.li_documents |= {d.doc_id: d.text for d in documents}

        rounds = groups_of(self.files, lambda f: f.stat().st_size, self.args.round_kb * 1000)
        self.take_turns("end to end", rounds, {"ragfn_e2e": ragfn, "llamaindex_e2e": llamaindex})
        return {"documents": merged.counts(), "rejected": {k.rsplit("/", 1)[-1]: v for k, v in merged.errors.items()},
                "chunks": merged.chunks_embedded, "stored": self.rt_e2e.index.stats()["bench"]["chunks"]}, \
            {"chunks": len(nodes), "stored": collection.count(),
             "splitter": "SentenceSplitter() defaults: chunk_size=1024, chunk_overlap=200 (tiktoken tokens)"}, nodes

    # -- identical chunks ------------------------------------------------------------------------------------------------

    def ragfn_chunk_events(self) -> list[ChunkBatch]:
        """The ChunkBatch events the chunk function would emit for the corpus (an empty index: nothing skipped)."""
        rt, batches = self.runtime("ragfn-chunk"), []
        with timed(self.times, "ragfn_chunk_stage"):
            for f in self.files:
                change = ObjectChange(action="upsert", uri=to_uri(str(f)), collection="same", version=None,
                                      sequence=None, tenant=None, groups=(), size=None, content_type=None)
                try:
                    batches += [e.data for e in chunk_change(change, rt).events]
                except RagfnError:
                    pass  # the files end_to_end reports as rejected (a toctree-only index page)
        return batches

    def same_chunks(self, batches: list[ChunkBatch]) -> dict:
        """ragfn's chunks through three systems, each into its own empty store (raw: no store):
        - raw: TextEmbedding.embed(texts) with fastembed's default batch size (256), in chunk order;
        - ragfn: embed_batch -> index_batch per ChunkBatch, exactly as the embed and index functions run them;
        - LlamaIndex: the chunks as TextNodes through IngestionPipeline([FastEmbedEmbedding]) + ChromaVectorStore
          (its default embed batch of 10). Node metadata is ragfn's chunk metadata, excluded from the embedded
          text, so both embed identical strings. Chunking is excluded for all three."""
        from llama_index.core.ingestion import IngestionPipeline
        from llama_index.core.schema import MetadataMode, TextNode

        rounds = groups_of(batches, lambda b: len(b.chunks), self.args.round_chunks)
        prepared = []  # TextNodes built before the clock starts, as ragfn's events are parsed before it starts
        for group in rounds:
            prepared.append([])
            for batch in group:
                doc = batch.document
                for c in batch.chunks:
                    meta = {"document_id": doc.document_id, "version": doc.version, "number": c.number,
                            "start": c.start, "end": c.end, "heading_path": " > ".join(c.heading_path),
                            "content_hash": c.content_hash}
                    prepared[-1].append(TextNode(id_=f"{doc.document_id}#{doc.version}#{c.number}", text=c.text,
                                                 metadata=meta, excluded_embed_metadata_keys=list(meta),
                                                 excluded_llm_metadata_keys=list(meta)))
        assert all(n.get_content(metadata_mode=MetadataMode.EMBED) == n.text for group in prepared for n in group)

        rt = self.runtime("ragfn-same")
        store, collection = self.llamaindex_store("li-same")
        pipeline = IngestionPipeline(transformations=[self.li_embed], vector_store=store)
        split = {"embed_stage_s": 0.0, "index_stage_s": 0.0}

        def raw(i: int, group: list[ChunkBatch]) -> None:
            texts = [c.text for b in group for c in b.chunks]
            assert sum(1 for _ in self.raw.embed(texts)) == len(texts)

        def llamaindex(i: int, group: list[ChunkBatch]) -> None:
            pipeline.run(nodes=prepared[i])

        def ragfn(i: int, group: list[ChunkBatch]) -> None:
            for batch in group:
                t0 = time.perf_counter()
                embedded = embed_batch(batch, rt).events[0].data
                t1 = time.perf_counter()
                index_batch(embedded, rt)
                split["embed_stage_s"] += t1 - t0
                split["index_stage_s"] += time.perf_counter() - t1

        self.take_turns("identical chunks", rounds, {"raw_fastembed": raw, "llamaindex_same_chunks": llamaindex,
                                                     "ragfn_same_chunks": ragfn})
        return {"rounds": len(rounds), "ragfn": {k: round(v, 3) for k, v in split.items()}
                | {"stored": rt.index.stats()["same"]["chunks"]}, "llamaindex": {"stored": collection.count()}}

    # -- what is never embedded ------------------------------------------------------------------------------------

    def unembedded(self, items: list[tuple[str, str, int | None, str]], texts: dict[str, str]) -> dict:
        """items: (embedded string, chunk text at its end, chunk start in its document or None, document key).
        The share of chunk characters past the model's window, and of the documents' non-blank characters that
        no chunk's embedded part covers (this also counts text in no chunk at all, e.g. ragfn's headings)."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(self.model_dir / "tokenizer.json"))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        window = self.max_tokens - 2  # [CLS] and [SEP] take two of the model's positions
        encodings = tokenizer.encode_batch([embedded for embedded, *_ in items], add_special_tokens=False)
        chars = beyond = over = 0
        tokens, prefixes, covered = [], [], {key: np.zeros(len(text), dtype=bool) for key, text in texts.items()}
        for (embedded, text, start, key), enc in zip(items, encodings, strict=True):
            prefix = len(embedded) - len(text)  # LlamaIndex embeds "metadata\n\ntext"
            cut = enc.offsets[window][0] if len(enc.ids) > window else len(embedded)  # token 254's first char
            kept = min(max(cut - prefix, 0), len(text))
            chars, beyond, over = chars + len(text), beyond + len(text) - kept, over + (cut < len(embedded))
            tokens.append(len(enc.ids) + 2)
            prefixes.append(sum(1 for a, _ in enc.offsets if a < prefix))
            if start is not None and key in covered:
                covered[key][start:start + kept] = True
        blank = {k: np.fromiter((ch.isspace() for ch in text), dtype=bool, count=len(text)) for k, text in texts.items()}
        visible = sum(int((~blank[k]).sum()) for k in texts)
        missed = sum(int((~blank[k] & ~covered[k]).sum()) for k in texts)
        return {"chunks": len(items), "chunks_over_window": over, "mean_tokens": round(float(np.mean(tokens)), 1),
                "max_tokens": int(max(tokens)), "mean_metadata_prefix_tokens": round(float(np.mean(prefixes)), 1),
                "chunk_chars": chars, "chars_beyond_window": beyond,
                "unembedded_pct": round(100 * beyond / chars, 2),
                "document_text_outside_embedded_pct": round(100 * missed / visible, 2) if visible else None}

    # -- re-ingest after a one-paragraph edit ------------------------------------------------------------------------

    def reingest(self) -> dict:
        """Edit one paragraph, re-ingest (unchanged chunks reuse their stored vectors), and compare with ingesting
        the same edited file into an empty collection (everything embedded). Repeated --reingest-repeats times,
        each time editing another paragraph near the middle and alternating which of the two runs first;
        the figures are medians. Stage times come from ragfn's own spans (chunk, embed, index)."""
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(provider)  # installed only now, so no earlier section paid for spans

        source = next((f for f in self.files if f.name == self.args.reingest_doc), None) if self.args.reingest_doc \
            else max(self.files, key=lambda f: f.stat().st_size)
        if source is None:
            sys.exit(f"error: --reingest-doc {self.args.reingest_doc} is not in the corpus")
        (self.tmp / "reingest-docs").mkdir()
        doc = self.tmp / "reingest-docs" / source.name
        shutil.copyfile(source, doc)
        rt = self.runtime("ragfn-reingest")
        with timed(self.times, "reingest_initial"):
            initial = ingest([str(doc)], rt, collection="reingest")

        text = load_document(doc.read_bytes(), name=doc.name).text  # the canonical text block offsets refer to
        middle = sorted((b for b in load_document(text.encode(), name=doc.name).blocks
                         if b.kind == "text" and 300 <= len(b.text) <= 2000 and "\n\n" not in b.text),
                        key=lambda b: abs(b.start - len(text) // 2))
        runs: dict[str, list] = {"changed": [], "full": []}
        for k in range(self.args.reingest_repeats):
            text = load_document(doc.read_bytes(), name=doc.name).text
            at = text.index(middle[k].text) + len(middle[k].text)  # earlier edits moved the offsets
            doc.write_text(text[:at] + EDIT + text[at:], encoding="utf-8")
            mtime = doc.stat().st_mtime_ns + 1_000_000_000
            os.utime(doc, ns=(mtime, mtime))  # a strictly later sequence, however fast the edit was
            for kind in (["changed", "full"] if k % 2 == 0 else ["full", "changed"]):
                spans.clear()
                wall = time.perf_counter()
                report = ingest([str(doc)], rt, collection="reingest" if kind == "changed" else f"fresh{k}")
                wall = time.perf_counter() - wall
                stages: dict[str, float] = {}
                for span in spans.get_finished_spans():
                    if span.name in ("ragfn.chunk", "ragfn.embed", "ragfn.index"):
                        stages[span.name[6:]] = stages.get(span.name[6:], 0.0) + (span.end_time - span.start_time) / 1e9
                runs[kind].append({"wall_s": round(wall, 3), "embedded": report.chunks_embedded,
                                   "reused": report.chunks_reused, "outcome": report.counts(),
                                   "stages_s": {s: round(v, 3) for s, v in stages.items()}})
            log(f"   edit {k + 1}: re-ingest {runs['changed'][-1]['wall_s']:.2f}s "
                f"({runs['changed'][-1]['embedded']} embedded), full {runs['full'][-1]['wall_s']:.2f}s")
        stored = rt.index.stats()
        assert stored["reingest"]["chunks"] == stored[f"fresh{k}"]["chunks"], stored  # stale chunks were removed
        for kind, results in runs.items():
            walls = [r["wall_s"] for r in results]
            self.times[f"reingest_{kind}"] = {"wall_s": float(np.median(walls)), "runs_wall_s": walls}
        return {"document": str(source.relative_to(sources_dir(HOME / "corpora"))), "bytes": source.stat().st_size,
                "initial": {"embedded": initial.chunks_embedded, "reused": initial.chunks_reused},
                "changed": runs["changed"], "full": runs["full"], "chunks_stored_after": stored["reingest"]["chunks"]}

    # -- the run -----------------------------------------------------------------------------------------------------

    def run(self) -> dict:
        from llama_index.core.schema import MetadataMode

        mb = self.corpus_bytes / 1e6
        log(f"corpus: {len(self.files)} files, {mb:.3f} MB ({self.args.subset}); model {self.model_dir}")
        with timed(self.times, "model_load_excluded"):
            self.load_models()
        e2e, li_e2e, li_nodes = self.end_to_end()
        batches = self.ragfn_chunk_events()
        n = sum(len(b.chunks) for b in batches)
        log(f"   {n} ragfn chunks in {len(batches)} ChunkBatch events")
        same = self.same_chunks(batches)
        reingest = self.reingest()

        ragfn_texts = {uri: load_document(Path(uri[len("file://"):]).read_bytes(), name=uri).text  # chunk offsets' text
                       for uri in {b.document.document_id for b in batches}}
        li_text = [(node.get_content(metadata_mode=MetadataMode.NONE), node.start_char_idx, node.ref_doc_id)
                   for node in li_nodes]
        unembedded = {
            "ragfn": self.unembedded([(c.text, c.text, c.start, b.document.document_id)
                                      for b in batches for c in b.chunks], ragfn_texts),
            # what LlamaIndex embeds by default: "file_path: <absolute path>\n\n" + the node text
            "llamaindex_e2e": self.unembedded([(node.get_content(metadata_mode=MetadataMode.EMBED), *rest)
                                               for node, rest in zip(li_nodes, li_text, strict=True)], self.li_documents),
            # the same nodes had their metadata been excluded from embedding: the 1024-token chunks alone
            "llamaindex_e2e_text_only": self.unembedded([(text, text, *rest) for text, *rest in li_text],
                                                        self.li_documents)}
        embedded_chars = {k: u["chunk_chars"] - u["chars_beyond_window"] for k, u in unembedded.items()}

        t = {k: v["wall_s"] for k, v in self.times.items()}
        figures = {
            "ragfn_e2e_mb_s": mb / t["ragfn_e2e"], "ragfn_e2e_chunks_s": e2e["chunks"] / t["ragfn_e2e"],
            "llamaindex_e2e_mb_s": mb / t["llamaindex_e2e"], "llamaindex_e2e_chunks_s": len(li_nodes) / t["llamaindex_e2e"],
            # corpus text that actually reached the model, per second: the end-to-end figures net of truncation
            "ragfn_e2e_embedded_kchars_s": embedded_chars["ragfn"] / 1000 / t["ragfn_e2e"],
            "llamaindex_e2e_embedded_kchars_s": embedded_chars["llamaindex_e2e"] / 1000 / t["llamaindex_e2e"],
            "e2e_ratio_ragfn_over_llamaindex_mb_s": t["llamaindex_e2e"] / t["ragfn_e2e"],
            "raw_fastembed_chunks_s": n / t["raw_fastembed"],
            "ragfn_same_chunks_s": n / t["ragfn_same_chunks"],
            "llamaindex_same_chunks_s": n / t["llamaindex_same_chunks"],
            "same_chunks_ratio_ragfn_over_llamaindex": t["llamaindex_same_chunks"] / t["ragfn_same_chunks"],
            "same_chunks_ratio_cpu_time": (self.times["llamaindex_same_chunks"]["cpu_s"]
                                           / self.times["ragfn_same_chunks"]["cpu_s"]),
            "ragfn_same_over_raw_floor": t["raw_fastembed"] / t["ragfn_same_chunks"],
            "reingest_speedup": t["reingest_full"] / t["reingest_changed"],
        }
        return {
            "benchmark": "bench/ingest.py", "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": " ".join([".venv/bin/python", "bench/ingest.py", *sys.argv[1:]]),
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                        "processor": _cpu_name()},
            "versions": {p: version(p) for p in ("fastembed", "onnxruntime", "chromadb", "llama-index-core",
                                                 "llama-index-embeddings-fastembed", "llama-index-vector-stores-chroma")},
            "model": {"name": OFFLINE_MODEL, "path": str(self.model_dir), "max_tokens": self.max_tokens,
                      "onnx_threads": self.args.threads or "fastembed default (None: onnxruntime picks, all cores)"},
            "corpus": {"subset": self.args.subset, "limit_mb": self.args.limit_mb, "files": len(self.files),
                       "bytes": self.corpus_bytes, "mb": round(mb, 4)},
            "ragfn_settings": {k: v for k, v in self.rt_e2e.settings.model_dump(mode="json").items()
                               if k in ("chunk_tokens", "chunk_overlap_tokens", "embed_batch_size", "max_event_bytes")},
            "sections": self.times,
            "ragfn_e2e": e2e, "llamaindex_e2e": li_e2e, "ragfn_chunk_events": {"batches": len(batches), "chunks": n},
            "same_chunks": same, "unembedded": unembedded, "reingest": reingest,
            "figures": {k: float(f"{v:.4g}") for k, v in figures.items()},
            "targets": {"same_chunks_ratio>=1.2": figures["same_chunks_ratio_ragfn_over_llamaindex"] >= 1.2,
                        "reingest_speedup>=10": figures["reingest_speedup"] >= 10,
                        "ragfn_unembedded~0": unembedded["ragfn"]["unembedded_pct"] < 0.1},
        }


def _cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def table(r: dict) -> str:
    f, s, u, ri = r["figures"], r["sections"], r["unembedded"], r["reingest"]
    rows = [
        ("ragfn end to end (chunk+embed+index)", f"{f['ragfn_e2e_mb_s'] * 1000:.2f} KB/s",
         f"{r['ragfn_e2e']['chunks']} chunks, {s['ragfn_e2e']['wall_s']:.1f}s"),
        ("LlamaIndex end to end (SentenceSplitter)", f"{f['llamaindex_e2e_mb_s'] * 1000:.2f} KB/s",
         f"{r['llamaindex_e2e']['chunks']} chunks, {s['llamaindex_e2e']['wall_s']:.1f}s"),
        ("  text reaching the model: ragfn | LlamaIndex",
         f"{f['ragfn_e2e_embedded_kchars_s']:.1f} | {f['llamaindex_e2e_embedded_kchars_s']:.1f}",
         "thousand characters per second"),
        ("raw fastembed on ragfn's chunks", f"{f['raw_fastembed_chunks_s']:.2f} chunks/s",
         f"{s['raw_fastembed']['wall_s']:.1f}s"),
        ("ragfn embed+index, ragfn's chunks", f"{f['ragfn_same_chunks_s']:.2f} chunks/s",
         f"{s['ragfn_same_chunks']['wall_s']:.1f}s"),
        ("LlamaIndex embed+Chroma, ragfn's chunks", f"{f['llamaindex_same_chunks_s']:.2f} chunks/s",
         f"{s['llamaindex_same_chunks']['wall_s']:.1f}s"),
        ("ratio ragfn / LlamaIndex, same chunks", f"{f['same_chunks_ratio_ragfn_over_llamaindex']:.2f}x",
         f"target >= 1.2x; by process CPU time {f['same_chunks_ratio_cpu_time']:.2f}x"),
        ("ratio ragfn / raw fastembed", f"{f['ragfn_same_over_raw_floor']:.2f}x", ""),
        ("unembedded text, ragfn", f"{u['ragfn']['unembedded_pct']:.2f}%",
         f"{u['ragfn']['chunks_over_window']}/{u['ragfn']['chunks']} chunks over the window"),
        ("unembedded text, LlamaIndex default", f"{u['llamaindex_e2e']['unembedded_pct']:.2f}%",
         f"{u['llamaindex_e2e']['chunks_over_window']}/{u['llamaindex_e2e']['chunks']} chunks over the window"),
        ("  the same without its file_path prefix", f"{u['llamaindex_e2e_text_only']['unembedded_pct']:.2f}%",
         f"the prefix takes {u['llamaindex_e2e']['mean_metadata_prefix_tokens']:.0f} of the window's tokens"),
        (f"re-ingest {ri['document']} after a 1-paragraph edit", f"{s['reingest_changed']['wall_s']:.2f}s",
         "median; embedded/reused " + ", ".join(f"{x['embedded']}/{x['reused']}" for x in ri["changed"])),
        ("full re-embed of the same document", f"{s['reingest_full']['wall_s']:.2f}s",
         f"median; {ri['full'][0]['embedded']} embedded"),
        ("re-ingest speed-up", f"{f['reingest_speedup']:.1f}x", "target >= 10x"),
    ]
    width = max(len(a) for a, _, _ in rows)
    return "\n".join(f"{a:<{width}}  {b:>16}  {c}" for a, b, c in rows)


def private_nltk_data(tmp: Path) -> None:
    """LlamaIndex's splitter reads punkt and stopwords from its bundled nltk_cache. uv installs packages as hard
    links into its cache, and nltk >= 3.9.3 refuses to open multiply-linked data files, so give it plain copies
    (set before llama_index is imported: it reads NLTK_DATA once)."""
    import importlib.util

    spec = importlib.util.find_spec("llama_index.core")
    if "NLTK_DATA" in os.environ or spec is None or not spec.submodule_search_locations:
        return
    bundled = Path(next(iter(spec.submodule_search_locations))) / "_static" / "nltk_cache"
    if bundled.is_dir():
        os.environ["NLTK_DATA"] = str(shutil.copytree(bundled, tmp / "nltk_data"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subset", default="faq", help="faq (default, 0.19 MB), howto, library, ... or all")
    parser.add_argument("--limit-mb", type=float, default=None, help="whole files in path order up to N MB")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime threads for every system")
    parser.add_argument("--round-kb", type=int, default=48, help="corpus KB per turn in the end-to-end race")
    parser.add_argument("--round-chunks", type=int, default=64, help="chunks per turn in the identical-chunks race")
    parser.add_argument("--reingest-repeats", type=int, default=3, help="one-paragraph edits to time (median)")
    parser.add_argument("--reingest-doc", default=None, help="file name to edit (default: the largest)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ingest.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ragfn-bench-") as tmp:
        private_nltk_data(Path(tmp))
        result = Bench(args, Path(tmp)).run()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(result))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
