"""The guarded model. ``OpenAIUpstream`` speaks to any OpenAI-compatible server over one shared
aiohttp session (the lean path: httpx was 4-8x slower under load, see the README's Dependencies
section). Other providers go through ``LiteLLMUpstream``; a user's own function through
``guard.decorator.FunctionUpstream``."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from guard import providers
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
    """An OpenAI-compatible server. Only the operator steers it: the URL and the key are the
    constructor's, and the only headers sent are content-type and authorization (a client's body is
    forwarded as bytes, never read for routing). Faults get distinct errors (docs/server.md):

    - ``timeout_s``: a total deadline for a non-streamed call (headers and body);
    - ``idle_timeout_s``: the longest wait between two stream events (and for a stream's headers);
    - ``pool_timeout_s``: the longest wait for one of ``max_connections`` connections (503, its own message);
    - a body that is not a JSON object, a malformed stream event, a stream that ends without ``[DONE]``: 502.
    """

    def __init__(self, base_url: str, api_key: str | None = None, timeout_s: float = 120.0,
                 connect_timeout_s: float = 10.0, max_connections: int = 256, idle_timeout_s: float | None = None,
                 pool_timeout_s: float = 30.0):
        self.base_url = base_url.rstrip("/")
        self.name = f"openai-compatible:{self.base_url}"
        self._api_key, self.timeout_s, self.connect_timeout_s = api_key, timeout_s, connect_timeout_s
        self.idle_timeout_s = idle_timeout_s or timeout_s
        self.pool_timeout_s, self.max_connections = pool_timeout_s, max_connections
        self._pool: dict[str, Any] = {}  # the aiohttp session and the connection slots, created on first use
        # inside the running loop; a dict so that copies made by ``with_key`` share one pool

    def with_key(self, api_key: str | None) -> OpenAIUpstream:
        """The same upstream and connection pool, sending another key (a client's own, forwarded)."""
        clone = copy.copy(self)
        clone._api_key = api_key
        return clone

    def __repr__(self) -> str:
        return f"OpenAIUpstream({self.base_url!r})"  # never the key

    def _headers(self) -> dict[str, str]:
        h = {"content-type": "application/json"}
        if self._api_key:
            h["authorization"] = f"Bearer {self._api_key}"
        return h

    async def session(self):
        import aiohttp

        session = self._pool.get("session")
        if session is None or session.closed:
            # no aiohttp deadline: ours are below (aiohttp's 'connect' would count the pool wait)
            session = self._pool["session"] = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s))
            self._pool["slots"] = asyncio.Semaphore(self.max_connections)
        return session

    async def close(self) -> None:
        session = self._pool.pop("session", None)
        if session is not None and not session.closed:
            await session.close()

    @contextlib.asynccontextmanager
    async def _slot(self):
        """One of ``max_connections``: waiting for it has its own limit and its own error."""
        slots = self._pool["slots"]
        try:
            await asyncio.wait_for(slots.acquire(), self.pool_timeout_s)
        except asyncio.TimeoutError:
            raise UpstreamError(f"all {self.max_connections} upstream connections stayed busy for "
                                f"{self.pool_timeout_s:g}s", status=503, code="upstream_busy") from None
        try:
            yield
        finally:
            slots.release()

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        return (await self.complete_raw(body))[0]

    async def complete_raw(self, body: dict[str, Any], data: bytes | None = None) -> tuple[dict[str, Any], bytes]:
        """The parsed completion and the exact bytes the upstream sent (a proxy passes those on).
        ``data``: ``body`` already encoded (a proxy forwarding the client's own bytes)."""
        import aiohttp

        session = await self.session()
        async with self._slot():
            try:
                async with asyncio.timeout(self.timeout_s):
                    async with session.post(f"{self.base_url}/chat/completions", data=data or json.dumps(body),
                                            headers=self._headers()) as resp:
                        raw = await resp.read()
                        status, ctype = resp.status, resp.headers.get("content-type", "")
            except TimeoutError:
                raise UpstreamTimeout(f"upstream did not answer within {self.timeout_s:g}s") from None
            except aiohttp.ClientError as e:
                raise UpstreamError(f"upstream unreachable or cut off: {type(e).__name__}", status=502) from None
        parsed = _json_object(raw)
        if status >= 400:  # the provider's own error when it is OpenAI-shaped; ours otherwise
            if parsed is None:
                raise UpstreamError(f"upstream returned HTTP {status} with a body that is not a JSON object "
                                    f"({ctype or 'no content-type'})", status=status)
            raise UpstreamError(f"upstream returned {status}", status=status, body=raw,
                                headers={"content-type": "application/json"})
        if parsed is None:
            raise UpstreamError(f"upstream returned a body that is not a JSON object ({ctype or 'no content-type'})",
                                status=502, code="upstream_invalid_response")
        return parsed, raw

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield the upstream's SSE chunks as dicts; ``[DONE]`` ends the iteration, and anything else
        that ends it (a malformed event, the connection closing first, silence) raises UpstreamError."""
        import aiohttp

        session = await self.session()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.connect_timeout_s, sock_read=self.idle_timeout_s)
        async with self._slot():
            try:
                async with session.post(f"{self.base_url}/chat/completions", data=json.dumps(body),
                                        headers=self._headers(), timeout=timeout) as resp:
                    if resp.status >= 400:
                        raw = await resp.read()
                        if _json_object(raw) is None:
                            raise UpstreamError(f"upstream returned HTTP {resp.status} with a body that is not a "
                                                "JSON object", status=resp.status)
                        raise UpstreamError(f"upstream returned {resp.status}", status=resp.status, body=raw,
                                            headers={"content-type": "application/json"})
                    async for chunk in _sse_chunks(resp.content):
                        yield chunk
            except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
                raise UpstreamTimeout(f"upstream sent nothing for {self.idle_timeout_s:g}s") from None
            except aiohttp.ClientError as e:
                raise UpstreamError(f"upstream unreachable or cut off: {type(e).__name__}", status=502) from None
            except ValueError:  # aiohttp: a line longer than its buffer
                raise UpstreamError("upstream sent an oversized stream line", status=502) from None

    async def models(self) -> dict[str, Any]:
        session = await self.session()
        async with asyncio.timeout(self.timeout_s), session.get(f"{self.base_url}/models", headers=self._headers()) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                raise UpstreamError(f"upstream returned {resp.status}", status=resp.status,
                                    body=raw if _json_object(raw) is not None else None)
            parsed = _json_object(raw)
            if parsed is None:
                raise UpstreamError("upstream /models is not a JSON object", status=502)
            return parsed


async def _sse_chunks(content) -> AsyncIterator[SSEChunk]:
    async for line in content:
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        parsed = _json_object(data)
        if parsed is None:
            raise UpstreamError("upstream sent a stream event that is not a JSON object", status=502)
        chunk = SSEChunk(parsed)
        chunk.raw = data
        yield chunk
    raise UpstreamError("upstream stream ended without [DONE]", status=502)


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


# The OpenAI chat parameters a client may set for a litellm upstream (docs/security.md). Everything else,
# litellm's routing and credentials above all (api_base, base_url, api_key, extra_headers, mock_response,
# custom_llm_provider, ...), is the operator's alone and never taken from a request body.
LITELLM_PARAMS = frozenset({
    "messages", "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "max_tokens", "max_completion_tokens",
    "n", "presence_penalty", "response_format", "seed", "stop", "stream_options", "temperature", "top_p", "tools",
    "tool_choice", "parallel_tool_calls", "user", "functions", "function_call", "reasoning_effort", "modalities",
    "prediction", "audio", "service_tier", "verbosity",
})


class LiteLLMUpstream:
    """Any provider litellm reaches, by model string (imported lazily: about 4 s). Only the
    parameters in ``LITELLM_PARAMS`` are taken from a request."""

    def __init__(self, model: str, api_key: str | None = None, api_base: str | None = None, timeout_s: float = 120.0):
        self.model, self._api_key, self.api_base, self.timeout_s = model, api_key, api_base, timeout_s
        self.name = f"litellm:{model}"

    def __repr__(self) -> str:
        return f"LiteLLMUpstream({self.model!r})"

    def _kwargs(self, body: dict[str, Any], stream: bool) -> dict[str, Any]:
        kwargs = {k: v for k, v in body.items() if k in LITELLM_PARAMS}
        # what only the operator sets comes last, so nothing from the body can override it
        return kwargs | providers.call_args(self.model, api_base=self.api_base, api_key=self._api_key,
                                            timeout_s=self.timeout_s, stream=stream)

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        litellm = providers.litellm()
        try:
            async with asyncio.timeout(self.timeout_s):
                resp = await litellm.acompletion(**self._kwargs(body, stream=False))
        except TimeoutError:
            raise UpstreamTimeout(f"upstream did not answer within {self.timeout_s:g}s") from None
        except Exception as e:  # noqa: BLE001 - provider errors become ours
            raise _upstream_error(litellm, e) from None
        return resp.model_dump()

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        litellm = providers.litellm()
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
