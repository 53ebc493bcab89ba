"""A JPEG 2000 engine on libopenjp2 directly (ctypes), not libvips' loader.

Why: libvips 8.14's jp2kload decodes whole codestream tiles (1024 x 1024
in typical masters), and every tile of a reduced level, for any region; a
256 px tile then costs ~100 ms whatever its level. OpenJPEG itself decodes
just the code-blocks under a window of one resolution level
(``opj_set_decoded_resolution_factor`` + ``opj_set_decode_area``), which is
what IIPImage does. One decode here is, per openjpeg.h (2.5):

1. a stream: ``opj_stream_create_file_stream`` when the reader has a local
   path (C reads, no Python per read), else ``opj_stream_create`` with
   read/skip/seek callbacks over ``reader.read_at`` (or ``read_some``), so a
   remote source's read plan still decides what is fetched;
2. ``opj_create_decompress`` (OPJ_CODEC_JP2 or OPJ_CODEC_J2K by signature),
   message handlers collecting warnings and errors, ``opj_setup_decoder``,
   ``opj_codec_set_threads``, ``opj_read_header``;
3. ``opj_set_decoded_resolution_factor(level)`` and ``opj_set_decode_area``
   in full-resolution reference-grid coordinates (the API takes those even
   when decoding a reduced level: uclouvain/openjpeg#1006), ``opj_decode``;
4. the int32 component planes wrapped (no copy) as libvips images, scaled to
   8 bits, upsampled if subsampled, YCC converted like jp2kload, joined and
   copied once into a libvips memory image;
5. ``opj_image_destroy``, ``opj_destroy_codec``, ``opj_stream_destroy`` on
   every path. ``opj_end_decompress`` is not called: it only reads what
   follows the codestream (JP2 boxes after jp2c), which a window never needs.

OpenJPEG 2.5 decodes in strict mode by default, so truncated codestreams
fail instead of decoding grey. The library is by default our build of
OpenJPEG 2.5.4 (decoder/native/build_openjpeg.py, `make install`), else
the system's. 2.5.0 (Debian 12) does not use TLM markers: each decode walks
every tile-part header (one seek and one buffered read each), which is why
the stream's buffer is small (see OpenJpegOptions.buffer_bytes); 2.5.3 and
later seek to the tile-parts a window needs when the codestream has TLM.

A codec object is never used by two decodes at once: OpenJPEG codecs are not
thread-safe, and sharing one serializes decodes. A codec is created per call,
except for the blocks of a single-tile codestream, whose codec may be kept
idle for the next block of the same image and level (see load_block and
decoder/engines/codec_shelf.py). ctypes releases the GIL around every
foreign call, so concurrent requests decode in parallel.

Struct layouts below were checked against /usr/include/openjpeg-2.5/openjpeg.h
(offsets compiled and printed with gcc on x86-64: opj_dparameters_t is 8252
bytes, opj_image_comp_t 64 with `data` at 48, opj_image_t 48 with `comps` at
24); tests/unit/test_openjpeg_engine.py re-checks the sizes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import os
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
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
from decoder.engines.codec_shelf import CodecShelf
from decoder.engines.vips import VipsEngine, vips_error_message
from decoder.formats import jp2
from decoder.plan import Box
from decoder.sources.base import ByteReader, SourceError

# -- openjpeg.h ---------------------------------------------------------------

OPJ_CODEC_J2K: Final = 0
OPJ_CODEC_JP2: Final = 2
OPJ_CLRSPC_UNKNOWN: Final = -1
OPJ_CLRSPC_UNSPECIFIED: Final = 0
OPJ_CLRSPC_SRGB: Final = 1
OPJ_CLRSPC_GRAY: Final = 2
OPJ_CLRSPC_SYCC: Final = 3
OPJ_CLRSPC_EYCC: Final = 4
OPJ_CLRSPC_CMYK: Final = 5
OPJ_PATH_LEN: Final = 4096
# OPJ_J2K_STREAM_CHUNK_SIZE in openjpeg.h: what opj_stream_create_default_file_stream uses.
OPJ_J2K_STREAM_CHUNK_SIZE: Final = 0x100000

_JP2_MAGIC: Final = b"\r\n\x87\n"  # the short form libvips and OpenJPEG also accept


class OpjDParameters(ctypes.Structure):
    """opj_dparameters_t: decompression parameters (openjpeg.h 2.5)."""

    _fields_ = [
        ("cp_reduce", ctypes.c_uint32),
        ("cp_layer", ctypes.c_uint32),
        ("infile", ctypes.c_char * OPJ_PATH_LEN),
        ("outfile", ctypes.c_char * OPJ_PATH_LEN),
        ("decod_format", ctypes.c_int),
        ("cod_format", ctypes.c_int),
        ("DA_x0", ctypes.c_uint32),
        ("DA_x1", ctypes.c_uint32),
        ("DA_y0", ctypes.c_uint32),
        ("DA_y1", ctypes.c_uint32),
        ("m_verbose", ctypes.c_int),
        ("tile_index", ctypes.c_uint32),
        ("nb_tile_to_decode", ctypes.c_uint32),
        ("jpwl_correct", ctypes.c_int),
        ("jpwl_exp_comps", ctypes.c_int),
        ("jpwl_max_tiles", ctypes.c_int),
        ("flags", ctypes.c_uint),
    ]


class OpjImageComp(ctypes.Structure):
    """opj_image_comp_t: one decoded component (int32 samples in `data`)."""

    _fields_ = [
        ("dx", ctypes.c_uint32),
        ("dy", ctypes.c_uint32),
        ("w", ctypes.c_uint32),
        ("h", ctypes.c_uint32),
        ("x0", ctypes.c_uint32),
        ("y0", ctypes.c_uint32),
        ("prec", ctypes.c_uint32),
        ("bpp", ctypes.c_uint32),  # deprecated, still in the layout
        ("sgnd", ctypes.c_uint32),
        ("resno_decoded", ctypes.c_uint32),
        ("factor", ctypes.c_uint32),
        ("data", ctypes.c_void_p),  # OPJ_INT32 *
        ("alpha", ctypes.c_uint16),
    ]


class OpjImage(ctypes.Structure):
    """opj_image_t: reference-grid area, components, colour space, ICC."""

    _fields_ = [
        ("x0", ctypes.c_uint32),
        ("y0", ctypes.c_uint32),
        ("x1", ctypes.c_uint32),
        ("y1", ctypes.c_uint32),
        ("numcomps", ctypes.c_uint32),
        ("color_space", ctypes.c_int),
        ("comps", ctypes.POINTER(OpjImageComp)),
        ("icc_profile_buf", ctypes.c_void_p),
        ("icc_profile_len", ctypes.c_uint32),
    ]


# opj_stream_read_fn, opj_stream_skip_fn, opj_stream_seek_fn, opj_msg_callback.
_READ_FN = ctypes.CFUNCTYPE(ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_SKIP_FN = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_SEEK_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int64, ctypes.c_void_p)
_MSG_FN = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_void_p)

_SIZE_T_ERROR: Final = ctypes.c_size_t(-1).value  # (OPJ_SIZE_T)-1: end of stream or error

_LIBRARY_NAMES: Final = ("libopenjp2.so.7", "libopenjp2.so")
# Built by `python -m decoder.native.build_openjpeg` (make install).
BUNDLED_LIBRARY: Final = Path(__file__).resolve().parents[1] / "native/openjpeg/libopenjp2.so.7"
SYSTEM: Final = "system"


def library_candidates(library: str | None = None) -> list[str]:
    """The libopenjp2 files to try, in order, for the `library` setting:
    None: our build (BUNDLED_LIBRARY) when there is one, then the system's;
    "system": the system's (libopenjp2.so.7, then what
    ctypes.util.find_library finds); anything else: that file name or path."""
    if library and library != SYSTEM:
        return [library]
    bundled = [str(BUNDLED_LIBRARY)] if library is None and BUNDLED_LIBRARY.is_file() else []
    found = ctypes.util.find_library("openjp2")
    return [*bundled, *_LIBRARY_NAMES, *([found] if found else [])]


@cache
def openjpeg(library: str | None = None) -> ctypes.CDLL:
    """libopenjp2 with the prototypes we call declared (loaded once per
    `library` setting; see library_candidates). Raises OSError if none loads.
    """
    names = library_candidates(library)
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
        raise OSError("libopenjp2 not found: " + "; ".join(errors or ["no candidates"]))
    vp, i32, u32, cint = ctypes.c_void_p, ctypes.c_int32, ctypes.c_uint32, ctypes.c_int
    image_p = ctypes.POINTER(OpjImage)
    protos: dict[str, tuple[Any, list[Any]]] = {
        "opj_version": (ctypes.c_char_p, []),
        "opj_has_thread_support": (cint, []),
        "opj_stream_create": (vp, [ctypes.c_size_t, cint]),
        "opj_stream_create_file_stream": (vp, [ctypes.c_char_p, ctypes.c_size_t, cint]),
        "opj_stream_destroy": (None, [vp]),
        "opj_stream_set_read_function": (None, [vp, _READ_FN]),
        "opj_stream_set_skip_function": (None, [vp, _SKIP_FN]),
        "opj_stream_set_seek_function": (None, [vp, _SEEK_FN]),
        "opj_stream_set_user_data": (None, [vp, vp, vp]),
        "opj_stream_set_user_data_length": (None, [vp, ctypes.c_uint64]),
        "opj_create_decompress": (vp, [cint]),
        "opj_destroy_codec": (None, [vp]),
        "opj_set_info_handler": (cint, [vp, _MSG_FN, vp]),
        "opj_set_warning_handler": (cint, [vp, _MSG_FN, vp]),
        "opj_set_error_handler": (cint, [vp, _MSG_FN, vp]),
        "opj_set_default_decoder_parameters": (None, [ctypes.POINTER(OpjDParameters)]),
        "opj_setup_decoder": (cint, [vp, ctypes.POINTER(OpjDParameters)]),
        "opj_codec_set_threads": (cint, [vp, cint]),
        "opj_read_header": (cint, [vp, vp, ctypes.POINTER(image_p)]),
        "opj_set_decoded_resolution_factor": (cint, [vp, u32]),
        "opj_set_decode_area": (cint, [vp, image_p, i32, i32, i32, i32]),
        "opj_decode": (cint, [vp, vp, image_p]),
        "opj_end_decompress": (cint, [vp, vp]),
        "opj_image_destroy": (None, [image_p]),
        "opj_image_data_free": (None, [vp]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def loaded_library(library: str | None = None) -> str:
    """The file name or path `openjpeg(library)` loaded."""
    return str(openjpeg(library)._name)


def openjpeg_version(library: str | None = None) -> str:
    """The loaded libopenjp2's version, e.g. "2.5.0"."""
    return bytes(openjpeg(library).opj_version()).decode()


