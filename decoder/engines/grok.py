"""A JPEG 2000 engine on Grok (libgrokj2k 10) directly, with ctypes.

Offered beside OpenJPEG (decoder/engines/openjpeg.py), chosen with
IIIF_DECODER_JP2_ENGINE=grok; OpenJPEG stays the default, because with the
workarounds below Grok costs more CPU than OpenJPEG on our masters
(docs/grok.md). One decode here is, per grok.h (10.0.5):

1. the bytes: Grok 10.0.5 reads only a file or a memory buffer
   (``grk_stream_params`` has no read/seek callbacks in this version), so a
   local file is mapped (the kernel reads the pages Grok touches) and a
   remote object up to ``GrokOptions.max_buffer_bytes`` is read whole
   through ``reader.read_at``; larger remote objects are decoded by
   OpenJPEG, whose stream callbacks read only what a window needs;
2. ``grk_decompress_init`` with ``reduce`` = the level and PLT markers not
   used (below), then ``grk_decompress_read_header``;
3. ``grk_decompress_set_window`` on the full-resolution reference grid like
   OpenJPEG's window (:func:`decoder.engines.openjpeg.reference_area`) but
   relative to the image area's origin, then ``grk_decompress``;
4. the composited image's int32 component planes handed to
   :func:`decoder.engines.openjpeg.planes_to_vips`, which copies them once
   into a libvips memory image;
5. ``grk_object_unref`` of the codec (it owns the image) on every path.

Grok 10.0.5 returns wrong pixels for some windows, so three guards stand
between it and a response (each checked by tests/unit/test_grok_engine.py,
which also shows each is needed):

* multi-tile codestreams: windows that do not follow the codestream tiles
  come out wrong (docs/grok.md: 6 of 8 windows of a 1024 px-tiled master,
  off by up to 253), so the window is widened to whole tiles and the result
  cropped to the box. The pipeline's blocks are whole tiles anyway
  (decoder/pipeline/load.py);
* PLT markers: skipping packets by their lengths gets windows of some
  codestreams (64 px precincts) wrong without a warning, so they are not
  used (Grok then reads packet headers, as OpenJPEG does);
* warnings: Grok decodes damaged codestreams leniently (a truncated tile
  comes out partly grey) and some windows without code-blocks they need
  ("sparse canvas ... missing block"), and says so only in warnings. Any
  warning or failure hands the box to OpenJPEG, which decodes it, or fails
  a damaged codestream in strict mode (``GrokEngine.fallbacks`` counts).

Process-wide state: ``grk_initialize`` starts one worker pool per process
(the first engine's thread count wins; a decode also runs on its calling
thread, so requests decode in parallel whatever the count), and the message
handlers are global: a message is routed to the decode running on the
thread that emitted it, and one from a Grok worker thread, which cannot be
attributed, to every decode in flight.

Struct layouts below mirror /usr/include/grok-10.0/grok.h from
libgrokj2k1-dev 10.0.5; tests/unit/test_grok_engine.py compiles a C program
printing every mirrored field's offset and size and compares them (the
header is only needed for that test: at run time only libgrokj2k.so.1 is).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

import pyvips

from decoder.engines.base import (
    DecodeError,
    ImageInfo,
    SourceFormat,
    UnsupportedSource,
    VipsImage,
    checked_level,
)
from decoder.engines.openjpeg import (
    OpenJpegEngine,
    OpenJpegOptions,
    Plane,
    codec_format,
    planes_to_vips,
    reference_area,
)
from decoder.engines.vips import vips_error_message
from decoder.plan import Box
from decoder.sources.base import ByteReader

# -- grok.h (10.0.5) ------------------------------------------------------------

GRK_CLRSPC_SRGB: Final = 2
GRK_CLRSPC_GRAY: Final = 3
GRK_CLRSPC_SYCC: Final = 4
GRK_CLRSPC_EYCC: Final = 5
GRK_CLRSPC_CMYK: Final = 6
GRK_J2K_MAXRLVLS: Final = 33
GRK_NUM_COMMENTS_SUPPORTED: Final = 256
GRK_NUM_ASOC_BOXES_SUPPORTED: Final = 256
GRK_TILE_CACHE_NONE: Final = 0
GRK_RANDOM_ACCESS_PLT: Final = 1
GRK_RANDOM_ACCESS_TLM: Final = 2
GRK_RANDOM_ACCESS_PLM: Final = 4
RANDOM_ACCESS: Final = GRK_RANDOM_ACCESS_TLM | GRK_RANDOM_ACCESS_PLM

# Grok's window is given as floats: reference-grid coordinates are exact only
# up to 2**24.
_FLOAT_EXACT: Final = 1 << 24

_u8, _u16, _u32 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32
_bool, _enum, _size, _vp = ctypes.c_bool, ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p


class GrkStreamParams(ctypes.Structure):
    """grk_stream_params: a file name, or a buffer and its length."""

    _fields_ = [("file", ctypes.c_char_p), ("buf", _vp), ("len", _size)]


class GrkDecompressCoreParams(ctypes.Structure):
    """grk_decompress_core_params: reduction, layers, tile cache, I/O hooks."""

    _fields_ = [
        ("reduce", _u8),
        ("max_layers", _u16),
        ("tileCacheStrategy", _enum),
        ("randomAccessFlags_", _u32),
        ("io_buffer_callback", _vp),
        ("io_user_data", _vp),
        ("io_register_client_callback", _vp),
    ]


class GrkAsoc(ctypes.Structure):
    """grk_asoc: one association box (in grk_header_info)."""

    _fields_ = [("level", _u32), ("label", _vp), ("xml", _vp), ("xml_len", _u32)]


class GrkHeaderInfo(ctypes.Structure):
    """grk_header_info: what grk_decompress_read_header fills in (Grok writes
    the whole struct, so every field is mirrored)."""

    _fields_ = [
        ("decompressFormat", _enum),
        ("forceRGB", _bool),
        ("upsample", _bool),
        ("precision", _vp),
        ("numPrecision", _u32),
        ("splitByComponent", _bool),
        ("singleTileDecompress", _bool),
        ("cblockw_init", _u32),
        ("cblockh_init", _u32),
        ("irreversible", _bool),
        ("mct", _u32),
        ("rsiz", _u16),
        ("numresolutions", _u32),
        ("csty", _u8),
        ("cblk_sty", _u8),
        ("prcw_init", _u32 * GRK_J2K_MAXRLVLS),
        ("prch_init", _u32 * GRK_J2K_MAXRLVLS),
        ("tx0", _u32),
        ("ty0", _u32),
        ("t_width", _u32),
        ("t_height", _u32),
        ("t_grid_width", _u32),
        ("t_grid_height", _u32),
        ("numlayers", _u16),
        ("xml_data", _vp),
        ("xml_data_len", _size),
        ("num_comments", _size),
        ("comment", _vp * GRK_NUM_COMMENTS_SUPPORTED),
        ("comment_len", _u16 * GRK_NUM_COMMENTS_SUPPORTED),
        ("isBinaryComment", _bool * GRK_NUM_COMMENTS_SUPPORTED),
        ("asocs", GrkAsoc * GRK_NUM_ASOC_BOXES_SUPPORTED),
        ("num_asocs", _u32),
    ]


class GrkImageComp(ctypes.Structure):
    """grk_image_comp: one decoded component (int32 samples, `stride` apart)."""

    _fields_ = [
        ("x0", _u32),
        ("y0", _u32),
        ("w", _u32),
        ("stride", _u32),
        ("h", _u32),
        ("dx", _u8),
        ("dy", _u8),
        ("prec", _u8),
        ("sgnd", _bool),
        ("type", _enum),
        ("association", _enum),
        ("Xcrg", _u16),
        ("Ycrg", _u16),
        ("data", _vp),  # int32_t *
    ]


class GrkIoBuf(ctypes.Structure):
    """grk_io_buf (inside grk_image)."""

    _fields_ = [
        ("data_", _vp),
        ("offset_", _size),
        ("len_", _size),
        ("allocLen_", _size),
        ("pooled_", _bool),
        ("index_", _u32),
    ]


class GrkImage(ctypes.Structure):
    """grk_image: reference-grid area, components, colour space."""

    _fields_ = [
        ("obj", _vp),  # grk_object: one void *wrapper
        ("x0", _u32),
        ("y0", _u32),
        ("x1", _u32),
        ("y1", _u32),
        ("numcomps", _u16),
        ("color_space", _enum),
        ("paletteApplied_", _bool),
        ("channelDefinitionApplied_", _bool),
        ("has_capture_resolution", _bool),
        ("capture_resolution", ctypes.c_double * 2),
        ("has_display_resolution", _bool),
        ("display_resolution", ctypes.c_double * 2),
        ("decompressFormat", _enum),
        ("forceRGB", _bool),
        ("upsample", _bool),
        ("precision", _vp),
        ("numPrecision", _u32),
        ("hasMultipleTiles", _bool),
        ("splitByComponent", _bool),
        ("decompressNumComps", _u16),
        ("decompressWidth", _u32),
        ("decompressHeight", _u32),
        ("decompressPrec", _u8),
        ("decompressColourSpace", _enum),
        ("interleavedData", GrkIoBuf),
        ("rowsPerStrip", _u32),
        ("rowsPerTask", _u32),
        ("packedRowBytes", ctypes.c_uint64),
        ("meta", _vp),
        ("comps", ctypes.POINTER(GrkImageComp)),
    ]


# The structs a layout test compares with grok.h, by their C type names.
MIRRORED: Final[dict[str, type[ctypes.Structure]]] = {
    "grk_stream_params": GrkStreamParams,
    "grk_decompress_core_params": GrkDecompressCoreParams,
    "grk_asoc": GrkAsoc,
    "grk_header_info": GrkHeaderInfo,
    "grk_image_comp": GrkImageComp,
    "grk_io_buf": GrkIoBuf,
    "grk_image": GrkImage,
}

_MSG_FN = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)

_LIBRARY_NAMES: Final = ("libgrokj2k.so.1",)


def grok(library: str | None = None) -> ctypes.CDLL:
    """libgrokj2k with the prototypes we call declared (loaded once).

    `library` is a file name or path; None tries libgrokj2k.so.1 (Debian's
    libgrokj2k1), then whatever ctypes.util.find_library finds. Raises
    OSError if none loads or it is not Grok 10.
    """
    return _load(library)


@cache  # keyed by the positional argument alone: grok() and grok(None) share it
def _load(library: str | None) -> ctypes.CDLL:
    found = ctypes.util.find_library("grokj2k")
    names = [library] if library else list(dict.fromkeys([*_LIBRARY_NAMES, found]))
    lib: ctypes.CDLL | None = None
    errors: list[str] = []
    for name in names:
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError as exc:
            errors.append(str(exc))
    if lib is None:
        raise OSError(
            "libgrokj2k not found (install libgrokj2k1): " + "; ".join(errors or ["no candidates"])
        )
    vp, f32 = ctypes.c_void_p, ctypes.c_float
    protos: dict[str, tuple[Any, list[Any]]] = {
        "grk_version": (ctypes.c_char_p, []),
        "grk_initialize": (ctypes.c_bool, [ctypes.c_char_p, ctypes.c_uint32]),
        "grk_object_unref": (None, [vp]),
        "grk_set_msg_handlers": (None, [_MSG_FN, vp, _MSG_FN, vp, _MSG_FN, vp]),
        "grk_decompress_set_default_params": (None, [ctypes.POINTER(GrkDecompressCoreParams)]),
        "grk_decompress_init": (
            vp,
            [ctypes.POINTER(GrkStreamParams), ctypes.POINTER(GrkDecompressCoreParams)],
        ),
        "grk_decompress_read_header": (ctypes.c_bool, [vp, ctypes.POINTER(GrkHeaderInfo)]),
        "grk_decompress_get_composited_image": (ctypes.POINTER(GrkImage), [vp]),
        "grk_decompress_set_window": (ctypes.c_bool, [vp, f32, f32, f32, f32]),
        "grk_decompress": (ctypes.c_bool, [vp, vp]),
    }
    for name, (restype, argtypes) in protos.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise OSError(f"{name} missing from {lib._name}: not Grok 10") from None
        fn.restype = restype
        fn.argtypes = argtypes
    version = bytes(lib.grk_version()).decode()
    if not version.startswith("10."):
        # The structs above are Grok 10's; another major version may lay them out differently.
        raise OSError(f"{lib._name} is Grok {version}; this engine binds Grok 10")
    return lib


def grok_version(library: str | None = None) -> str:
    """The loaded libgrokj2k's version, e.g. "10.0.5"."""
    return bytes(grok(library).grk_version()).decode()


