"""The codec floor: the benchmark's regions decoded in-process, no HTTP, no gRPC.

What any server must at least spend per request on this machine:

* JPEG 2000: OpenJPEG itself through ctypes (the decoder's libopenjp2: our
  build of 2.5.4 when `make install` made it, else Debian's):
  ``opj_read_header``, ``opj_set_decoded_resolution_factor``,
  ``opj_set_decode_area``, ``opj_decode`` of exactly the region at the
  lowest sufficient resolution, so precincts and tiles are used as well as
  the library allows;
* pyramidal TIFF: libtiff's read of the stored tiles of the right pyramid
  page (libvips ``tiffload(page=n)`` then a crop, which reads only the tiles
  under it);
* baseline JPEG: libjpeg's DCT-domain shrink (``jpegload(shrink=d)``) and crop;

then, for all, a resize when the decoded size is not the requested one, and
JPEG encoding (libjpeg-turbo via ``jpegsave_buffer``, same quality as the
servers). One libvips thread per decode and the operation cache off, like
our decoder; parallelism comes from worker processes, one per core at most.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from multiprocessing.context import SpawnProcess
from pathlib import Path
from typing import Any, Final

from bench.images import ImageType
from bench.load import LoadResult, summarise
from bench.workload import Region
from decoder.engines.openjpeg import OpjDParameters, OpjImage, openjpeg

VipsImage = Any  # pyvips is untyped

OPJ_CODEC_JP2: Final = 2
JPEG_SHRINKS: Final = (1, 2, 4, 8)
# The floor uses the decoder's own libopenjp2 binding (struct layouts checked
# against openjpeg.h there), but none of the decoder's streaming or caching.
_FILE_BUFFER_BYTES: Final = 1 << 20


def _pyvips() -> Any:
    # Imported lazily so the parent process does not start libvips' threads
    # before spawning workers, and configured once per process.
    import pyvips

    if not getattr(_pyvips, "configured", False):
        pyvips.cache_set_max(0)
        pyvips.concurrency_set(1)
        _pyvips.configured = True  # type: ignore[attr-defined]
    return pyvips


def decode_jp2(path: Path, region: Region, reduce: int) -> VipsImage:
    """`region` of the JPEG 2000 file decoded at resolution reduction `reduce`,
    as an 8-bit libvips image (OpenJPEG alone does the decoding)."""
    pyvips = _pyvips()
    lib = openjpeg()
    stream = lib.opj_stream_create_file_stream(os.fsencode(path), _FILE_BUFFER_BYTES, 1)
    if not stream:
        raise RuntimeError(f"cannot open {path}")
    codec = lib.opj_create_decompress(OPJ_CODEC_JP2)
    image = ctypes.POINTER(OpjImage)()
    try:
        params = OpjDParameters()
        lib.opj_set_default_decoder_parameters(ctypes.byref(params))
        if not lib.opj_setup_decoder(codec, ctypes.byref(params)):
            raise RuntimeError("opj_setup_decoder failed")
        lib.opj_codec_set_threads(codec, 1)
        if not lib.opj_read_header(stream, codec, ctypes.byref(image)):
            raise RuntimeError(f"opj_read_header failed on {path}")
        if not lib.opj_set_decoded_resolution_factor(codec, reduce):
            raise RuntimeError(f"resolution factor {reduce} refused for {path}")
        # The area is given on the full-resolution reference grid.
        x1, y1 = region.x + region.w, region.y + region.h
        if not lib.opj_set_decode_area(codec, image, region.x, region.y, x1, y1):
            raise RuntimeError(f"decode area {region} refused for {path}")
        if not (lib.opj_decode(codec, stream, image) and lib.opj_end_decompress(codec, stream)):
            raise RuntimeError(f"opj_decode failed on {path}")
        img = image.contents
        bands = []
        for i in range(img.numcomps):
            comp = img.comps[i]
            count = comp.w * comp.h
            # Copy the int32 plane out before opj_image_destroy frees it.
            plane = (ctypes.c_int32 * count).from_address(comp.data)
            bands.append(pyvips.Image.new_from_memory(bytes(plane), comp.w, comp.h, 1, "int"))
        out = bands[0].bandjoin(bands[1:]) if len(bands) > 1 else bands[0]
        return out.cast("uchar").copy(interpretation="srgb" if len(bands) >= 3 else "b-w")
    finally:
        if image:
            lib.opj_image_destroy(image)
        lib.opj_destroy_codec(codec)
        lib.opj_stream_destroy(stream)


def pick_reduction(region: Region, size: tuple[int, int], max_reduce: int) -> int:
    """The largest power-of-two reduction r <= `max_reduce` that still yields at
    least `size` pixels from `region` (never decode less than asked for)."""
    r = 0
    while r < max_reduce:
        nxt = 2 ** (r + 1)
        if math.ceil(region.w / nxt) < size[0] or math.ceil(region.h / nxt) < size[1]:
            break
        r += 1
    return r


def _fit(image: VipsImage, size: tuple[int, int]) -> VipsImage:
    w, h = size
    if (image.width, image.height) == (w, h):
        return image
    return image.resize(w / image.width, vscale=h / image.height)


@cache
def _tiff_pages(path: Path) -> tuple[tuple[int, int], ...]:
    # Page sizes, read once per process: our decoder caches descriptions too.
    pyvips = _pyvips()
    first = pyvips.Image.new_from_file(str(path))
    pages = int(first.get("n-pages")) if first.get_typeof("n-pages") else 1
    sizes = []
    for n in range(pages):
        page = pyvips.Image.new_from_file(str(path), page=n)
        sizes.append((int(page.width), int(page.height)))
    return tuple(sizes)


def decode_region(
    type_: ImageType, path: Path, region: Region, size: tuple[int, int], jp2_resolutions: int
) -> VipsImage:
    """`region` of the file scaled to `size`, decoded the cheapest way its format allows."""
    pyvips = _pyvips()
    if type_ in (ImageType.JP2_TILED, ImageType.JP2_PRECINCTS):
        reduce = pick_reduction(region, size, jp2_resolutions - 1)
        return _fit(decode_jp2(path, region, reduce), size)
    if type_ == ImageType.TIFF_PYRAMID:
        pages = _tiff_pages(path)
        full_w = pages[0][0]
        n = pick_reduction(region, size, len(pages) - 1)
        page_w, page_h = pages[n]
        scale = page_w / full_w
        left, top = int(region.x * scale), int(region.y * scale)
        width = max(1, min(page_w - left, math.ceil(region.w * scale)))
        height = max(1, min(page_h - top, math.ceil(region.h * scale)))
        page = pyvips.Image.new_from_file(str(path), page=n)
        return _fit(page.crop(left, top, width, height), size)
    shrink = JPEG_SHRINKS[pick_reduction(region, size, len(JPEG_SHRINKS) - 1)]
    # Sequential: decode only down to the last row needed, not the whole image.
    image = pyvips.Image.new_from_file(str(path), shrink=shrink, access="sequential")
    left, top = region.x // shrink, region.y // shrink
    width = max(1, min(image.width - left, math.ceil(region.w / shrink)))
    height = max(1, min(image.height - top, math.ceil(region.h / shrink)))
    return _fit(image.crop(left, top, width, height), size)


@dataclass(frozen=True)
class FloorTask:
    """One region to decode and encode."""

    type: ImageType
    path: Path
    region: Region
    size: tuple[int, int]
    jp2_resolutions: int = 7


def render(task: FloorTask, quality: int) -> bytes:
    """The JPEG bytes of `task`: decode, resize if needed, encode."""
    image = decode_region(task.type, task.path, task.region, task.size, task.jp2_resolutions)
    return bytes(image.jpegsave_buffer(Q=quality))


@dataclass(frozen=True)
class _Job:
    tasks: tuple[FloorTask, ...]
    offset: int
    stride: int
    duration_s: float
    limit: int | None
    quality: int


def _serve(conn: multiprocessing.connection.Connection) -> None:
    # A worker: runs jobs until it gets None. Each job cycles through its share
    # of the tasks until the duration passes or its share of `limit` is done.
    while True:
        job: _Job | None = conn.recv()
        if job is None:
            return
        latencies: list[float] = []
        nbytes = errors = 0
        start = time.perf_counter()
        deadline = start + job.duration_s
        i = job.offset
        done = 0
        while time.perf_counter() < deadline and (job.limit is None or done < job.limit):
            task = job.tasks[i % len(job.tasks)]
            t0 = time.perf_counter()
            try:
                nbytes += len(render(task, job.quality))
                latencies.append(time.perf_counter() - t0)
            except Exception:
                errors += 1
            done += 1
            i += job.stride
        conn.send((latencies, nbytes, errors, time.perf_counter() - start))


class FloorPool:
    """Worker processes, started once (spawned: libvips and fork do not mix)
    and reused for every floor step so start-up is never measured."""

    def __init__(self, processes: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._workers: list[tuple[SpawnProcess, multiprocessing.connection.Connection]] = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child,), daemon=True)
            proc.start()
            self._workers.append((proc, parent))

    @property
    def size(self) -> int:
        """Number of worker processes."""
        return len(self._workers)

    def run(
        self,
        tasks: Sequence[FloorTask],
        processes: int,
        duration_s: float,
        limit: int | None = None,
        quality: int = 85,
    ) -> LoadResult:
        """Render `tasks` on `processes` workers at once, bounded like a load step."""
        n = max(1, min(processes, self.size))
        share = None if limit is None else max(1, math.ceil(limit / n))
        for k, (_, conn) in enumerate(self._workers[:n]):
            conn.send(_Job(tuple(tasks), k, n, duration_s, share, quality))
        latencies: list[float] = []
        nbytes = errors = 0
        elapsed = 0.0
        for _, conn in self._workers[:n]:
            lat, b, e, secs = conn.recv()
            latencies.extend(lat)
            nbytes += b
            errors += e
            elapsed = max(elapsed, secs)
        return summarise("in-process", n, latencies, elapsed, nbytes, errors)

    def close(self) -> None:
        """Stop the workers."""
        for proc, conn in self._workers:
            with contextlib.suppress(OSError):
                conn.send(None)
            proc.join(5)
            if proc.is_alive():
                proc.kill()
        self._workers.clear()

    def __enter__(self) -> FloorPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