# -- per-decode state, reached from C callbacks through a key -----------------
#
# The callbacks are created once (module level), so no ctypes thunk can be
# garbage-collected while OpenJPEG still holds its address; each decode
# registers its state under a fresh integer key passed as the callbacks'
# user data / client data.


@dataclass(slots=True)
class _DecodeState:
    """One decode's stream position over its reader and codec messages."""

    read: Callable[[int, int], bytes] | None = None
    size: int = 0
    position: int = 0
    messages: list[str] = field(default_factory=list)
    error: BaseException | None = None  # first exception raised by a reader call

    def bind(self, reader: ByteReader | None) -> None:
        """Read `reader` from now on (None: fail every read), with no
        messages or error yet; the position is the stream's own business."""
        # Remote readers may offer read_some(): a short read of what has
        # arrived; OpenJPEG's stream loops over short reads (see vips.py).
        self.read = None if reader is None else getattr(reader, "read_some", reader.read_at)
        if reader is not None:
            self.size = reader.size
        self.messages = []
        self.error = None

    def message(self) -> str:
        """The codec's errors (else warnings), shortened for an error text."""
        text = "; ".join(m for m in self.messages if m)
        return text[:300] or "OpenJPEG failed without a message"


_states: dict[int, _DecodeState] = {}
_keys = itertools.count(1)  # next() is atomic under the GIL


