"""Fetch Debian's python3.11-doc into RAGFN_HOME/corpora and print its Sphinx `_sources` folder
(see docs/architecture.md); `--package debian-faq` fetches the Debian FAQ's HTML chapters instead.

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
INSIDE = {PACKAGE: SOURCES, "debian-faq": Path("usr/share/doc/debian/FAQ")}  # the folder each package is fetched for


def corpora_dir() -> Path:
    return Path(os.environ.get("RAGFN_HOME", ".ragfn")) / "corpora"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=False, cwd=cwd, capture_output=True, text=True)


def download(cache: Path, package: str = PACKAGE) -> Path:
    """The package's .deb in `cache`, downloaded once; `apt-get update` only when apt has no lists yet."""
    found = sorted(cache.glob(f"{package}_*.deb"))
    if found:
        return found[-1]
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        sys.exit("error: apt-get and dpkg-deb are needed (a Debian or Ubuntu machine); "
                 f"or extract {package}'s .deb into {cache / PACKAGE} yourself")
    cache.mkdir(parents=True, exist_ok=True)
    result = _run("apt-get", "download", package, cwd=cache)
    if result.returncode != 0:  # a fresh container has no package lists: refresh them once, then retry
        update = _run("apt-get", "update", cwd=cache)
        result = _run("apt-get", "download", package, cwd=cache)
        if result.returncode != 0:
            sys.exit(f"error: `apt-get download {package}` failed:\n{result.stderr.strip()}\n"
                     f"(apt-get update said: {update.stderr.strip() or 'ok'})")
    found = sorted(cache.glob(f"{package}_*.deb"))
    if not found:
        sys.exit(f"error: apt-get reported success but no {package}_*.deb is in {cache}")
    return found[-1]


def extract(deb: Path, target: Path, inside: Path = SOURCES) -> Path:
    """`dpkg-deb -x` into a staging folder, renamed into place so readers never see half a tree."""
    if (target / inside).is_dir():
        return target
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    result = _run("dpkg-deb", "-x", str(deb.resolve()), str(staging.resolve()), cwd=staging)
    if result.returncode != 0 or not (staging / inside).is_dir():
        sys.exit(f"error: cannot extract {deb}: {result.stderr.strip() or f'no {inside} inside'}")
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def sources_dir(cache: Path | None = None, package: str = PACKAGE) -> Path:
    """The folder of the extracted package that holds the corpus (python3.11-doc: `_sources`, files `*.rst.txt`;
    debian-faq: the HTML chapters), fetching it first if needed."""
    cache = Path(cache) if cache is not None else corpora_dir()
    root, inside = cache / package, INSIDE[package]
    if not (root / inside).is_dir():
        extract(download(cache, package), root, inside)
    return (root / inside).resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=corpora_dir(), help="download and extract here")
    parser.add_argument("--package", choices=sorted(INSIDE), default=PACKAGE)
    args = parser.parse_args()
    print(sources_dir(args.cache, args.package))


if __name__ == "__main__":
    main()
