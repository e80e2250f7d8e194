"""Lexical search: the index's own full-text search where it has one (LanceDB), else BM25 over the collection's
chunk texts, built from the index itself so that every replica agrees with it (Chroma).

The index stays the only source of truth. Each process keeps a BM25 snapshot per collection and tenant, built from
the tenant's own table (Index.tenant_rows), and rebuilds it when that tenant's generation token (bumped by every
commit and delete of its documents, see Index.generation) has changed, checking at most every `refresh_seconds`; a
snapshot that was slow to build (over `background_after_seconds`) is rebuilt in a background thread while the old
one keeps answering. Each snapshot has its own lock, so one build never holds up another tenant's or collection's
queries, and BM25's statistics are each tenant's own (a tenant's scores do not move with another tenant's
documents). Scaling: a rebuild reads every chunk text of one tenant and holds its postings in memory (roughly 3x the
text size), and a replica holds snapshots only of the tenants it has answered; so it suits tenants of up to a few
hundred thousand chunks; beyond that LanceDB's full-text index (RAGFN_STORE=lancedb) takes this module's place.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter, OrderedDict, defaultdict
from dataclasses import dataclass

import numpy as np

from ragfn.core.errors import BadEvent, Unavailable
from ragfn.retrieval.dense import Caller, Hit
from ragfn.store.base import PUBLIC, Index

log = logging.getLogger("ragfn.lexical")
_WORD = re.compile(r"\w+", re.UNICODE)
# Function words a question is phrased with ("how do I ... in the ...?"): dropped from queries, where they only add
# noise to BM25, but kept in the index so a question made of nothing else still finds something.
STOPWORDS = frozenset(
    "a about an and are as at be been but by can could did do does for from had has have how i if in into is it its"
    " me my of on or our should so such than that the their them then there these they this to was we were what"
    " when where which who whom why will with would you your".split())
_stemmers = threading.local()  # a PyStemmer object must not be shared between threads


def _stem(words: list[str]) -> list[str]:
    stemmer = getattr(_stemmers, "english", None)
    if stemmer is None:
        import Stemmer

        stemmer = _stemmers.english = Stemmer.Stemmer("english")
    return stemmer.stemWords(words)


def tokenize(text: str) -> list[str]:
    """Lower-cased, Snowball-stemmed words, so "assignment" in a question matches "assign" and "assigned"."""
    return _stem(_WORD.findall(text.lower()))


def query_terms(question: str) -> list[str]:
    """A question's search terms: its stemmed content words, or all its words when it has nothing but stopwords."""
    words = _WORD.findall(question.lower())
    return _stem([w for w in words if w not in STOPWORDS] or words)


@dataclass
class _Snapshot:
    generation: str | None
    ids: list[str]
    texts: list[str]
    metadatas: list[dict]
    postings: dict[str, tuple[np.ndarray, np.ndarray]]  # term -> (chunk rows, BM25 weights)
    tenants: np.ndarray  # tenant per row
    groups: dict[str, np.ndarray]  # ACL group -> rows readable by it
    checked: float
    build_seconds: float = 0.0
    built: float = 0.0  # when the build finished (monotonic)


