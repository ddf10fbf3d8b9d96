"""``POST /v1/chat/completions``: HTTP in, the pipeline, HTTP out. It translates; it never decides.

An allowed answer is the upstream's own bytes plus ``x-guard-*`` headers (unless something had to
be removed from it: reasoning, or unknown fields with ``unknown_fields: drop``); a refusal is a
normal ``chat.completion`` with ``finish_reason: "content_filter"`` and a ``guard`` object beside
``choices``. Streams follow guard.streaming's hold-back contract and always end with ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from guard.errors import UpstreamError
from guard.logs import get_logger
from guard.server.body import parse, read_json
from guard.server.http import HTTPError, error_body, error_response
from guard.streaming import GuardedStream
from guard.types import ChatRequest, GuardResult

log = get_logger("guard.server")


async def request_body(request: Request) -> tuple[bytes, Any]:
    c = request.app.state.config
    return await read_json(request, limit=c.max_body_bytes, timeout_s=c.body_read_timeout_s, max_depth=c.max_json_depth)


async def chat_completions(request: Request) -> Response:
    state = request.app.state
    raw, body = await request_body(request)
    req = parse(ChatRequest, body)
    up = state.upstream_for(request)
    rid = request.scope["state"]["request_id"]
    if req.streamed:
        return await stream_chat(request, req, up, rid)
    keep = KeepRaw(up, body, raw)
    result = await complete(request, state.guard.complete(req, keep, body=body, request_id=rid))
    if isinstance(result, Response):
        return result
    headers = guard_headers(result)
    if not result.enforced and keep.raw is not None and result.response == keep.parsed:  # nothing removed from it
        return Response(keep.raw, media_type="application/json", headers=headers)  # the upstream's own bytes
    return json_response(present(request, result.response, result), headers)


async def complete(request: Request, work) -> GuardResult | Response:
    """A non-streamed request through the pipeline (``work``), recorded for the log, or the answer
    when it could not finish: the upstream's error, 503 during a shutdown, 499 when the client left."""
    try:
        result = await until_disconnect(request, work)
    except UpstreamError as e:
        return upstream_error(e)
    if result is None:  # the client went away (the upstream call was cancelled with it), or a shutdown cut it
        drain = request.app.state.drain
        if drain.cutting:
            return error_response(503, drain.message, code="shutting_down")
        return Response(status_code=499)
    request.scope["state"]["guard_result"] = result
    return result


async def until_disconnect(request: Request, work):
    """Run ``work``; if the client disconnects first, cancel it (an upstream call stops being paid
    for) and return None."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    drain = request.app.state.drain
    drain.tasks.add(task)  # a shutdown that must cut it cancels it
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        drain.tasks.discard(task)
        for f in (watch, task):
            if not f.done():
                f.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await f
    if task.cancelled():
        log.info("guard_client_disconnected", request_id=request.scope["state"]["request_id"])
        return None
    return task.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def stream_chat(request: Request, req: ChatRequest, up, rid: str) -> Response:
    state = request.app.state
    if not hasattr(up, "stream"):
        raise HTTPError(400, "This upstream does not stream.", param="stream")
    gs = GuardedStream(state.guard, req, up, first_window_chars=state.config.stream_first_window_chars,
                       window_chars=state.config.stream_window_chars, request_id=rid)
    try:
        await gs.start()  # the input check, and the upstream's status, before any byte is sent
    except UpstreamError as e:
        return upstream_error(e)
    v = gs.input_verdict
    headers = {"cache-control": "no-cache", "x-guard-policy-version": state.guard.spec.version}
    if v is not None:
        headers |= {"x-guard-decision": v.decision.value, "x-guard-mode": state.config.mode,
                    "x-guard-cache": "hit" if v.cache_hit else "miss",  # the input verdict's
                    "x-guard-sections": ",".join(v.sections), "x-guard-input-latency-ms": f"{v.latency_ms:.3f}"}
    return StreamingResponse(sse(request, gs), media_type="text/event-stream", headers=headers)


async def sse(request: Request, gs: GuardedStream):
    """The stream's events; whatever happens, it ends with ``data: [DONE]``."""
    drain = request.app.state.drain
    drain.streams.add(gs)
    try:
        if drain.cutting:
            gs.abort(drain.message)
        async for batch in gs:  # the chunks one check released: one write
            yield b"".join(sse_event(request, chunk, gs) for chunk in batch)
    except UpstreamError as e:  # mid-stream: the held-back text is dropped; the stream still ends well-formed
        log.warning("guard_upstream_failed_mid_stream", error=str(e), status=e.status)
        yield event(error_body(502 if e.status < 500 else e.status, f"upstream failed mid-stream: {e}",
                               code=e.code or "upstream_error"))
    except Exception as e:  # noqa: BLE001 - a bug must not leave the client with a broken stream
        log.error("guard_stream_failed", error=type(e).__name__, detail=str(e)[:200], exc_info=e)
        yield event(error_body(500, "The guard failed on this stream; it has been logged."))
    finally:
        drain.streams.discard(gs)
    yield b"data: [DONE]\n\n"
    request.scope["state"]["guard_result"] = gs.result


