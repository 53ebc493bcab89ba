"""Our build of OpenJPEG 2.5.4 against the system's libopenjp2.

`make install` builds it (decoder/native/build_openjpeg.py); the engine
prefers it. The two must decode the same pixels (within 1, in rare samples:
2.5.4's 9/7 decode is not bit-identical to 2.5.0's), and ours must make
fewer reads of a tiled codestream with TLM markers: it seeks to the
tile-parts a window needs instead of walking every tile-part header.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import pyvips

from decoder.engines import SourceFormat
from decoder.engines.base import VipsImage
from decoder.engines.openjpeg import (
    BUNDLED_LIBRARY,
    SYSTEM,
    OpenJpegEngine,
    OpenJpegOptions,
    library_candidates,
    openjpeg_version,
)
from decoder.engines.registry import registry_for
from decoder.engines.sniff import SNIFF_BYTES, sniff
from decoder.native import build_openjpeg
from decoder.plan import Box
from tests.images import have_opj_compress, make_tiled_jp2, opj_compress
from tests.readers import BytesReader

needs_opj = pytest.mark.skipif(not have_opj_compress(), reason="needs opj_compress")


def test_make_install_built_openjpeg_2_5_4() -> None:
    assert BUNDLED_LIBRARY.is_file(), "run `make install` (python -m decoder.native.build_openjpeg)"
    assert openjpeg_version() == build_openjpeg.VERSION
    assert OpenJpegEngine().options.library is None  # the default is our build


def test_library_candidates_prefer_our_build_unless_told(tmp_path: Path) -> None:
    assert library_candidates()[0] == str(BUNDLED_LIBRARY)
    system = library_candidates(SYSTEM)
    assert str(BUNDLED_LIBRARY) not in system
    assert system[0] == "libopenjp2.so.7"
    elsewhere = str(tmp_path / "libopenjp2.so.7")
    assert library_candidates(elsewhere) == [elsewhere]


def test_a_decoder_without_our_build_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from structlog.testing import capture_logs

    from decoder import server
    from decoder.engines import openjpeg

    with capture_logs() as quiet:
        server._warn_without_our_openjpeg()
    assert quiet == []
    # As if make install had not built it: what was loaded is not ours.
    monkeypatch.setattr(openjpeg, "BUNDLED_LIBRARY", tmp_path / "libopenjp2.so.7")
    with capture_logs() as logs:
        server._warn_without_our_openjpeg()
    assert [e["event"] for e in logs] == [
        "OpenJPEG 2.5.4 is not built: JPEG 2000 decodes with the system's libopenjp2"
    ]
    assert logs[0]["fix"] == "python -m decoder.native.build_openjpeg"


def test_the_setting_reaches_the_engine() -> None:
    engine = registry_for("openjpeg", openjpeg_library=SYSTEM).for_format(SourceFormat.JPEG2000)
    assert isinstance(engine, OpenJpegEngine)
    assert engine.options.library == SYSTEM


PAGE = 4096


class LoggingReader(BytesReader):
    """Records every read the codec makes: how many, and which 4 KiB pages
    of the file they touched (a remote source fetches by place, and each
    read through the callback stream is a call into Python)."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.pages: set[int] = set()

    def read_at(self, offset: int, length: int) -> bytes:
        chunk = super().read_at(offset, length)
        self.pages.update(range(offset // PAGE, (offset + max(1, len(chunk)) - 1) // PAGE + 1))
        return chunk


def _engines() -> dict[str, OpenJpegEngine]:
    # Callbacks, not the file stream, so the reader sees every read; a small
    # buffer, so that each seek shows as its own read.
    return {
        name: OpenJpegEngine(OpenJpegOptions(library=library, file_stream=False, buffer_bytes=4096))
        for name, library in (("ours", None), ("system", SYSTEM))
    }


def _decode(
    engine: OpenJpegEngine, data: bytes, level: int, box: Box
) -> tuple[VipsImage, LoggingReader]:
    reader = LoggingReader(data)
    info = engine.describe(reader, sniff(data[:SNIFF_BYTES]))
    reader.reads, reader.pages = 0, set()  # the decode's reads only
    return engine.load_region(reader, info, level, box).copy_memory(), reader


@pytest.fixture(scope="module")
def tiled_tlm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A lossy 2048 x 2048 JP2 in 8 x 8 tiles with TLM markers and one
    tile-part per resolution, as the benchmark's masters are made; noise,
    so that it is large (about 1.5 MB) against a page."""
    root = tmp_path_factory.mktemp("tlm")
    noise = [pyvips.Image.gaussnoise(2048, 2048, sigma=50, mean=128) for _ in range(3)]
    out = opj_compress(
        noise[0].bandjoin(noise[1:]).cast("uchar"),
        root / "tlm.jp2",
        *("-t", "256,256", "-n", "5", "-p", "RPCL", "-TP", "R", "-TLM", "-PLT", "-I", "-r", "8"),
    )
    return out.read_bytes()


@needs_opj
@pytest.mark.parametrize(
    ("level", "box", "seeks_by_tlm"),
    [
        (0, Box(0, 0, 256, 256), True),
        (0, Box(300, 300, 100, 100), True),
        (1, Box(0, 0, 128, 128), True),
        (2, Box(10, 10, 100, 100), False),
        (3, Box(17, 9, 200, 150), False),
        (4, Box(0, 0, 128, 128), False),
    ],
)
def test_same_pixels_and_fewer_reads_on_a_tlm_codestream(
    tiled_tlm: bytes, level: int, box: Box, seeks_by_tlm: bool
) -> None:
    engines = _engines()
    ours, ours_reads = _decode(engines["ours"], tiled_tlm, level, box)
    system, system_reads = _decode(engines["system"], tiled_tlm, level, box)
    assert (ours.width, ours.height) == (system.width, system.height) == (box.width, box.height)
    assert (ours - system).abs().max() <= 1
    assert (ours - system).abs().avg() <= 0.001
    assert len(ours_reads.pages) <= len(system_reads.pages)
    if seeks_by_tlm:
        # One tile's window: 2.5.0 reads every tile-part header on the way,
        # ours seeks past the other tiles' tile-parts (measured: 47-54%).
        assert ours_reads.reads < 0.6 * system_reads.reads, (ours_reads.reads, system_reads.reads)


@needs_opj
@pytest.mark.parametrize("lossless", [False, True])
def test_same_pixels_on_untiled_and_other_codestreams(tmp_path: Path, lossless: bool) -> None:
    path = make_tiled_jp2(tmp_path / "one.jp2", 333, 251, tile=512, lossless=lossless)
    data = path.read_bytes()
    engines = _engines()
    for level, box in ((0, Box(0, 0, 333, 251)), (1, Box(20, 30, 100, 80)), (2, Box(0, 0, 84, 63))):
        ours, _ = _decode(engines["ours"], data, level, box)
        system, _ = _decode(engines["system"], data, level, box)
        assert (ours - system).abs().max() <= 1
        assert (ours - system).abs().avg() <= 0.001


# -- the build script's pure parts -------------------------------------------------


def _sdist(tmp_path: Path, files: dict[str, bytes]) -> Path:
    archive = tmp_path / "sdist.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, body in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(body)
            tar.addfile(member, io.BytesIO(body))
    return archive


def test_fetch_checks_the_digest(tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_bytes(b"openjpeg")
    good = hashlib.sha256(b"openjpeg").hexdigest()
    build_openjpeg.fetch(payload.as_uri(), good, tmp_path / "ok")
    assert (tmp_path / "ok").read_bytes() == b"openjpeg"
    with pytest.raises(ValueError, match="SHA-256"):
        build_openjpeg.fetch(payload.as_uri(), "0" * 64, tmp_path / "bad")


def test_extract_source_takes_only_openjpegs_tree(tmp_path: Path) -> None:
    prefix = build_openjpeg.SOURCE_PREFIX
    archive = _sdist(
        tmp_path, {prefix + "CMakeLists.txt": b"project()", "other/setup.py": b"print()"}
    )
    root = build_openjpeg.extract_source(archive, tmp_path / "src")
    assert (root / "CMakeLists.txt").read_bytes() == b"project()"
    assert not (tmp_path / "src" / "other").exists()
    with pytest.raises(ValueError, match="holds no"):
        build_openjpeg.extract_source(_sdist(tmp_path, {"x/y": b""}), tmp_path / "none")


def test_a_build_is_current_only_with_the_same_source_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_openjpeg, "TARGET_DIR", tmp_path)
    monkeypatch.setattr(build_openjpeg, "LIBRARY", tmp_path / "libopenjp2.so.7")
    assert not build_openjpeg.is_current("-O3")
    (tmp_path / "libopenjp2.so.7").write_bytes(b"\x7fELF")
    (tmp_path / "BUILD").write_text(build_openjpeg.stamp("-O3"))
    assert build_openjpeg.is_current("-O3")
    assert not build_openjpeg.is_current("-O3 -march=native")