# -- process-wide initialization and messages -------------------------------------


@dataclass(slots=True, eq=False)
class _Messages:
    """The errors and warnings Grok reported during one decode."""

    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        joined = "; ".join(line for line in self.lines if line)
        return joined[:300] or "Grok failed without a message"


_current = threading.local()  # .messages: the decode running on this thread
_in_flight: set[_Messages] = set()
_in_flight_lock = threading.Lock()


def _on_message(msg: bytes | None, _user: int | None) -> None:
    if not msg:
        return
    text = msg.decode("utf-8", "replace").strip()
    mine: _Messages | None = getattr(_current, "messages", None)
    if mine is not None:
        mine.lines.append(text)
        return
    # From one of Grok's worker threads: which decode it is about is unknown,
    # so every decode in flight takes it. A missed warning could let wrong
    # pixels through; a healthy decode handed to OpenJPEG only costs time.
    with _in_flight_lock:
        targets = list(_in_flight)
    for messages in targets:
        messages.lines.append(text)


def _on_info(_msg: bytes | None, _user: int | None) -> None:
    return None  # per-tile chatter


@contextmanager
def _collecting() -> Iterator[_Messages]:
    """Route Grok's messages to a fresh _Messages for the block's decode."""
    messages = _Messages()
    previous = getattr(_current, "messages", None)
    _current.messages = messages
    with _in_flight_lock:
        _in_flight.add(messages)
    try:
        yield messages
    finally:
        with _in_flight_lock:
            _in_flight.discard(messages)
        _current.messages = previous


