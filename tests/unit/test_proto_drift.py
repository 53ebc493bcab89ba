"""The committed gRPC stubs must be exactly what the .proto generates."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
GENERATED = REPO / "proto" / "iiif_decoder" / "v1"


def test_committed_stubs_match_the_proto(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    subprocess.run(
        ["bash", str(REPO / "scripts" / "gen_proto.sh"), str(tmp_path)],
        check=True,
        env=env,
        cwd=REPO,
    )
    fresh = tmp_path / "iiif_decoder" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == [
        "decoder_pb2.py",
        "decoder_pb2.pyi",
        "decoder_pb2_grpc.py",
        "decoder_pb2_grpc.pyi",
    ]
    for name in names:
        assert (fresh / name).read_text() == (GENERATED / name).read_text(), (
            f"{name} is stale: run `make proto` and commit the result"
        )
