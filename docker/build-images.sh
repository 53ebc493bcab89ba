#!/usr/bin/env bash
# Builds the gateway and decoder images with whichever container engine runs
# here (docker, else podman; CONTAINER_ENGINE overrides). Where none runs, it
# says so and exits 0, so `make images` is harmless on machines without one.
#
#   IMAGE_PREFIX  image name prefix (default iiif-stack; e.g. ghcr.io/org/iiif-stack)
#   IMAGE_TAG     tag (default: git describe, else "dev")
#   PYTHON_BASE   base image, e.g. python:3.11-slim-bookworm@sha256:<digest>
set -euo pipefail
cd "$(dirname "$0")/.."

engine="${CONTAINER_ENGINE:-}"
if [ -z "$engine" ]; then
  for candidate in docker podman; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" info >/dev/null 2>&1; then
      engine="$candidate"
      break
    fi
  done
fi
if [ -z "$engine" ] || ! command -v "$engine" >/dev/null 2>&1 || ! "$engine" info >/dev/null 2>&1; then
  echo "make images: SKIPPED - no running container engine (docker or podman) on this machine;" \
       "the Dockerfiles are still checked by tests/chart/test_dockerfiles.py" >&2
  exit 0
fi

prefix="${IMAGE_PREFIX:-iiif-stack}"
tag="${IMAGE_TAG:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
build_args=()
if [ -n "${PYTHON_BASE:-}" ]; then build_args+=(--build-arg "PYTHON_BASE=$PYTHON_BASE"); fi

for component in gateway decoder; do
  echo "Building $prefix/$component:$tag with $engine" >&2
  "$engine" build "${build_args[@]}" -f "docker/$component.Dockerfile" -t "$prefix/$component:$tag" .
done