# Module level: Grok keeps these addresses for the life of the process.
_ON_MESSAGE = _MSG_FN(_on_message)
_ON_INFO = _MSG_FN(_on_info)

_init_lock = threading.Lock()
_initialized: dict[str, int] = {}  # library name -> the thread count Grok started with


def _initialize(lib: ctypes.CDLL, threads: int) -> int:
    """Start Grok once per process (thread-safe) and return its thread count:
    ``grk_initialize`` builds one worker pool for the whole process, so the
    first caller's count is the one every later decode gets."""
    with _init_lock:
        started = _initialized.get(lib._name)
        if started is not None:
            return started
        lib.grk_set_msg_handlers(_ON_INFO, None, _ON_MESSAGE, None, _ON_MESSAGE, None)
        # The result says whether Grok's (GPU) plugin loaded: none is expected.
        lib.grk_initialize(None, threads)
        _initialized[lib._name] = threads
        return threads


# -- the engine -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrokOptions:
    """Tuning for GrokEngine.

    `threads`: Grok's worker threads (``grk_initialize``; process-wide, so
    only the first engine's count takes effect). `max_buffer_bytes`: the
    largest remote object (a reader without a local path) read whole for
    Grok, in bytes; larger ones are decoded by OpenJPEG, which reads only
    what a window needs. `library`: the libgrokj2k to load (None = the
    system's). `openjpeg_library`: the fallback's libopenjp2 (as
    OpenJpegOptions.library).
    """

    threads: int = 1
    max_buffer_bytes: int = 32 << 20
    library: str | None = None
    openjpeg_library: str | None = None


