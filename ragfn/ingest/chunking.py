"""Structure-aware chunking: blocks become token-bounded, offset-exact chunks that never cross a heading or break."""

from __future__ import annotations

import hashlib
import math
import re
import threading
from bisect import bisect_left, bisect_right
from collections import deque
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from ragfn.core.errors import ConfigError
from ragfn.eventing.events import Chunk
from ragfn.ingest.loaders import LoadedDocument


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


# ASCII word runs, digit runs, then any other non-space character (punctuation, CJK, accented letters) alone.
_PIECES = re.compile(r"[A-Za-z]+|[0-9]+|\S")


class HeuristicTokenCounter:
    """Used only when no tokenizer.json is available, so it errs high: about one token per 3 characters, and never
    fewer than the words (a long word as several pieces), digit groups, punctuation marks and non-ASCII characters.
    Against MiniLM's WordPiece on the Python docs' rst sources: ~20% high for a typical chunk, under for ~4% of
    chunks, by 5% or more for 1% (worst seen: 32%); prefer a real tokenizer.json whenever one exists."""

    def count(self, text: str) -> int:
        pieces = sum(math.ceil(len(m) / 4) if m[0].isalpha() else math.ceil(len(m) / 2) if m[0].isdigit() else 1
                     for m in _PIECES.findall(text))
        return max(pieces, math.ceil(len(text) / 3))  # whitespace included: sums over parts never under-count


class HFTokenCounter:
    """Counts with the embedder's own tokenizer (tokenizer.json), without special tokens. Loads on first use."""

    def __init__(self, tokenizer_json: Path) -> None:
        self.path = Path(tokenizer_json)
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                from tokenizers import Tokenizer

                try:
                    tokenizer = Tokenizer.from_file(str(self.path))
                except Exception as exc:
                    hint = "point the embed model path at a folder with a valid tokenizer.json"
                    raise ConfigError(f"cannot load tokenizer {self.path}: {exc}", hint=hint) from exc
                # tokenizer.json ships the model's truncation and padding (MiniLM: 128): a count must see every token.
                tokenizer.no_truncation()
                tokenizer.no_padding()
                self._tokenizer = tokenizer
        return self._tokenizer

    def _encode(self, text: str) -> Any:
        return (self._tokenizer or self._load()).encode(text, add_special_tokens=False)

    def count(self, text: str) -> int:
        return len(self._encode(text).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        """One batched encoding per ~1M characters: fast, and a large document's encodings never all sit in memory."""
        tokenizer, counts, batch, size = self._tokenizer or self._load(), [], [], 0
        for i, text in enumerate(texts):
            batch.append(text)
            size += len(text)
            if size > 1_000_000 or i == len(texts) - 1:
                counts += [len(encoding.ids) for encoding in tokenizer.encode_batch(batch, add_special_tokens=False)]
                batch, size = [], 0
        return counts

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) character offsets of each token in `text`."""
        spans: list[tuple[int, int]] = self._encode(text).offsets
        return spans


def load_token_counter(model_dir: Path | None) -> TokenCounter:
    """The embedder's tokenizer when its folder has a tokenizer.json, otherwise the conservative heuristic."""
    if model_dir is not None and (Path(model_dir) / "tokenizer.json").is_file():
        return HFTokenCounter(Path(model_dir) / "tokenizer.json")
    return HeuristicTokenCounter()


@dataclass(frozen=True)
class ChunkingConfig:
    chunk_tokens: int = 96  # the same defaults as Settings
    overlap_tokens: int = 16

    def __post_init__(self) -> None:
        if self.chunk_tokens < 8 or not 0 <= self.overlap_tokens < self.chunk_tokens:
            raise ConfigError(f"bad chunking config {self}",
                              hint="need chunk_tokens >= 8 and 0 <= overlap_tokens < chunk_tokens")

    @property
    def key(self) -> str:
        """What the ledger records, so a change of settings re-chunks documents whose content did not change."""
        return f"{self.chunk_tokens}/{self.overlap_tokens}"


class _Unit(NamedTuple):
    start: int
    end: int
    tokens: int


# Where an oversize block may be cut, best first: (pattern, group whose span is the cut's whitespace).
_PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"[.!?][\"'\u201d\u2019)\]]*(\s+)")
_LINE = re.compile(r"\n\s*")
_SPACE = re.compile(r"\s+")
_CUTS = {"text": (_PARAGRAPH, _SENTENCE, _SPACE), "code": (_PARAGRAPH, _LINE, _SPACE)}
_SENTENCE_START = re.compile(r"(?:[.!?][\"'\u201d\u2019)\]]*\s+|\n[ \t]*\n\s*)(?=\S)")


