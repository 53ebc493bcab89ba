"""A source reading images from S3 or any S3-compatible store, with aioboto3.

Identifiers
    ``<identifier>`` names key ``<prefix><identifier>`` in the default bucket.
    When buckets are allow-listed, ``s3://<bucket>/<key>`` names a key in one
    of them (the prefix does not apply); other buckets are InvalidIdentifier.
    Identifiers follow the filesystem source's rules (no empty, ``.`` or
    ``..`` components, no control characters or backslashes).

Extensions
    Like the filesystem source, an identifier may omit the file extension.
    We HEAD the exact key first (one round trip when identifiers carry their
    extension or keys have none); on 404 one LIST of the key as prefix finds
    ``<key>.<ext>`` siblings, preferring the same extensions in the same
    order as the filesystem source, then any other, alphabetically. If
    listing is denied, we HEAD the preferred extensions in parallel instead.
    Resolutions are cached (`resolve_ttl_s`), as are HEAD results
    (`stat_ttl_s`); every GET carries If-Match with the ETag, so a stale stat
    can never mix bytes of two versions (the GET fails and the stat is dropped).

Versions
    The ETag is the object's version: ImageService keys its describe cache by
    it, the block cache and the object index cache by (location, ETag).

Reads
    See decoder/sources/readahead.py: aligned blocks, read-ahead, whole small
    objects, exact ranges from a cached per-object index, a shared block
    cache, a process-wide byte budget, at most `max_concurrent_gets` GETs in
    flight per process (the connection pool has as many connections).

Errors
    404 -> ObjectNotFound; 403 -> SourceAccessDenied (never retried);
    throttling (429, SlowDown), 5xx, timeouts and connection failures are
    retried `max_attempts` times with exponential backoff and full jitter,
    then SourceUnavailable; other 4xx -> SourceUnavailable at once; no room
    in the memory budget in time -> SourceOverloaded.

Credentials come from the standard AWS chain (environment, profile, web
identity / IRSA, instance metadata); nothing here handles secrets.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, TypeVar

import aiohttp
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    ParamValidationError,
)

from decoder.budget import ByteBudget
from decoder.sources.base import (
    InvalidIdentifier,
    ObjectNotFound,
    ObjectStat,
    Source,
    SourceError,
    SourceObject,
    SourceUnavailable,
)
from decoder.sources.blockcache import BlockCache
from decoder.sources.filesystem import PREFERRED_EXTENSIONS, validate_identifier
from decoder.sources.object_index import ObjectIndex, build_index
from decoder.sources.readahead import (
    BlockReader,
    IndexReads,
    InflightTable,
    ReadPolicy,
    RemoteObject,
    expected_cost,
)

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

_NOT_FOUND_CODES: Final = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
_DENIED_CODES: Final = frozenset(
    {"403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
)
_THROTTLE_CODES: Final = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "TooManyRequests",
     "RequestLimitExceeded", "ServiceUnavailable", "InternalError", "503", "500"}
)  # fmt: skip
_LIST_LIMIT: Final = 100


class SourceAccessDenied(SourceError):
    """The store refused access (credentials or policy): not retried."""


class ObjectChanged(SourceUnavailable):
    """The object's ETag changed while it was being read; retrying reads the new one."""


@dataclass(frozen=True, slots=True)
class S3Config:
    """Everything the S3 source needs; sizes in bytes, times in seconds."""

    bucket: str
    prefix: str = ""
    allowed_buckets: frozenset[str] = frozenset()
    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    try_extensions: bool = True
    max_concurrent_gets: int = 32
    max_attempts: int = 4
    backoff_base_s: float = 0.05
    backoff_max_s: float = 2.0
    request_timeout_s: float = 10.0
    connect_timeout_s: float = 3.0
    stat_ttl_s: float = 5.0
    resolve_ttl_s: float = 60.0
    index_cache_entries: int = 1024
    block_cache_bytes: int = 256 << 20
    memory_budget_bytes: int = 512 << 20
    budget_wait_s: float = 5.0
    policy: ReadPolicy = field(default_factory=ReadPolicy)


