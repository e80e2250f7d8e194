"""The chat side of `ragfn dev`: the ask gateway in front of the dev functions, its local API key, and the UI."""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

from ragfn.core.auth import ApiKeys
from ragfn.core.config import Settings

DEV_KEY_NAME = "dev"


def dev_key_path(settings: Settings) -> Path:
    return settings.home / "dev-key"


def _kept_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret in `path`, made by `make` the first time and kept across restarts. The file is created 0600 from
    the start: a secret must not be readable by others even for an instant."""
    if not path.is_file() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(make() + "\n")
    return path.read_text().strip()


def ensure_service_keys(settings: Settings) -> Path:
    """The key file the dev gateway signs its calls to retrieve and cache-check with (ragfn.core.service_auth):
    RAGFN_SERVICE_KEYS_FILE when set, else one made under RAGFN_HOME and kept across restarts."""
    if settings.service_keys_file is not None:
        return settings.service_keys_file
    path = settings.home / "service-keys"
    _kept_secret(path, lambda: secrets.token_hex(32))
    return path


def ensure_llm_key(settings: Settings) -> str:
    """The key between the dev gateway and the dev predictor (RAGFN_LLM_API_KEY on both), kept under RAGFN_HOME."""
    return _kept_secret(settings.home / "llm-key", lambda: secrets.token_hex(32))


def ensure_dev_key(settings: Settings) -> tuple[Path, str]:
    """(key file, plaintext key) for the untenanted space, which `ragfn ingest` without --tenant fills.

    Kept across restarts so a signed-in browser stays signed in; only its digest goes into the key file."""
    key = _kept_secret(dev_key_path(settings), lambda: f"rfk-{secrets.token_urlsafe(24)}")
    keys_file = settings.home / "dev-keys.json"
    keys_file.write_text(json.dumps({ApiKeys.hash(key): {"tenant": "", "groups": [], "name": DEV_KEY_NAME}}))
    return keys_file, key


def gateway_env(settings: Settings, functions: dict[str, str], predictor: str | None) -> tuple[dict[str, str], str | None]:
    """The ask gateway's settings in dev, and the dev key when dev made one (None when credentials are configured)."""
    # a RAGFN_RETRIEVE_URL or RAGFN_CACHE_URL of the caller's wins: a service of their own, or a proxy in front of
    # dev's (bench/chaos.py slows retrieve down through one)
    env = {"RAGFN_RETRIEVE_URL": settings.retrieve_url or functions["ragfn-retrieve"],
           "RAGFN_CACHE_URL": settings.cache_url or functions["ragfn-cache-check"]}
    if predictor and not settings.llm_url:
        env |= {"RAGFN_LLM_URL": predictor, "RAGFN_LLM_API_KEY": ensure_llm_key(settings)}
    if settings.api_keys_file is not None or settings.jwt_secret is not None:
        return env, None
    keys_file, key = ensure_dev_key(settings)
    return env | {"RAGFN_API_KEYS_FILE": str(keys_file.resolve())}, key


def ui_available() -> bool:
    return importlib.util.find_spec("streamlit") is not None  # ragfn[ui]


def ui_command(root: Path, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(root / "ui" / "app.py"), "--server.address", host,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", "--client.toolbarMode", "minimal"]
