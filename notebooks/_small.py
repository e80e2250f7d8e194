"""What the tuning notebooks share: parameters from the environment, a scratch folder, the FAQ evaluation set."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from ragfn.core.config import Settings, load_settings
from ragfn.retrieval.evalset import SUFFIX, EvalQuery, build_eval_set, load_queries

REPO = Path(__file__).resolve().parent.parent
# RAGFN_NOTEBOOK_SMALL=1 (CI): the four smallest FAQ files, 33 questions, about 13 % of the corpus
SMALL_FILES = ("extending", "gui", "installed", "windows")


def flag(name: str, default: str = "0") -> bool:
    return os.environ.get(name, default).strip().lower() in {"1", "true", "yes", "on"}


def numbers(name: str, default: str, cast=float) -> list:
    """A comma-separated list from the environment, e.g. RAGFN_NOTEBOOK_CHUNK_SIZES=64,96,128."""
    return [cast(part) for part in os.environ.get(name, default).split(",") if part.strip()]


def ragfn_home() -> Path:
    """RAGFN_HOME, else the checkout's `.ragfn` (git-ignored state, where `make demo` puts models and corpora)."""
    return Path(os.environ.get("RAGFN_HOME") or REPO / ".ragfn").resolve()


def scratch(home: Path, name: str) -> Path:
    """An empty `$RAGFN_HOME/notebooks/<name>` for this run's indexes and files."""
    work = home / "notebooks" / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    return work


def settings(home: Path, work: Path, embed_model: str, **overrides) -> Settings:
    """Settings for a notebook's own index under `work`: RAGFN_* variables and RAGFN_PROFILE apply, but the index,
    the cache and retrieval are always in this process (never a server the reader happens to have configured)."""
    model_path = overrides.pop("embed_model_path", None) or _model_path(home, embed_model)
    return load_settings(**{"home": work, "embed_model": embed_model, "embed_model_path": model_path,
                            "file_roots": [work], "chroma_url": None, "redis_url": None, "retrieve_url": None,
                            "cache_url": None, "trace_file": None, **overrides})


def _model_path(home: Path, name: str) -> Path | None:
    if os.environ.get("RAGFN_EMBED_MODEL_PATH"):
        return Path(os.environ["RAGFN_EMBED_MODEL_PATH"])
    for root in (home, REPO / ".ragfn"):
        if (root / "models" / name.replace("/", "--") / "model.onnx").is_file():
            return root / "models" / name.replace("/", "--")
    return None  # fastembed downloads it (online)


def faq_dir(home: Path) -> Path:
    """RAGFN_NOTEBOOK_FAQ_DIR, else python3.11-doc's FAQ already extracted under RAGFN_HOME or the checkout's
    `.ragfn`, else fetched into RAGFN_HOME/corpora by scripts/fetch_corpus.py (apt-get download)."""
    if os.environ.get("RAGFN_NOTEBOOK_FAQ_DIR"):
        return Path(os.environ["RAGFN_NOTEBOOK_FAQ_DIR"])
    sys.path.insert(0, str(REPO / "scripts"))
    from fetch_corpus import PACKAGE, SOURCES, sources_dir

    for cache in (home / "corpora", REPO / ".ragfn" / "corpora"):
        if (cache / PACKAGE / SOURCES / "faq").is_dir():
            return cache / PACKAGE / SOURCES / "faq"
    return sources_dir(home / "corpora") / "faq"


def eval_set(faq: Path, out: Path, *, small: bool, limit: int | None) -> tuple[Path, list[EvalQuery]]:
    """ragfn.retrieval.evalset's corpus (question headings removed) and labelled queries, from all FAQ files or the
    small ones."""
    sources = out / "faq"
    sources.mkdir(parents=True, exist_ok=True)
    for path in sorted(faq.glob(f"*{SUFFIX}")):
        if not small or path.name[:-len(SUFFIX)] in SMALL_FILES:
            shutil.copyfile(path, sources / path.name)
    build_eval_set(sources, out)
    queries = load_queries(out / "queries.jsonl")
    return out / "corpus", queries[:limit] if limit else queries


def redis_client(url: str):
    """A client for `url` when a Redis answers there, else None (the notebook then uses the in-process cache)."""
    if not url:
        return None
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"no Redis at {url} ({exc}): using the in-process cache")
        return None
    return client


def drop_keys(client, prefix: str) -> int:
    """Delete this notebook's keys (and only those) from a shared Redis database."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    return client.delete(*keys) if keys else 0