def event(data: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"


def sse_event(request: Request, chunk: dict[str, Any], gs: GuardedStream) -> bytes:
    raw = getattr(chunk, "raw", None)  # an upstream chunk released unchanged: its own bytes
    if raw is not None:
        return b"data: " + raw + b"\n\n"
    if "guard" in chunk:
        chunk["guard"] = guard_object(request, chunk["guard"], gs.result)
    return event(chunk)


def present(request: Request, response: dict[str, Any], result: GuardResult) -> dict[str, Any]:
    if "guard" in response:
        response = {**response, "guard": guard_object(request, response["guard"], result)}
    return response


def guard_object(request: Request, info: dict[str, Any], result: GuardResult | None) -> dict[str, Any]:
    info = dict(info)
    if not request.app.state.config.expose_rationale:
        info.pop("rationale", None)
    if result is not None:
        info["latency_ms"] = round(result.guard_ms, 3)
        info["cost_usd"] = result.judge_cost.usd
    return info


class KeepRaw:
    """Wraps the upstream for one request: sends the client's own bytes when the pipeline forwards the
    request unchanged, and keeps the exact bytes (and the parsed answer) the upstream answered with."""

    def __init__(self, upstream, client_body: dict[str, Any], client_raw: bytes):
        self.upstream, self.name, self.raw, self.parsed = upstream, upstream.name, None, None
        self._client_body, self._client_raw = client_body, client_raw

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        if hasattr(self.upstream, "complete_raw"):
            same = body is self._client_body or body == self._client_body  # forwarded unchanged: the client's bytes
            self.parsed, self.raw = await self.upstream.complete_raw(body, self._client_raw if same else None)
            return self.parsed
        return await self.upstream.complete(body)


def upstream_error(e: UpstreamError) -> Response:
    """The upstream's own status and JSON error body when it sent one; an OpenAI-style error otherwise."""
    if e.body:
        body = e.body if isinstance(e.body, bytes) else json.dumps(e.body).encode()
        return Response(body, status_code=e.status, media_type="application/json")
    status = e.status if e.status >= 400 else 502
    return error_response(status, str(e), code=e.code or ("upstream_error" if status >= 500 else None))


def guard_headers(result: GuardResult) -> dict[str, str]:
    return {"x-guard-decision": result.decision.value, "x-guard-mode": result.mode,
            "x-guard-cache": "hit" if result.cache_hit else "miss", "x-guard-sections": ",".join(result.sections),
            "x-guard-policy-version": result.policy_version, "x-guard-latency-ms": f"{result.guard_ms:.3f}",
            "x-guard-cost-usd": "unknown" if result.judge_cost.usd is None else f"{result.judge_cost.usd:.8f}"}


def json_response(data: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), status_code=status, media_type="application/json", headers=headers)
