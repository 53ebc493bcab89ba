"""A libvips engine for JPEG 2000, TIFF, JPEG and PNG.

Facts verified against libvips 8.14 (see tests/unit/test_vips_engine.py):

* ``jp2kload(page=n)`` decodes resolution reduction n (size ceil(W / 2^n));
  a page >= the number of resolutions fails. libvips reports neither the
  number of resolutions nor the tile size, so we read SIZ/COD/COC ourselves.
* ``tiffload(page=n)`` reads the n-th IFD of the main chain, ``subifd=k`` the
  k-th SubIFD of that page. libvips reports no TIFF tile size: we read tags.
* ``jpegload(shrink=d)`` (d in 1, 2, 4, 8) yields floor(W / d) x floor(H / d).
* Operations loading from a file *name* are cached by name: a file replaced
  in place is served stale from the operation cache. We therefore load from
  a fresh ``pyvips.Source`` per call (never a cache hit across calls) and
  disable the operation cache, which would otherwise only pin open file
  descriptors and decoded pixels (see init_vips).
* Images loaded from a ``pyvips.SourceCustom`` must keep the Python source
  object alive while they are evaluated, or cffi aborts the process;
  ``Image.new_from_source`` attaches it to the image, the per-format
  ``*load_source`` calls do not.
* Reduced JPEG 2000 levels are not cheap in 8.14: the first pixels of
  ``page=2`` of a 6000 x 4500 file with 1024 tiles cost ~0.3 s, versus
  ~0.13 s for one tile at ``page=0``. Still far cheaper than a full decode
  for overviews; a direct OpenJPEG engine is the place to do better.
* ``fail_on="error"`` fails on truncation and decoder errors, but libjpeg
  reports some corrupt entropy-coded data only as a warning.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import pyvips
from cachetools import LRUCache

from decoder.engines.base import (
    DecodeError,
    ImageInfo,
    Level,
    SourceFormat,
    UnsupportedSource,
    VipsImage,
    checked_level,
)
from decoder.engines.headers import (
    TiffPage,
    TiffStructure,
    parse_j2k_header,
    parse_tiff_structure,
    reduction_factor,
)
from decoder.plan import Box
from decoder.sources.base import ByteReader

JPEG_SHRINK_FACTORS: Final = (1, 2, 4, 8)

# Bits per band of each libvips band format.
_BITS: Final[dict[str, int]] = {
    "uchar": 8,
    "char": 8,
    "ushort": 16,
    "short": 16,
    "uint": 32,
    "int": 32,
    "float": 32,
    "double": 64,
    "complex": 64,
    "dpcomplex": 128,
}

# The libvips loader (name prefix) that must read each format.
_LOADERS: Final[dict[SourceFormat, str]] = {
    SourceFormat.JPEG2000: "jp2kload",
    SourceFormat.TIFF: "tiffload",
    SourceFormat.JPEG: "jpegload",
    SourceFormat.PNG: "pngload",
}

# Fail on decode errors and truncation instead of libvips' default of
# logging a warning and returning grey or black pixels. Not "warning": libjpeg
# reports harmless quirks common in real files (extraneous bytes before a
# marker) at that level, but also some corrupt entropy-coded data.
DEFAULT_FAIL_ON: Final = "error"

_init_lock = threading.Lock()


def init_vips(
    concurrency: int | None = None,
    cache_max_mem: int = 0,
    cache_max: int = 0,
    cache_max_files: int = 0,
) -> None:
    """Set process-wide libvips settings; call once at start-up (safe to call
    again).

    `concurrency` is the number of libvips worker threads per pipeline (None
    keeps libvips' default, ``VIPS_CONCURRENCY`` or the core count). The
    operation cache limits (`cache_max_mem` bytes, `cache_max` operations,
    `cache_max_files` open files) default to 0 = disabled: every request
    loads from a new source, so cached operations are never reused; they
    would only hold file descriptors and pixels.
    """
    with _init_lock:
        if concurrency is not None:
            pyvips.concurrency_set(max(1, concurrency))
        pyvips.cache_set_max_mem(max(0, cache_max_mem))
        pyvips.cache_set_max(max(0, cache_max))
        pyvips.cache_set_max_files(max(0, cache_max_files))


init_vips()


def vips_error_message(exc: pyvips.Error) -> str:
    """The first line of libvips' error detail (or the message), shortened."""
    detail = (getattr(exc, "detail", "") or "").strip() or str(getattr(exc, "message", exc))
    lines = [line for line in detail.splitlines() if line.strip()]
    return (lines[0] if lines else "libvips error")[:200]


def open_vips_source(reader: ByteReader) -> Any:
    """A fresh ``pyvips.Source`` over `reader`: the local file when
    `reader.path` is set (libvips reads it directly), else read callbacks.

    Raises DecodeError if libvips cannot open the file.
    """
    if reader.path is not None:
        try:
            return pyvips.Source.new_from_file(os.fspath(reader.path))
        except pyvips.Error as exc:
            raise DecodeError(vips_error_message(exc)) from exc
    return _callback_source(reader)


def _callback_source(reader: ByteReader) -> Any:
    source = pyvips.SourceCustom()
    size = reader.size
    position = 0  # each source has its own position; readers have none
    # Remote readers may offer read_some(offset, length): a short read of what
    # has already arrived (empty only at the end), which libvips takes like
    # read(2). The decoder then works while later blocks download, and an
    # indexed remote reader can answer OpenJPEG's 1 MiB reads at each
    # tile-part header with just that header, not the tile data it skips
    # (see decoder/sources/readahead.py).
    read = getattr(reader, "read_some", reader.read_at)

    def on_read(length: int) -> bytes:
        nonlocal position
        try:
            data: bytes = read(position, length)
        except Exception:
            # pyvips cannot carry an exception through libvips: end the
            # stream (libvips then fails the load). A remote reader keeps
            # the error (its `failure`) for the pipeline to raise instead.
            return b""
        position += len(data)
        return data

    def on_seek(offset: int, whence: int) -> int:
        nonlocal position
        if whence == os.SEEK_SET:
            new = offset
        elif whence == os.SEEK_CUR:
            new = position + offset
        elif whence == os.SEEK_END:
            new = size + offset
        else:
            return -1
        if new < 0:
            return -1
        position = new
        return position

    source.on_read(on_read)
    source.on_seek(on_seek)
    return source


def _bits(image: VipsImage) -> int:
    return _BITS.get(str(image.format), 8)


def _has_icc(image: VipsImage) -> bool:
    return bool(image.get_typeof("icc-profile-data") != 0)


# A local file's identity and the directory asked for: (path, device,
# inode, size, mtime in ns, page, subifd).
_HandleKey = tuple[str, int, int, int, int, int, int]


class OpenTiffs:
    """Opened (lazy, undecoded) libvips images of local TIFF directories,
    kept for the next request: opening one (a source, libtiff's directory
    walk) costs about 1.5 ms, as much as decoding a 256 px tile. At most
    `entries` (each an open file and libtiff's state for one directory),
    least recently used dropped first; keyed by the file's identity, so a
    replaced or rewritten file is opened anew. Thread-safe: libvips images
    are immutable and read by many threads at once."""

    def __init__(self, entries: int) -> None:
        self._images: LRUCache[_HandleKey, VipsImage] = LRUCache(maxsize=max(1, entries))
        self._lock = threading.Lock()

    def get_or_open(
        self, path: Path, page: int, subifd: int, open_: Callable[[], VipsImage]
    ) -> VipsImage:
        """The image for `path` at (page, subifd), opened with `open_` unless kept."""
        try:
            before = os.stat(path)
        except OSError:
            return open_()  # the reader's own error path reports it
        key = (
            os.fspath(path),
            before.st_dev,
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
            page,
            subifd,
        )
        with self._lock:
            image = self._images.get(key)
        if image is not None:
            return image
        image = open_()
        with contextlib.suppress(OSError):
            after = os.stat(path)
            # Changed while it was opened: use it once, keep nothing.
            if (after.st_ino, after.st_size, after.st_mtime_ns) == key[2:5]:
                with self._lock:
                    self._images[key] = image
        return image

    def __len__(self) -> int:
        with self._lock:
            return len(self._images)


class VipsEngine:
    """Engine for all four source formats on libvips. Thread-safe; every
    call opens its own ``pyvips.Source``, except that local TIFF directories
    opened for a region are kept open for the next one (`open_tiffs`)."""

    formats: frozenset[SourceFormat] = frozenset(SourceFormat)

    def __init__(self, fail_on: str = DEFAULT_FAIL_ON, open_tiffs: int = 0) -> None:
        """`fail_on` is libvips' error level at which decoding fails: "error"
        (default: corrupt or truncated data) or the stricter "warning".
        `open_tiffs` is how many opened TIFF directories of local files to
        keep for later requests (0: none)."""
        if fail_on not in ("truncated", "error", "warning"):
            raise ValueError(f"unsupported fail_on level {fail_on!r}")
        self._fail_on = fail_on
        self._open_tiffs = OpenTiffs(open_tiffs) if open_tiffs > 0 else None

    def describe(self, reader: ByteReader, fmt: SourceFormat) -> ImageInfo:
        """Read size, resolution levels, tiles, bands, bit depth and ICC
        presence, decoding headers only.

        Raises UnsupportedSource if `fmt` is not ours and DecodeError if the
        bytes are not a readable image of that format.
        """
        if fmt not in self.formats:
            raise UnsupportedSource(f"VipsEngine cannot read {fmt}")
        try:
            head = self._load(reader, fmt)
            width, height = int(head.width), int(head.height)
            bands, bits, icc = int(head.bands), _bits(head), _has_icc(head)
        except pyvips.Error as exc:
            raise DecodeError(vips_error_message(exc)) from exc
        levels = self._levels(reader, fmt, width, height)
        return ImageInfo(
            width=width,
            height=height,
            levels=levels,
            bands=bands,
            bits_per_sample=bits,
            format=fmt,
            has_icc=icc,
        )

    def load_region(self, reader: ByteReader, info: ImageInfo, level: int, box: Box) -> VipsImage:
        """Decode `box` (pixels of `info.levels[level]`) from that level.

        The result is lazy: corrupt pixel data surfaces as pyvips.Error when
        it is computed. Raises RenderError for a level or box out of range
        and DecodeError if the source cannot be opened at that level.
        """
        lvl = checked_level(info, level, box)
        page, subifd, shrink = 0, -1, 1
        if info.format is SourceFormat.JPEG2000:
            page = level
        elif info.format is SourceFormat.TIFF:
            page, subifd = lvl.page, lvl.subifd
        elif info.format is SourceFormat.JPEG:
            shrink = lvl.downscale
        try:
            path = reader.path
            if self._open_tiffs is not None and info.format is SourceFormat.TIFF and path:
                image = self._open_tiffs.get_or_open(
                    path,
                    page,
                    subifd,
                    lambda: self._load(reader, info.format, page=page, subifd=subifd),
                )
            else:
                image = self._load(reader, info.format, page=page, subifd=subifd, shrink=shrink)
            if (image.width, image.height) != (lvl.width, lvl.height):
                raise DecodeError("image does not match its description (changed?)")
            if (box.width, box.height) == (lvl.width, lvl.height):
                # A new image even so: the pipeline sets progress signals and
                # the kill flag on what it renders, never on a kept one.
                return image.copy()
            return image.crop(box.x, box.y, box.width, box.height)
        except pyvips.Error as exc:
            raise DecodeError(vips_error_message(exc)) from exc

    # -- helpers ------------------------------------------------------------

    def _load(
        self,
        reader: ByteReader,
        fmt: SourceFormat,
        *,
        page: int = 0,
        subifd: int = -1,
        shrink: int = 1,
    ) -> VipsImage:
        source = open_vips_source(reader)
        options: dict[str, object] = {"fail_on": self._fail_on}
        if fmt is SourceFormat.JPEG2000:
            options["page"] = page
        elif fmt is SourceFormat.TIFF:
            options.update(page=page, subifd=subifd)
        elif fmt is SourceFormat.JPEG:
            options["shrink"] = shrink
        # new_from_source, not jp2kload_source() and friends: it keeps a
        # reference to the source on the image (and everything derived from
        # it). A callback source collected while a lazy image still reads
        # from it makes cffi abort the process.
        image = pyvips.Image.new_from_source(source, "", **options)
        loader = str(image.get("vips-loader"))
        if not loader.startswith(_LOADERS[fmt]):
            raise UnsupportedSource(f"expected {fmt}, libvips chose {loader}")
        return image

    def _levels(
        self, reader: ByteReader, fmt: SourceFormat, width: int, height: int
    ) -> tuple[Level, ...]:
        single = (Level(width, height, 1, 0, 0),)
        if fmt is SourceFormat.JPEG2000:
            return _j2k_levels(reader, width, height) or single
        if fmt is SourceFormat.TIFF:
            layout = _tiff_layout(parse_tiff_structure(reader), width, height)
            return tuple(
                dataclasses.replace(level, page=page, subifd=subifd)
                for level, page, subifd in layout
            )
        if fmt is SourceFormat.JPEG:
            return tuple(
                Level(width // d, height // d, d, 0, 0)
                for d in JPEG_SHRINK_FACTORS
                if width // d >= 1 and height // d >= 1
            )
        return single


def _j2k_levels(reader: ByteReader, width: int, height: int) -> tuple[Level, ...] | None:
    """Levels from the codestream header, or None if the header disagrees with
    libvips about the full size (e.g. unusual component subsampling)."""
    header = parse_j2k_header(reader)
    if (header.width, header.height) != (width, height):
        return None
    levels = []
    for r in range(header.resolutions):
        w, h = header.level_size(r)
        d = 1 << r
        tw = -(-header.tile_width // d) if header.tiled else 0
        th = -(-header.tile_height // d) if header.tiled else 0
        levels.append(Level(w, h, d, tw, th))
    return tuple(levels)


def _tiff_layout(structure: TiffStructure, width: int, height: int) -> list[tuple[Level, int, int]]:
    """Levels of a TIFF with the (page, subifd) that holds each.

    A pyramid is either SubIFDs of page 0 (OME-TIFF style) or later pages of
    the main chain; pages that are not reduced copies (thumbnails, labels,
    other document pages) are skipped, and downscales must grow.
    """
    first = structure.pages[0]
    if (first.width, first.height) != (width, height):
        raise DecodeError("TIFF directory disagrees with libvips about the image size")
    layout = [(Level(width, height, 1, first.tile_width, first.tile_height), 0, -1)]
    candidates: list[tuple[TiffPage, int, int]] = [
        (p, 0, i) for i, p in enumerate(structure.subifds)
    ]
    if not any(reduction_factor((width, height), (p.width, p.height)) for p, _, _ in candidates):
        candidates = [(p, i, -1) for i, p in enumerate(structure.pages) if i > 0]
    last = 1
    for page, page_index, subifd in candidates:
        d = reduction_factor((width, height), (page.width, page.height))
        if d is None or d <= last or page.samples != first.samples:
            continue
        level = Level(page.width, page.height, d, page.tile_width, page.tile_height)
        layout.append((level, page_index, subifd))
        last = d
    return layout
