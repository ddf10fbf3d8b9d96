"""``POST /v1/responses``: the OpenAI Responses API with the same guard as chat.

The request is translated to a chat request (guard.responses), which goes through the same
pipeline as ``/v1/chat/completions``: the input items and instructions are judged before the
upstream is called (over chat completions), the answer's items after, and streams are held back
and released by guard.streaming's contract, then re-shaped as Responses events
(guard.responses_stream). The endpoint reads what it needs from ``request.app.state``: ``guard``,
``config`` and ``upstream_for(request)``.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from guard.errors import UpstreamError
from guard.responses import ResponsesInputError, ResponsesRequest, new_id, sse, to_chat, to_response
from guard.responses_stream import ResponsesStream
from guard.logs import get_logger
from guard.server.body import parse
from guard.server.chat import complete, guard_headers, guard_object, json_response, request_body, upstream_error
from guard.server.http import HTTPError
from guard.streaming import GuardedStream
from guard.types import ChatRequest, GuardResult

log = get_logger("guard.server")


async def responses(request: Request) -> Response:
    state = request.app.state
    guard = state.guard
    _, body = await request_body(request)
    rreq = parse(ResponsesRequest, body)
    try:
        req = ChatRequest.model_validate(to_chat(rreq))
    except ResponsesInputError as e:
        raise HTTPError(400, str(e), param=e.param, code="unsupported_parameter") from None
    up = state.upstream_for(request)
    rid = request.scope["state"]["request_id"]
    if rreq.stream:
        return await _stream(request, rreq, req, up, rid)
    result = await complete(request, guard.complete(req, up, request_id=rid))
    if isinstance(result, Response):
        return result
    info = (result.response or {}).get("guard")
    out = to_response(rreq, result.response, new_id("resp"), guard_object(request, info, result) if info else None)
    return json_response(out, guard_headers(result))


async def _stream(request: Request, rreq: ResponsesRequest, req: ChatRequest, up: Any, rid: str) -> Response:
    state = request.app.state
    guard, config = state.guard, state.config
    if not hasattr(up, "stream"):
        raise HTTPError(400, "This upstream does not stream.", param="stream")
    gs = GuardedStream(guard, req, up, first_window_chars=config.stream_first_window_chars,
                       window_chars=config.stream_window_chars, request_id=rid)
    try:
        await gs.start()  # the input check, and the upstream's status, before any byte is sent
    except UpstreamError as e:
        return upstream_error(e)
    events = ResponsesStream(rreq, new_id("resp"), present=lambda info: guard_object(request, info, gs.result))

    async def body():
        drain = state.drain
        drain.streams.add(gs)  # a shutdown that must cut it ends it well-formed
        yield b"".join(sse(ev) for ev in events.start())
        try:
            if drain.cutting:
                gs.abort(drain.message)
            async for batch in gs:  # the chunks one check released
                out = events.feed(batch)
                if out:
                    yield b"".join(sse(ev) for ev in out)
            yield b"".join(sse(ev) for ev in events.finish())
        except UpstreamError as e:  # mid-stream: the held-back text is dropped; the stream still ends well-formed
            log.warning("guard_upstream_failed_mid_stream", error=str(e), status=e.status)
            yield b"".join(sse(ev) for ev in events.failed(f"upstream failed mid-stream: {e}"))
        except Exception as e:  # noqa: BLE001 - a bug must not leave the client with a broken stream
            log.error("guard_stream_failed", error=type(e).__name__, detail=str(e)[:200])
            yield b"".join(sse(ev) for ev in events.failed("The guard failed on this stream; it has been logged."))
        finally:
            drain.streams.discard(gs)
        request.scope["state"]["guard_result"] = gs.result

    headers = {"cache-control": "no-cache", "x-guard-policy-version": guard.spec.version}
    v = gs.input_verdict
    if v is not None:
        headers |= {"x-guard-decision": v.decision.value, "x-guard-mode": config.mode,
                    "x-guard-sections": ",".join(v.sections), "x-guard-input-latency-ms": f"{v.latency_ms:.3f}"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)

