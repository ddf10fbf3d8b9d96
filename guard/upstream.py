"""The guarded model. ``OpenAIUpstream`` speaks to any OpenAI-compatible server over one shared
aiohttp session (DESIGN §6: the lean path; httpx was 4-8x slower under load). Other providers go
through ``LiteLLMUpstream``; a user's own function through ``guard.decorator.FunctionUpstream``."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from guard.errors import UpstreamError, UpstreamTimeout


class Upstream(Protocol):
    name: str

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        """Send a non-streaming chat request; return the chat.completion; raise UpstreamError."""
        ...


class SSEChunk(dict):
    """A stream chunk as parsed, remembering the bytes it arrived as: a proxy that releases it
    unchanged sends those bytes on (exact, and no re-encoding per chunk)."""

    __slots__ = ("raw",)


class OpenAIUpstream:
    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 120.0,
                 connect_timeout_s: float = 10.0, max_connections: int = 256):
        self.base_url = base_url.rstrip("/")
        self.name = f"openai-compatible:{self.base_url}"
        self._api_key, self.timeout_s, self.connect_timeout_s = api_key, timeout_s, connect_timeout_s
        self.max_connections = max_connections
        self._pool: dict[str, Any] = {}  # the aiohttp session, created on first use inside the running loop;
        # a dict so that copies made by ``with_key`` share one connection pool

    def with_key(self, api_key: str | None) -> OpenAIUpstream:
        """The same upstream and connection pool, sending another key (a client's own, forwarded)."""
        clone = copy.copy(self)
        clone._api_key = api_key
        return clone

    def __repr__(self) -> str:
        return f"OpenAIUpstream({self.base_url!r})"  # never the key

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if self._api_key:
            h["authorization"] = f"Bearer {self._api_key}"
        h.update(extra or {})
        return h

    async def session(self):
        import aiohttp

        session = self._pool.get("session")
        if session is None or session.closed:
            session = self._pool["session"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=None, connect=self.connect_timeout_s, sock_read=self.timeout_s))
        return session

    async def close(self) -> None:
        session = self._pool.pop("session", None)
        if session is not None and not session.closed:
            await session.close()

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        return (await self.complete_raw(body))[0]

    async def complete_raw(self, body: dict[str, Any], data: bytes | None = None) -> tuple[dict[str, Any], bytes]:
        """The parsed completion and the exact bytes the upstream sent (a proxy passes those on).
        ``data``: ``body`` already encoded (a proxy forwarding the client's own bytes)."""
        import aiohttp

        session = await self.session()
        try:
            async with session.post(f"{self.base_url}/chat/completions", data=data or json.dumps(body),
                                    headers=self._headers()) as resp:
                raw = await resp.read()
                if resp.status >= 400:
                    raise UpstreamError(f"upstream returned {resp.status}", status=resp.status, body=raw,
                                        headers={"content-type": resp.headers.get("content-type", "application/json")})
                try:
                    return json.loads(raw), raw
                except ValueError:
                    raise UpstreamError("upstream returned invalid JSON", status=502, body=raw[:2000]) from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(f"upstream did not answer within {self.timeout_s:g}s") from None
        except aiohttp.ClientError as e:
            raise UpstreamError(f"upstream unreachable: {type(e).__name__}", status=502) from None

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield the upstream's SSE chunks as dicts (``[DONE]`` ends the iteration)."""
        import aiohttp

        session = await self.session()
        try:
            async with session.post(f"{self.base_url}/chat/completions", data=json.dumps(body), headers=self._headers()) as resp:
                if resp.status >= 400:
                    raise UpstreamError(f"upstream returned {resp.status}", status=resp.status, body=await resp.read(),
                                        headers={"content-type": resp.headers.get("content-type", "application/json")})
                async for line in resp.content:
                    line = line.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        return
                    try:
                        chunk = SSEChunk(json.loads(data))
                    except ValueError:
                        raise UpstreamError("upstream sent an invalid stream chunk", status=502) from None
                    chunk.raw = data
                    yield chunk
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamTimeout(f"upstream stream stalled for {self.timeout_s:g}s") from None
        except aiohttp.ClientError as e:
            raise UpstreamError(f"upstream unreachable: {type(e).__name__}", status=502) from None

    async def models(self) -> dict[str, Any]:
        session = await self.session()
        async with session.get(f"{self.base_url}/models", headers=self._headers()) as resp:
            if resp.status >= 400:
                raise UpstreamError(f"upstream returned {resp.status}", status=resp.status, body=await resp.read())
            return await resp.json()


class LiteLLMUpstream:
    """Any provider litellm reaches, by model string (imported lazily: about 4 s)."""

    def __init__(self, model: str, api_key: str | None = None, api_base: str | None = None, timeout_s: float = 120.0):
        self.model, self._api_key, self.api_base, self.timeout_s = model, api_key, api_base, timeout_s
        self.name = f"litellm:{model}"

    def __repr__(self) -> str:
        return f"LiteLLMUpstream({self.model!r})"

    def _kwargs(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        kwargs = {**body, "model": self.model, "timeout": self.timeout_s, "num_retries": 0, "stream": stream}
        if self._api_key:
            kwargs["api_key"] = self._api_key
        if self.api_base:
            kwargs["api_base"] = self.api_base
        return kwargs

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        from guard.judges.llm import _litellm

        litellm = _litellm()
        try:
            resp = await litellm.acompletion(**self._kwargs(body, stream=False))
        except Exception as e:  # noqa: BLE001 - provider errors become ours
            raise _upstream_error(litellm, e) from None
        return resp.model_dump()

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        from guard.judges.llm import _litellm

        litellm = _litellm()
        try:
            resp = await litellm.acompletion(**self._kwargs(body, stream=True))
            async for chunk in resp:
                yield chunk.model_dump(exclude_none=True)
        except Exception as e:  # noqa: BLE001 - provider errors become ours
            raise _upstream_error(litellm, e) from None


def _upstream_error(litellm, e: Exception) -> UpstreamError:
    """A litellm exception as ours, keeping the provider's status when litellm has one."""
    if isinstance(e, litellm.exceptions.Timeout):
        return UpstreamTimeout()
    return UpstreamError(f"upstream failed: {type(e).__name__}", status=getattr(e, "status_code", 502) or 502)
