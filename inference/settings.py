"""The predictor's settings (`RAGFN_LLM_*`) and the engine they choose; read once, in `python -m inference`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ragfn.core.errors import ConfigError


class PredictorSettings(BaseSettings):
    """Every field is `RAGFN_LLM_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RAGFN_LLM_", extra="ignore", frozen=True)

    engine: Literal["llamacpp", "vllm", "openai", "extractive"] = "llamacpp"
    model: str = Field("", description="GGUF path (llamacpp), model id or folder (vllm), upstream model (openai)")
    concurrency: int | None = Field(None, ge=1, description="generations at once; the engine's own default if unset")
    max_queue: int = Field(64, ge=0, description="requests that may wait for a slot; more are refused with 503")
    queue_timeout_seconds: float = Field(120.0, gt=0, description="longest wait for a slot (includes model loading)")
    context_tokens: int = Field(4096, ge=128, description="llama.cpp context window (SmolLM2 was trained on 8192)")
    threads: int | None = Field(None, ge=1, description="llama.cpp threads; all cores when unset")
    # llama.cpp's sampling penalties: none (llama.cpp's own defaults), chosen by measurement on both labelled sets
    # (docs/benchmarks.md, Answer quality): every penalty cost groundedness and what users see
    repeat_penalty: float = Field(1.0, ge=1.0, le=2.0, description="llama.cpp: divide the odds of recent tokens")
    frequency_penalty: float = Field(0.0, ge=0.0, le=2.0, description="llama.cpp: penalise tokens by their count")
    presence_penalty: float = Field(0.0, ge=0.0, le=2.0, description="llama.cpp: penalise tokens already used")
    stop_on_loop: bool = Field(True, description="llama.cpp: stop generating once the answer is a repetition loop "
                                                 "(finish_reason stop, stop_reason repetition)")
    api_key: SecretStr | None = Field(None, description="every request but health and metrics needs it as a bearer "
                                      "token (inference/guard.py); the gateway sends the same RAGFN_LLM_API_KEY")
    upstream_url: str | None = Field(None, description="OpenAI-compatible base URL for the openai engine")
    upstream_api_key: str | None = None
    upstream_retries: int = Field(3, ge=0, le=10, description="retries before the first token (connect, 429, 5xx)")
    upstream_timeout_seconds: float = Field(60.0, gt=0)
    vllm_args: dict = Field(default_factory=dict, description="JSON: extra AsyncEngineArgs, e.g. {\"max_model_len\": 4096}")

    @model_validator(mode="after")
    def _engine_needs(self) -> PredictorSettings:
        if self.engine == "llamacpp" and not self.model:
            raise ConfigError("RAGFN_LLM_ENGINE=llamacpp needs RAGFN_LLM_MODEL, the path of a .gguf file",
                              hint="python scripts/fetch_llm.py puts SmolLM2-135M-Instruct under .ragfn/models")
        if self.engine == "vllm" and not self.model:
            raise ConfigError("RAGFN_LLM_ENGINE=vllm needs RAGFN_LLM_MODEL, a model id or folder")
        if self.engine == "openai" and not self.upstream_url:
            raise ConfigError("RAGFN_LLM_ENGINE=openai needs RAGFN_LLM_UPSTREAM_URL",
                              hint="the upstream's OpenAI base URL, e.g. http://vllm:8000/v1")
        return self


def build_engine(settings: PredictorSettings):
    """The engine `settings` name, not yet loaded (loading is the predictor's `load()`). Each engine declares its
    own concurrency; RAGFN_LLM_CONCURRENCY overrides it in the predictor."""
    if settings.engine == "llamacpp":
        from inference.engines import LlamaCppEngine

        if not Path(settings.model).is_file():
            raise ConfigError(f"RAGFN_LLM_MODEL={settings.model} is not a file",
                              hint="point it at a .gguf file; python scripts/fetch_llm.py fetches SmolLM2")

        return LlamaCppEngine(Path(settings.model), context_tokens=settings.context_tokens, threads=settings.threads,
                              penalties={"repeat_penalty": settings.repeat_penalty,
                                         "frequency_penalty": settings.frequency_penalty,
                                         "presence_penalty": settings.presence_penalty},
                              stop_on_loop=settings.stop_on_loop)
    if settings.engine == "extractive":
        from inference.engines import ExtractiveEngine

        return ExtractiveEngine()
    if settings.engine == "openai":
        from inference.upstream import UpstreamEngine

        return UpstreamEngine(settings.upstream_url, settings.model or "default", api_key=settings.upstream_api_key,
                              retries=settings.upstream_retries, timeout=settings.upstream_timeout_seconds)
    from inference.vllm_engine import VLLMEngine

    return VLLMEngine(settings.model, engine_args=settings.vllm_args)
