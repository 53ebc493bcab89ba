#!/usr/bin/env bash
# Regenerate the committed gRPC stubs (and their typing stubs) from proto/.
# Usage: scripts/gen_proto.sh [OUTPUT_DIR]   (default: proto, i.e. in place)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/proto}
venv_bin=$(dirname "$(command -v python)")
mkdir -p "$out"
PATH="$venv_bin:$PATH" python -m grpc_tools.protoc -I"$here/proto" \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  "$here/proto/iiif_decoder/v1/decoder.proto" >/dev/null