def _state(key: int | None) -> _DecodeState | None:
    return _states.get(key or 0)


def _on_read(buffer: int, nbytes: int, key: int | None) -> int:
    state = _state(key)
    if state is None or state.read is None:
        return _SIZE_T_ERROR
    try:
        data = state.read(state.position, min(nbytes, max(0, state.size - state.position)))
    except BaseException as exc:  # never unwind through C
        if state.error is None:
            state.error = exc
        return _SIZE_T_ERROR
    if not data:
        return _SIZE_T_ERROR  # end of stream, as opj_stream_read_fn must signal it
    count = min(len(data), nbytes)
    ctypes.memmove(buffer, data, count)
    state.position += count
    return count


def _on_skip(nbytes: int, key: int | None) -> int:
    state = _state(key)
    if state is None:
        return -1
    new = state.position + nbytes
    if new < 0:
        return -1
    # Skipping past the end is not an error here (fseek allows it); the next
    # read reports the end of the stream.
    state.position = min(new, state.size)
    return nbytes


def _on_seek(offset: int, key: int | None) -> int:
    state = _state(key)
    if state is None or not 0 <= offset <= state.size:
        return 0
    state.position = offset
    return 1


def _on_error(msg: bytes | None, key: int | None) -> None:
    state = _state(key)
    if state is not None and msg:
        state.messages.append(msg.decode("utf-8", "replace").strip())


def _on_warning(msg: bytes | None, key: int | None) -> None:
    # Warnings are kept too: they often explain a later failure (e.g. a
    # truncated tile-part is only a warning until decoding gives up).
    _on_error(msg, key)


