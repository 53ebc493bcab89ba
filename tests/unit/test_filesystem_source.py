"""FilesystemSource: identifier safety, lookup, version tokens, reads."""

from __future__ import annotations

import asyncio
import os
import threading
from datetime import UTC
from pathlib import Path

import pytest

from decoder.sources import (
    FilesystemSource,
    InvalidIdentifier,
    ObjectNotFound,
    SourceUnavailable,
)

UUID = "67352ccc-d1b0-11e1-89ae-279075081939"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ with images, a nested folder, and a secret file beside root."""
    root = tmp_path / "root"
    root.mkdir()
    (root / f"{UUID}.png").write_bytes(b"png bytes")
    (root / "photo.jpg").write_bytes(b"jpeg bytes")
    (root / "multi.png").write_bytes(b"png")
    (root / "multi.tif").write_bytes(b"tif")
    (root / "multi.jp2").write_bytes(b"jp2")
    (root / "odd.zzz").write_bytes(b"zzz")
    (root / "odd.bmp").write_bytes(b"bmp")
    (root / "nested").mkdir()
    (root / "nested" / "deep.tif").write_bytes(b"nested tif")
    (root / "a folder").mkdir()
    (tmp_path / "secret.txt").write_bytes(b"top secret")
    return root


@pytest.fixture
def source(tree: Path) -> FilesystemSource:
    return FilesystemSource(tree)


@pytest.mark.parametrize(
    "identifier",
    [
        "",
        "..",
        "../secret.txt",
        "nested/../../secret.txt",
        "nested/..",
        "./photo.jpg",
        "nested//deep.tif",
        "nested/",
        "/etc/passwd",
        "photo.jpg\x00.png",
        "photo\n.jpg",
        "photo\x7f.jpg",
        "photo\x85.jpg",
        "nested\\deep.tif",
        "..\\secret.txt",
    ],
)
async def test_unsafe_identifiers_are_rejected(source: FilesystemSource, identifier: str) -> None:
    with pytest.raises(InvalidIdentifier):
        await source.stat(identifier)
    with pytest.raises(InvalidIdentifier):
        await source.open(identifier)


async def test_symlink_out_of_root_is_not_found(tree: Path, source: FilesystemSource) -> None:
    (tree / "escape.jpg").symlink_to(tree.parent / "secret.txt")
    (tree / "escdir").symlink_to(tree.parent, target_is_directory=True)
    for identifier in ("escape.jpg", "escape", "escdir/secret.txt", "escdir/secret"):
        with pytest.raises(ObjectNotFound):
            await source.stat(identifier)
        with pytest.raises(ObjectNotFound):
            await source.open(identifier)


async def test_symlink_inside_root_is_followed(tree: Path, source: FilesystemSource) -> None:
    (tree / "alias.jpg").symlink_to(tree / "photo.jpg")
    obj = await source.open("alias")
    try:
        assert obj.reader.read_at(0, 100) == b"jpeg bytes"
        assert obj.reader.path == (tree / "photo.jpg").resolve()
    finally:
        obj.reader.close()


async def test_root_itself_a_symlink_works(tmp_path: Path, tree: Path) -> None:
    link = tmp_path / "link-to-root"
    link.symlink_to(tree, target_is_directory=True)
    st = await FilesystemSource(link).stat("photo")
    assert st.size == len(b"jpeg bytes")


async def test_extensionless_lookup(source: FilesystemSource) -> None:
    st = await source.stat(UUID)
    assert st.key == f"{UUID}.png"
    assert st.size == len(b"png bytes")
    assert (await source.stat("nested/deep")).key == "nested/deep.tif"
    assert (await source.stat("photo.jpg")).key == "photo.jpg"


async def test_extension_preference_order(tree: Path, source: FilesystemSource) -> None:
    assert (await source.stat("multi")).key == "multi.jp2"
    (tree / "multi.jp2").unlink()
    assert (await source.stat("multi")).key == "multi.tif"
    (tree / "multi.tif").unlink()
    assert (await source.stat("multi")).key == "multi.png"
    # Unknown extensions come last, alphabetically.
    assert (await source.stat("odd")).key == "odd.bmp"


async def test_missing_and_directories_are_not_found(source: FilesystemSource) -> None:
    for identifier in ("nope", "nope.jpg", "nested", "a folder", "nested/nope", "photo.jpg/x"):
        with pytest.raises(ObjectNotFound):
            await source.stat(identifier)
        with pytest.raises(ObjectNotFound):
            await source.open(identifier)


async def test_fifo_is_not_found(tree: Path, source: FilesystemSource) -> None:
    os.mkfifo(tree / "pipe.jpg")
    with pytest.raises(ObjectNotFound):
        await source.open("pipe.jpg")


async def test_overlong_identifier_is_invalid(source: FilesystemSource) -> None:
    with pytest.raises(InvalidIdentifier):
        await source.stat("x" * 5000)


async def test_missing_root_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(SourceUnavailable):
        await FilesystemSource(tmp_path / "gone").stat("photo")


async def test_stat_fields_and_version_changes(tree: Path, source: FilesystemSource) -> None:
    before = await source.stat("photo")
    assert before.last_modified.tzinfo is UTC
    path = tree / "photo.jpg"
    assert before.last_modified.timestamp() == pytest.approx(path.stat().st_mtime, abs=1e-3)
    path.write_bytes(b"new jpeg bytes, longer")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    after = await source.stat("photo")
    assert after.version != before.version
    assert after.size == len(b"new jpeg bytes, longer")
    # Same size, new mtime: still a new version.
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000))
    assert (await source.stat("photo")).version != after.version


async def test_open_reads_with_pread(source: FilesystemSource, tree: Path) -> None:
    obj = await source.open("photo")
    reader = obj.reader
    try:
        assert obj.stat == await source.stat("photo")
        assert reader.size == len(b"jpeg bytes")
        assert reader.path == (tree / "photo.jpg").resolve()
        assert reader.read_at(0, 4) == b"jpeg"
        assert reader.read_at(5, 100) == b"bytes"  # short only at the end
        assert reader.read_at(reader.size, 10) == b""
        assert reader.read_at(1000, 10) == b""
        with pytest.raises(ValueError, match=">= 0"):
            reader.read_at(-1, 1)
        # pread has no shared offset: concurrent readers see consistent data.
        results: list[bytes] = []

        def work() -> None:
            for _ in range(200):
                results.append(reader.read_at(5, 5))

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(results) == {b"bytes"}
    finally:
        reader.close()
    reader.close()  # idempotent
    with pytest.raises(ValueError, match="closed"):
        reader.read_at(0, 1)


# -- where an identifier's file is, remembered ----------------------------------


def count_realpaths(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = os.path.realpath

    def counting(path: str, *, strict: bool = False) -> str:
        calls.append(path)
        return real(path, strict=strict)

    monkeypatch.setattr(os.path, "realpath", counting)
    return calls


async def test_a_located_file_is_opened_again_without_resolving_its_path(
    source: FilesystemSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = count_realpaths(monkeypatch)
    first = await source.open("multi")
    first.reader.close()
    resolved = len(calls)
    assert resolved > 0

    again = await source.open("multi")
    again.reader.close()

    assert len(calls) == resolved
    assert again.stat == first.stat
    # stat() has no descriptor to check containment on: it always resolves.
    await source.stat("multi")
    assert len(calls) > resolved


async def test_a_remembered_file_that_is_gone_is_located_again(
    tree: Path, source: FilesystemSource
) -> None:
    obj = await source.open("multi")
    obj.reader.close()
    assert obj.stat.key == "multi.jp2"
    (tree / "multi.jp2").unlink()

    obj = await source.open("multi")
    obj.reader.close()
    assert obj.stat.key == "multi.tif"
    for name in ("multi.tif", "multi.png"):
        (tree / name).unlink()
    with pytest.raises(ObjectNotFound):
        await source.open("multi")


async def test_containment_is_checked_on_every_open_of_a_remembered_file(
    tree: Path, source: FilesystemSource
) -> None:
    obj = await source.open("nested/deep")
    obj.reader.close()
    # The folder is swapped for a link to a folder outside the root, with a
    # file of the same name in it.
    outside = tree.parent / "outside"
    outside.mkdir()
    (outside / "deep.tif").write_bytes(b"outside")
    (tree / "nested" / "deep.tif").unlink()
    (tree / "nested").rmdir()
    (tree / "nested").symlink_to(outside, target_is_directory=True)

    with pytest.raises(ObjectNotFound):
        await source.open("nested/deep")


async def test_a_new_preferred_file_is_seen_once_the_place_expires(tree: Path) -> None:
    source = FilesystemSource(tree, locate_ttl_s=0.05)
    (tree / "later.png").write_bytes(b"png")
    obj = await source.open("later")
    obj.reader.close()
    (tree / "later.jp2").write_bytes(b"jp2")
    await asyncio.sleep(0.1)

    obj = await source.open("later")
    obj.reader.close()
    assert obj.stat.key == "later.jp2"
    # Not remembered at all with a TTL of 0.
    uncached = FilesystemSource(tree, locate_ttl_s=0)
    obj = await uncached.open("later")
    obj.reader.close()
    (tree / "later.jp2").unlink()
    obj = await uncached.open("later")
    obj.reader.close()
    assert obj.stat.key == "later.png"
