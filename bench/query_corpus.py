"""Real-text Chroma collections of N chunks for bench/query.py, built once and cached under .ragfn/bench/query."""

# Text: Debian documentation packages (apt-get download + dpkg-deb -x, as scripts/fetch_corpus.py does) in a fixed
# order (SOURCES) until there are enough chunks. ragfn's own loader, chunker (Settings' chunk size and overlap) and
# FastEmbedder make the chunks and vectors, and ChromaIndex.write_batch writes them: the rows, metadata and ledger of
# `ragfn ingest`, without the per-event overhead. Three caches, each reused by the next run: the chunks
# (chunks-<size>x<overlap>.jsonl), their vectors (vectors/*.npy, the slow part) and one collection per size
# (recorded in manifest.json).

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

from fetch_corpus import sources_dir
from offline import offline_model_dir

# imported now, not lazily by Runtime: other people edit ragfn while a long build runs, and one process must not mix
# two versions of its modules
import ragfn.ingest.embedding
import ragfn.store.chroma  # noqa: F401
from ragfn.core.config import OFFLINE_MODEL, Settings
from ragfn.core.errors import RagfnError
from ragfn.core.uris import to_uri
from ragfn.eventing.events import DocumentVersion, EmbeddedBatch, sequence_key
from ragfn.ingest.chunking import ChunkingConfig, chunk_document
from ragfn.ingest.loaders import load_document
from ragfn.ingest.pipeline import content_version, with_occurrences
from ragfn.serve.runtime import Runtime
from ragfn.store.vectors import encode_vector

