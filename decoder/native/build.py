"""Build the native helpers (cffi, API mode) into this package's folder.

Run by `make install` (and the decoder's container build) after the Python
dependencies: ``python -m decoder.native.build``. Needs a C compiler and
libjpeg's headers (Debian: gcc, libjpeg62-turbo-dev); the built module links
the system libjpeg that libvips uses too.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent
MODULE = "decoder.native._jpeg_mosaic"

CDEF = """
int iiif_jpeg_mosaic(const unsigned char *const *tiles, const size_t *sizes, int columns,
                     int rows, int x0, int y0, int width, int height, int optimize,
                     unsigned char **out, unsigned long *out_size, char *message,
                     size_t message_size);
void iiif_jpeg_free(unsigned char *buffer);
"""


def builder(
    module: str = MODULE,
    compile_args: tuple[str, ...] = ("-O2", "-Wall"),
    link_args: tuple[str, ...] = (),
) -> FFI:
    """The cffi builder of the mosaic helper as `module` (the tests build an
    AddressSanitizer copy under another name)."""
    ffi = FFI()
    ffi.cdef(CDEF)
    ffi.set_source(
        module,
        (HERE / "jpeg_mosaic.c").read_text(),
        libraries=["jpeg"],
        extra_compile_args=list(compile_args),
        extra_link_args=list(link_args),
    )
    return ffi


def main() -> int:
    package_root = HERE.parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        # cffi writes the module under <target>/decoder/native/ from its dotted name.
        built = builder().compile(tmpdir=tmp, target=None, verbose=False)
        target = package_root / Path(built).relative_to(tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(built, target)
    print(f"built {target.relative_to(package_root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
