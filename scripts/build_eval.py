"""Build the Python FAQ evaluation set: a corpus without question headings, and queries.jsonl with gold spans.

    python scripts/build_eval.py                # -> $RAGFN_HOME/eval/python-faq/{corpus/,queries.jsonl}
    python scripts/build_eval.py --out DIR --sources .../_sources

The FAQ comes from Debian's python3.11-doc (fetched by fetch_corpus.py if missing). Deterministic and idempotent;
see ragfn/retrieval/evalset.py for the format and the relevance rule.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fetch_corpus import sources_dir

from ragfn.retrieval.evalset import build_eval_set


def default_out() -> Path:
    return Path(os.environ.get("RAGFN_HOME", ".ragfn")) / "eval" / "python-faq"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=Path, default=None,
                        help="the package's _sources folder (default: fetch_corpus.py's, fetched if missing)")
    parser.add_argument("--out", type=Path, default=default_out(), help="write corpus/ and queries.jsonl here")
    args = parser.parse_args(argv)
    faq = (args.sources if args.sources is not None else sources_dir()) / "faq"
    try:
        counts = build_eval_set(faq, args.out)
    except FileNotFoundError as exc:
        sys.exit(f"error: {exc}")
    print(f"{counts['files']} files, {counts['questions']} questions, {counts['queries']} queries "
          f"({counts['skipped_empty']} empty sections skipped) -> {args.out}")


if __name__ == "__main__":
    main()
