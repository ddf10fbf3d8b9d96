"""The routes besides chat: models, check-only, health, readiness, metrics. Each reads what it needs
from ``request.app.state`` (guard, config, upstream)."""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import Response

from guard.errors import UpstreamError
from guard.logs import get_logger
from guard.present import result_json
from guard.server.body import parse
from guard.server.chat import guard_headers, json_response, request_body, upstream_error
from guard.types import ChatRequest
from guard.upstream import LiteLLMUpstream, OpenAIUpstream

log = get_logger("guard.server")

REPROBE_AFTER_S = 10.0


class CheckRequest(ChatRequest):
    response: str | None = None


async def models(request: Request) -> Response:
    state = request.app.state
    upstream, config = state.upstream, state.config
    if isinstance(upstream, OpenAIUpstream):
        try:
            return json_response(await state.upstream_for(request).models())
        except UpstreamError as e:
            if not config.models:
                return upstream_error(e)
        except TimeoutError:
            if not config.models:
                return upstream_error(UpstreamError("upstream /models did not answer in time", status=504))
    names = config.models or ([upstream.model] if isinstance(upstream, LiteLLMUpstream) else [])
    return json_response({"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "guard"}
                                                     for m in names]})


async def check(request: Request) -> Response:
    state = request.app.state
    _, body = await request_body(request)
    req = parse(CheckRequest, body)
    result = await state.guard.check(req.messages, req.response, request_id=request.scope["state"]["request_id"])
    request.scope["state"]["guard_result"] = result
    return json_response(result_json(result, rationale=state.config.expose_rationale), guard_headers(result))


async def healthz(request: Request) -> Response:
    return json_response({"status": "ok"})


async def readyz(request: Request) -> Response:
    state = request.app.state
    guard, upstream = state.guard, state.upstream
    checks = {"policy": f"{len(guard.spec.sections)} sections, version {guard.spec.version}", "judge": guard.judge.name}
    ok = True
    probe = getattr(state, "judge_probe", None)
    if probe is not None and not probe.ok and time.monotonic() - state.judge_probe_at >= REPROBE_AFTER_S:
        probe = await probe_judge(state)  # failing at the last look: look again (it may have come up)
    if probe is not None:
        checks["judge"] = probe.detail
        ok = probe.ok or probe.still_decides  # a cascade whose LLM is down still decides offline
    if isinstance(upstream, OpenAIUpstream):
        try:
            await asyncio.wait_for(upstream.models(), 3.0)
            checks["upstream"] = "reachable"
        except UpstreamError as e:  # it answered: reachable, even if it wants a key we don't hold
            checks["upstream"] = f"reachable (models: HTTP {e.status})"
        except Exception as e:  # noqa: BLE001 - any failure to connect means not ready
            ok, checks["upstream"] = False, f"unreachable: {type(e).__name__}"
    else:
        checks["upstream"] = upstream.name if upstream is not None else "none configured (check-only)"
    return json_response({"status": "ready" if ok else "not ready", "checks": checks}, status=200 if ok else 503)


async def probe_judge(state):
    """The judge's own check (``probe()``, optional in the Judge protocol), kept on ``state.judge_probe``
    and logged. A judge probes itself at start; /readyz asks again only while it is failing, at most
    every ``REPROBE_AFTER_S`` (an open, unauthenticated route must not turn into load on the judge)."""
    fn = getattr(state.guard.judge, "probe", None)
    if fn is None:
        state.judge_probe = None
        return None
    state.judge_probe_at = time.monotonic()  # set first: concurrent /readyz calls do not probe again
    result = state.judge_probe = await fn()
    (log.info if result.ok else log.warning)("guard_judge_probe", judge=result.judge, ok=result.ok,
                                             still_decides=result.still_decides, detail=result.detail,
                                             structured_output=result.structured_output)
    return result


async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(request.app.state.guard.metrics.registry), media_type=CONTENT_TYPE_LATEST)
