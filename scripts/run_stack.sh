#!/usr/bin/env bash
# Starts a decoder and a gateway on 127.0.0.1 over $IMAGE_ROOT, prints where to
# look, and stops both on Ctrl-C. Used by `make run`.
set -euo pipefail
: "${IMAGE_ROOT:?}" "${GATEWAY_PORT:=8080}" "${DECODER_PORT:=50051}" "${PY:=python}"

export IIIF_DECODER_IMAGE_ROOT="$IMAGE_ROOT" IIIF_DECODER_PORT="$DECODER_PORT"
export IIIF_GATEWAY_PORT="$GATEWAY_PORT" IIIF_GATEWAY_DECODER_TARGET="127.0.0.1:$DECODER_PORT"
export IIIF_DECODER_LOG_FORMAT="${IIIF_DECODER_LOG_FORMAT:-console}"
export IIIF_GATEWAY_LOG_FORMAT="${IIIF_GATEWAY_LOG_FORMAT:-console}"

pids=()
stop() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait || true; }
trap stop EXIT INT TERM

"$PY" -m decoder & pids+=($!)
"$PY" -m gateway & pids+=($!)

base="http://127.0.0.1:$GATEWAY_PORT"
for _ in $(seq 1 100); do
  if curl -fsS "$base/health/ready" >/dev/null 2>&1; then break; fi
  sleep 0.2
done
curl -fsS "$base/health/ready" >/dev/null || { echo "the stack did not become ready" >&2; exit 1; }

cat <<MSG

  IIIF stack is up (decoder 127.0.0.1:$DECODER_PORT, images in $IMAGE_ROOT).

  Image API 3.0:  $base/iiif/3/sample-tiled/info.json
  Image API 2.1:  $base/iiif/2/sample-pyramid/info.json
  A thumbnail:    $base/iiif/3/sample-tiled/full/!400,400/0/default.jpg
  Validator's:    $base/iiif/3/67352ccc-d1b0-11e1-89ae-279075081939/full/max/0/default.png

  Ctrl-C stops both.
MSG
wait -n "${pids[@]}"
