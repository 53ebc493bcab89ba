"""A source reading images from a local folder.

Identifiers are relative POSIX paths under the root, with or without the
file's extension. Nothing outside the root is ever readable:

* malformed or unsafe identifiers (empty, NUL or control characters, absolute
  paths, backslashes, empty, ``.`` or ``..`` components, names too long for
  the file system) raise :class:`InvalidIdentifier`;
* a well-formed identifier whose file resolves (symlinks followed) to a path
  outside the resolved root raises :class:`ObjectNotFound`, exactly as if the
  file did not exist, so probing reveals nothing about the rest of the disk;
* directories, FIFOs, devices and sockets are not images: ObjectNotFound.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat as stat_mod
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cachetools import TTLCache

from decoder.sources.base import (
    InvalidIdentifier,
    ObjectNotFound,
    ObjectStat,
    Source,
    SourceObject,
    SourceUnavailable,
)

# Preferred extensions when several files share the identifier's stem: the
# formats we can decode region by region at reduced resolution come first.
PREFERRED_EXTENSIONS: tuple[str, ...] = (
    "jp2",
    "j2k",
    "jpx",
    "tif",
    "tiff",
    "ptif",
    "jpg",
    "jpeg",
    "png",
)

# Where an identifier's file is, remembered this long: resolving it walks
# every component of the path (an lstat each) and cost about 0.1 ms a call,
# as much as sending a stored tile. Containment is still checked on every
# open (on the descriptor's own path), and a remembered file that is gone is
# looked up again, so an entry can only be stale in which of several
# candidate files it names (a new `x.jp2` beside the `x.tif` in use).
LOCATE_TTL_S: Final = 2.0
LOCATE_ENTRIES: Final = 4096

_Located = tuple[str, str, str]  # key, real path, real root

_NOT_FOUND_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EISDIR})


def validate_identifier(identifier: str) -> tuple[str, ...]:
    """Check that `identifier` is a safe relative path; return its components.

    Raises InvalidIdentifier for empty identifiers, NUL or control characters
    (C0, DEL and C1), absolute paths, backslashes and empty, ``.`` or ``..``
    components.
    """
    if not identifier:
        raise InvalidIdentifier("empty identifier")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in identifier):
        raise InvalidIdentifier("identifier contains control characters")
    if "\\" in identifier:
        raise InvalidIdentifier("identifier contains a backslash")
    if identifier.startswith("/"):
        raise InvalidIdentifier("identifier is an absolute path")
    parts = tuple(identifier.split("/"))
    for part in parts:
        if part in ("", ".", ".."):
            raise InvalidIdentifier("identifier has an empty, '.' or '..' component")
    return parts


def _is_inside(path: str, root: str) -> bool:
    return path.startswith(root + os.sep) if root != os.sep else path.startswith(os.sep)


def _map_os_error(exc: OSError) -> Exception:
    if exc.errno in _NOT_FOUND_ERRNOS:
        return ObjectNotFound("no such image")
    if exc.errno == errno.ENAMETOOLONG:
        return InvalidIdentifier("identifier too long")
    # Permission problems and I/O errors are faults of the store, not of the
    # request: report them as storage failures.
    return SourceUnavailable(f"storage error: {exc.strerror or exc.__class__.__name__}")


class FileReader:
    """A :class:`~decoder.sources.base.ByteReader` over an open file descriptor.

    Reads use ``os.pread`` (no shared file offset), so concurrent reads from
    several threads are safe. `size` is fixed when the file is opened; reads
    never go past it even if the file grows. Call :meth:`close` only once all
    reads have returned.
    """

    __slots__ = ("_closed", "_fd", "_lock", "_path", "_size")

    def __init__(self, fd: int, size: int, path: Path) -> None:
        self._fd = fd
        self._size = size
        self._path = path
        self._closed = False
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """The file's length in bytes when it was opened."""
        return self._size

    @property
    def path(self) -> Path | None:
        """The resolved real path of the file."""
        return self._path

    def read_at(self, offset: int, length: int) -> bytes:
        """Read up to `length` bytes at byte `offset` (short only at the end).

        Raises ValueError for negative arguments or a closed reader and
        SourceUnavailable on I/O errors.
        """
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        if self._closed:
            raise ValueError("reader is closed")
        length = max(0, min(length, self._size - offset))
        chunks: list[bytes] = []
        while length > 0:
            try:
                chunk = os.pread(self._fd, length, offset)
            except OSError as exc:
                raise SourceUnavailable(f"read failed: {exc.strerror}") from exc
            if not chunk:
                break  # the file shrank under us: report what exists
            chunks.append(chunk)
            offset += len(chunk)
            length -= len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def close(self) -> None:
        """Close the descriptor; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.close(self._fd)

    def __del__(self) -> None:
        # A safety net for readers dropped without close(): never leak fds.
        if not getattr(self, "_closed", True):
            self.close()


class FilesystemSource(Source):
    """Images stored as files under `root` (see the module docstring for the
    identifier rules and errors)."""

    def __init__(self, root: Path, locate_ttl_s: float = LOCATE_TTL_S) -> None:
        self._root = root
        self._located: TTLCache[str, _Located] | None = (
            TTLCache(maxsize=LOCATE_ENTRIES, ttl=locate_ttl_s) if locate_ttl_s > 0 else None
        )
        self._located_lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The configured root folder."""
        return self._root

    async def stat(self, identifier: str) -> ObjectStat:
        """Describe the file for `identifier` (size in bytes, version token,
        UTC modification time) without opening it.

        Raises InvalidIdentifier, ObjectNotFound or SourceUnavailable.
        """
        validate_identifier(identifier)
        return await asyncio.to_thread(self._stat_sync, identifier)

    async def open(self, identifier: str) -> SourceObject:
        """Open the file for `identifier`; the caller must close the reader.

        Raises InvalidIdentifier, ObjectNotFound or SourceUnavailable.
        """
        validate_identifier(identifier)
        # A file found before opens with two system calls, done here: handing
        # them to a thread and back costs more (two thread wake-ups, about
        # 40 us each between cores on our benchmark machines:
        # bench/wakeups.py), and every stored-tile call opens its file.
        # Finding a file scans its folder, which may be large or remote: that
        # goes to a thread.
        opened = self._open_remembered(identifier)
        if opened is not None:
            return opened
        return await asyncio.to_thread(self._find_and_open, identifier)

    def _open_remembered(self, identifier: str) -> SourceObject | None:
        """The file found before for `identifier`, opened; None when none is
        remembered or it is gone or swapped (then it is forgotten)."""
        if self._located is None:
            return None
        with self._located_lock:
            remembered = self._located.get(identifier)
        if remembered is None:
            return None
        try:
            return self._open_located(remembered)
        except ObjectNotFound:  # look it up again
            with self._located_lock:
                self._located.pop(identifier, None)
            return None

    # -- blocking helpers, run in worker threads --------------------------

    def _stat_sync(self, identifier: str) -> ObjectStat:
        # Located afresh: a stat has no descriptor to check containment on.
        return self._stat_located(self._locate(identifier))

    def _find_and_open(self, identifier: str) -> SourceObject:
        located = self._locate(identifier)
        opened = self._open_located(located)
        if self._located is not None:
            with self._located_lock:
                self._located[identifier] = located
        return opened

    @staticmethod
    def _stat_located(located: _Located) -> ObjectStat:
        key, real, _root = located
        try:
            st = os.stat(real)
        except OSError as exc:
            raise _map_os_error(exc) from exc
        if not stat_mod.S_ISREG(st.st_mode):
            raise ObjectNotFound("not a regular file")
        return _make_stat(key, st)

    @staticmethod
    def _open_located(located: _Located) -> SourceObject:
        key, real, real_root = located
        flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
        # O_NOFOLLOW: `real` has no symlinks left, so one appearing now means
        # the tree changed after the containment check. O_NONBLOCK: a FIFO
        # swapped in must not hang the worker in open().
        flags |= getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        try:
            fd = os.open(real, flags)
        except OSError as exc:
            raise _map_os_error(exc) from exc
        try:
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                raise ObjectNotFound("not a regular file")
            # Re-check containment on what was actually opened: a parent
            # directory swapped for a symlink after _locate() is caught here.
            opened = _fd_path(fd) or real
            if not _is_inside(opened, real_root):
                raise ObjectNotFound("no such image")
            reader = FileReader(fd, st.st_size, Path(opened))
        except BaseException:
            os.close(fd)
            raise
        return SourceObject(stat=_make_stat(key, st), reader=reader)

    def _locate(self, identifier: str) -> _Located:
        """Find the file for `identifier`: (key relative to the root, its real
        path, the root's real path)."""
        # Resolved on every lookup: a root that is a symlink swapped at deploy
        # time (a "current" link) is followed to its new target (by opens
        # within LOCATE_TTL_S of the swap).
        real_root = os.path.realpath(self._root)
        if not os.path.isdir(real_root):
            raise SourceUnavailable("image root is not a readable directory")
        parts = validate_identifier(identifier)
        base = os.path.join(real_root, *parts)
        for candidate in self._candidates(base):
            try:
                real = os.path.realpath(candidate, strict=True)
            except OSError as exc:
                mapped = _map_os_error(exc)
                if isinstance(mapped, ObjectNotFound):
                    continue
                raise mapped from exc
            if not _is_inside(real, real_root):
                raise ObjectNotFound("no such image")
            if os.path.isfile(real):
                key = os.path.relpath(candidate, real_root).replace(os.sep, "/")
                return key, real, real_root
        raise ObjectNotFound("no such image")

    @staticmethod
    def _candidates(base: str) -> Iterator[str]:
        """The exact path, then `base.<ext>` in preference order, then any
        other `base.<ext>` in the folder, alphabetically (the folder is only
        listed when nothing cheaper matched)."""
        yield base
        fixed = [f"{base}.{ext}" for ext in PREFERRED_EXTENSIONS]
        fixed += [f"{base}.{ext.upper()}" for ext in PREFERRED_EXTENSIONS]
        yield from fixed
        folder, stem = os.path.split(base)
        prefix = stem + "."
        known = set(fixed)
        others: list[str] = []
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    ext = entry.name[len(prefix) :]
                    if entry.name.startswith(prefix) and ext and "." not in ext:
                        path = os.path.join(folder, entry.name)
                        if path not in known:
                            others.append(path)
        except OSError:
            return  # a missing folder just means no further candidates
        yield from sorted(others)


def _fd_path(fd: int) -> str | None:
    """The real path of an open descriptor (Linux /proc), or None."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return None


def _make_stat(key: str, st: os.stat_result) -> ObjectStat:
    return ObjectStat(
        key=key,
        size=st.st_size,
        version=f"{st.st_mtime_ns:x}-{st.st_size:x}",
        last_modified=datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=UTC),
    )