def _on_info(msg: bytes | None, key: int | None) -> None:
    return None  # OpenJPEG's info messages are per-tile chatter


# The C function pointers OpenJPEG gets; module-level so they outlive every
# stream and codec.
_ON_READ = _READ_FN(_on_read)
_ON_SKIP = _SKIP_FN(_on_skip)
_ON_SEEK = _SEEK_FN(_on_seek)
_ON_ERROR = _MSG_FN(_on_error)
_ON_WARNING = _MSG_FN(_on_warning)
_ON_INFO = _MSG_FN(_on_info)


# -- the engine -----------------------------------------------------------------


def codec_format(head: bytes) -> int:
    """OPJ_CODEC_JP2 or OPJ_CODEC_J2K from a file's first 12 bytes.

    Raises UnsupportedSource for anything else.
    """
    if head[:12] == jp2.JP2_SIGNATURE or head[:4] == _JP2_MAGIC:
        return OPJ_CODEC_JP2
    if head[:4] == jp2.SOC_SIZ:
        return OPJ_CODEC_J2K
    raise UnsupportedSource("not a JPEG 2000 file or codestream")


@dataclass(frozen=True, slots=True)
class OpenJpegOptions:
    """Tuning for OpenJpegEngine.

    `threads`: OpenJPEG worker threads per decode (``opj_codec_set_threads``;
    1 = decode on the calling thread, best when requests already run in
    parallel). `file_stream`: read local files with OpenJPEG's own stdio
    stream (``opj_stream_create_file_stream``) instead of Python callbacks.
    `buffer_bytes`: the stream's chunk size in bytes, i.e. what is read at
    each seek. A 256 px tile of a 6000 x 8000 master with 1024 px tiles and
    tile-parts per resolution seeks ~340 times (every tile-part header):
    64 KiB asks the reader for ~18 MB per tile, 1 MiB for ~31 MB, at equal
    CPU (measured); remote readers' read_some() returns less anyway.
    `library`: the libopenjp2 to load (see library_candidates: None is our
    build of OpenJPEG 2.5.4 when there is one, else the system's).
    `kept_codec_bytes`: the memory that idle codecs of single-tile images may
    hold, by kept_codec_bytes() each (0: none kept; see load_block).
    """

    threads: int = 1
    file_stream: bool = True
    buffer_bytes: int = 64 * 1024
    library: str | None = None
    kept_codec_bytes: int = 0


def single_tile(info: ImageInfo) -> bool:
    """Whether `info` describes a codestream of one tile (an untiled JPEG
    2000), whose codec can decode further windows without reading it again."""
    tile_w, tile_h = info.tile_width, info.tile_height
    return tile_w <= 0 or tile_h <= 0 or (tile_w >= info.width and tile_h >= info.height)


def kept_codec_bytes(codestream_bytes: int) -> int:
    """The memory a kept codec is charged for: it holds the whole codestream
    and the structures parsed from it. Measured on the benchmark's untiled
    master (18 MB, 256 px precincts): 56 MB of resident memory a codec after
    one 512 px decode, at levels 0 to 2."""
    return 3 * codestream_bytes + (1 << 20)


@dataclass(slots=True, eq=False)
class _Opened:
    """A codec with its stream and header image, and its callbacks' state
    (registered under `key`)."""

    key: int
    state: _DecodeState = field(default_factory=_DecodeState)
    stream: int | None = None
    codec: int | None = None
    image: Any = field(default_factory=lambda: ctypes.POINTER(OpjImage)())
    extents: tuple[int, int, int, int] = (0, 0, 0, 0)
    subsampling: tuple[int, int] = (1, 1)


