"""Fetch Debian's python3.11-doc into RAGFN_HOME/corpora and print its Sphinx `_sources` folder
(see docs/architecture.md).

The package holds the reStructuredText sources of the Python 3.11 documentation as `*.rst.txt` (about 9 MB):
`_sources/faq/*.rst.txt` is the evaluation corpus, `_sources/library/` a larger one for ingestion benchmarks.
Uses `apt-get download` (no root, no install) and `dpkg-deb -x`; idempotent, and safe to interrupt.

    python scripts/fetch_corpus.py            # prints .../usr/share/doc/python3.11/html/_sources
    from fetch_corpus import sources_dir      # the same, for benchmarks and evaluation builders
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = "python3.11-doc"
SOURCES = Path("usr/share/doc/python3.11/html/_sources")


def corpora_dir() -> Path:
    return Path(os.environ.get("RAGFN_HOME", ".ragfn")) / "corpora"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=False, cwd=cwd, capture_output=True, text=True)


def download(cache: Path) -> Path:
    """The package's .deb in `cache`, downloaded once; `apt-get update` only when apt has no lists yet."""
    found = sorted(cache.glob(f"{PACKAGE}_*.deb"))
    if found:
        return found[-1]
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        sys.exit("error: apt-get and dpkg-deb are needed (a Debian or Ubuntu machine); "
                 f"or extract {PACKAGE}'s .deb into {cache / PACKAGE} yourself")
    cache.mkdir(parents=True, exist_ok=True)
    result = _run("apt-get", "download", PACKAGE, cwd=cache)
    if result.returncode != 0:  # a fresh container has no package lists: refresh them once, then retry
        update = _run("apt-get", "update", cwd=cache)
        result = _run("apt-get", "download", PACKAGE, cwd=cache)
        if result.returncode != 0:
            sys.exit(f"error: `apt-get download {PACKAGE}` failed:\n{result.stderr.strip()}\n"
                     f"(apt-get update said: {update.stderr.strip() or 'ok'})")
    found = sorted(cache.glob(f"{PACKAGE}_*.deb"))
    if not found:
        sys.exit(f"error: apt-get reported success but no {PACKAGE}_*.deb is in {cache}")
    return found[-1]


def extract(deb: Path, target: Path) -> Path:
    """`dpkg-deb -x` into a staging folder, renamed into place so readers never see half a tree."""
    if (target / SOURCES).is_dir():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    result = _run("dpkg-deb", "-x", str(deb.resolve()), str(staging.resolve()), cwd=staging)
    if result.returncode != 0 or not (staging / SOURCES).is_dir():
        sys.exit(f"error: cannot extract {deb}: {result.stderr.strip() or f'no {SOURCES} inside'}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def sources_dir(cache: Path | None = None) -> Path:
    """The `_sources` folder of the extracted package (files are `*.rst.txt`), fetching it first if needed."""
    cache = Path(cache) if cache is not None else corpora_dir()
    root = cache / PACKAGE
    if not (root / SOURCES).is_dir():
        extract(download(cache), root)
    return (root / SOURCES).resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=corpora_dir(), help="download and extract here")
    print(sources_dir(parser.parse_args().cache))


if __name__ == "__main__":
    main()
