"""OpenTelemetry for the decoder, off unless IIIF_DECODER_TRACING is set.

The gRPC server interceptor continues the gateway's trace; the aiohttp client
instrumentation (aiobotocore speaks HTTP through aiohttp) adds one span per
S3 request, so a trace runs from the HTTP request to the S3 GETs. Exporter
settings come from the standard OTEL_EXPORTER_OTLP_* variables.
"""

from __future__ import annotations

from typing import Literal

from opentelemetry import trace
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorServer
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter


def _exporter(kind: Literal["otlp", "console"]) -> SpanExporter:
    if kind == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def enable_tracing(service_name: str, exporter: Literal["otlp", "console"]) -> TracerProvider:
    """Install the tracer provider and instrument gRPC serving and S3 HTTP
    calls; call before the gRPC server and the S3 client are created. Shut the
    returned provider down at exit to flush spans."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(_exporter(exporter)))
    trace.set_tracer_provider(provider)
    GrpcAioInstrumentorServer().instrument()  # type: ignore[no-untyped-call]
    AioHttpClientInstrumentor().instrument()
    return provider
