"""Which engine decodes which source format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from decoder.engines.base import Engine, SourceFormat, UnsupportedSource


class EngineRegistry:
    """An immutable mapping from SourceFormat to the Engine that reads it.

    Later registrations for a format replace earlier ones, so a faster engine
    for one format can be layered over a general one.
    """

    def __init__(self, engines: Mapping[SourceFormat, Engine] | None = None) -> None:
        self._engines: dict[SourceFormat, Engine] = dict(engines or {})

    def with_engine(
        self, engine: Engine, formats: frozenset[SourceFormat] | None = None
    ) -> EngineRegistry:
        """A new registry where `engine` handles `formats` (default: all the
        formats it declares). Raises ValueError for formats it cannot read."""
        chosen = engine.formats if formats is None else formats
        if not chosen <= engine.formats:
            raise ValueError("engine cannot read all the requested formats")
        engines = dict(self._engines)
        engines.update({fmt: engine for fmt in chosen})
        return EngineRegistry(engines)

    def for_format(self, fmt: SourceFormat) -> Engine:
        """The engine for `fmt`. Raises UnsupportedSource if there is none."""
        try:
            return self._engines[fmt]
        except KeyError:
            raise UnsupportedSource(f"no engine for {fmt}") from None

    def __contains__(self, fmt: object) -> bool:
        return fmt in self._engines

    @property
    def formats(self) -> frozenset[SourceFormat]:
        """The formats some engine reads."""
        return frozenset(self._engines)


def default_registry(open_tiffs: int = 0) -> EngineRegistry:
    """The libvips engine for all four source formats, keeping up to
    `open_tiffs` opened TIFF directories of local files for later requests."""
    from decoder.engines.vips import VipsEngine  # keeps pyvips out of plain imports

    return EngineRegistry().with_engine(VipsEngine(open_tiffs=open_tiffs))


JP2_ENGINES: Final = ("openjpeg", "grok", "vips")


def registry_for(
    jp2_engine: str = "openjpeg",
    *,
    jp2_threads: int = 1,
    open_tiffs: int = 0,
    openjpeg_library: str | None = None,
    kept_codec_bytes: int = 0,
) -> EngineRegistry:
    """The libvips engine for every format, with JPEG 2000 decoded by
    `jp2_engine`: "openjpeg" (libopenjp2 directly, region by region; see
    decoder/engines/openjpeg.py), "grok" (libgrokj2k 10 directly; see
    decoder/engines/grok.py) or "vips" (libvips' jp2kload).

    `jp2_threads` is OpenJPEG's worker threads per decode, or Grok's worker
    threads for the whole process (ignored by "vips"); `open_tiffs` as for
    default_registry(); `openjpeg_library` the libopenjp2 of "openjpeg" and
    of Grok's OpenJPEG fallback (see openjpeg.library_candidates);
    `kept_codec_bytes` what idle "openjpeg" codecs of untiled images may hold
    (see OpenJpegEngine.load_block). Raises
    ValueError for an unknown engine name and OSError if the engine's
    library cannot be loaded, so a decoder configured for a missing codec
    fails at startup.
    """
    registry = default_registry(open_tiffs)
    if jp2_engine == "vips":
        return registry
    if jp2_engine == "openjpeg":
        from decoder.engines.openjpeg import OpenJpegEngine, OpenJpegOptions

        options = OpenJpegOptions(
            threads=jp2_threads, library=openjpeg_library, kept_codec_bytes=kept_codec_bytes
        )
        return registry.with_engine(OpenJpegEngine(options))
    if jp2_engine == "grok":
        from decoder.engines.grok import GrokEngine, GrokOptions

        grok = GrokOptions(threads=jp2_threads, openjpeg_library=openjpeg_library)
        return registry.with_engine(GrokEngine(grok))
    raise ValueError(f"unknown JPEG 2000 engine {jp2_engine!r}; expected one of {JP2_ENGINES}")
