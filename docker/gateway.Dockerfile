# syntax=docker/dockerfile:1
# The IIIF gateway: a Falcon ASGI app under uvicorn. Pure Python; no image
# library of any kind (it never decodes a pixel).
#
# Build from the repository root:  docker build -f docker/gateway.Dockerfile -t iiif-stack/gateway .
# The base is pinned by tag; pin it by digest too where the registry is
# reachable:  --build-arg PYTHON_BASE=python:3.11-slim-bookworm@sha256:<digest>
ARG PYTHON_BASE=python:3.11-slim-bookworm

# --- build: a virtualenv with the gateway and its dependencies ---------------
FROM ${PYTHON_BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
COPY proto ./proto
COPY gateway ./gateway
# A plain (non-editable) install: the runtime stage copies only /opt/venv.
RUN /opt/venv/bin/pip install --no-cache-dir --no-compile '.[gateway]' \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- runtime ------------------------------------------------------------------
FROM ${PYTHON_BASE} AS runtime
LABEL org.opencontainers.image.title="iiif-stack gateway" \
      org.opencontainers.image.description="IIIF Image API gateway (HTTP) in front of gRPC decoders" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric user, so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 iiif \
 && useradd --system --uid 10001 --gid iiif --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin iiif
COPY --from=build /opt/venv /opt/venv
# Byte code is compiled at build time; nothing is written at run time, so the
# root filesystem can be mounted read-only (only /tmp needs to be writable).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    IIIF_GATEWAY_HOST=0.0.0.0 \
    IIIF_GATEWAY_PORT=8080
WORKDIR /tmp
USER 10001:10001
EXPOSE 8080
# uvicorn handles SIGTERM itself: in-flight responses get request_timeout_s.
ENTRYPOINT ["python", "-m", "gateway"]
