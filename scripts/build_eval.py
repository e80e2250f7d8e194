"""Build a labelled evaluation set: a corpus without question headings, and queries.jsonl with gold spans.

    python scripts/build_eval.py                      # -> $RAGFN_HOME/eval/python-faq/{corpus/,queries.jsonl}
    python scripts/build_eval.py --set debian-faq     # -> $RAGFN_HOME/eval/debian-faq/...
    python scripts/build_eval.py --out DIR --sources .../_sources

The Python FAQ comes from Debian's python3.11-doc, the Debian FAQ from Debian's debian-faq (each fetched by
fetch_corpus.py if missing). Deterministic and idempotent; see ragfn/retrieval/evalset.py for the format and the
relevance rule, ragfn/retrieval/debian_faq.py for how the Debian FAQ's chapters become Markdown.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fetch_corpus import sources_dir

from ragfn.retrieval.debian_faq import build_debian_faq
from ragfn.retrieval.evalset import build_eval_set

SETS = {"python-faq": "python3.11-doc", "debian-faq": "debian-faq"}  # set -> the Debian package it is built from


def default_out(name: str = "python-faq") -> Path:
    return Path(os.environ.get("RAGFN_HOME", ".ragfn")) / "eval" / name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", dest="name", choices=sorted(SETS), default="python-faq")
    parser.add_argument("--sources", type=Path, default=None,
                        help="the package's _sources (python-faq) or FAQ HTML folder (debian-faq); default: "
                             "fetch_corpus.py's, fetched if missing")
    parser.add_argument("--out", type=Path, default=None, help="write corpus/ and queries.jsonl here")
    args = parser.parse_args(argv)
    out = args.out or default_out(args.name)
    sources = args.sources if args.sources is not None else sources_dir(package=SETS[args.name])
    try:
        if args.name == "debian-faq":
            counts = build_debian_faq(sources, out)
        else:
            counts = build_eval_set(sources / "faq", out)
    except FileNotFoundError as exc:
        sys.exit(f"error: {exc}")
    print(f"{counts['files']} files, {counts['questions']} questions, {counts['queries']} queries "
          f"({counts['skipped_empty']} empty sections skipped) -> {out}")


if __name__ == "__main__":
    main()
