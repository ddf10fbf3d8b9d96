"""The verdict cache, in tiers: an in-process TTL + LRU cache (cachetools) in front of an optional
shared Redis, so that replicas behind one load balancer reuse each other's verdicts
(docs/deploy.md). The key holds the policy version, the stage, the judge's identity and a hash of
what was judged, so a policy edit or a judge change never serves a stale verdict.

    lookup:  local ──miss──▶ redis ──miss──▶ (the judge decides; store writes both tiers)
                              └─hit─▶ copied into the local tier

Redis is an optimisation, never a dependency of a decision: when it is down or slow the guard
keeps serving from the local tier and the judge, counts the errors (``guard_cache_errors``) and
tries Redis again after a short pause (the client reconnects by itself).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Protocol
from urllib.parse import urlsplit

from cachetools import TTLCache

from guard.types import Verdict


def cache_key(policy_version: str, stage: str, judge: str, content: list[str]) -> str:
    h = hashlib.blake2b(digest_size=20)
    for part in content:  # length-prefixed, so no two lists of strings hash the same input
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return f"{policy_version}:{stage}:{judge}:{h.hexdigest()}"


class CacheTier(Protocol):
    """What the pipeline asks of a verdict cache: ``lookup`` gives the verdict and the tier that held it."""

    async def lookup(self, key: str) -> tuple[Verdict, str] | None: ...

    async def store(self, key: str, verdict: Verdict) -> None: ...


class VerdictCache:
    """The in-process tier. Thread-safe: the decorator may be used from several threads."""

    tier = "local"

    def __init__(self, maxsize: int = 10_000, ttl_s: float = 3600.0, timer=None):
        kwargs = {"timer": timer} if timer is not None else {}
        self._data: TTLCache[str, Verdict] = TTLCache(maxsize=maxsize, ttl=ttl_s, **kwargs)
        self._lock = threading.Lock()

    def get(self, key: str) -> Verdict | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, verdict: Verdict) -> None:
        with self._lock:
            self._data[key] = verdict

    async def lookup(self, key: str) -> tuple[Verdict, str] | None:
        v = self.get(key)
        return (v, self.tier) if v is not None else None

    async def store(self, key: str, verdict: Verdict) -> None:
        self.put(key, verdict)

    def __len__(self) -> int:
        return len(self._data)


class RedisVerdictCache:
    """The shared tier: one Redis (``redis://HOST:PORT/DB``) for every replica.

    Each verdict is a JSON string under ``guard:v:<key>`` with a TTL; a sorted set of keys by write
    time bounds the number kept (the oldest are deleted past ``maxsize``), whatever Redis's own
    ``maxmemory`` policy is. Every call has a short timeout; an error switches Redis off for
    ``retry_s`` seconds, then the next call tries again."""

    tier = "redis"
    PREFIX = "guard:v:"
    INDEX = "guard:index"

    def __init__(self, url: str, *, ttl_s: float = 3600.0, maxsize: int = 100_000, timeout_s: float = 0.25,
                 retry_s: float = 1.0, on_error=None, clock=time.monotonic):
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            from guard.errors import ConfigError

            raise ConfigError(f"cache_url must be redis://HOST:PORT/DB (or rediss://, unix://), got {url!r}")
        self.url, self.ttl_s, self.maxsize = url, ttl_s, maxsize
        self.timeout_s, self.retry_s, self.clock = timeout_s, retry_s, clock
        self.on_error = on_error or (lambda op, exc: None)  # the pipeline counts errors in its metrics
        self.errors = 0
        self._down_until = 0.0
        self._writes = 0
        self._clients: dict[int, object] = {}  # one client per event loop (check_sync runs a loop per call)

    def _client(self):
        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None:
            try:
                import redis.asyncio as aioredis
            except ImportError:
                from guard.errors import ConfigError

                raise ConfigError("cache_url needs the 'redis' package: pip install 'deliberative-guard[redis]'") from None
            client = aioredis.Redis.from_url(self.url, socket_timeout=self.timeout_s,
                                             socket_connect_timeout=self.timeout_s, health_check_interval=30)
            self._clients = {id(loop): client}  # a loop that is gone takes its connections with it
        return client

    @property
    def available(self) -> bool:
        return self.clock() >= self._down_until

    def _failed(self, op: str, exc: BaseException) -> None:
        self.errors += 1
        self._down_until = self.clock() + self.retry_s
        self.on_error(op, exc)

    async def lookup(self, key: str) -> tuple[Verdict, str] | None:
        if not self.available:
            return None
        try:
            raw = await asyncio.wait_for(self._client().get(self.PREFIX + key), self.timeout_s)
        except Exception as e:  # noqa: BLE001 - any Redis failure means: judge without it
            self._failed("get", e)
            return None
        if raw is None:
            return None
        try:
            return Verdict.model_validate_json(raw), self.tier
        except ValueError as e:  # written by an incompatible version: a miss
            self._failed("decode", e)
            return None

    async def store(self, key: str, verdict: Verdict) -> None:
        if not self.available:
            return
        now = time.time()
        try:
            client = self._client()
            pipe = client.pipeline(transaction=False)
            pipe.set(self.PREFIX + key, verdict.model_dump_json(), ex=max(1, int(self.ttl_s)))
            pipe.zadd(self.INDEX, {key: now})
            self._writes += 1
            if self._writes % 64 == 1:  # bound the size now and then, not on every write
                pipe.zremrangebyscore(self.INDEX, "-inf", now - self.ttl_s)  # expired keys leave the index
                pipe.zcard(self.INDEX)
            results = await asyncio.wait_for(pipe.execute(), self.timeout_s)
            if self._writes % 64 == 1 and results[-1] > self.maxsize:
                await asyncio.wait_for(self._evict(client, results[-1] - self.maxsize), self.timeout_s * 4)
        except Exception as e:  # noqa: BLE001 - the verdict stands; only sharing it failed
            self._failed("set", e)

    async def _evict(self, client, n: int) -> None:
        oldest = await client.zrange(self.INDEX, 0, n - 1)
        if oldest:
            pipe = client.pipeline(transaction=False)
            pipe.delete(*[self.PREFIX + k.decode() for k in oldest])
            pipe.zrem(self.INDEX, *oldest)
            await pipe.execute()

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients = {}


class TieredCache:
    """Local in front of shared: a shared hit is copied into the local tier; a store writes both."""

    def __init__(self, local: VerdictCache, shared: RedisVerdictCache):
        self.local, self.shared = local, shared

    async def lookup(self, key: str) -> tuple[Verdict, str] | None:
        if (v := self.local.get(key)) is not None:
            return v, self.local.tier
        hit = await self.shared.lookup(key)
        if hit is not None:
            self.local.put(key, hit[0])
        return hit

    async def store(self, key: str, verdict: Verdict) -> None:
        self.local.put(key, verdict)
        await self.shared.store(key, verdict)

    def __len__(self) -> int:
        return len(self.local)


def make_cache(size: int, ttl_s: float, url: str | None = None, shared_size: int = 100_000,
               on_error=None) -> VerdictCache | TieredCache | None:
    """The cache the settings ask for: none (size 0 and no URL), local, or local in front of Redis."""
    if not url:
        return VerdictCache(size, ttl_s) if size else None
    return TieredCache(VerdictCache(max(size, 1), ttl_s),
                       RedisVerdictCache(url, ttl_s=ttl_s, maxsize=shared_size, on_error=on_error))