def chunk_document(doc: LoadedDocument, config: ChunkingConfig, counter: TokenCounter) -> list[Chunk]:
    """Chunks of at most `config.chunk_tokens` tokens; deterministic, and `doc.text[c.start:c.end] == c.text`."""
    return _Chunker(doc.text, config, counter).run(doc)


class _Chunker:
    def __init__(self, text: str, config: ChunkingConfig, counter: TokenCounter) -> None:
        self.text, self.budget, self.overlap, self.counter = text, config.chunk_tokens, config.overlap_tokens, counter
        self.count_many = getattr(counter, "count_many", None)
        self.token_spans = getattr(counter, "token_spans", None)  # lets us cut by offsets instead of re-encoding

    def counts(self, texts: list[str]) -> list[int]:
        return list(self.count_many(texts)) if self.count_many else [self.counter.count(t) for t in texts]

    def run(self, doc: LoadedDocument) -> list[Chunk]:
        # Sections: runs of text/code blocks between headings and breaks, each with its heading path.
        sections: list[tuple[list[str], list[tuple[str, int, int]]]] = []
        path: list[tuple[int, str]] = []
        current: list[tuple[str, int, int]] = []
        for block in doc.blocks:
            if block.kind in ("heading", "break"):
                if current:
                    sections.append(([title for _, title in path], current))
                    current = []
                if block.kind == "heading":
                    while path and path[-1][0] >= max(block.level, 1):
                        path.pop()
                    path.append((max(block.level, 1), " ".join(block.text.split())))
            else:
                current += [(block.kind, s, e) for s, e in _bounded(self.text, block.start, block.end)]
        if current:
            sections.append(([title for _, title in path], current))

        # One batched count for every block, then for every gap between neighbours (usually blank, but an rst
        # target or comment between two blocks is part of a chunk's text too).
        blocks = [block for _, section in sections for block in section]
        counts = iter(self.counts([self.text[s:e] for _, s, e in blocks]))
        units = [[u for kind, s, e in section for u in self.fit(kind, s, e, next(counts))] for _, section in sections]
        gaps = [(a.end, b.start) for section in units for a, b in pairwise(section)]
        self.gaps = dict(zip(gaps, self.counts([self.text[a:b] for a, b in gaps])))

        chunks: list[Chunk] = []
        for (heading_path, _), section in zip(sections, units):
            for start, end, tokens in self.pack(section):
                text = self.text[start:end]
                chunks.append(Chunk(number=len(chunks), text=text, start=start, end=end, heading_path=heading_path,
                                    content_hash=hashlib.sha256(text.encode()).hexdigest(), tokens=tokens))
        return chunks

    def fit(self, kind: str, start: int, end: int, tokens: int, mode: int = 0) -> list[_Unit]:
        """The block as one unit, or split into units that each fit the budget. Pieces are re-counted exactly;
        a piece that still overflows (a cut inside a word can tokenize differently) is split again more strictly."""
        if tokens <= self.budget:
            return [_Unit(start, end, tokens)]
        pieces = self.split(kind, start, end, mode)
        units = []
        for (s, e), n in zip(pieces, self.counts([self.text[s:e] for s, e in pieces])):
            units.extend([_Unit(s, e, n)] if n <= self.budget or mode == 2 else self.fit(kind, s, e, n, mode + 1))
        return units

    def split(self, kind: str, start: int, end: int, mode: int) -> list[tuple[int, int]]:
        """Cut [start, end) greedily: each piece ends at the last paragraph, sentence (code: line) or word boundary
        that keeps it within budget, else at a token boundary. mode 0 uses token offsets from one encoding;
        mode 1 measures with count(); mode 2 (last resort) makes hard cuts only."""
        text, budget = self.text, self.budget
        spans = None
        if mode == 0 and self.token_spans:
            spans = [(start + a, start + b) for a, b in self.token_spans(text[start:end])]
            span_starts = [a for a, _ in spans]
        cuts = [[(m.start(m.lastindex or 0), m.end(m.lastindex or 0)) for m in pattern.finditer(text, start, end)]
                for pattern in (_CUTS.get(kind, _CUTS["text"]) if mode < 2 else ())]
        pieces, pos = [], start
        while pos < end:
            if spans is not None:
                i = bisect_left(span_starts, pos)
                if len(spans) - i <= budget:
                    limit = end
                else:
                    limit = max(spans[i + budget - 1][1], pos + 1)
                    hard = max(spans[i + budget][0], limit)
            else:
                limit = hard = self.fit_end(pos, end)
            if limit >= end:
                pieces.append((pos, end))
                break
            cut = (limit, hard)
            for depth, boundaries in enumerate(cuts):
                k = bisect_right(boundaries, (limit, end)) - 1
                # A good boundary must not leave a tiny piece; whitespace is the last resort before a hard cut.
                last_resort = depth == len(cuts) - 1
                if k >= 0 and boundaries[k][0] > pos and (last_resort or boundaries[k][0] - pos >= (limit - pos) // 3):
                    cut = boundaries[k]
                    break
            pieces.append((pos, cut[0]))
            pos = cut[1]
        return [span for s, e in pieces if (span := _trim(text, s, e))[0] < span[1]]

    def fit_end(self, pos: int, end: int) -> int:
        """The furthest cut in (pos, end] whose piece text[pos:cut] fits the budget: exponential, then binary search."""
        lo, step = pos + 1, 4 * self.budget
        hi = min(end, pos + step)
        while self.counter.count(self.text[pos:hi]) <= self.budget:
            if hi == end:
                return end
            lo, step = hi, step * 2
            hi = min(end, pos + step)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.counter.count(self.text[pos:mid]) <= self.budget else (lo, mid)
        return lo

    def gap(self, end: int, start: int) -> int:
        return self.gaps.get((end, start), 0)

    def pack(self, units: list[_Unit]) -> list[tuple[int, int, int]]:
        """Greedy packing of one section's units, with overlap after a chunk that closed because it was full."""
        queue, chunks, lead = deque(units), [], None
        while queue:
            first = queue.popleft()
            members, start, end, estimate = [first], first.start, first.end, first.tokens
            if lead is not None:  # begin with the tail of the previous chunk, shrunk if needed to fit the first unit
                gap = self.gap(lead[1], first.start)
                tail = self.tail(*lead, min(self.overlap, self.budget - first.tokens - gap))
                if tail is not None:
                    start, estimate = tail[0], estimate + gap + tail[1]
            while queue and estimate + self.gap(end, queue[0].start) + queue[0].tokens <= self.budget:
                unit = queue.popleft()
                estimate += self.gap(end, unit.start) + unit.tokens
                members.append(unit)
                end = unit.end
            while True:  # the estimate is a sum of parts; the exact count decides, giving units back if needed
                spans = self.token_spans(self.text[start:end]) if self.token_spans else None
                tokens = len(spans) if spans is not None else self.counter.count(self.text[start:end])
                if tokens <= self.budget or (len(members) == 1 and start == first.start):
                    break
                if len(members) > 1:
                    queue.appendleft(members.pop())
                    end = members[-1].end
                else:
                    start = first.start  # drop the overlap
            chunks.append((start, end, tokens))
            lead = (start, end, spans) if queue and self.overlap else None
        return chunks

    def tail(self, start: int, end: int, spans: list[tuple[int, int]] | None, budget: int) -> tuple[int, int] | None:
        """Start and token count of the overlap: at most `budget` trailing tokens of text[start:end], beginning at a
        sentence start (if one is in the first half of that tail) or else a word start; never the whole chunk."""
        if budget <= 0:
            return None
        text = self.text
        if spans is not None:
            raw = start + spans[len(spans) - budget][0] if len(spans) > budget else start
        else:
            lo, hi = start, end  # the smallest suffix start that fits the budget
            while lo < hi:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if self.counter.count(text[mid:end]) <= budget else (mid + 1, hi)
            raw = lo
        raw = max(raw, start + 1)
        if raw >= end:
            return None
        starts = _SENTENCE_START.finditer(text, max(start, raw - 4), raw + (end - raw) // 2 + 1)
        sentence = next((m.end() for m in starts if m.end() >= raw), None)
        if sentence is not None:
            begin = sentence
        elif text[raw - 1].isspace() and not text[raw].isspace():
            begin = raw
        else:
            word = _SPACE.search(text, raw, end)
            begin = word.end() if word else end
        if begin >= end:
            return None
        if spans is not None:
            return begin, len(spans) - bisect_left([a for a, _ in spans], begin - start)
        return begin, self.counter.count(text[begin:end])


def _bounded(text: str, start: int, end: int, cap: int = 100_000) -> list[tuple[int, int]]:
    """The trimmed block, first cut (at a blank line, newline or space) into pieces of at most `cap` characters
    when it is huge, so that encoding one block never holds millions of token offsets."""
    pieces = []
    while end - start > cap:
        window = text[start:start + cap]
        cut = next((c for c in (window.rfind("\n\n"), window.rfind("\n"), window.rfind(" ")) if c > cap // 2), cap)
        pieces.append(_trim(text, start, start + cut))
        start += cut
    pieces.append(_trim(text, start, end))
    return [(s, e) for s, e in pieces if s < e]


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """Move start/end inwards past whitespace (chunk text is always an exact slice, never an edited copy)."""
    span = text[start:end]
    stripped = span.strip()
    if not stripped:
        return start, start
    begin = start + len(span) - len(span.lstrip())
    return begin, begin + len(stripped)
