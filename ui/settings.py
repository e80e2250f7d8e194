"""The chat's settings: `RAGFN_UI_*` environment variables, read once per session."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class UISettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RAGFN_UI_", extra="ignore", frozen=True)

    gateway_url: str = Field("http://127.0.0.1:8091", description="the ask gateway (`ragfn dev` runs it on broker+11)")
    timeout_seconds: float = Field(120.0, gt=0, description="longest wait for one answer or upload")
    upload_wait_seconds: float = Field(600.0, gt=0, description="stop watching an upload that is not indexed by then")
    poll_seconds: float = Field(1.0, gt=0, description="how often upload progress is refreshed")
    link_hosts: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), description="comma-separated hosts whose links in answers and sources are clickable; any "
        "other address is shown as text (ui/safe_markdown.py)")

    @field_validator("link_hosts", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        return frozenset(h.strip().lower() for h in value.split(",") if h.strip()) if isinstance(value, str) else value
