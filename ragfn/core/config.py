"""Settings read from `RAGFN_*` environment variables, at the edge only; the library takes them as arguments."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from ragfn.core.errors import BadEvent, ConfigError
from ragfn.core.uris import parse_uri

OFFLINE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PROFILE_ENV = "RAGFN_PROFILE"
_NOT_PROFILE = {"home"}  # where state lives is a deployment's choice, not a tuning result


class Settings(BaseSettings):
    """Everything a ragfn process can be told. Every field is `RAGFN_<NAME>` in the environment."""

    model_config = SettingsConfigDict(env_prefix="RAGFN_", extra="ignore", frozen=True)

    home: Path = Field(Path(".ragfn"), description="all local state: Chroma, dead letters, model folders")
    collection: str = "default"

    embed_model: str = Field("BAAI/bge-small-en-v1.5", description="fastembed model name")
    embed_model_path: Path | None = Field(None, description="local ONNX folder; skips the model download")
    embed_batch_size: int = Field(32, ge=1, le=1024)
    embed_threads: int | None = Field(None, ge=1, description="onnxruntime threads; all cores when unset")

    store: Literal["chroma", "lancedb"] = Field("chroma", description="the index backend: chroma (embedded, or "
                                                "`chroma run` at RAGFN_CHROMA_URL) or lancedb (a folder or a bucket)")
    chroma_url: str | None = Field(None, description="Chroma server URL; embedded PersistentClient when unset")
    lancedb_uri: str | None = Field(None, description="LanceDB's tables: a folder, s3://bucket/prefix or gs://...; "
                                    "<RAGFN_HOME>/lancedb when unset. Credentials from the usual AWS_* / GOOGLE_* "
                                    "variables, an S3-compatible endpoint from RAGFN_S3_ENDPOINT_URL")
    lancedb_refresh_seconds: float = Field(1.0, ge=0, le=60, description="how stale a LanceDB reader may be: it "
                                           "looks for other replicas' commits at most this often (0 = every read)")
    lancedb_keep_versions_seconds: float = Field(3600.0, ge=60, description="maintenance keeps a LanceDB table's "
                                                 "old versions this long (a reader still on one needs its files)")
    maintenance_budget_seconds: float = Field(240.0, gt=0, le=3000, description="one maintenance run's time; "
                                              "collections it does not reach come first next run")
    maintenance_interval_seconds: float = Field(300.0, ge=10, description="how often `ragfn dev` pings the "
                                                "maintain function (the cluster's PingSource has its own schedule)")
    lancedb_vector_index_rows: int = Field(100_000, ge=1000, description="a LanceDB table gets its vector index "
                                           "(IVF-HNSW-SQ) at this many rows; below it vector search is exact")
    redis_url: str | None = Field(None, description="Redis for the semantic cache, e.g. redis://127.0.0.1:6379/0")
    cache_threshold: float = Field(0.9, gt=0, le=1, description="cosine similarity a semantic cache hit needs")
    cache_ttl_seconds: int = Field(86400, ge=1)
    cache_max_entries: int = Field(10_000, ge=1, description="answers kept per cache scope (tenant, groups, "
                                   "collection, model, prompt); the oldest go first")
    feedback_max_answers: int = Field(20_000, ge=1, description="answers the gateway remembers per tenant for "
                                      "ratings (7 days at most); the oldest go first")
    cache_prefix: str = Field("rc", min_length=1, pattern=r"^[\w.-]+$", description="key prefix of the Redis cache")

    api_keys_file: Path | None = Field(None, description="JSON: sha256 of each API key -> tenant, groups, name")
    jwt_secret: str | None = Field(None, description="HS256 secret; enables JWT bearer tokens with tenant/groups")
    jwt_audience: str | None = None
    sender_keys_file: Path | None = Field(None, description="who may send bucket notifications to bucket-events, "
                                          "and about which prefixes (ragfn.ingest.senders); anyone when unset")
    pubsub_audience: str | None = Field(None, description="the audience of Pub/Sub push OIDC tokens (bucket-events)")
    pubsub_jwks_url: str = Field("https://www.googleapis.com/oauth2/v3/certs", description="Google's token keys")
    service_keys_file: Path | None = Field(None, description="HS256 keys, one per line, for the gateway's signed "
                                           "calls to retrieve and cache-check (ragfn.core.service_auth)")
    event_audience: str | None = Field(None, description="this function's audience in Knative's event deliveries "
                                       "(its Trigger's subscriber.audience): when set, a delivery needs a valid "
                                       "OIDC token (ragfn.eventing.delivery_auth)")
    event_namespace: str | None = Field(None, description="the namespace of the identities that may deliver events")
    event_senders: str | None = Field(None, description="comma-separated service account names (fnmatch patterns) "
                                      "in RAGFN_EVENT_NAMESPACE that may deliver events to this function")
    event_issuer: str | None = Field(None, description="the deliveries' token issuer; read from the OpenID "
                                     "configuration beside RAGFN_EVENT_JWKS_URL when unset")
    event_jwks_url: str = Field("https://kubernetes.default.svc/openid/v1/jwks", description="the issuer's signing "
                                "keys: the cluster's service-account issuer by default, or a file path")
    event_jwks_token_file: Path | None = Field(None, description="a projected token to fetch the keys with")
    event_jwks_ca_file: Path | None = Field(None, description="the CA bundle of RAGFN_EVENT_JWKS_URL's server")
    sink_token_file: Path = Field(Path("/oidc/token"), description="the OIDC token sent with events published to "
                                  "K_SINK, when the file exists (Knative's SinkBinding mounts it there)")
    rate_limit: int = Field(60, ge=1, description="requests per tenant per window at the ask gateway")
    rate_window_seconds: float = Field(60.0, gt=0)
    rate_limit_fail: Literal["open", "closed"] = Field("open", description="with Redis down or refusing writes: "
                                                      "answer without a limit (open), or refuse with a 503 (closed)")
    read_rate_limit: int = Field(120, ge=1, description="reads per caller per window of the routes a chat polls "
                                 "(/v1/me, upload status), which scan ledgers and dead letters; apart from questions")

    llm_url: str | None = Field(None, description="OpenAI-compatible base URL (the predictor); extractive when unset")
    llm_served_name: str = Field("ragfn", description="the model name the predictor serves (its --model_name)")
    llm_api_key: str | None = None
    llm_timeout_seconds: float = Field(30.0, gt=0)
    llm_cold_wait_seconds: float = Field(1.0, ge=0, description="how long a question waits for a cold predictor "
                                         "before the extractive engine answers it (marked cold-start)")
    llm_fresh_seconds: float = Field(60.0, gt=0, description="trust the predictor's last answer this long; then "
                                     "probe first (Knative may have scaled it to zero)")
    llm_warmup_give_up_seconds: float = Field(600.0, gt=0, description="a cold predictor that is not ready after "
                                              "this long is reported down (llm-unavailable), not warming up")
    llm_fallback_url: str | None = Field(None, description="a second OpenAI-compatible model, asked when the "
                                         "primary is cold beyond its wait, down, rate-limited or refusing")
    llm_fallback_served_name: str = Field("ragfn", description="the model name the fallback serves")
    llm_fallback_api_key: str | None = None
    prompt_version: str = Field("v2", description="the prompt the gateway asks models with (ragfn.llm.client.PROMPTS: "
                                "v2 cites, v3 quotes); part of the cache scope")
    answer_gate: bool = Field(True, description="check each model answer before it is final (loops, useless "
                              "cut-offs, unsupported sentences); a failing one is replaced by the extractive answer")
    answer_gate_min_groundedness: float = Field(0.5, ge=0, le=1, description="the share of a model answer's "
                                                "sentences the passages must support to pass the gate")
    answer_gate_keep_cut_offs: bool = Field(False, description="let an answer cut off at max_tokens pass the gate "
                                            "when it said something supported (by default a cut-off fails)")
    judge_url: str | None = Field(None, description="OpenAI-compatible base URL of the background judge's model; "
                                  "live answers are sampled to the judge function only when it is set")
    judge_served_name: str = Field("ragfn", description="the model name the judge serves")
    judge_api_key: str | None = None
    judge_sample_rate: float = Field(0.05, ge=0, le=1, description="the share of live answers the gateway sends "
                                     "to the background judge (when RAGFN_JUDGE_URL is set)")
    judge_timeout_seconds: float = Field(60.0, gt=0, le=110, description="the judge function's limit for one "
                                         "verdict (under its Knative Service's 120 s request timeout)")
    keepalive_schedule: str | None = Field(None, description="cron (5 fields, local time) of predictor warm-up "
                                           "pings from the gateway; the cluster uses a PingSource instead")

    retrieve_url: str | None = Field(None, description="the retrieve function's URL; retrieval in-process when unset")
    retrieve_timeout_seconds: float = Field(10.0, gt=0, description="the gateway's limit for one retrieve call")
    cache_url: str | None = Field(None, description="the cache-check function's URL; cache in-process when unset")
    cache_timeout_seconds: float = Field(2.0, gt=0, description="the gateway's limit for one cache-check call")

    fusion: Literal["scores", "rrf"] = Field("scores", description="how hybrid mode fuses dense and BM25 lists")
    lexical_weight: float = Field(0.3, ge=0, description="BM25's weight in hybrid fusion (dense is 1)")
    retrieval_sections: Literal["off", "max", "sum", "fuse"] = Field(
        "off", description="hybrid: rank chunks' sections (small-to-big) by their best chunk, a decayed sum, or "
        "section-level fusion; off keeps chunk order (ragfn.retrieval.sections, docs/benchmarks.md)")
    retrieval_window: float = Field(0.0, ge=0, le=4, description="hybrid: each chunk also scores this share of its "
                                    "adjacent chunks' fused scores (0 = off; ragfn.retrieval.window)")
    retrieval_window_pool: Literal["max", "mean"] = Field("max", description="how the two neighbours combine")
    rerank_model: str | None = Field(None, description="fastembed cross-encoder, e.g. Xenova/ms-marco-MiniLM-L-6-v2")
    rerank_model_path: Path | None = Field(None, description="local ONNX folder for the reranker (no download)")
    rerank_depth: int = Field(30, ge=1, le=1000, description="candidates the reranker reorders")

    # 96/16: on the FAQ evaluation set small chunks rank best with MiniLM (trained on 128-token passages): hybrid
    # nDCG@10 0.784 at 128, 0.795 at 96, 0.799 at 64 (docs/benchmarks.md); 96 keeps passages readable as context.
    chunk_tokens: int = Field(96, ge=16, le=8192, description="target chunk size in embedder tokens")
    chunk_overlap_tokens: int = Field(16, ge=0)
    max_object_bytes: int = Field(50 * 1024 * 1024, ge=1)
    max_chunks_per_object: int = Field(20_000, ge=1, description="an object that chunks into more is refused before "
                                       "anything is embedded (20,000 chunks: a 2,000-page book, ~4 hours of CPU "
                                       "embedding)")
    max_event_bytes: int = Field(256 * 1024, ge=4096, description="budget for one outgoing event's JSON")

    file_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list, description="folders file:// events may read; cwd when empty")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto)")
    upload_uri: str | None = Field(None, description="where the gateway stores uploaded files, e.g. "
                                   "s3://bucket/uploads/; file://<RAGFN_HOME>/uploads/ when unset")

    sink: str | None = Field(None, validation_alias=AliasChoices("RAGFN_SINK", "K_SINK"),
                             description="where fan-out events go; Knative's SinkBinding sets K_SINK")
    trace_file: Path | None = Field(None, description="append finished spans as JSON lines (local debugging, tests)")

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # precedence: arguments, then RAGFN_* variables, then the profile (RAGFN_PROFILE), then the defaults
        return init_settings, env_settings, _ProfileSource(settings_cls), dotenv_settings, file_secret_settings

    @field_validator("file_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(",") if part.strip()]
        return value

    @field_validator("upload_uri")
    @classmethod
    def _check_upload_uri(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                parse_uri(value.strip(), root=True)
            except BadEvent as exc:  # a setting, not a request: report it as the settings' ValueError
                raise ValueError(f"RAGFN_UPLOAD_URI: {exc}") from exc
        return value.strip() if value is not None else None

    @field_validator("store", mode="before")
    @classmethod
    def _check_store(cls, value: object) -> object:
        if isinstance(value, str) and value.strip().lower() not in ("chroma", "lancedb"):
            raise ValueError(f"RAGFN_STORE={value!r} is not a store ragfn has: use chroma (the embedded default, or "
                             "`chroma run` at RAGFN_CHROMA_URL) or lancedb (RAGFN_LANCEDB_URI)")
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("lancedb_uri")
    @classmethod
    def _check_lancedb_uri(cls, value: str | None) -> str | None:
        if value is not None:
            value = value.strip()
            scheme = value.split("://", 1)[0] if "://" in value else "file"
            if not value or scheme not in ("file", "s3", "gs", "az", "memory"):
                raise ValueError(f"RAGFN_LANCEDB_URI={value!r}: use a folder, s3://bucket/prefix or gs://bucket/prefix")
        return value

    @field_validator("llm_url", "llm_fallback_url", "judge_url")
    @classmethod
    def _check_llm_url(cls, value: str | None, info) -> str | None:
        if value:
            import httpx

            try:
                url = httpx.URL(value)
            except httpx.InvalidURL as exc:
                raise ValueError(f"RAGFN_{info.field_name.upper()} is not a URL: {exc}") from exc
            if url.scheme not in ("http", "https") or not url.host:
                raise ValueError(f"RAGFN_{info.field_name.upper()} must be an http(s) URL, e.g. http://predictor/v1")
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.chunk_overlap_tokens >= self.chunk_tokens:
            raise ValueError("RAGFN_CHUNK_OVERLAP_TOKENS must be smaller than RAGFN_CHUNK_TOKENS")
        if self.llm_fallback_url and not self.llm_url:
            raise ValueError("RAGFN_LLM_FALLBACK_URL is set without RAGFN_LLM_URL: the fallback backs up a primary "
                             "model; set RAGFN_LLM_URL (to the fallback's URL, if it is the only model)")
        return self

    @property
    def chroma_path(self) -> Path:
        return self.home / "chroma"

    def resolved_lancedb_uri(self) -> str:
        if self.lancedb_uri is None:
            return str((self.home / "lancedb").resolve())
        return self.lancedb_uri.removeprefix("file://")

    @property
    def dead_letter_path(self) -> Path:
        return self.home / "dead-letter"

    def resolved_file_roots(self) -> list[Path]:
        roots = [root.resolve() for root in (self.file_roots or [Path.cwd()])]
        upload = self.resolved_upload_uri()
        if upload.startswith("file://"):  # the chunk function must read what the gateway stored
            folder = Path(upload.removeprefix("file://")).resolve()
            roots += [] if folder in roots else [folder]
        return roots

    def resolved_upload_uri(self) -> str:
        """The folder or key prefix for uploads, as a URI ending in '/' (a file:// folder made absolute)."""
        if self.upload_uri is None:
            return f"file://{(self.home / 'uploads').resolve()}/"
        scheme, bucket, key = parse_uri(self.upload_uri, root=True)
        if scheme == "file":
            return f"file://{Path(key).resolve()}/"
        return f"{scheme}://{bucket}/" + (key.strip("/") + "/" if key.strip("/") else "")

    def resolved_embed_model_path(self) -> Path | None:
        """The configured folder, or the one `scripts/fetch_models.py` assembles under RAGFN_HOME/models."""
        if self.embed_model_path is not None:
            if not (self.embed_model_path / "model.onnx").is_file():
                raise ConfigError(f"RAGFN_EMBED_MODEL_PATH={self.embed_model_path} has no model.onnx",
                                  hint="run `python scripts/fetch_models.py` or point it at a fastembed ONNX folder")
            return self.embed_model_path
        candidate = self.home / "models" / self.embed_model.replace("/", "--")
        return candidate if (candidate / "model.onnx").is_file() else None


class _ProfileSource(PydanticBaseSettingsSource):
    """The TOML profile named by RAGFN_PROFILE (written by `ragfn.core.profile`), if any."""

    def get_field_value(self, field, field_name):  # pragma: no cover - __call__ reads the whole file at once
        return None, field_name, False

    def __call__(self) -> dict:
        path = os.environ.get(PROFILE_ENV)
        return read_profile(Path(path)) if path else {}


def read_profile(path: Path) -> dict:
    try:
        values = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"profile {path} does not exist", hint=f"check --profile / {PROFILE_ENV}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"profile {path} is not valid TOML: {exc}") from exc
    check_profile_keys(values, f"profile {path}")
    return values


def check_profile_keys(values: dict, what: str) -> None:
    unknown = sorted(set(values) - set(Settings.model_fields) | set(values) & _NOT_PROFILE)
    if unknown:
        raise ConfigError(f"{what} sets unknown or non-tunable settings: {', '.join(unknown)}",
                          hint="keys are ragfn setting names in lower case without RAGFN_, e.g. chunk_tokens = 128")


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)
    except (ValueError, SettingsError) as exc:
        raise ConfigError(f"invalid ragfn settings: {exc}", hint="check the RAGFN_* environment variables") from exc
