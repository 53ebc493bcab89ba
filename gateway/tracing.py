"""OpenTelemetry for the gateway, off unless IIIF_GATEWAY_TRACING is set.

Spans start at the ASGI edge (the Falcon instrumentation only patches WSGI
apps, so the ASGI middleware wraps the whole app) and continue into the gRPC
client, whose interceptor passes the trace context to the decoder. Exporter
settings come from the standard OTEL_EXPORTER_OTLP_* variables.
"""

from __future__ import annotations

from typing import Literal

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from gateway.disconnect import ASGIApp


def _exporter(kind: Literal["otlp", "console"]) -> SpanExporter:
    if kind == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def enable_tracing(service_name: str, exporter: Literal["otlp", "console"]) -> None:
    """Install the tracer provider and instrument outgoing gRPC; call before
    the decoder channel is created."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(_exporter(exporter)))
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorClient().instrument()  # type: ignore[no-untyped-call]


def traced(app: ASGIApp) -> ASGIApp:
    """`app` wrapped so every HTTP request opens a server span."""
    return OpenTelemetryMiddleware(app)
