"""The verdict cache: TTL + LRU in process (cachetools). The key holds the policy version, the
stage, the judge's identity and a hash of what was judged, so a policy edit or a judge change
never serves a stale verdict."""

from __future__ import annotations

import hashlib
import threading

from cachetools import TTLCache

from guard.types import Verdict


def cache_key(policy_version: str, stage: str, judge: str, content: list[str]) -> str:
    h = hashlib.blake2b(digest_size=20)
    for part in content:  # length-prefixed, so no two lists of strings hash the same input
        data = part.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return f"{policy_version}:{stage}:{judge}:{h.hexdigest()}"


class VerdictCache:
    def __init__(self, maxsize: int = 10_000, ttl_s: float = 3600.0, timer=None):
        kwargs = {"timer": timer} if timer is not None else {}
        self._data: TTLCache[str, Verdict] = TTLCache(maxsize=maxsize, ttl=ttl_s, **kwargs)
        self._lock = threading.Lock()  # the decorator may be used from several threads

    def get(self, key: str) -> Verdict | None:
        with self._lock:
            return self._data.get(key)

    def put(self, key: str, verdict: Verdict) -> None:
        with self._lock:
            self._data[key] = verdict

    def __len__(self) -> int:
        return len(self._data)