class _TTLCache(Generic[K, V]):
    """A small LRU with expiry, used on the event loop only."""

    def __init__(self, maxsize: int, ttl_s: float) -> None:
        self._max = max(1, maxsize)
        self._ttl = ttl_s
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: K, value: V) -> None:
        if self._ttl <= 0:
            return
        self._items[key] = (time.monotonic() + self._ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()


@dataclass(frozen=True, slots=True)
class _Located:
    bucket: str
    key: str
    stat: ObjectStat
    etag: str  # as S3 sends it, quotes included (for If-Match)


class S3Source(Source):
    """Images stored as S3 objects (see the module docstring).

    Create on the event loop; the client is opened on first use and must be
    closed with :meth:`aclose`. One instance per process: it owns the block
    cache, the index cache, the in-flight table and the byte budget.
    """

    def __init__(self, config: S3Config, session: Any | None = None) -> None:
        import aioboto3  # type: ignore[import-untyped]  # ships no type hints

        self._config = config
        self._session = session if session is not None else aioboto3.Session()
        self._client: S3Client | None = None
        self._client_cm: Any = None
        self._client_lock = asyncio.Lock()
        self._gets = asyncio.Semaphore(config.max_concurrent_gets)
        self.cache = BlockCache(config.block_cache_bytes)
        self.budget = ByteBudget(config.memory_budget_bytes, config.budget_wait_s)
        self._inflight = InflightTable()
        self._stats = _TTLCache[tuple[str, str], _Located](65536, config.stat_ttl_s)
        self._resolved = _TTLCache[tuple[str, str], str](65536, config.resolve_ttl_s)
        self._indexes: OrderedDict[tuple[str, str], ObjectIndex | None] = OrderedDict()
        self._building: dict[tuple[str, str], asyncio.Task[None]] = {}
        # Process-wide request counters, for logs and tests.
        self.requests: dict[str, int] = {"HEAD": 0, "GET": 0, "LIST": 0}
        self.bytes_fetched = 0
        self.retries = 0

    # -- lifecycle ----------------------------------------------------------

    async def _s3(self) -> S3Client:
        if self._client is not None:
            return self._client
        async with self._client_lock:
            if self._client is None:
                cfg = self._config
                botocfg = Config(
                    region_name=cfg.region,
                    connect_timeout=cfg.connect_timeout_s,
                    read_timeout=cfg.request_timeout_s,
                    # The pool holds as many connections as GETs may run.
                    max_pool_connections=cfg.max_concurrent_gets,
                    # We retry ourselves (with jitter, per-GET timeouts and
                    # classification botocore does not know about).
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    s3={"addressing_style": cfg.addressing_style},
                )
                self._client_cm = self._session.client(
                    "s3", endpoint_url=cfg.endpoint_url, region_name=cfg.region, config=botocfg
                )
                self._client = await self._client_cm.__aenter__()
        assert self._client is not None
        return self._client

    async def aclose(self) -> None:
        """Stop index builds and fetches still landing, and close the client
        and its connections."""
        for task in list(self._building.values()):
            task.cancel()
        self._building.clear()
        self._inflight.cancel_held()
        if self._client_cm is not None:
            cm, self._client_cm, self._client = self._client_cm, None, None
            await cm.__aexit__(None, None, None)

    # -- Source ---------------------------------------------------------------

    async def stat(self, identifier: str) -> ObjectStat:
        """Describe the object for `identifier` (one HEAD, cached briefly).

        Raises InvalidIdentifier, ObjectNotFound, SourceAccessDenied or
        SourceUnavailable.
        """
        return (await self._locate(identifier)).stat

    async def open(self, identifier: str) -> SourceObject:
        """Open the object for reading; the caller must close the reader.

        The request's expected cost is reserved in the memory budget at its
        first read (a cost over the whole budget is refused at once).
        Raises InvalidIdentifier, ObjectNotFound, SourceAccessDenied,
        SourceUnavailable or SourceOverloaded.
        """
        located = await self._locate(identifier)
        obj = RemoteObject(
            f"s3://{located.bucket}/{located.key}", located.stat.version, located.stat.size
        )
        index = self._indexes.get((obj.location, obj.version))
        expected = expected_cost(obj.size, self._config.policy, index)
        self.budget.check_fits(expected)  # one that never could: refused before any GET
        # Reserved at the first read, not now: a request that waits for a
        # decode slot, or for a block another request is decoding, or that a
        # cache answers, must not hold source memory meanwhile.
        reader = BlockReader(
            obj=obj,
            fetcher=_Fetcher(self, located),
            policy=self._config.policy,
            cache=self.cache,
            inflight=self._inflight,
            budget=self.budget,
            reserved=0,
            index=index,
            deferred=expected,
        )
        if (obj.location, obj.version) not in self._indexes:
            reader.on_close = lambda: self._schedule_index(located, obj)
        return SourceObject(stat=located.stat, reader=reader)

    # -- index ------------------------------------------------------------------

    def index_of(self, location: str, version: str) -> ObjectIndex | None:
        """The cached index of an object version, if built (tests, logs)."""
        return self._indexes.get((location, version))

    async def wait_for_indexes(self) -> None:
        """Wait until every scheduled index build, and the read-ahead of
        readers that started one, has finished (tests)."""
        while self._building:
            await asyncio.gather(*self._building.values(), return_exceptions=True)
        await self._inflight.wait_held()

    def _schedule_index(self, located: _Located, obj: RemoteObject) -> None:
        # Built after the first request closes its reader: the blocks it
        # fetched are in the cache then, so building often costs no GET.
        key = (obj.location, obj.version)
        if key in self._indexes or key in self._building:
            return
        task = asyncio.get_running_loop().create_task(self._build_index(located, obj))
        self._building[key] = task
        task.add_done_callback(lambda _t: self._building.pop(key, None))

    async def _build_index(self, located: _Located, obj: RemoteObject) -> None:
        reads = IndexReads(
            obj,
            _Fetcher(self, located),
            self.cache,
            self.budget,
            self._config.policy.block_size,
            inflight=self._inflight,
        )
        try:
            if obj.size <= self._config.policy.index_preload_bytes:
                await reads.preload(self._config.policy.max_concurrent)
            index = await build_index(reads.read, obj.size)
        except SourceError:
            return  # try again on a later request
        finally:
            reads.release()
        self._indexes[(obj.location, obj.version)] = index
        while len(self._indexes) > max(1, self._config.index_cache_entries):
            self._indexes.popitem(last=False)

    # -- locating objects ---------------------------------------------------------

    def _split(self, identifier: str) -> tuple[str, str]:
        """(bucket, key) for `identifier`; raises InvalidIdentifier."""
        cfg = self._config
        if identifier.startswith("s3://"):
            if not cfg.allowed_buckets:
                raise InvalidIdentifier("s3:// identifiers are not enabled")
            bucket, _, key = identifier[len("s3://") :].partition("/")
            if bucket not in cfg.allowed_buckets:
                raise InvalidIdentifier("bucket is not allowed")
            validate_identifier(key)
            return bucket, key
        validate_identifier(identifier)
        return cfg.bucket, cfg.prefix + identifier

    async def _locate(self, identifier: str) -> _Located:
        bucket, key = self._split(identifier)
        resolved = self._resolved.get((bucket, key))
        if resolved is not None:
            found = await self._head(bucket, resolved)
            if found is not None:
                return found
            self._resolved.pop((bucket, key))
        found = await self._head(bucket, key)
        if found is None and self._config.try_extensions:
            found = await self._with_extension(bucket, key)
        if found is None:
            raise ObjectNotFound("no such image")
        self._resolved.put((bucket, key), found.key)
        return found

    async def _head(self, bucket: str, key: str) -> _Located | None:
        cached = self._stats.get((bucket, key))
        if cached is not None:
            return cached
        s3 = await self._s3()

        async def head() -> Any:
            self.requests["HEAD"] += 1
            return await s3.head_object(Bucket=bucket, Key=key)

        try:
            resp = await self._retrying(head, f"HEAD s3://{bucket}/{key}")
        except ObjectNotFound:
            return None
        found = self._located(
            bucket, key, resp["ETag"], resp["ContentLength"], resp["LastModified"]
        )
        self._stats.put((bucket, key), found)
        return found

    @staticmethod
    def _located(bucket: str, key: str, etag: str, size: int, modified: datetime) -> _Located:
        stat = ObjectStat(
            key=f"s3://{bucket}/{key}",
            size=int(size),
            version=etag.strip('"'),
            last_modified=modified.astimezone(UTC),
        )
        return _Located(bucket, key, stat, etag)

    async def _with_extension(self, bucket: str, key: str) -> _Located | None:
        """`key.<ext>` (see the module docstring), or None."""
        s3 = await self._s3()

        async def listing() -> Any:
            self.requests["LIST"] += 1
            return await s3.list_objects_v2(Bucket=bucket, Prefix=key + ".", MaxKeys=_LIST_LIMIT)

        try:
            resp = await self._retrying(listing, f"LIST s3://{bucket}/{key}.*")
        except SourceAccessDenied:
            return await self._probe_extensions(bucket, key)
        except ObjectNotFound:
            return None  # no such bucket
        entries = {
            item["Key"]: item
            for item in resp.get("Contents", [])
            if "." not in item["Key"][len(key) + 1 :] and "/" not in item["Key"][len(key) + 1 :]
        }
        order = [f"{key}.{ext}" for ext in PREFERRED_EXTENSIONS]
        order += [f"{key}.{ext.upper()}" for ext in PREFERRED_EXTENSIONS]
        order += sorted(k for k in entries if k not in order and len(k) > len(key) + 1)
        for candidate in order:
            item = entries.get(candidate)
            if item is not None:
                found = self._located(
                    bucket, candidate, item["ETag"], item["Size"], item["LastModified"]
                )
                self._stats.put((bucket, candidate), found)
                return found
        return None

    async def _probe_extensions(self, bucket: str, key: str) -> _Located | None:
        candidates = [f"{key}.{ext}" for ext in PREFERRED_EXTENSIONS]
        candidates += [f"{key}.{ext.upper()}" for ext in PREFERRED_EXTENSIONS]
        results = await asyncio.gather(*(self._head(bucket, c) for c in candidates))
        return next((r for r in results if r is not None), None)

    # -- requests -------------------------------------------------------------------

    async def get_range(self, located: _Located, start: int, end: int) -> bytes:
        """Bytes `[start, end)` of the located object version, retried."""
        s3 = await self._s3()
        expected = end - start

        async def get() -> bytes:
            self.requests["GET"] += 1
            resp = await s3.get_object(
                Bucket=located.bucket,
                Key=located.key,
                Range=f"bytes={start}-{end - 1}",
                IfMatch=located.etag,
            )
            async with resp["Body"] as body:
                data = await body.read()
            if len(data) != expected:
                raise _Truncated(f"got {len(data)} of {expected} bytes")
            return data

        try:
            data = await self._retrying(get, f"GET s3://{located.bucket}/{located.key}")
        except ObjectChanged:
            self._stats.pop((located.bucket, located.key))
            raise
        except ObjectNotFound:
            # Deleted while being read: what we described is gone.
            self._stats.pop((located.bucket, located.key))
            raise
        self.bytes_fetched += len(data)
        return data

    async def _retrying(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """`call()` under the process-wide cap and a per-attempt timeout,
        retried with exponential backoff and full jitter when transient."""
        cfg = self._config
        last: str = ""
        for attempt in range(max(1, cfg.max_attempts)):
            if attempt:
                self.retries += 1
                delay = min(cfg.backoff_max_s, cfg.backoff_base_s * (2**attempt))
                await asyncio.sleep(random.uniform(0, delay))
            try:
                async with self._gets, asyncio.timeout(cfg.request_timeout_s):
                    return await call()
            except ClientError as exc:
                error = exc.response.get("Error", {})
                code = str(error.get("Code", ""))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
                if code in _NOT_FOUND_CODES or status == 404:
                    raise ObjectNotFound("no such image") from None
                if code in _DENIED_CODES or status == 403:
                    raise SourceAccessDenied(f"{what}: access denied ({code})") from None
                if code == "PreconditionFailed" or status == 412:
                    raise ObjectChanged(f"{what}: object changed while reading") from None
                if not (code in _THROTTLE_CODES or status == 429 or status >= 500):
                    raise SourceUnavailable(f"{what}: {code or status}") from None
                last = f"{code or status}"
            except (NoCredentialsError, ParamValidationError) as exc:
                raise SourceUnavailable(f"{what}: {exc}") from None
            except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError, _Truncated) as exc:
                last = f"{type(exc).__name__}: {exc}"[:200]
        raise SourceUnavailable(f"{what} failed after {cfg.max_attempts} attempts ({last})")


class _Truncated(Exception):
    """The response body ended early (a dropped connection): retried."""


class _Fetcher:
    """The RangeFetcher of one located object version."""

    def __init__(self, source: S3Source, located: _Located) -> None:
        self._source = source
        self._located = located

    async def fetch(self, start: int, end: int) -> bytes:
        return await self._source.get_range(self._located, start, end)


__all__ = [
    "ObjectChanged",
    "S3Config",
    "S3Source",
    "SourceAccessDenied",
]
