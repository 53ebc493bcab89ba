"""The parser protocol, its drivers and its errors.

A parser is a generator that yields the byte ranges it needs as
``(offset, length)`` (both in bytes) and is sent back exactly those bytes; its
return value is the result. Parsers never do I/O themselves, so one parser
serves the blocking readers of the engines and the pipeline (:func:`run`,
:func:`parse`) and the async reads of the S3 index builder on the event loop
(:func:`run_async`) alike, and composes with ``yield from``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Final, TypeAlias, TypeVar

from decoder.sources.base import ByteReader

T = TypeVar("T")

Request: TypeAlias = tuple[int, int]
"""``(offset, length)``: a byte range a parser needs, in bytes."""

Parser: TypeAlias = Generator[Request, bytes, T]
"""A parser yielding :data:`Request` s, sent their bytes, returning a ``T``."""

BLOCK_SIZE: Final = 64 * 1024
# Structures are small; a hostile file must not make a parse read gigabytes
# of directory chains or marker segments.
MAX_PARSE_BYTES: Final = 16 * 1024 * 1024


class FormatError(ValueError):
    """The bytes are not a well-formed container of the expected format:
    truncated, corrupt, or past a bound that protects against hostile files."""


class NotThisFormat(FormatError):
    """The bytes do not start like this format at all (wrong signature)."""


async def run_async(
    parser: Parser[T], read: Callable[[int, int], Awaitable[bytes]], size: int
) -> T:
    """Run `parser` over an object of `size` bytes that `read(offset, length)`
    reads (fewer bytes only at the end of the object); the parser's result.

    A request outside ``[0, size)`` (never passed to `read`), a short read and
    a FormatError raised by `read` are thrown into the parser as FormatError,
    so that it may recover (e.g. keep the TIFF pages before a damaged one).
    Raises what the parser raises and, unchanged, anything else `read` raises.
    """
    try:
        request = next(parser)
        while True:
            try:
                data = await _fetch(read, request, size)
            except FormatError as exc:
                request = parser.throw(exc)
            else:
                request = parser.send(data)
    except StopIteration as done:
        result: T = done.value
        return result
    finally:
        parser.close()


async def _fetch(
    read: Callable[[int, int], Awaitable[bytes]], request: Request, size: int
) -> bytes:
    offset, length = request
    if offset < 0 or length < 0 or offset + length > size:
        raise FormatError(f"bytes {offset}..{offset + length} lie outside the {size}-byte file")
    if length == 0:
        return b""
    data = await read(offset, length)
    if len(data) != length:
        raise FormatError(f"short read at byte {offset}: {len(data)} of {length} bytes")
    return data


def run(parser: Parser[T], read: Callable[[int, int], bytes], size: int) -> T:
    """:func:`run_async` with a blocking `read`: same contract, same errors."""

    async def read_now(offset: int, length: int) -> bytes:
        return read(offset, length)

    # With reads that never suspend, run_async completes within its first
    # step: one driver then serves both worlds and cannot drift from itself.
    step = run_async(parser, read_now, size)
    try:
        step.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    step.close()
    raise RuntimeError("a blocking parse suspended")  # unreachable: nothing awaits


class BlockReads:
    """A blocking read function over `reader` that fetches aligned
    :data:`BLOCK_SIZE` blocks, each once, and serves a parser's many small
    requests from them: a typical header costs one or two reader calls, which
    matters for remote objects.

    Calling it raises FormatError once more than `budget` bytes would be
    fetched, and the reader's errors on I/O failure. Not thread-safe: use one
    per parse.
    """

    def __init__(self, reader: ByteReader, budget: int = MAX_PARSE_BYTES) -> None:
        self._reader = reader
        self._budget = budget
        self._blocks: dict[int, bytes] = {}

    def __call__(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset` (fewer only at the end of the file)."""
        first, last = offset // BLOCK_SIZE, (offset + length - 1) // BLOCK_SIZE
        data = b"".join(self._block(i) for i in range(first, last + 1))
        start = offset - first * BLOCK_SIZE
        return data[start : start + length]

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is None:
            if (len(self._blocks) + 1) * BLOCK_SIZE > self._budget:
                raise FormatError("structure too large to parse")
            block = self._reader.read_at(index * BLOCK_SIZE, BLOCK_SIZE)
            self._blocks[index] = block
        return block


def parse(parser: Parser[T], reader: ByteReader, budget: int = MAX_PARSE_BYTES) -> T:
    """Run `parser` over `reader` through :class:`BlockReads` (at most
    `budget` bytes fetched); the parser's result.

    Raises FormatError (NotThisFormat for a wrong signature) for malformed
    input and the reader's errors (e.g. SourceUnavailable) on I/O failure.
    """
    return run(parser, BlockReads(reader, budget), reader.size)
