"""OpenTelemetry set-up and trace propagation through the CloudEvents `traceparent` extension."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ragfn.config import Settings

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
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
    }


def configure_tracing(settings: Settings, service: str) -> None:
    """Install a tracer provider once per process, unless the host application already installed one."""
    with _CONFIGURE_LOCK:
        if isinstance(trace.get_tracer_provider(), TracerProvider):
            return
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