BLOCK = 2048  # chunks per vector file: an interrupted build loses at most one block (about 30 s on 2 cores)
WRITE_ROWS = 1000  # rows per write_batch call, under Chroma's maximum batch size
RUST = "usr/share/doc/rust-doc/html"
# (package, folder inside it, file suffix, content type given to the loader: None = detect by name)
SOURCES = [
    ("python3.11-doc", None, ".rst.txt", None),
    ("perl-doc", "usr/share/perl", ".pod", "text/plain"),
    ("postgresql-doc-15", "usr/share/doc/postgresql-doc-15/html", ".html", None),
    ("python-django-doc", "usr/share/doc/python-django-doc/html", ".html", None),
    ("cmake-doc", "usr/share/doc/cmake-data/html/_sources", ".rst.txt", None),
    ("git-doc", "usr/share/doc/git/docs", ".txt", "text/plain"),
    *[("rust-doc", f"{RUST}/{book}", ".html", None) for book in
      ("book", "reference", "nomicon", "rust-by-example", "rustc", "edition-guide", "embedded-book", "std")],
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def package_root(package: str, cache: Path) -> Path:
    """The extracted package under `cache`, downloaded and unpacked once (staging folder renamed into place)."""
    target = cache / package
    if target.is_dir():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    if not sorted(cache.glob(f"{package}_*.deb")):
        log(f"   apt-get download {package}")
        subprocess.run(["apt-get", "download", package], cwd=cache, check=True, capture_output=True)
    deb = max(cache.glob(f"{package}_*.deb"))
    staging = cache / f"{package}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(staging)], check=True, capture_output=True)
    staging.rename(target)
    return target


def source_files(cache: Path) -> Iterator[tuple[str, Path, str | None]]:
    for package, folder, suffix, content_type in SOURCES:
        root = sources_dir(cache) if package == "python3.11-doc" else package_root(package, cache) / folder
        for path in sorted(root.rglob(f"*{suffix}")):
            yield package, path, content_type


class Corpus:
    """Chunks, their vectors and the Chroma collections built from them, all under `home`."""

    def __init__(self, home: Path, model_dir: Path, corpora: Path, target: int) -> None:
        # every size is a prefix of one chunk list of `target` chunks, so their vector blocks are shared
        self.home, self.corpora, self.target = home, corpora, target
        # building embeds with onnxruntime's default threads (every core): throughput, not latency, counts here
        self.settings = Settings(home=home, embed_model=OFFLINE_MODEL, embed_model_path=model_dir, file_roots=[corpora])
        self.runtime = Runtime(self.settings)
        self.chunking = ChunkingConfig(self.settings.chunk_tokens, self.settings.chunk_overlap_tokens)
        self.tag = f"{self.chunking.chunk_tokens}x{self.chunking.overlap_tokens}"  # in every cache's name
        self.manifest_path = home / "manifest.json"
        self.manifest = json.loads(self.manifest_path.read_text()) if self.manifest_path.is_file() else {}

    def _save(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.manifest_path.write_text(json.dumps(self.manifest, indent=2) + "\n")

    # -- chunks ------------------------------------------------------------------------------------------------------

    def documents(self, needed: int) -> list[dict]:
        """At least `needed` chunks as [{document, package, chunks}], chunking more files only when the cache is short."""
        path = self.home / f"chunks-{self.tag}.jsonl"
        docs = [json.loads(line) for line in path.open()] if path.is_file() else []
        have = sum(len(d["chunks"]) for d in docs)
        if have >= needed:
            return docs
        done = {d["document"]["document_id"] for d in docs}
        skipped = set(self.manifest.get("skipped", []))
        log(f"-- chunking documentation files until {needed:,} chunks (have {have:,}) ...")
        config, counter = self.chunking, self.runtime.token_counter
        started = time.perf_counter()
        self.home.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            for package, file, content_type in source_files(self.corpora):
                uri = to_uri(str(file))
                if uri in done or uri in skipped:
                    continue
                data = file.read_bytes()
                try:
                    chunks = with_occurrences(chunk_document(load_document(data, name=uri, content_type=content_type),
                                                             config, counter))
                except RagfnError:  # a toctree-only page or an empty file: ragfn would reject it too
                    chunks = []
                if not chunks:
                    skipped.add(uri)
                    continue
                document = DocumentVersion(collection="x", document_id=uri, version=content_version(data),
                                           sequence=sequence_key(1), content_type=content_type, size=len(data),
                                           chunking=f"{config.chunk_tokens}/{config.overlap_tokens}")
                record = {"package": package, "document": document.model_dump(mode="json"),
                          "chunks": [c.model_dump(mode="json") for c in chunks]}
                out.write(json.dumps(record) + "\n")
                docs.append(record)
                have += len(chunks)
                if len(docs) % 200 == 0:
                    log(f"   {have:,} chunks from {len(docs):,} files ({package}), {time.perf_counter() - started:.0f}s")
                if have >= needed:
                    break
        self.manifest["skipped"] = sorted(skipped)
        self._save()
        if have < needed:
            sys.exit(f"error: the documentation packages hold only {have:,} chunks; add sources to query_corpus.py")
        return docs

    # -- vectors -----------------------------------------------------------------------------------------------------

    def vectors(self, texts: list[str], upto: int) -> np.ndarray:
        """ragfn's embedder over texts[:upto] and the rest of its last block, cached per block of BLOCK texts
        (each file is checked against a hash of its texts)."""
        folder = self.home / "vectors"
        folder.mkdir(parents=True, exist_ok=True)
        blocks, todo = [], (min(upto, len(texts)) + BLOCK - 1) // BLOCK
        embedder, started, embedded = self.runtime.embedder, time.perf_counter(), 0
        for b in range(todo):
            part = texts[b * BLOCK:(b + 1) * BLOCK]
            digest = hashlib.sha256("\0".join(part).encode()).hexdigest()[:16]
            file = folder / f"block-{b:05d}-{len(part)}-{digest}.npy"
            if not file.is_file():
                vectors = embedder.embed(part)
                np.save(file.with_suffix(".tmp.npy"), vectors)
                file.with_suffix(".tmp.npy").rename(file)
                embedded += len(part)
                rate = embedded / (time.perf_counter() - started)
                left = sum(len(texts[k * BLOCK:(k + 1) * BLOCK]) for k in range(b + 1, todo))
                log(f"   embedded block {b + 1}/{todo}: {rate:.1f} chunks/s, about {left / rate / 60:.0f} min left")
            blocks.append(np.load(file))
        return np.concatenate(blocks) if blocks else np.zeros((0, 384), dtype=np.float32)

    # -- collections ---------------------------------------------------------------------------------------------------

    def collection(self, size: int, tenant: str | None = None) -> tuple[str, dict]:
        """The name of a complete collection of exactly `size` chunks (built now if missing) and how it was built;
        with `tenant`, every document belongs to that tenant (the ask gateway always searches as a tenant)."""
        name = f"bench-q{size}-c{self.tag}" + (f"-{tenant}" if tenant else "")
        built = self.manifest.get("collections", {}).get(name)
        if built and built.get("complete"):
            return name, built
        docs = self.documents(max(size, self.target))
        picked, total = [], 0
        for doc in docs:  # whole documents in corpus order; the last one is cut so the total is exact
            take = doc["chunks"][:size - total]
            picked.append((doc, take))
            total += len(take)
            if total >= size:
                break
        log(f"-- vectors for {size:,} chunks (cached blocks are reused) ...")
        vectors = self.vectors([c["text"] for doc in docs for c in doc["chunks"]], size)[:size]
        index, embedder = self.runtime.index, self.runtime.embedder
        if index.exists(name):  # an interrupted build: start it again from empty
            index.client.delete_collection(f"ragfn-{name}")
            index.client.delete_collection(f"ragfn-{name}.ledger")
            index._handles.clear()
        log(f"-- writing {name}: {len(picked):,} documents through ChromaIndex.write_batch ...")
        started, row = time.perf_counter(), 0
        for n, (doc, chunks) in enumerate(picked):
            document = DocumentVersion.model_validate(doc["document"] | {"collection": name, "tenant": tenant})
            batches = [chunks[k:k + WRITE_ROWS] for k in range(0, len(chunks), WRITE_ROWS)]
            for b, part in enumerate(batches):
                index.write_batch(EmbeddedBatch.model_validate({
                    "document": document, "batch": b, "batches": len(batches), "total_chunks": len(chunks),
                    "chunks": part, "embedder": embedder.name, "dimensions": int(vectors.shape[1]),
                    "vectors": [encode_vector(v) for v in vectors[row:row + len(part)]]}))
                row += len(part)
            if (n + 1) % 500 == 0:
                log(f"   {row:,}/{size:,} rows, {time.perf_counter() - started:.0f}s")
        stored = index.chunks(name).count()
        assert stored == size, (stored, size)
        packages = {}
        for doc, chunks in picked:
            packages[doc["package"]] = packages.get(doc["package"], 0) + len(chunks)
        built = {"complete": True, "chunks": stored, "chunking": self.tag, "documents": len(picked), "chunks_by_package": packages,
                 "write_s": round(time.perf_counter() - started, 1),
                 "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "packages": sorted(p.name for p in self.corpora.glob("*.deb") if p.name.split("_")[0] in packages)}
        self.manifest.setdefault("collections", {})[name] = built
        self._save()
        log(f"   {name}: {stored:,} chunks in {built['write_s']}s")
        return name, built


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    args = parser.parse_args()
    home = REPO / ".ragfn"
    model = offline_model_dir(home)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    corpus = Corpus(home / "bench" / "query", model, home / "corpora", max(sizes))
    for size in sizes:
        print(corpus.collection(size))


if __name__ == "__main__":
    main()