class OpenJpegEngine:
    """Engine for JPEG 2000 (.jp2 and raw .j2k codestreams) on libopenjp2.

    Describes images with the libvips engine's JPEG 2000 logic (SIZ/COD
    header parse plus libvips' band and ICC facts; cached by the service) and
    decodes regions itself. Thread-safe: a decode has its stream, codec and
    image to itself, whether new or taken from the shelf of kept codecs
    (the one thing that changes after construction; see load_block).
    """

    formats: frozenset[SourceFormat] = frozenset({SourceFormat.JPEG2000})

    def __init__(self, options: OpenJpegOptions | None = None) -> None:
        """Load libopenjp2 (raises OSError if it cannot be loaded, ValueError
        for nonsensical options)."""
        self._options = options or OpenJpegOptions()
        if not 1 <= self._options.threads <= 256:
            raise ValueError("threads must be between 1 and 256")
        if not 4096 <= self._options.buffer_bytes <= 64 << 20:
            raise ValueError("buffer_bytes must be between 4 KiB and 64 MiB")
        if self._options.kept_codec_bytes < 0:
            raise ValueError("kept_codec_bytes must be >= 0")
        self._lib = openjpeg(self._options.library)
        self._threads_supported = bool(self._lib.opj_has_thread_support())
        self._vips = VipsEngine()
        self._shelf: CodecShelf[_Opened] | None = (
            CodecShelf(self._options.kept_codec_bytes, self._close)
            if self._options.kept_codec_bytes
            else None
        )

    @property
    def options(self) -> OpenJpegOptions:
        """The options this engine was built with."""
        return self._options

    def describe(self, reader: ByteReader, fmt: SourceFormat) -> ImageInfo:
        """Size, resolution levels, tiles, bands, bit depth and ICC presence.

        Raises UnsupportedSource unless `fmt` is JPEG 2000 and DecodeError if
        the header is unreadable.
        """
        if fmt not in self.formats:
            raise UnsupportedSource(f"OpenJpegEngine cannot read {fmt}")
        return self._vips.describe(reader, fmt)

    def load_region(self, reader: ByteReader, info: ImageInfo, level: int, box: Box) -> VipsImage:
        """Decode `box` (pixels of `info.levels[level]`) at resolution
        reduction `level`, as an 8-bit sRGB or b-w libvips image held in
        memory (alpha kept as the last band; 16-bit samples scaled down).

        Raises RenderError for a level or box out of range, DecodeError with
        OpenJPEG's message when the codestream cannot be decoded (or does not
        match `info`), and the reader's SourceError if reading failed.
        """
        if info.format is not SourceFormat.JPEG2000:
            raise UnsupportedSource(f"OpenJpegEngine cannot read {info.format}")
        checked_level(info, level, box)
        image = self._decode(reader, info, level, box)
        if image is None:
            # No component on the reference grid's own pixel grid (every one
            # subsampled): libvips' loader sizes such images by the first
            # component, which the description follows. Rare; let it decode.
            return self._vips.load_region(reader, info, level, box)
        return image

    def load_block(
        self, reader: ByteReader, info: ImageInfo, level: int, box: Box, image_key: Hashable
    ) -> VipsImage:
        """As load_region, for one of the blocks that an image's regions are
        decoded and cached as (decoder/pipeline/load.py). When the image is
        one codestream tile and codecs are kept (`OpenJpegOptions.
        kept_codec_bytes`), the codec that decoded an earlier block of
        `level` of the image `image_key` (identifier and version) decodes
        this one: it does not read and parse the codestream again."""
        if self._shelf is None or not single_tile(info):
            return self.load_region(reader, info, level, box)
        if info.format is not SourceFormat.JPEG2000:
            raise UnsupportedSource(f"OpenJpegEngine cannot read {info.format}")
        checked_level(info, level, box)
        key = (image_key, level)
        opened = self._shelf.take(key)
        reused = opened is not None
        if opened is None:
            opened = self._open(reader, info, level, callbacks=True)
            if opened is None:
                return self.load_region(reader, info, level, box)
        opened.state.bind(reader)
        try:
            image = self._decode_area(opened, level, box)
        except DecodeError:
            self._close(opened)
            if reused:
                # Whatever went wrong in a kept codec, a new codec decides.
                return self.load_region(reader, info, level, box)
            raise
        except BaseException:
            self._close(opened)
            raise
        # A kept codec must never read through a reader that is closed by
        # then, nor hold samples that the image above has copied.
        opened.state.bind(None)
        self._free_samples(opened)
        self._shelf.give(key, opened, kept_codec_bytes(reader.size))
        return image

    @property
    def kept_codecs(self) -> int:
        """How many idle codecs are kept now."""
        return len(self._shelf) if self._shelf is not None else 0

    def close(self) -> None:
        """Destroy the kept codecs (the engine stays usable)."""
        if self._shelf is not None:
            self._shelf.clear()

    # -- one decode -----------------------------------------------------------

    def _decode(
        self, reader: ByteReader, info: ImageInfo, level: int, box: Box
    ) -> VipsImage | None:
        """The decoded box, or None when the image's geometry is not one this
        engine maps (no component sampled at full resolution)."""
        opened = self._open(reader, info, level, callbacks=False)
        if opened is None:
            return None
        try:
            return self._decode_area(opened, level, box)
        finally:
            self._close(opened)

    def _open(
        self, reader: ByteReader, info: ImageInfo, level: int, *, callbacks: bool
    ) -> _Opened | None:
        """A codec with its header read and resolution reduction `level` set,
        reading `reader` through Python callbacks if `callbacks`, else through
        OpenJPEG's file stream where the options allow; None when no component
        is sampled at full resolution."""
        lib = self._lib
        fmt = codec_format(reader.read_at(0, 12))
        opened = _Opened(next(_keys))
        _states[opened.key] = opened.state
        state = opened.state
        try:
            opened.stream = self._open_stream(reader, state, opened.key, callbacks)
            codec = opened.codec = lib.opj_create_decompress(fmt)
            if not codec:
                raise DecodeError("opj_create_decompress failed")
            lib.opj_set_info_handler(codec, _ON_INFO, opened.key)
            lib.opj_set_warning_handler(codec, _ON_WARNING, opened.key)
            lib.opj_set_error_handler(codec, _ON_ERROR, opened.key)
            params = OpjDParameters()
            lib.opj_set_default_decoder_parameters(ctypes.byref(params))
            if not lib.opj_setup_decoder(codec, ctypes.byref(params)):
                raise self._failure(state, "opj_setup_decoder")
            # Always set, so OPJ_NUM_THREADS in the environment cannot
            # silently multiply threads under our own request parallelism.
            if self._threads_supported:
                lib.opj_codec_set_threads(codec, self._options.threads)
            image = opened.image
            if not lib.opj_read_header(opened.stream, codec, ctypes.byref(image)) or not image:
                raise self._failure(state, "opj_read_header")
            head = image.contents
            if not any(head.comps[i].dx == head.comps[i].dy == 1 for i in range(head.numcomps)):
                self._close(opened)
                return None
            # Kept now: each opj_decode sets the image's area to its window.
            opened.extents = (head.x0, head.y0, head.x1, head.y1)
            x0, y0, x1, y1 = opened.extents
            if (x1 - x0, y1 - y0) != (info.width, info.height) or head.numcomps < 1:
                raise DecodeError("image does not match its description (changed?)")
            if level and not lib.opj_set_decoded_resolution_factor(codec, level):
                raise self._failure(state, f"opj_set_decoded_resolution_factor({level})")
            opened.subsampling = (
                max(head.comps[i].dx for i in range(head.numcomps)),
                max(head.comps[i].dy for i in range(head.numcomps)),
            )
            return opened
        except BaseException:
            self._close(opened)
            raise

    def _decode_area(self, opened: _Opened, level: int, box: Box) -> VipsImage:
        """Decode `box` (pixels of reduction `level`) with an open codec."""
        lib, state = self._lib, opened.state
        area, left, top = reference_area(opened.extents, level, box, opened.subsampling)
        try:
            if not lib.opj_set_decode_area(opened.codec, opened.image, *area):
                raise self._failure(state, "opj_set_decode_area")
            if not lib.opj_decode(opened.codec, opened.stream, opened.image):
                raise self._failure(state, "opj_decode")
            return _to_vips(opened.image.contents, box, left, top)
        except pyvips.Error as exc:
            raise DecodeError(vips_error_message(exc)) from exc

    def _free_samples(self, opened: _Opened) -> None:
        head = opened.image.contents
        for i in range(head.numcomps):
            comp = head.comps[i]
            if comp.data:
                self._lib.opj_image_data_free(comp.data)
                comp.data = None

    def _close(self, opened: _Opened) -> None:
        """Free what `opened` holds; each destroy gets only what its create
        returned, and only once."""
        lib = self._lib
        if opened.image:
            lib.opj_image_destroy(opened.image)
            opened.image = ctypes.POINTER(OpjImage)()
        if opened.codec:
            lib.opj_destroy_codec(opened.codec)
            opened.codec = None
        if opened.stream:
            lib.opj_stream_destroy(opened.stream)
            opened.stream = None
        _states.pop(opened.key, None)

    def _open_stream(
        self, reader: ByteReader, state: _DecodeState, key: int, callbacks: bool
    ) -> int:
        lib, opts = self._lib, self._options
        path = reader.path
        if path is not None and opts.file_stream and not callbacks:
            stream: int | None = lib.opj_stream_create_file_stream(
                os.fsencode(path), opts.buffer_bytes, 1
            )
            if not stream:
                raise DecodeError("cannot open the file for OpenJPEG")
            return stream
        state.bind(reader)
        stream = lib.opj_stream_create(opts.buffer_bytes, 1)
        if not stream:
            raise DecodeError("opj_stream_create failed")
        lib.opj_stream_set_user_data(stream, key, None)
        # OpenJPEG needs the length up front (it bounds box and marker reads).
        lib.opj_stream_set_user_data_length(stream, state.size)
        lib.opj_stream_set_read_function(stream, _ON_READ)
        lib.opj_stream_set_skip_function(stream, _ON_SKIP)
        lib.opj_stream_set_seek_function(stream, _ON_SEEK)
        return stream

    @staticmethod
    def _failure(state: _DecodeState, call: str) -> BaseException:
        # A reader failure (e.g. S3 unavailable) is not a corrupt image: let
        # the source's own error through so the caller can tell them apart.
        if isinstance(state.error, SourceError):
            return state.error
        return DecodeError(f"{call} failed: {state.message()}")