class LexicalRetriever:
    """BM25 (Okapi, k1/b) with the caller's tenant and groups applied before ranking; on an index with its own
    full-text search (`index.full_text`), that search, given the question without its function words."""

    def __init__(self, index: Index, *, k1: float = 1.2, b: float = 0.75, refresh_seconds: float = 1.0) -> None:
        self.index = index
        self.k1, self.b = k1, b
        self.refresh_seconds = refresh_seconds
        self._snapshots: OrderedDict[tuple[str, str], _Snapshot] = OrderedDict()  # by (collection, tenant), LRU
        # Rows held over all snapshots: past it the least recently asked are dropped (and rebuilt when asked again),
        # so a replica serving many tenants holds the texts of its busiest, not of every tenant it ever answered.
        self.max_rows = 2_000_000
        self._failures: dict[tuple[str, str], tuple[float, str]] = {}  # -> (when, why) its last build failed
        self.retry_seconds = 5.0
        # A snapshot that took longer than this to build is rebuilt in the background while the old one answers
        # (seconds stale), instead of every query waiting: 15 s at 100k chunks, after each commit.
        self.background_after_seconds = 1.0
        # A slow snapshot is rebuilt no sooner than build_seconds * (1/share - 1) after its last build: under steady
        # ingestion a replica spends at most this share of a core on BM25, and a commit is lexically searchable
        # within build_seconds / share (about 62 s at 100k chunks; docs/benchmarks.md). LanceDB has no such cost.
        self.rebuild_share = 0.25
        self._rebuilding: set[tuple[str, str]] = set()
        self._lock = threading.Lock()  # guards the dicts above and `_locks`, never held across a build
        self._locks: dict[tuple[str, str], threading.Lock] = {}  # one per snapshot: a build blocks only its own

    def _snapshot_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    def search(self, question: str, *, collection: str = "default", top_k: int = 10,
               caller: Caller = Caller()) -> list[Hit]:
        terms = query_terms(question)
        if not terms:
            raise BadEvent("the question has no words to search for")
        if not 1 <= top_k <= 1000:
            raise BadEvent(f"top_k={top_k} is out of range", hint="use 1 to 1000")
        if self.index.full_text:  # its analyzer stems, so it gets words, not ragfn's stems
            words = _WORD.findall(question.lower())
            return self.index.lexical_search(collection, " ".join([w for w in words if w not in STOPWORDS] or words),
                                             top_k=top_k, caller=caller)
        snapshot = self._snapshot(collection, caller.tenant or "")
        if snapshot is None or not snapshot.ids:
            return []
        scores = np.zeros(len(snapshot.ids), dtype=np.float32)
        for term, count in Counter(terms).items():
            if term in snapshot.postings:
                rows, weights = snapshot.postings[term]
                scores[rows] += count * weights
        readable = snapshot.tenants == (caller.tenant or "")
        allowed = np.zeros(len(snapshot.ids), dtype=bool)
        for group in {PUBLIC, *caller.groups}:
            if group in snapshot.groups:
                allowed[snapshot.groups[group]] = True
        scores[~(readable & allowed)] = 0.0  # filtered before ranking: a hidden chunk never takes a place
        candidates = np.flatnonzero(scores > 0)
        best = candidates[np.argsort(-scores[candidates], kind="stable")[:top_k]]
        return [Hit(chunk_id=snapshot.ids[i], source=snapshot.metadatas[i]["source"], text=snapshot.texts[i],
                    score=float(scores[i]), metadata=snapshot.metadatas[i]) for i in best]

    def _snapshot(self, collection: str, tenant: str) -> _Snapshot | None:
        # one build per snapshot at a time; its queries wait for it rather than each rebuilding, while other
        # tenants' and collections' queries go on
        key = (collection, tenant)
        with self._snapshot_lock(key):
            cached = self._snapshots.get(key)
            now = time.monotonic()
            if cached and now - cached.checked < self.refresh_seconds:
                return cached
            failed = self._failures.get(key)
            if cached is None and failed and now - failed[0] < self.retry_seconds:
                raise Unavailable(failed[1])  # no rebuild per request while the store is failing
            try:
                if not self.index.exists(collection):
                    return None
                generation = self.index.generation(collection, tenant or None)
                slow = cached is not None and cached.build_seconds > self.background_after_seconds
                if slow and cached.generation != generation:
                    # rebuilding takes at most `rebuild_share` of one core however fast commits come
                    rest = cached.build_seconds * (1 / self.rebuild_share - 1)
                    if now - cached.built >= rest:
                        self._rebuild_in_background(key, generation)
                elif not (cached and cached.generation == generation):
                    cached = self._keep(key, self._build(key, generation))
            except Exception as exc:  # Chroma unreachable: a stale snapshot still answers, which is the point
                if cached is None:
                    message = f"cannot read collection {collection!r} for lexical search: {exc}"
                    self._failures[key] = (now, message)
                    raise Unavailable(message) from exc
                log.warning("lexical search serves a stale snapshot of %s: %s", collection, exc)
            cached.checked = now
            with self._lock:
                if key in self._snapshots:
                    self._snapshots.move_to_end(key)
            return cached

    def _keep(self, key: tuple[str, str], snapshot: _Snapshot) -> _Snapshot:
        with self._lock:
            self._snapshots[key] = snapshot
            self._snapshots.move_to_end(key)
            held = sum(len(s.ids) for s in self._snapshots.values())
            while held > self.max_rows and len(self._snapshots) > 1:
                _, dropped = self._snapshots.popitem(last=False)
                held -= len(dropped.ids)
        return snapshot

    def _rebuild_in_background(self, key: tuple[str, str], generation: str | None) -> None:
        """Called under the snapshot's lock; at most one rebuild per snapshot runs at a time."""
        if key in self._rebuilding:
            return
        self._rebuilding.add(key)

        def rebuild() -> None:
            try:
                snapshot = self._build(key, generation)
                with self._snapshot_lock(key):
                    self._keep(key, snapshot)
            except Exception as exc:  # the stale snapshot keeps answering; the next check tries again
                log.warning("background rebuild of the BM25 snapshot of %s failed: %s", key, exc)
            finally:
                with self._snapshot_lock(key):
                    self._rebuilding.discard(key)

        threading.Thread(target=rebuild, name=f"bm25-{key[0]}", daemon=True).start()

    def _build(self, key: tuple[str, str], generation: str | None) -> _Snapshot:
        started = time.monotonic()
        ids, texts, metadatas = [], [], []
        # Pages can straddle a concurrent commit; `generation` was read before the first page, so the next check
        # sees the newer token and rebuilds.
        for page in self.index.tenant_rows(key[0], key[1] or None):
            ids += page.ids
            texts += page.texts
            metadatas += page.metadatas
        tokens = [tokenize(text) for text in texts]
        lengths = np.array([len(t) for t in tokens], dtype=np.float32)
        tenants = np.array([m.get("tenant", "") for m in metadatas], dtype=object)
        # BM25's statistics (rows, document frequencies, average length) are each tenant's own: every row belongs
        # to one tenant, so a row is weighted with its tenant's, and no tenant's documents move another's scores
        names, tenant_of = np.unique(tenants, return_inverse=True) if len(tenants) else ([], np.zeros(0, np.int64))
        rows_per_tenant = np.bincount(tenant_of, minlength=len(names)).astype(np.float64)
        average = np.bincount(tenant_of, weights=lengths, minlength=len(names)) / np.maximum(rows_per_tenant, 1)
        rows_by_term: dict[str, list[int]] = defaultdict(list)
        tf_by_term: dict[str, list[int]] = defaultdict(list)
        for row, words in enumerate(tokens):
            for term, tf in Counter(words).items():
                rows_by_term[term].append(row)
                tf_by_term[term].append(tf)
        norm = self.k1 * (1 - self.b + self.b * lengths / np.maximum(average[tenant_of], 1e-9))
        postings = {}
        for term, rows in rows_by_term.items():
            rows_array = np.array(rows, dtype=np.int64)
            tf = np.array(tf_by_term[term], dtype=np.float32)
            owners = tenant_of[rows_array]
            df = np.bincount(owners, minlength=len(names))[owners]  # the term's rows in each row's own tenant
            idf = np.log1p((rows_per_tenant[owners] - df + 0.5) / (df + 0.5))
            postings[term] = (rows_array, (idf * tf * (self.k1 + 1) / (tf + norm[rows_array])).astype(np.float32))
        groups: dict[str, list[int]] = defaultdict(list)
        for row, meta in enumerate(metadatas):
            for group in meta.get("groups") or [PUBLIC]:
                groups[group].append(row)
        finished = time.monotonic()
        return _Snapshot(generation, ids, texts, metadatas, postings, tenants,
                         {g: np.array(r, dtype=np.int64) for g, r in groups.items()}, finished, finished - started,
                         finished)
