"""OpenTelemetry set-up, and trace propagation: the CloudEvents `traceparent` extension by hand, HTTP and Redis
client spans from the OpenTelemetry instrumentation packages."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import TypeVar

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ragfn.core.config import Settings

T = TypeVar("T")
_PROPAGATOR = TraceContextTextMapPropagator()
_CONFIGURE_LOCK = threading.Lock()


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a file, one JSON object a line; several processes may share the file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(json.dumps(span_record(span)) + "\n" for span in spans)
        with self.path.open("a") as handle:  # O_APPEND writes of one line are atomic enough for tests
            handle.write(lines)
        return SpanExportResult.SUCCESS


def span_record(span: ReadableSpan) -> dict:
    return {
        "name": span.name,
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "service": span.resource.attributes.get("service.name"),
        "kind": span.kind.name,
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


def configure_tracing(settings: Settings, service: str) -> None:
    """Install a tracer provider once per process, unless the host application already installed one."""
    with _CONFIGURE_LOCK:
        if isinstance(trace.get_tracer_provider(), TracerProvider):
            return
        # should an operator capture request headers on HTTP spans, credentials are still masked
        os.environ.setdefault("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS",
                              "authorization,x-api-key,api-key,cookie")
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        if settings.trace_file:
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(settings.trace_file)))
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)


def tracer() -> trace.Tracer:
    return trace.get_tracer("ragfn")


def context_from_event(attributes: Mapping[str, object]) -> context.Context:
    carrier = {k: str(attributes[k]) for k in ("traceparent", "tracestate") if attributes.get(k)}
    return _PROPAGATOR.extract(carrier)


def inject_trace(attributes: MutableMapping[str, object]) -> None:
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    attributes.update(carrier)


def context_from_headers(headers: Mapping[str, str]) -> context.Context:
    """The caller's trace context from HTTP headers (any case), for a plain JSON request or response stream."""
    return context_from_event({k.lower(): v for k, v in headers.items()})


def traced_http_client(**options):
    """A pooled httpx.Client whose every request is a CLIENT span that carries the trace on in `traceparent`
    (opentelemetry-instrumentation-httpx around the transport); share one per process."""
    import httpx
    from opentelemetry.instrumentation.httpx import SyncOpenTelemetryTransport

    transport = options.pop("transport", None) or httpx.HTTPTransport()
    return httpx.Client(transport=SyncOpenTelemetryTransport(transport), **options)


def traced_redis(client):
    """A Redis client whose commands are CLIENT spans (opentelemetry-instrumentation-redis; arguments shown as `?`)."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor.instrument_client(client)
    return client


def iterate_in_span(name: str, produce: Callable[[trace.Span], Iterator[T]], *,
                    parent: context.Context | None = None, kind: trace.SpanKind = trace.SpanKind.INTERNAL,
                    attributes: Mapping[str, object] | None = None) -> Iterator[T]:
    """Iterate `produce(span)` inside one span that stays open until the iterator is exhausted or closed.

    A response stream is consumed by the web server between items, so the span is made current only while an item
    is being produced and never across a `yield`: attaching a context in one `next()` and detaching it in another
    would leak it into the server's code. The span starts on the first `next()`, so an unconsumed stream leaves none
    open. A consumer that goes away (`close()`) closes `produce`'s iterator and marks the span `rag.cancelled`.
    """
    span = tracer().start_span(name, context=parent, kind=kind, attributes=attributes)
    items: Iterator[T] | None = None
    try:
        with trace.use_span(span):
            items = produce(span)
        while True:
            with trace.use_span(span):
                try:
                    item = next(items)
                except StopIteration:
                    return
            yield item
    except GeneratorExit:
        span.set_attribute("rag.cancelled", True)
        raise
    finally:
        try:
            if items is not None:
                with trace.use_span(span):
                    getattr(items, "close", lambda: None)()
        finally:
            span.end()
