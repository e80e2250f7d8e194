"""Profiles: TOML files of tuned settings (`chunk_tokens = 128`) that notebooks write and `ragfn` reads.

`ragfn --profile tuned.toml ...` or `RAGFN_PROFILE=tuned.toml` applies one: its values replace the defaults, and
`RAGFN_*` environment variables still win over it, so a deployment can pin anything a profile says. Keys are
Settings' field names; an unknown key is an error, so a typo cannot silently leave a default in place.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import tomli_w

from ragfn.core.config import PROFILE_ENV, Settings, check_profile_keys, read_profile
from ragfn.core.errors import ConfigError

__all__ = ["PROFILE_ENV", "read_profile", "write_profile"]  # reading lives with the settings it feeds


def write_profile(path: Path, values: dict, *, source: str) -> Path:
    """Write `values` (validated as Settings would take them) to `path`, with a header saying where they came from."""
    path = Path(path)
    check_profile_keys(values, f"profile {path}")
    try:
        Settings.model_validate({**Settings().model_dump(), **values})
    except ValueError as exc:
        raise ConfigError(f"these settings are not valid together: {exc}") from exc
    header = f"# ragfn profile written by {source} on {date.today().isoformat()}\n# apply: ragfn --profile {path.name} ...\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + tomli_w.dumps({k: _plain(v) for k, v in sorted(values.items())}))
    return path


def _plain(value: object) -> object:
    return str(value) if isinstance(value, Path) else value
