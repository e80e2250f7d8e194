"""A process's settings and the clients built from them, each created on first use and then reused."""

from __future__ import annotations

from functools import cached_property

from ragfn.core.config import Settings
from ragfn.core.errors import ConfigError
from ragfn.eventing.publish import HttpPublisher, Publisher


class Runtime:
    """What a function or the CLI works with. Construction is free; each client is built when first used."""

    def __init__(self, settings: Settings, *, publisher: Publisher | None = None) -> None:
        self.settings = settings
        self._publisher = publisher

    @cached_property
    def reader(self):
        from ragfn.ingest.objects import ObjectReader

        return ObjectReader(self.settings)

    @cached_property
    def embedder(self):
        from ragfn.ingest.embedding import FastEmbedder

        return FastEmbedder.from_settings(self.settings)

    @cached_property
    def index(self):
        """RAGFN_STORE's backend: Chroma (the embedded default) or LanceDB (a folder or a bucket)."""
        if self.settings.store == "lancedb":
            from ragfn.store.lance import LanceIndex

            return LanceIndex(self.settings)
        from ragfn.store.chroma import ChromaIndex

        return ChromaIndex(self.settings)

    @cached_property
    def maintenance(self):
        """The index's scheduled maintenance (functions/maintain), with its metrics in its own registry."""
        from ragfn.store.maintenance import Maintenance, MaintenanceMetrics

        return Maintenance(self.index, self.settings, MaintenanceMetrics())

    @cached_property
    def retriever(self):
        from ragfn.retrieval.dense import DenseRetriever
        from ragfn.retrieval.hybrid import HybridRetriever
        from ragfn.retrieval.lexical import LexicalRetriever
        from ragfn.retrieval.rerank import CrossEncoderReranker

        settings = self.settings
        return HybridRetriever(DenseRetriever(self.index, self.embedder), LexicalRetriever(self.index),
                               fusion=settings.fusion, lexical_weight=settings.lexical_weight,
                               reranker=CrossEncoderReranker.from_settings(settings),
                               rerank_depth=settings.rerank_depth, sections=settings.retrieval_sections,
                               window=settings.retrieval_window, window_pool=settings.retrieval_window_pool)

    @cached_property
    def http(self):
        """One pooled HTTP client for the services this process calls; each request a span that sends `traceparent`."""
        import httpx

        from ragfn.core.telemetry import traced_http_client

        # retries=1 repeats a failed connect only (never a request that reached the server)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        return traced_http_client(transport=httpx.HTTPTransport(retries=1, limits=limits))

    @cached_property
    def service_keys(self):
        """The keys the gateway signs its calls to retrieve and cache-check with, and they verify with."""
        from ragfn.core.errors import ConfigError
        from ragfn.core.service_auth import ServiceKeys

        if self.settings.service_keys_file is None:
            raise ConfigError("RAGFN_SERVICE_KEYS_FILE is not set: retrieve and cache-check take the caller only "
                              "from a token the gateway signs", hint="mount the ragfn-service-keys Secret and point "
                              "RAGFN_SERVICE_KEYS_FILE at it, in the gateway and in retrieve and cache-check")
        return ServiceKeys(self.settings.service_keys_file)

    @cached_property
    def delivery_verifier(self):
        """Checks the token of each event delivery when RAGFN_EVENT_AUDIENCE is set; None otherwise."""
        from ragfn.eventing.delivery_auth import DeliveryVerifier

        return DeliveryVerifier.from_settings(self.settings)

    @cached_property
    def local_retrieval(self):
        """Retrieval in this process; the retrieve function serves this, whatever RAGFN_RETRIEVE_URL says."""
        from ragfn.gateway.backends import LocalRetrieval

        return LocalRetrieval(self.retriever)

    @cached_property
    def retrieval(self):
        """The gateway's retrieval: the retrieve function at RAGFN_RETRIEVE_URL, else in this process."""
        if not self.settings.retrieve_url:
            return self.local_retrieval
        from ragfn.gateway.remote import HttpRetrieval

        return HttpRetrieval(self.settings.retrieve_url, self.http, self.service_keys,
                             timeout_seconds=self.settings.retrieve_timeout_seconds)

    @cached_property
    def local_answer_cache(self):
        from ragfn.gateway.backends import LocalAnswerCache

        return LocalAnswerCache(self.cache, self.embedder)

    @cached_property
    def answer_cache(self):
        """The gateway's cache: the cache-check function at RAGFN_CACHE_URL, else `cache` in this process."""
        if not self.settings.cache_url:
            return self.local_answer_cache
        from ragfn.gateway.remote import HttpAnswerCache

        return HttpAnswerCache(self.settings.cache_url, self.http, self.service_keys,
                               timeout_seconds=self.settings.cache_timeout_seconds)

    @cached_property
    def cache(self):
        """The semantic cache on RAGFN_REDIS_URL, or in this process's memory when it is unset."""
        if self.redis is None:
            from ragfn.cache.memory import MemoryCache

            def versions_of(cited: list[tuple[str, str]]) -> list[str | None]:
                entries = [self.index.ledger_entry(collection, document) for collection, document in cited]
                return [f"{e.state}:{e.version}" if e else None for e in entries]

            return MemoryCache(threshold=self.settings.cache_threshold, ttl_seconds=self.settings.cache_ttl_seconds,
                               versions_of=versions_of)
        from ragfn.cache.redis_cache import RedisCache

        return RedisCache(self.redis, threshold=self.settings.cache_threshold,
                          ttl_seconds=self.settings.cache_ttl_seconds, prefix=self.settings.cache_prefix,
                          max_entries=self.settings.cache_max_entries)

    @cached_property
    def redis(self):
        """One client for cache and rate limits; it fails fast, because a down Redis must only cost the cache."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        from ragfn.core.telemetry import traced_redis

        if not self.settings.redis_url:
            return None
        return traced_redis(redis.Redis.from_url(self.settings.redis_url, socket_timeout=0.5,
                                                 socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 1)))

    @cached_property
    def llm(self):
        """The predictor over the OpenAI protocol when RAGFN_LLM_URL is set, else the extractive engine."""
        from ragfn.llm.client import ExtractiveLLM, OpenAIChatClient

        if not self.settings.llm_url:
            return ExtractiveLLM()
        return OpenAIChatClient(self.settings.llm_url, self.settings.llm_served_name,
                                api_key=self.settings.llm_api_key, read_timeout=self.settings.llm_timeout_seconds,
                                http=self.http)

    @cached_property
    def second_llm(self):
        """The provider asked when the primary cannot answer (RAGFN_LLM_FALLBACK_URL); None when unset."""
        from ragfn.llm.client import OpenAIChatClient

        if not self.settings.llm_fallback_url:
            return None
        return OpenAIChatClient(self.settings.llm_fallback_url, self.settings.llm_fallback_served_name,
                                api_key=self.settings.llm_fallback_api_key,
                                read_timeout=self.settings.llm_timeout_seconds, http=self.http)

    @cached_property
    def answer_gate(self):
        from ragfn.gateway.gate import AnswerGate

        if not self.settings.answer_gate:
            return None
        return AnswerGate(self.settings.answer_gate_min_groundedness, self.settings.answer_gate_keep_cut_offs)

    @cached_property
    def judge_metrics(self):
        """The judge function's Prometheus metrics (ragfn.llm.background_judge), in this runtime's own registry."""
        from ragfn.llm.background_judge import JudgeMetrics

        return JudgeMetrics()

    @cached_property
    def warmth(self):
        """The gateway's view of a remote predictor's warmth; None for the in-process extractive engine."""
        from ragfn.llm.warmup import PredictorWarmth

        if not self.settings.llm_url:
            return None
        llm = self.llm
        return PredictorWarmth(self.http, llm.base_url, headers=llm.headers,
                               fresh_seconds=self.settings.llm_fresh_seconds,
                               give_up_seconds=self.settings.llm_warmup_give_up_seconds)

    @cached_property
    def gateway(self):
        from ragfn.gateway.ask import Gateway

        return Gateway(self.llm, retrieval=self.retrieval, cache=self.answer_cache, second=self.second_llm,
                       gate=self.answer_gate, warmth=self.warmth,
                       cold_wait_seconds=self.settings.llm_cold_wait_seconds, feedback=self.feedback,
                       prompt_version=self.settings.prompt_version)

    @cached_property
    def answer_sampler(self):
        """Sends a share of live answers to the background judge; None unless RAGFN_JUDGE_URL is set. The served
        gateway (ragfn.serve.gateway_app) uses it; a one-shot `ragfn ask` would exit before its sample left."""
        from ragfn.gateway.sampling import AnswerSampler

        if not self.settings.judge_url or self.settings.judge_sample_rate == 0:
            return None
        if not self.settings.sink:
            raise ConfigError("RAGFN_JUDGE_URL is set, but the gateway has no event sink to send sampled answers to",
                              hint="set K_SINK or RAGFN_SINK to the broker (`ragfn dev` and the SinkBinding do), "
                                   "or unset RAGFN_JUDGE_URL")
        return AnswerSampler(HttpPublisher.from_settings(self.settings), self.settings.judge_sample_rate)

    @cached_property
    def judge(self):
        """The background judge's model (functions/judge); a ConfigError without RAGFN_JUDGE_URL."""
        from ragfn.llm.client import OpenAIChatClient
        from ragfn.llm.judge import Judge

        if not self.settings.judge_url:
            raise ConfigError("the judge function has no model to ask: RAGFN_JUDGE_URL is not set",
                              hint="set RAGFN_JUDGE_URL (and RAGFN_JUDGE_SERVED_NAME, RAGFN_JUDGE_API_KEY) to an "
                                   "OpenAI-compatible server")
        return Judge(OpenAIChatClient(self.settings.judge_url, self.settings.judge_served_name,
                                      api_key=self.settings.judge_api_key,
                                      read_timeout=self.settings.judge_timeout_seconds, http=self.http))

    @cached_property
    def feedback(self):
        """Answer ratings in Redis (RAGFN_REDIS_URL); None without Redis: ratings need a store every replica shares."""
        from ragfn.gateway.feedback import FeedbackStore

        if self.redis is None:
            return None
        return FeedbackStore(self.redis, prefix=self.settings.cache_prefix,
                             max_answers=self.settings.feedback_max_answers)

    @cached_property
    def token_counter(self):
        from ragfn.ingest.chunking import load_token_counter

        return load_token_counter(self.settings.resolved_embed_model_path())

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = HttpPublisher.from_settings(self.settings)
        return self._publisher