class GrokEngine:
    """Engine for JPEG 2000 (.jp2 and raw .j2k codestreams) on libgrokj2k 10.

    Describes images with the libvips engine's JPEG 2000 logic, like
    OpenJpegEngine, and decodes regions with Grok: multi-tile codestreams on
    whole-tile windows, without PLT markers (see the module docstring).
    Boxes Grok fails or warns about, and remote objects above
    ``max_buffer_bytes``, are decoded by an OpenJpegEngine with the same
    thread count. Thread-safe: every decode has its own codec.
    """

    formats: frozenset[SourceFormat] = frozenset({SourceFormat.JPEG2000})

    def __init__(self, options: GrokOptions | None = None) -> None:
        """Load and start libgrokj2k (raises OSError if it cannot be loaded,
        ValueError for nonsensical options)."""
        self._options = options or GrokOptions()
        if not 1 <= self._options.threads <= 256:
            raise ValueError("threads must be between 1 and 256")
        if self._options.max_buffer_bytes < 0:
            raise ValueError("max_buffer_bytes must be >= 0")
        self._lib = grok(self._options.library)
        self._threads = _initialize(self._lib, self._options.threads)
        self._openjpeg = OpenJpegEngine(
            OpenJpegOptions(threads=self._options.threads, library=self._options.openjpeg_library)
        )
        self._lock = threading.Lock()
        self._fallbacks = 0

    @property
    def options(self) -> GrokOptions:
        """The options this engine was built with."""
        return self._options

    @property
    def threads(self) -> int:
        """Grok's worker threads in this process (the first engine's count)."""
        return self._threads

    @property
    def fallbacks(self) -> int:
        """Decodes handed to OpenJPEG since construction because Grok failed
        or warned (not counting remote objects above max_buffer_bytes)."""
        with self._lock:
            return self._fallbacks

    def describe(self, reader: ByteReader, fmt: SourceFormat) -> ImageInfo:
        """Size, resolution levels, tiles, bands, bit depth and ICC presence.

        Raises UnsupportedSource unless `fmt` is JPEG 2000 and DecodeError if
        the header is unreadable.
        """
        if fmt not in self.formats:
            raise UnsupportedSource(f"GrokEngine cannot read {fmt}")
        return self._openjpeg.describe(reader, fmt)

    def load_region(self, reader: ByteReader, info: ImageInfo, level: int, box: Box) -> VipsImage:
        """Decode `box` (pixels of `info.levels[level]`) at resolution
        reduction `level`, as an 8-bit sRGB or b-w libvips image held in
        memory (alpha kept as the last band; 16-bit samples scaled down).

        When Grok fails or warns, OpenJPEG decodes the box instead (see
        `fallbacks`). Raises RenderError for a level or box out of range,
        DecodeError when neither codec can decode the codestream (OpenJPEG's
        message, then Grok's) or it does not match `info`, and the reader's
        SourceError if reading failed.
        """
        if info.format is not SourceFormat.JPEG2000:
            raise UnsupportedSource(f"GrokEngine cannot read {info.format}")
        checked_level(info, level, box)
        if reader.path is None and reader.size > self._options.max_buffer_bytes:
            return self._openjpeg.load_region(reader, info, level, box)
        try:
            image = self._decode(reader, info, level, box)
        except _Untrusted as trouble:
            # OpenJPEG decides: it decodes the windows Grok gets wrong, and
            # fails damaged codestreams (strict mode) with its own message.
            with self._lock:
                self._fallbacks += 1
            try:
                return self._openjpeg.load_region(reader, info, level, box)
            except DecodeError as exc:
                raise DecodeError(f"{exc} (Grok: {trouble})") from trouble
        if image is None:
            # No component on the reference grid's own pixel grid: OpenJpegEngine
            # hands such images to libvips, which sizes them by the first
            # component, as the description does.
            return self._openjpeg.load_region(reader, info, level, box)
        return image

    # -- one decode -----------------------------------------------------------

    def _decode(
        self, reader: ByteReader, info: ImageInfo, level: int, box: Box
    ) -> VipsImage | None:
        """The decoded box, or None when no component is sampled at full
        resolution."""
        lib = self._lib
        codec_format(reader.read_at(0, 12))  # UnsupportedSource for anything else
        codec = None
        try:
            with _bytes_of(reader) as (address, length), _collecting() as messages:
                stream = GrkStreamParams(file=None, buf=address, len=length)
                core = GrkDecompressCoreParams()
                lib.grk_decompress_set_default_params(ctypes.byref(core))
                core.reduce = level
                core.tileCacheStrategy = GRK_TILE_CACHE_NONE
                # Not PLT: Grok 10.0.5 skips packets by their PLT lengths
                # wrongly in some codestreams, silently (module docstring).
                core.randomAccessFlags_ = RANDOM_ACCESS
                codec = lib.grk_decompress_init(ctypes.byref(stream), ctypes.byref(core))
                if not codec:
                    raise _failure(messages, "grk_decompress_init")
                header = GrkHeaderInfo()
                if not lib.grk_decompress_read_header(codec, ctypes.byref(header)):
                    raise _failure(messages, "grk_decompress_read_header")
                image_p = lib.grk_decompress_get_composited_image(codec)
                if not image_p:
                    raise _failure(messages, "grk_decompress_get_composited_image")
                head = image_p.contents
                comps = [head.comps[i] for i in range(head.numcomps)]
                if not any(c.dx == c.dy == 1 for c in comps):
                    return None
                image_area = (head.x0, head.y0, head.x1, head.y1)
                if (head.x1 - head.x0, head.y1 - head.y0) != (info.width, info.height):
                    raise DecodeError("image does not match its description (changed?)")
                if level >= header.numresolutions:
                    raise DecodeError(f"level {level} not in the codestream")
                sx, sy = max(c.dx for c in comps), max(c.dy for c in comps)
                area, left, top = reference_area(image_area, level, box, (sx, sy))
                if header.t_grid_width * header.t_grid_height > 1:
                    area = tile_aligned(area, image_area, header)
                # Grok's window is relative to the image area's origin (unlike
                # OpenJPEG's); what it decodes is placed absolutely again.
                x0, y0, x1, y1 = area
                window = (x0 - head.x0, y0 - head.y0, x1 - head.x0, y1 - head.y0)
                if max(window) >= _FLOAT_EXACT:
                    raise _Untrusted("image too large for Grok's float window coordinates")
                if not lib.grk_decompress_set_window(codec, *map(float, window)):
                    raise _failure(messages, "grk_decompress_set_window")
                if not lib.grk_decompress(codec, None):
                    raise _failure(messages, "grk_decompress")
                if messages.lines:
                    # Grok decodes damaged codestreams leniently (a truncated
                    # tile comes out partly grey), and some windows without
                    # the code-blocks they need ("sparse canvas ... missing
                    # block"), and says so only in warnings.
                    raise _Untrusted(f"grk_decompress warned: {messages.text()}")
                image_p = lib.grk_decompress_get_composited_image(codec)
                if not image_p:
                    raise _failure(messages, "grk_decompress_get_composited_image")
                try:
                    return _to_vips(image_p.contents, box, left, top)
                except DecodeError as exc:  # components missing or misplaced
                    raise _Untrusted(str(exc)) from exc
        except pyvips.Error as exc:
            raise DecodeError(vips_error_message(exc)) from exc
        finally:
            # The codec owns the image and its stream; unref frees them all.
            if codec:
                lib.grk_object_unref(codec)


