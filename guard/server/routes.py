"""The routes besides chat: models, check-only, health, readiness, metrics. Each reads what it needs
from ``request.app.state`` (guard, config, upstream)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from guard.errors import UpstreamError
from guard.present import result_json
from guard.server.body import parse
from guard.server.chat import guard_headers, json_response, request_body, upstream_error
from guard.types import ChatRequest
from guard.upstream import LiteLLMUpstream, OpenAIUpstream


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
    guard, upstream = request.app.state.guard, request.app.state.upstream
    checks = {"policy": f"{len(guard.spec.sections)} sections, version {guard.spec.version}", "judge": guard.judge.name}
    ok = True
    llm = getattr(guard.judge, "second", guard.judge)  # the cascade's reasoning judge, or the judge itself
    if getattr(llm, "api_base", None):
        try:
            async with _probe_session() as s, s.get(llm.api_base.rstrip("/") + "/models") as r:
                checks["judge"] += f" (reachable, HTTP {r.status})"
        except Exception as e:  # noqa: BLE001 - any failure to connect means not ready
            ok, checks["judge"] = False, f"{guard.judge.name} unreachable at {llm.api_base}: {type(e).__name__}"
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


async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(request.app.state.guard.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _probe_session():
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))
