"""Profiles: TOML files of tuned settings (`chunk_tokens = 128`) that notebooks write and `ragfn` reads.

`ragfn --profile tuned.toml ...` or `RAGFN_PROFILE=tuned.toml` applies one: its values replace the defaults, and
`RAGFN_*` environment variables still win over it, so a deployment can pin anything a profile says. Keys are
Settings' field names; an unknown key is an error, so a typo cannot silently leave a default in place.
"""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path

import tomli_w

from ragfn.errors import ConfigError

PROFILE_ENV = "RAGFN_PROFILE"
_NOT_PROFILE = {"home"}  # where state lives is a deployment's choice, not a tuning result


def read_profile(path: Path) -> dict:
    try:
        values = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"profile {path} does not exist", hint=f"check --profile / {PROFILE_ENV}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile {path} is not valid TOML: {exc}") from exc
    _check_keys(values, f"profile {path}")
    return values


def _check_keys(values: dict, what: str) -> None:
    from ragfn.config import Settings

    unknown = sorted(set(values) - set(Settings.model_fields) | set(values) & _NOT_PROFILE)
    if unknown:
        raise ConfigError(f"{what} sets unknown or non-tunable settings: {', '.join(unknown)}",
                          hint="keys are ragfn setting names in lower case without RAGFN_, e.g. chunk_tokens = 128")


def write_profile(path: Path, values: dict, *, source: str) -> Path:
    """Write `values` (validated as Settings would take them) to `path`, with a header saying where they came from."""
    from ragfn.config import Settings

    path = Path(path)
    _check_keys(values, f"profile {path}")
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
