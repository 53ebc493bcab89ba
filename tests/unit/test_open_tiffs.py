"""Opened TIFF directories kept per process (VipsEngine's `open_tiffs`):
reused while the file is the same, opened anew when it changes, bounded,
never for pathless (remote) readers, and never handed out to be marked."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import pyvips

from decoder.engines import ImageInfo
from decoder.engines.vips import OpenTiffs, VipsEngine
from decoder.plan import Box
from decoder.sources.base import ByteReader
from tests.images import SourceSet, make_pyramid_tiff

ReaderFactory = Callable[[Path], ByteReader]
Describe = Callable[[ByteReader], ImageInfo]


class CountingOpens:
    """An `open_` for OpenTiffs that really opens the file, and counts."""

    def __init__(self, path: Path, page: int = 0) -> None:
        self.path, self.page, self.calls = path, page, 0

    def __call__(self) -> pyvips.Image:
        self.calls += 1
        return pyvips.Image.new_from_file(str(self.path), page=self.page)


def test_a_kept_directory_is_reused_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "p.tif"
    make_pyramid_tiff(path, 600, 400)
    kept = OpenTiffs(8)
    opens = CountingOpens(path)
    first = kept.get_or_open(path, 0, -1, opens)
    assert kept.get_or_open(path, 0, -1, opens) is first
    assert opens.calls == 1
    # Another directory of the same file is its own entry.
    other = CountingOpens(path, page=1)
    assert kept.get_or_open(path, 1, -1, other) is not first
    assert other.calls == 1
    # The file is replaced (new inode, size and mtime): opened anew.
    staged = tmp_path / "staged.tif"
    make_pyramid_tiff(staged, 500, 300)
    os.replace(staged, path)
    again = kept.get_or_open(path, 0, -1, opens)
    assert opens.calls == 2
    assert (again.width, again.height) == (500, 300)


def test_at_most_entries_are_kept(tmp_path: Path) -> None:
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"p{i}.tif")
        make_pyramid_tiff(paths[-1], 300, 200)
    kept = OpenTiffs(2)
    opens = [CountingOpens(p) for p in paths]
    for path, open_ in zip(paths, opens, strict=True):
        kept.get_or_open(path, 0, -1, open_)
    assert len(kept) == 2
    # The least recently used (the first) was dropped; the last two stay.
    kept.get_or_open(paths[2], 0, -1, opens[2])
    kept.get_or_open(paths[0], 0, -1, opens[0])
    assert [o.calls for o in opens] == [2, 1, 1]


def test_a_missing_file_is_opened_by_the_caller_not_kept(tmp_path: Path) -> None:
    kept = OpenTiffs(4)
    calls = []

    def open_() -> pyvips.Image:
        calls.append(1)
        return pyvips.Image.black(2, 2)

    kept.get_or_open(tmp_path / "gone.tif", 0, -1, open_)
    kept.get_or_open(tmp_path / "gone.tif", 0, -1, open_)
    assert len(calls) == 2
    assert len(kept) == 0


def test_engine_keeps_local_tiffs_only_and_gives_the_same_pixels(
    sources: SourceSet,
    reader_for: ReaderFactory,
    callback_reader_for: ReaderFactory,
    describe: Describe,
) -> None:
    keeping, plain = VipsEngine(open_tiffs=4), VipsEngine()
    for path in (sources.pyramid_tiff, sources.subifd_tiff, sources.bigtiff):
        reader = reader_for(path)
        info = describe(reader)
        for level, lvl in enumerate(info.levels):
            for box in (
                Box(0, 0, lvl.width, lvl.height),
                Box(3, 5, lvl.width // 2, lvl.height // 3),
            ):
                for _ in range(2):
                    got = keeping.load_region(reader, info, level, box)
                    want = plain.load_region(reader, info, level, box)
                    assert got.write_to_memory() == want.write_to_memory(), (path, level, box)
    kept = keeping._open_tiffs
    assert kept is not None
    assert 0 < len(kept) <= 4
    # Pathless readers (S3) are never kept: libvips would read through a
    # reader that is closed after the request.
    before = len(kept)
    remote = callback_reader_for(sources.pyramid_tiff)
    info = describe(remote)
    fresh = VipsEngine(open_tiffs=4)
    assert fresh.load_region(remote, info, 0, Box(0, 0, 10, 10)).avg() >= 0
    assert fresh._open_tiffs is not None
    assert len(fresh._open_tiffs) == 0
    assert len(kept) == before


def test_what_the_engine_hands_out_is_never_the_kept_image(
    sources: SourceSet, reader_for: ReaderFactory, describe: Describe
) -> None:
    """The pipeline connects a progress handler to what it renders and sets
    its kill flag when the request is cancelled: on a kept image, handlers
    would pile up and flags leak into later requests."""
    engine = VipsEngine(open_tiffs=4)
    reader = reader_for(sources.pyramid_tiff)
    info = describe(reader)
    lvl = info.levels[0]
    for box in (Box(0, 0, lvl.width, lvl.height), Box(0, 0, 64, 64)):
        handed = engine.load_region(reader, info, 0, box)
        assert engine._open_tiffs is not None
        kept = {str(image.pointer) for image in engine._open_tiffs._images.values()}
        assert kept, "the directory was kept"
        assert str(handed.pointer) not in kept
        handed.set_kill(True)
        with pytest.raises(pyvips.Error):
            handed.avg()
        assert engine.load_region(reader, info, 0, box).avg() > 0


def test_kept_directories_are_read_by_many_threads_at_once(
    sources: SourceSet, reader_for: ReaderFactory, describe: Describe
) -> None:
    engine = VipsEngine(open_tiffs=4)
    reader = reader_for(sources.pyramid_tiff)
    info = describe(reader)
    boxes = [Box(x * 30, x * 20, 200, 150) for x in range(8)]
    expected = [VipsEngine().load_region(reader, info, 0, b).write_to_memory() for b in boxes]
    results: dict[int, bytes] = {}

    def work(i: int) -> None:
        for _ in range(5):
            results[i] = engine.load_region(reader, info, 0, boxes[i]).write_to_memory()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(boxes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(boxes))] == expected


def test_rewritten_file_is_not_read_through_a_stale_handle(
    tmp_path: Path, reader_for: ReaderFactory, describe: Describe
) -> None:
    path = tmp_path / "p.tif"
    make_pyramid_tiff(path, 600, 400)
    engine = VipsEngine(open_tiffs=4)
    reader = reader_for(path)
    info = describe(reader)
    before = engine.load_region(reader, info, 0, Box(0, 0, 64, 64)).write_to_memory()
    # Same size, other pixels, written in place of the file.
    other = tmp_path / "o.tif"
    pyvips.Image.black(600, 400, bands=3).tiffsave(
        str(other), tile=True, pyramid=True, compression="jpeg"
    )
    shutil.copy(other, tmp_path / "staged.tif")
    os.replace(tmp_path / "staged.tif", path)
    fresh = reader_for(path)
    info = describe(fresh)
    after = engine.load_region(fresh, info, 0, Box(0, 0, 64, 64)).write_to_memory()
    assert after != before
