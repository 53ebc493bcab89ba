# syntax=docker/dockerfile:1
# The IIIF decoder: a gRPC server decoding JPEG2000, TIFF and more with
# Debian's libvips42 (linked with OpenJPEG; the pyvips-binary wheel has no
# JPEG2000 loader, so it is deliberately not used).
#
# Build from the repository root:  docker build -f docker/decoder.Dockerfile -t iiif-stack/decoder .
# The base is pinned by tag; pin it by digest too where the registry is
# reachable:  --build-arg PYTHON_BASE=python:3.11-slim-bookworm@sha256:<digest>
ARG PYTHON_BASE=python:3.11-slim-bookworm

# --- build: a virtualenv with the decoder and its dependencies ---------------
FROM ${PYTHON_BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# A C compiler and libjpeg's headers build decoder/native (stored-tile
# mosaics); the runtime needs only libjpeg, which libvips42 brings. cmake
# builds OpenJPEG 2.5.4 (decoder/native/build_openjpeg.py: its source comes
# from PyPI, pinned by SHA-256) into decoder/native/openjpeg.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev libjpeg62-turbo-dev cmake make \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml ./
COPY proto ./proto
COPY decoder ./decoder
# pyvips runs in cffi ABI mode: it needs libvips only at run time. The native
# module and OpenJPEG are built into the source tree first, so the install
# packages them.
RUN /opt/venv/bin/pip install --no-cache-dir 'cffi>=1.15' \
 && PYTHONPATH=/src /opt/venv/bin/python -m decoder.native.build \
 && PYTHONPATH=/src /opt/venv/bin/python -m decoder.native.build_openjpeg \
 && /opt/venv/bin/pip install --no-cache-dir --no-compile '.[decoder]' \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# --- runtime ------------------------------------------------------------------
FROM ${PYTHON_BASE} AS runtime
LABEL org.opencontainers.image.title="iiif-stack decoder" \
      org.opencontainers.image.description="IIIF decoder: gRPC, libvips with OpenJPEG" \
      org.opencontainers.image.licenses="Apache-2.0"
# The Debian release is pinned by the base image's tag; package versions are
# not, so that a rebuild picks up bookworm's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libvips42 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 iiif \
 && useradd --system --uid 10001 --gid iiif --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin iiif
COPY --from=build /opt/venv /opt/venv
# Fail the build, not the first request, when libvips lacks its JPEG2000 loader
# or the native module or OpenJPEG build was not packaged.
RUN /opt/venv/bin/python -c "import pyvips, sys; sys.exit(0 if pyvips.type_find('VipsForeign', 'jp2kload') else 'libvips has no jp2kload')" \
 && /opt/venv/bin/python -c "import sys; from decoder.native import jpeg_mosaic; sys.exit(0 if jpeg_mosaic.available() else 'decoder.native is not built')" \
 && /opt/venv/bin/python -c "import sys; from decoder.engines import openjpeg as o; sys.exit(0 if o.BUNDLED_LIBRARY.is_file() and o.openjpeg().opj_version() == b'2.5.4' else 'OpenJPEG 2.5.4 is not packaged')"
# Byte code is compiled at build time; libvips spills to /tmp (TMPDIR), the
# only path that has to be writable: the root filesystem can be read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp \
    IIIF_DECODER_HOST=0.0.0.0 \
    IIIF_DECODER_PORT=50051 \
    IIIF_DECODER_METRICS_PORT=9090 \
    IIIF_DECODER_IMAGE_ROOT=/srv/images
WORKDIR /tmp
USER 10001:10001
# 50051: gRPC (Decoder, grpc.health.v1, reflection); 9090: Prometheus metrics.
EXPOSE 50051 9090
# SIGTERM: health turns NOT_SERVING, in-flight calls get IIIF_DECODER_GRACE_PERIOD_S.
ENTRYPOINT ["python", "-m", "decoder"]
