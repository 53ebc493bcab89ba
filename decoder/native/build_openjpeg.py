"""Build OpenJPEG 2.5.4's libopenjp2 into decoder/native/openjpeg/.

Run by `make install` (and the decoder's container build):
``python -m decoder.native.build_openjpeg``. Needs cmake and a C compiler,
and the PyPI index to fetch the source once.

Why not only Debian's libopenjp2 (2.5.0 on bookworm): OpenJPEG 2.5.3 reads
a codestream's TLM markers and seeks straight to the tile-parts a window
needs, where 2.5.0 reads every tile-part header of the file on every
decode. For an S3 source that is the difference between fetching the tiles
under the window and touching blocks across the whole object; locally it
is 3-7% less CPU on the benchmark's sessions (docs/jpeg2000.md). Its API and
ABI are 2.5.0's, so the engine's ctypes declarations hold for both.

The source is OpenJPEG's own tree as shipped inside the sdist of
pylibjpeg-openjpeg 2.6.0 on PyPI (pinned by SHA-256 below): PyPI is
reachable wherever `pip install` works, and its files never change.
OPENJPEG_SDIST_URL points the download at a mirror of the same file (the
digest is still checked); OPENJPEG_CFLAGS replaces the compiler flags.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Final

HERE = Path(__file__).resolve().parent
TARGET_DIR: Final = HERE / "openjpeg"
# The SONAME the system's library has too: the engine loads this file by
# path, and a library that asks for libopenjp2.so.7 by name (libvips) keeps
# getting the system's.
LIBRARY: Final = TARGET_DIR / "libopenjp2.so.7"
VERSION: Final = "2.5.4"
SDIST_URL: Final = (
    "https://files.pythonhosted.org/packages/91/99/"
    "e9b373caebb260101e5ca78371085436fd44196a6bbeb8528624fbcf7504/"
    "pylibjpeg_openjpeg-2.6.0.tar.gz"
)
SDIST_SHA256: Final = "ee6630c860263f34088c60b98bb343b1649b78d1299fe9a5c7ef60b88c6626ff"
SOURCE_PREFIX: Final = "pylibjpeg_openjpeg-2.6.0/lib/openjpeg/"
# Portable by default (the build machine may not be the one that runs it,
# as in a container build); OPENJPEG_CFLAGS="-O3 -march=native" for a
# machine that builds for itself.
DEFAULT_CFLAGS: Final = "-O3"


def stamp(cflags: str) -> str:
    """What a finished build records: rebuilt when any part changes."""
    return f"{VERSION} {SDIST_SHA256} {cflags}\n"


def is_current(cflags: str) -> bool:
    """Whether decoder/native/openjpeg already holds this build."""
    stamp_file = TARGET_DIR / "BUILD"
    return LIBRARY.is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp(cflags)


def fetch(url: str, sha256: str, dest: Path, timeout_s: float = 120.0) -> None:
    """Download `url` to `dest`; ValueError if its SHA-256 is not `sha256`."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout_s) as response, dest.open("wb") as out:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != sha256:
        raise ValueError(f"{url}: SHA-256 {digest.hexdigest()}, expected {sha256}")


def extract_source(archive: Path, dest: Path) -> Path:
    """Unpack OpenJPEG's tree from the sdist into `dest`; its root."""
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(SOURCE_PREFIX)]
        if not members:
            raise ValueError(f"{archive.name} holds no {SOURCE_PREFIX}")
        tar.extractall(dest, members=members, filter="data")
    return dest / SOURCE_PREFIX


def build(source: Path, work: Path, cflags: str) -> Path:
    """Configure and build the shared libopenjp2 only; the built file."""
    build_dir = work / "build"
    configure = [
        "cmake",
        "-S",
        str(source),
        "-B",
        str(build_dir),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DCMAKE_C_FLAGS={cflags}",
        # Calls inside the library stay inside it even though libvips has
        # loaded the system's libopenjp2, whose symbols have the same names.
        "-DCMAKE_SHARED_LINKER_FLAGS=-Wl,-Bsymbolic",
        "-DBUILD_SHARED_LIBS=ON",
        "-DBUILD_STATIC_LIBS=OFF",
        "-DBUILD_CODEC=OFF",
        "-DBUILD_TESTING=OFF",
    ]
    subprocess.run(configure, check=True, stdout=subprocess.DEVNULL)
    jobs = str(max(1, len(os.sched_getaffinity(0))))
    subprocess.run(
        ["cmake", "--build", str(build_dir), "--target", "openjp2", "-j", jobs],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    built = build_dir / "bin" / f"libopenjp2.so.{VERSION}"
    if not built.is_file():
        raise FileNotFoundError(f"the build made no {built}")
    return built


def main() -> int:
    cflags = os.environ.get("OPENJPEG_CFLAGS", DEFAULT_CFLAGS)
    if is_current(cflags):
        print(f"{LIBRARY.relative_to(HERE.parent.parent)} is current (OpenJPEG {VERSION})")
        return 0
    if shutil.which("cmake") is None:
        print("cmake is missing: install it (Debian: cmake) and run again", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        archive = work / "source.tar.gz"
        fetch(os.environ.get("OPENJPEG_SDIST_URL", SDIST_URL), SDIST_SHA256, archive)
        source = extract_source(archive, work / "src")
        built = build(source, work, cflags)
        TARGET_DIR.mkdir(exist_ok=True)
        shutil.copyfile(built, LIBRARY)
        shutil.copyfile(source / "LICENSE", TARGET_DIR / "LICENSE")
        (TARGET_DIR / "BUILD").write_text(stamp(cflags))
    print(f"built {LIBRARY.relative_to(HERE.parent.parent)} (OpenJPEG {VERSION}, {cflags})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
