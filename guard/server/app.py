"""The OpenAI-compatible guard proxy. It translates HTTP to the pipeline and back; it never decides.

    POST /v1/chat/completions   guarded chat (JSON or SSE streaming)
    GET  /v1/models             the upstream's list (or the configured models)
    POST /v1/guard/check        check only: a conversation (and a response) in, a verdict out
    GET  /healthz  /readyz  /metrics

An allowed answer is the upstream's own bytes plus ``x-guard-*`` headers; a refusal is a normal
``chat.completion`` with ``finish_reason: "content_filter"`` and a ``guard`` object beside
``choices``. Streams follow guard.streaming's hold-back contract.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Any

import structlog
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from guard import reload
from guard.errors import UpstreamError, UpstreamTimeout
from guard.pipeline import Guard
from guard.present import result_json
from guard.server.config import ServeConfig
from guard.server.http import GuardHTTP, HTTPError, error_body, error_response
from guard.streaming import GuardedStream
from guard.types import ChatRequest, GuardResult
from guard.upstream import LiteLLMUpstream, OpenAIUpstream

log = structlog.get_logger("guard.server")


def make_upstream(config: ServeConfig):
    """A URL means an OpenAI-compatible server; anything else is a litellm model string."""
    if not config.upstream:
        return None
    key = config.upstream_api_key.get_secret_value() if config.upstream_api_key else None
    if config.upstream.startswith(("http://", "https://")):
        return OpenAIUpstream(config.upstream, api_key=key, timeout_s=config.upstream_timeout_s)
    return LiteLLMUpstream(config.upstream, api_key=key, api_base=config.upstream_api_base,
                           timeout_s=config.upstream_timeout_s)


def create_app(config: ServeConfig, *, guard: Guard | None = None, upstream: Any = None) -> GuardHTTP:
    guard = guard or Guard.create(config)
    upstream = upstream if upstream is not None else make_upstream(config)
    forward_client_key = isinstance(upstream, OpenAIUpstream) and config.upstream_api_key is None and not config.api_keys

    def upstream_for(request: Request):
        if upstream is None:
            raise HTTPError(503, "This guard has no upstream model configured (start it with --upstream URL); "
                                 "POST /v1/guard/check works without one.", code="no_upstream")
        if forward_client_key:  # drop-in use: the client's own provider key goes through untouched
            auth = request.headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                return upstream.with_key(auth[7:].strip())
        return upstream

    # ------------------------------------------------------------------ chat completions

    async def chat_completions(request: Request) -> Response:
        guard = request.app.state.guard  # the version serving now; a reload swaps it (guard.reload)
        raw, body = await read_json(request, config.max_body_bytes)
        req = parse(ChatRequest, body)
        up = upstream_for(request)
        rid = request.scope["state"]["request_id"]
        if req.stream:
            return await stream_chat(request, req, up, rid, guard)
        keep = _KeepRaw(up, body, raw)
        try:
            result = await guard.complete(req, keep, body=body, request_id=rid)
        except UpstreamError as e:
            return upstream_error(e)
        request.scope["state"]["guard_result"] = result
        headers = guard_headers(result)
        if not result.enforced and keep.raw is not None and result.response is not None:
            return Response(keep.raw, media_type="application/json", headers=headers)  # the upstream's own bytes
        return json_response(present(result.response, result), headers)

    async def stream_chat(request: Request, req: ChatRequest, up, rid: str, guard: Guard) -> Response:
        if not hasattr(up, "stream"):
            raise HTTPError(400, "This upstream does not stream.", param="stream")
        gs = GuardedStream(guard, req, up, first_window_chars=config.stream_first_window_chars,
                           window_chars=config.stream_window_chars, request_id=rid)
        try:
            await gs.start()  # the input check, and the upstream's status, before any byte is sent
        except UpstreamError as e:
            return upstream_error(e)

        async def sse():
            try:
                async for batch in gs:  # the chunks one check released: one write
                    yield b"".join(sse_event(chunk, gs) for chunk in batch)
            except UpstreamError as e:  # mid-stream: the held-back text is dropped; the stream still ends well-formed
                log.warning("guard_upstream_failed_mid_stream", error=str(e), status=e.status)
                yield b"data: " + json.dumps(error_body(502, f"upstream failed mid-stream: {e}")).encode() + b"\n\n"
            except Exception as e:  # noqa: BLE001 - a bug must not leave the client with a broken stream
                log.error("guard_stream_failed", error=type(e).__name__, detail=str(e)[:200])
                yield b"data: " + json.dumps(error_body(500, "The guard failed on this stream; it has been logged.")).encode() + b"\n\n"
            yield b"data: [DONE]\n\n"
            request.scope["state"]["guard_result"] = gs.result

        v = gs.input_verdict
        headers = {"cache-control": "no-cache", "x-guard-policy-version": guard.spec.version}
        if v is not None:
            headers |= {"x-guard-decision": v.decision.value, "x-guard-mode": config.mode,
                        "x-guard-cache": "hit" if v.cache_hit else "miss",  # the input verdict's
                        "x-guard-sections": ",".join(v.sections), "x-guard-input-latency-ms": f"{v.latency_ms:.3f}"}
        return StreamingResponse(sse(), media_type="text/event-stream", headers=headers)

    def sse_event(chunk: dict[str, Any], gs: GuardedStream) -> bytes:
        raw = getattr(chunk, "raw", None)  # an upstream chunk released unchanged: its own bytes
        if raw is not None:
            return b"data: " + raw + b"\n\n"
        if "guard" in chunk:
            chunk["guard"] = guard_object(chunk["guard"], gs.result)
        return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"

    def present(response: dict[str, Any], result: GuardResult) -> dict[str, Any]:
        if "guard" in response:
            response = {**response, "guard": guard_object(response["guard"], result)}
        return response

    def guard_object(info: dict[str, Any], result: GuardResult | None) -> dict[str, Any]:
        info = dict(info)
        if not config.expose_rationale:
            info.pop("rationale", None)
        if result is not None:
            info["latency_ms"] = round(result.guard_ms, 3)
            info["cost_usd"] = result.judge_cost.usd
        return info

    # ------------------------------------------------------------------ the other routes

    async def models(request: Request) -> Response:
        if isinstance(upstream, OpenAIUpstream):
            try:
                return json_response(await upstream_for(request).models())
            except UpstreamError as e:
                if not config.models:
                    return upstream_error(e)
        names = config.models or ([upstream.model] if isinstance(upstream, LiteLLMUpstream) else [])
        return json_response({"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "guard"}
                                                         for m in names]})

    async def check(request: Request) -> Response:
        guard = request.app.state.guard
        _, body = await read_json(request, config.max_body_bytes)
        req = parse(_CheckRequest, body)
        result = await guard.check(req.messages, req.response, request_id=request.scope["state"]["request_id"])
        request.scope["state"]["guard_result"] = result
        return json_response(result_json(result, rationale=config.expose_rationale), guard_headers(result))

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        guard = request.app.state.guard
        checks = {"policy": f"{len(guard.spec.sections)} sections, version {guard.spec.version}",
                  "judge": guard.judge.name}
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

    # ------------------------------------------------------------------ errors

    async def on_http_error(request: Request, exc: HTTPError) -> Response:
        return error_response(exc.status, exc.message, exc.param, exc.code)

    async def on_starlette_error(request: Request, exc: HTTPException) -> Response:
        message = {404: f"Unknown route {request.method} {request.url.path}.",
                   405: f"Method {request.method} is not allowed on {request.url.path}."}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    async def on_crash(request: Request, exc: Exception) -> Response:
        log.error("guard_internal_error", error=type(exc).__name__, detail=str(exc)[:200], path=request.url.path)
        return error_response(500, "The guard failed on this request; it has been logged.")

    @asynccontextmanager
    async def lifespan(app):
        warm = getattr(guard.judge, "warm_up", None) or getattr(getattr(guard.judge, "first", None), "warm_up", None)
        if warm is not None:
            await asyncio.to_thread(warm, guard.spec)  # load the model now, not on the first request
        log.info("guard_ready", policy_version=guard.spec.version, judge=guard.judge.name,
                 upstream=getattr(upstream, "name", None), mode=config.mode)
        yield
        if hasattr(upstream, "close"):
            await upstream.close()

    app = Starlette(routes=[
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/guard/check", check, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route(reload.RELOAD_PATH, reload.reload_endpoint, methods=["POST"]),
    ], exception_handlers={HTTPError: on_http_error, HTTPException: on_starlette_error, Exception: on_crash},
        lifespan=lifespan)
    app.state.guard = guard
    reload.enable(app, config.admin_key.get_secret_value() if config.admin_key else None)
    guard.log_results = False  # the middleware logs one event per request, with the result's summary merged in
    return GuardHTTP(app, api_keys=[k.get_secret_value() for k in config.api_keys], max_body_bytes=config.max_body_bytes,
                     metrics=guard.metrics, access_log=config.access_log, log_content=config.log_content)


# ---------------------------------------------------------------------- helpers


def _probe_session():
    import aiohttp

    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3))


class _CheckRequest(ChatRequest):
    response: str | None = None


class _KeepRaw:
    """Wraps the upstream for one request: sends the client's own bytes when the pipeline forwards the
    request unchanged, and keeps the exact bytes the upstream answered with."""

    def __init__(self, upstream, client_body: dict[str, Any], client_raw: bytes):
        self.upstream, self.name, self.raw = upstream, upstream.name, None
        self._client_body, self._client_raw = client_body, client_raw

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        if hasattr(self.upstream, "complete_raw"):
            data, self.raw = await self.upstream.complete_raw(body, self._client_raw if body is self._client_body else None)
            return data
        return await self.upstream.complete(body)


async def read_json(request: Request, limit: int) -> tuple[bytes, Any]:
    chunks, size = [], 0
    try:
        async for chunk in request.stream():  # chunked bodies have no Content-Length: count as we read
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"Request body exceeds {limit} bytes.", code="request_too_large")
            chunks.append(chunk)
    except ClientDisconnect:
        raise HTTPError(400, "The client disconnected before sending the whole body.") from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise HTTPError(400, "The request body is empty; expected a JSON object.")
    try:
        return raw, json.loads(raw)
    except ValueError as e:
        raise HTTPError(400, f"We could not parse the JSON body of your request: {e}.") from None


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def parse(model, body: Any):
    if not isinstance(body, dict):
        raise HTTPError(400, "The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        # pydantic names the union member it tried ('str', 'list[dict[str,any]]'); clients know fields only
        loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p))]
        param = loc[0] + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:]) if loc else None
        msg = err["msg"]
        if err["type"] == "missing":
            msg = f"Missing required parameter: '{param}'."
        elif param:
            msg = f"Invalid value for '{param}': {msg}."
        raise HTTPError(400, msg, param=param, code="missing_required_parameter" if err["type"] == "missing" else
                        "invalid_value") from None


def upstream_error(e: UpstreamError) -> Response:
    """The upstream's own status and body when it sent one; 502 / 504 otherwise."""
    if isinstance(e, UpstreamTimeout):
        return error_response(504, str(e), code="upstream_timeout")
    if e.body:
        body = e.body if isinstance(e.body, bytes) else json.dumps(e.body).encode()
        return Response(body, status_code=e.status, media_type=e.headers.get("content-type", "application/json"))
    return error_response(e.status if e.status >= 400 else 502, str(e), code="upstream_error")


def guard_headers(result: GuardResult) -> dict[str, str]:
    return {"x-guard-decision": result.decision.value, "x-guard-mode": result.mode,
            "x-guard-cache": "hit" if result.cache_hit else "miss", "x-guard-sections": ",".join(result.sections),
            "x-guard-policy-version": result.policy_version, "x-guard-latency-ms": f"{result.guard_ms:.3f}",
            "x-guard-cost-usd": "unknown" if result.judge_cost.usd is None else f"{result.judge_cost.usd:.8f}"}


def json_response(data: Any, headers: dict[str, str] | None = None, status: int = 200) -> Response:
    return Response(json.dumps(data, ensure_ascii=False), status_code=status, media_type="application/json", headers=headers)