def tile_aligned(
    area: tuple[int, int, int, int], image: tuple[int, int, int, int], header: GrkHeaderInfo
) -> tuple[int, int, int, int]:
    """`area` (reference grid) widened to whole codestream tiles, clipped to
    the image: Grok 10.0.5 decodes only such windows of multi-tile
    codestreams correctly (see the module docstring)."""
    tx0, ty0, tw, th = header.tx0, header.ty0, header.t_width, header.t_height
    x0, y0, x1, y1 = area
    return (
        max(image[0], tx0 + (x0 - tx0) // tw * tw),
        max(image[1], ty0 + (y0 - ty0) // th * th),
        min(image[2], tx0 + -(-(x1 - tx0) // tw) * tw),
        min(image[3], ty0 + -(-(y1 - ty0) // th) * th),
    )


class _Untrusted(Exception):
    """Grok failed or warned: its pixels, if any, are not to be used."""


def _failure(messages: _Messages, call: str) -> _Untrusted:
    return _Untrusted(f"{call} failed: {messages.text()}")


@contextmanager
def _bytes_of(reader: ByteReader) -> Iterator[tuple[int, int]]:
    """The reader's bytes in memory for Grok, as (address, length): a local
    file mapped read-only (private: Grok may not write to it), else the whole
    object read through the reader. Valid inside the block only."""
    path = reader.path
    if path is None:
        data = reader.read_at(0, reader.size)
        # A copy: Grok gets a mutable buffer, and `data` may be the reader's
        # own cached bytes.
        buffer = (ctypes.c_char * len(data)).from_buffer_copy(data) if data else None
        yield (ctypes.addressof(buffer) if buffer is not None else 0), len(data)
        return
    # The path, not the reader's descriptor (the protocol offers none): a
    # file replaced since it was opened is caught by the description check.
    # The mapping is of the file's current size, never past its end; a file
    # truncated in place during a decode would fault (SIGBUS), as it would
    # under Grok's own file reader, which maps files too.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(fd).st_size
        if size == 0:
            yield 0, 0
            return
        mapped = mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
    finally:
        os.close(fd)
    view = (ctypes.c_char * size).from_buffer(mapped)
    try:
        yield ctypes.addressof(view), size
    finally:
        del view  # the export must go before the mapping can close
        mapped.close()


_GRK_COLOURS: Final[dict[int, str]] = {
    GRK_CLRSPC_SRGB: "rgb",
    GRK_CLRSPC_GRAY: "grey",
    GRK_CLRSPC_SYCC: "ycc",
    GRK_CLRSPC_EYCC: "ycc",
    GRK_CLRSPC_CMYK: "cmyk",
}


def _to_vips(image: GrkImage, box: Box, left: int, top: int) -> VipsImage:
    """A grk_image after grk_decompress as an 8-bit libvips image of `box`."""
    planes = []
    for i in range(image.numcomps):
        comp = image.comps[i]
        planes.append(
            Plane(
                data=comp.data or 0,
                w=comp.w,
                h=comp.h,
                stride=comp.stride,
                x0=comp.x0,
                y0=comp.y0,
                dx=comp.dx,
                dy=comp.dy,
                prec=comp.prec,
                sgnd=bool(comp.sgnd),
            )
        )
    colour = _GRK_COLOURS.get(image.color_space, "unknown")
    return planes_to_vips(planes, colour, box, left, top, "Grok")
