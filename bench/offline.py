"""The benchmarks' one way to find the offline embedding model (scripts/fetch_models.py assembles it)."""

from __future__ import annotations

import sys
from pathlib import Path

from ragfn.core.config import OFFLINE_MODEL, Settings


def offline_model_dir(home: Path) -> Path:
    """The MiniLM folder under HOME/models; exits with how to make it when it is missing."""
    model_dir = Settings(home=home, embed_model=OFFLINE_MODEL).resolved_embed_model_path()
    if model_dir is None:
        sys.exit(f"error: no offline model under {home / 'models'}; run `python scripts/fetch_models.py`")
    return model_dir
