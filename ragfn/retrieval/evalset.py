"""The labelled evaluation set: FAQ question headings become queries, the sections under them gold passages."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ragfn.ingest.rst import rst_blocks

SUFFIX = ".rst.txt"  # Sphinx's name for its shipped sources

# Inline markup in a title, longest start-strings first so ``*.pyd`` is a literal, not emphasis:
# roles (`:func:`sorted``, `:ref:`title <target>``), literals, strong, emphasis and interpreted text.
_INLINE = re.compile(r"(?::[\w.+-]+)+:`(?P<role>[^`<]*?)\s*(?:<[^`]*>)?`|``(?P<literal>.+?)``"
                     r"|\*\*(?P<strong>\S(?:.*?\S)?)\*\*|(?<![\w*])\*(?P<em>[^\s*](?:[^*]*?[^\s*])?)\*(?!\w)"
                     r"|`(?P<interpreted>[^`]+)`")


def plain_title(title: str) -> str:
    """A heading as a user would type it: inline markup unwrapped (`:func:`sorted`` -> sorted), spaces collapsed."""
    text = _INLINE.sub(lambda m: next(g for g in m.groups() if g is not None).lstrip("~!"), title)
    return " ".join(text.split())


@dataclass(frozen=True)
class Question:
    """A question section in the original text: its heading lines and its (trimmed) body, as character spans."""

    title: str  # plain text, see plain_title
    heading: tuple[int, int]  # whole lines, trailing newline included: exactly what is cut out
    body: tuple[int, int]


@dataclass(frozen=True)
class EvalQuery:
    id: str
    question: str
    source: str  # the corpus file's name
    gold: tuple[tuple[int, int], ...]  # [start, end) character spans in the corpus file

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "question": self.question, "source": self.source,
                           "gold": [list(span) for span in self.gold]}, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> EvalQuery:
        raw = json.loads(line)
        return cls(raw["id"], raw["question"], raw["source"], tuple((int(s), int(e)) for s, e in raw["gold"]))


def question_sections(text: str) -> list[Question]:
    """The question sections of one FAQ file, in order, including those with an empty body.

    A heading is a question when it is a leaf (no deeper heading follows before the next sibling), is not the
    document title (level 1), and either ends with "?" or sits at the file's deepest heading level. Leaf-ness keeps
    chapter titles; the "?" test catches a question mis-adorned as a chapter (gui.rst.txt's "What GUI toolkits
    exist for Python?"), and the deepest-level test catches questions phrased without one ("How do you remove
    multiple items from a list"), without taking an empty chapter title such as "General GUI Questions"."""
    headings = [b for b in rst_blocks(text) if b.kind == "heading"]
    deepest = max((h.level for h in headings), default=0)
    found = []
    for n, heading in enumerate(headings):
        following = headings[n + 1] if n + 1 < len(headings) else None
        leaf = following is None or following.level <= heading.level
        title = plain_title(heading.text)
        if not leaf or heading.level == 1 or not (title.endswith("?") or heading.level == deepest):
            continue
        # The scanner's spans are trimmed; cut whole lines so no stray spaces or blank-line changes remain.
        start = text.rfind("\n", 0, heading.start) + 1
        newline = text.find("\n", heading.end)
        end = len(text) if newline < 0 else newline + 1
        body_end = len(text) if following is None else text.rfind("\n", 0, following.start) + 1
        found.append(Question(title, (start, end), _body(text, end, body_end)))
    return found


_TARGET = re.compile(r"\.\.[ \t]+_[^\n]*:[ \t]*\Z")  # `.. _label:` with nothing after: it labels what follows


def _body(text: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) trimmed of whitespace and of trailing internal targets, which label the *next* heading."""
    body = text[start:end]
    start += len(body) - len(body.lstrip())
    end = start + len(body.strip())
    while end > start:
        line_start = text.rfind("\n", start, end) + 1
        if not _TARGET.match(text, line_start, end):
            break
        end = start + len(text[start:line_start].rstrip())
    return start, end


def strip_questions(text: str) -> tuple[str, list[tuple[Question, tuple[int, int]]]]:
    """`text` without its question headings, and each question with its body's span in that new text."""
    questions = question_sections(text)
    parts, pos, removed, spans = [], 0, 0, []
    for question in questions:
        start, end = question.heading
        parts.append(text[pos:start])
        removed += end - start
        pos = end
        spans.append((question, (question.body[0] - removed, question.body[1] - removed)))
    parts.append(text[pos:])
    return "".join(parts), spans


def read_source(path: Path) -> str:
    """A source as the loader sees it: UTF-8 (a BOM dropped) with `\\n` newlines, so offsets agree with chunks."""
    text = path.read_bytes().decode("utf-8-sig")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def build_eval_set(faq_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write `out_dir/corpus/*.rst.txt` and `out_dir/queries.jsonl` from the FAQ sources in `faq_dir`.

    Each corpus file is its source with every question heading (title, underline, overline) removed, so a retriever
    cannot match a query against its own heading; all other text is unchanged. Each query is one line:

        {"id": "programming-012", "question": "How do I ...?", "source": "programming.rst.txt", "gold": [[s, e]]}

    `gold` holds character offsets into the written corpus file (what `load_document` yields: UTF-8, `\\n`
    newlines), spanning the question's section body: the text under the removed heading up to the next heading of
    any level, whitespace trimmed, without trailing `.. _label:` targets (they label the next heading). Chunk
    metadata carries the same offsets, so judging needs no text matching (see is_relevant). Questions whose
    section is empty get no query.

    Deterministic (files in name order, ids from the question's position in its file) and idempotent: files are
    rewritten only when their content changes, so a re-build leaves mtimes alone and a re-ingest skips them; corpus
    files from an earlier build whose source is gone are removed. Files without questions (the FAQ's index, a
    bare toctree) are left out. Returns counts: files, questions, queries, skipped_empty."""
    faq_dir = Path(faq_dir)
    sources = sorted(faq_dir.glob(f"*{SUFFIX}"))
    if not sources:
        raise FileNotFoundError(f"no *{SUFFIX} files in {faq_dir}")
    files = {}
    for path in sources:
        text, spans = strip_questions(read_source(path))
        files[path.name] = (text, [(question.title, span) for question, span in spans])
    return write_eval_set(out_dir, files, SUFFIX)


def write_eval_set(out_dir: Path, files: Mapping[str, tuple[str, list[tuple[str, tuple[int, int]]]]],
                   suffix: str) -> dict[str, int]:
    """Write each corpus file (name -> text, [(question, gold span)]) under `out_dir/corpus/` and one query per
    non-empty span to `out_dir/queries.jsonl` (ids: the file's stem and the question's position); files without
    questions are left out, and corpus files `*suffix` from an earlier build that are no longer written go."""
    corpus = Path(out_dir) / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    queries, written, questions = [], set(), 0
    for name, (text, spans) in sorted(files.items()):
        if not spans:
            continue
        questions += len(spans)
        stem = name[:-len(suffix)]
        for n, (title, (start, end)) in enumerate(spans, 1):
            if end > start:  # an empty section has nothing to find: no query
                queries.append(EvalQuery(f"{stem}-{n:03d}", title, name, ((start, end),)))
        _write_if_changed(corpus / name, text)
        written.add(name)
    for stale in corpus.glob(f"*{suffix}"):
        if stale.name not in written:
            stale.unlink()
    _write_if_changed(Path(out_dir) / "queries.jsonl", "".join(q.to_json() + "\n" for q in queries))
    return {"files": len(written), "questions": questions, "queries": len(queries),
            "skipped_empty": questions - len(queries)}


def _write_if_changed(path: Path, text: str) -> None:
    if path.is_file() and path.read_bytes() == text.encode():
        return
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(text.encode())  # bytes, so no platform newline translation shifts the offsets
    os.replace(partial, path)  # readers never see half a file


def load_queries(path: Path) -> list[EvalQuery]:
    return [EvalQuery.from_json(line) for line in Path(path).read_text("utf-8").splitlines() if line.strip()]


def is_relevant(query: EvalQuery, source: str, start: int, end: int) -> bool:
    """Whether a retrieved chunk [start, end) of `source` (a file name, path or URI) is relevant to `query`.

    Relevant means *inside the gold*: the chunk comes from the query's source file and its span overlaps the gold
    span(s) by at least half of the chunk's own length. A chunk straddling two answers counts for the one it mostly
    belongs to (at exactly half, for both); a small chunk wholly inside a long answer counts although it holds only
    part of it; a large chunk that holds a whole short answer but is mostly other text does not, so a very short
    answer packed together with its neighbours cannot be found at all (about 1 query in 5 at 200-token chunks)."""
    if end <= start or unquote(source.rstrip("/").rsplit("/", 1)[-1]) != query.source:
        return False
    overlap = sum(max(0, min(end, e) - max(start, s)) for s, e in query.gold)
    return 2 * overlap >= end - start


def judge(query: EvalQuery, hits: Iterable[Mapping]) -> list[bool]:
    """Ranked relevance booleans for retrieved chunks' metadata (`source`, `start`, `end`), as metrics expect."""
    return [is_relevant(query, str(hit["source"]), int(hit["start"]), int(hit["end"])) for hit in hits]