def reference_area(
    image: tuple[int, int, int, int], level: int, box: Box, subsampling: tuple[int, int]
) -> tuple[tuple[int, int, int, int], int, int]:
    """The decode window for `box` of resolution reduction `level`, on the
    full-resolution reference grid, and the box's origin on the level grid.

    `image` is the image area (x0, y0, x1, y1) on the reference grid;
    `subsampling` the largest component dx, dy. Returns ((x0, y0, x1, y1),
    left, top). OpenJPEG (opj_set_decode_area) takes reference-grid
    coordinates even when decoding a reduced level (uclouvain/openjpeg#1006),
    and so does Grok (grk_decompress_set_window), but relative to the image
    area's origin (decoder/engines/grok.py shifts them): level pixel X covers
    grid [X * d, (X + 1) * d) with d = 2^level, and the level's first pixel
    is ceil(x0 / d). Clipping the far edges to the image keeps the codecs'
    ceil-divided sizes equal to the box. With subsampled components the
    window is widened to whole samples of theirs (else a 1-pixel box may hold
    none and decoding fails); planes_to_vips crops it back.
    """
    x0, y0, x1, y1 = image
    sx, sy = subsampling
    d = 1 << level
    left, top = -(-x0 // d) + box.x, -(-y0 // d) + box.y
    area = (
        max(left // sx * sx * d, x0),
        max(top // sy * sy * d, y0),
        min(-(-(left + box.width) // sx) * sx * d, x1),
        min(-(-(top + box.height) // sy) * sy * d, y1),
    )
    return area, left, top


# -- decoded components -> libvips (codec-neutral: the Grok engine uses it too) --


@dataclass(frozen=True, slots=True)
class Plane:
    """One decoded component, as a codec hands it over.

    `data` is the address of int32 samples, `w` x `h` of them, rows `stride`
    samples apart. (`x0`, `y0`) is the first sample's position on the
    component's own sample grid at the decoded level; `dx`/`dy` its
    subsampling (level pixel X takes sample floor(X / dx)); `prec` bits per
    sample, `sgnd` if signed.
    """

    data: int
    w: int
    h: int
    stride: int
    x0: int
    y0: int
    dx: int
    dy: int
    prec: int
    sgnd: bool


def _wrap(plane: Plane, codec: str) -> VipsImage:
    """The samples as a 1-band "int" libvips image, wrapping the codec's memory
    without a copy (valid only until the codec frees it)."""
    if not plane.data or plane.w == 0 or plane.h == 0 or plane.stride < plane.w:
        raise DecodeError(f"{codec} returned an empty component")
    samples = (ctypes.c_int32 * (plane.stride * plane.h)).from_address(plane.data)
    image = pyvips.Image.new_from_memory(memoryview(samples), plane.stride, plane.h, 1, "int")
    return image if plane.stride == plane.w else image.crop(0, 0, plane.w, plane.h)


def _to_8bit(image: VipsImage, prec: int, sgnd: bool) -> VipsImage:
    """Samples of `prec` bits (signed if `sgnd`) to the 0-255 range, as int or
    float (cast to uchar later, which clips)."""
    if sgnd:
        image = image + (1 << (prec - 1))
    if prec > 8:
        return image >> (prec - 8)
    if prec < 8:
        return image * (255.0 / ((1 << prec) - 1)) + 0.5
    return image


def _is_ycc(colour: str, planes: list[Plane]) -> bool:
    """Whether to convert YCbCr to RGB, by the rules of libvips' jp2kload."""
    if colour == "ycc":
        return len(planes) >= 3
    if colour == "unknown":
        # Unspecified with chroma subsampled on bands 2 and 3 is usually YCC.
        return (
            len(planes) == 3
            and planes[0].dx == planes[0].dy == 1
            and all(p.dx > 1 and p.dy > 1 for p in planes[1:])
        )
    return False


def _ycc_to_rgb(bands: list[VipsImage], prec: int) -> list[VipsImage]:
    """openjpeg's color.c sycc_to_rgb (as libvips uses it), at `prec` bits."""
    offset = 1 << (prec - 1)
    y, cb, cr = bands[0], bands[1] - offset, bands[2] - offset
    r = y + cr * 1.402
    g = y - (cb * 0.344 + cr * 0.714)
    b = y + cb * 1.772
    return [r, g, b, *bands[3:]]


def planes_to_vips(
    planes: list[Plane], colour: str, box: Box, left: int, top: int, codec: str
) -> VipsImage:
    """Decoded components cut to `box`, as an 8-bit libvips memory image.

    `colour` is "rgb", "grey", "ycc", "cmyk" or "unknown" (the codestream's
    colour space); `left`/`top` are the box's origin in absolute level
    coordinates (the level's pixel grid, image offset included). Samples are
    scaled to 8 bits (shifted right when wider, stretched when narrower),
    subsampled components upsampled, YCbCr converted to RGB; all bands kept
    (alpha last, as the codec ordered them). Copies the pixels once, so the
    codec may free its buffers as soon as this returns. Raises DecodeError
    (naming `codec`) if a component does not cover the box.
    """
    if not planes:
        raise DecodeError(f"{codec} decoded no components")
    bands: list[VipsImage] = []
    for plane in planes:
        if not (
            plane.x0 <= left // plane.dx
            and plane.y0 <= top // plane.dy
            and (left + box.width - 1) // plane.dx < plane.x0 + plane.w
            and (top + box.height - 1) // plane.dy < plane.y0 + plane.h
        ):
            raise DecodeError(
                f"{codec} decoded {plane.w}x{plane.h} at {plane.x0},{plane.y0} "
                f"(1/{plane.dx} x 1/{plane.dy}), not covering {box.width}x{box.height} "
                f"at {left},{top}"
            )
        band = _wrap(plane, codec)
        if plane.dx != 1 or plane.dy != 1:
            band = band.zoom(plane.dx, plane.dy)
        x, y = plane.x0 * plane.dx - left, plane.y0 * plane.dy - top
        if (x, y, band.width, band.height) != (0, 0, box.width, box.height):
            band = band.embed(x, y, box.width, box.height, extend="copy")
        bands.append(band)
    precs = [(p.prec, p.sgnd) for p in planes]
    if _is_ycc(colour, planes):
        prec = planes[0].prec
        # sycc_to_rgb works on unsigned samples of one precision.
        bands = [
            b + (1 << (p.prec - 1)) if p.sgnd else b for b, p in zip(bands, planes, strict=True)
        ]
        bands = _ycc_to_rgb(bands, prec)
        precs = [(prec, False)] * len(bands)
    if all(pair == precs[0] for pair in precs):
        joined = bands[0].bandjoin(bands[1:]) if len(bands) > 1 else bands[0]
        joined = _to_8bit(joined, *precs[0])
    else:
        scaled = [_to_8bit(b, *pair) for b, pair in zip(bands, precs, strict=True)]
        joined = scaled[0].bandjoin(scaled[1:]) if len(scaled) > 1 else scaled[0]
    if colour == "cmyk" and joined.bands >= 4:
        interpretation = "cmyk"
    else:
        interpretation = "srgb" if joined.bands >= 3 else "b-w"
    out = joined.cast("uchar").copy(interpretation=interpretation)
    # One evaluation into memory libvips owns: the codec's planes are freed
    # as soon as we return.
    return out.copy_memory()


_OPJ_COLOURS: Final[dict[int, str]] = {
    OPJ_CLRSPC_SRGB: "rgb",
    OPJ_CLRSPC_GRAY: "grey",
    OPJ_CLRSPC_SYCC: "ycc",
    OPJ_CLRSPC_EYCC: "ycc",
    OPJ_CLRSPC_CMYK: "cmyk",
}


def _to_vips(image: OpjImage, box: Box, left: int, top: int) -> VipsImage:
    """An opj_image_t after opj_decode as an 8-bit libvips image of `box`."""
    planes = []
    for i in range(image.numcomps):
        comp = image.comps[i]
        # After opj_decode, comp.x0/y0 are unreduced component coordinates
        # and w/h reduced ones: the first decoded sample is at
        # ceil(x0 / 2^factor) on the level.
        f = 1 << comp.factor
        planes.append(
            Plane(
                data=comp.data or 0,
                w=comp.w,
                h=comp.h,
                stride=comp.w,
                x0=-(-comp.x0 // f),
                y0=-(-comp.y0 // f),
                dx=comp.dx,
                dy=comp.dy,
                prec=comp.prec,
                sgnd=bool(comp.sgnd),
            )
        )
    colour = _OPJ_COLOURS.get(image.color_space, "unknown")
    return planes_to_vips(planes, colour, box, left, top, "OpenJPEG")
