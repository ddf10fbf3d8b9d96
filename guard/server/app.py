"""The OpenAI-compatible guard proxy, assembled. It translates HTTP to the pipeline and back; it never decides.

    POST /v1/chat/completions   guarded chat, JSON or SSE (guard.server.chat)
    GET  /v1/models             the upstream's list (or the configured models)
    POST /v1/responses          guarded Responses API (guard.server.responses)
    POST /v1/guard/check        check only: a conversation (and a response) in, a verdict out
    GET  /healthz  /readyz  /metrics                            (guard.server.routes)

Endpoints are module-level functions that read ``request.app.state``: ``guard`` (the pipeline),
``config`` (ServeConfig), ``upstream``, ``upstream_for(request)`` (the upstream for this request:
the client's own key forwarded in drop-in use) and ``drain`` (streams to end on shutdown). Another
endpoint module mounts with one ``Route`` line in ``ROUTES``.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from guard import reload
from guard.logs import get_logger
from guard.pipeline import Guard
from guard.server import routes
from guard.server.chat import chat_completions
from guard.server.responses import responses
from guard.server.config import ServeConfig
from guard.server.http import GuardHTTP, HTTPError, error_response
from guard.upstream import LiteLLMUpstream, OpenAIUpstream

log = get_logger("guard.server")

ROUTES = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/responses", responses, methods=["POST"]),
    Route("/v1/models", routes.models, methods=["GET"]),
    Route("/v1/guard/check", routes.check, methods=["POST"]),
    Route("/healthz", routes.healthz, methods=["GET"]),
    Route("/readyz", routes.readyz, methods=["GET"]),
    Route("/metrics", routes.metrics, methods=["GET"]),
    Route(reload.RELOAD_PATH, reload.reload_endpoint, methods=["POST"]),
]


def make_upstream(config: ServeConfig):
    """A URL means an OpenAI-compatible server; anything else is a litellm model string."""
    if not config.upstream:
        return None
    key = config.upstream_api_key.get_secret_value() if config.upstream_api_key else None
    if config.upstream.startswith(("http://", "https://")):
        return OpenAIUpstream(config.upstream, api_key=key, timeout_s=config.upstream_timeout_s,
                              idle_timeout_s=config.upstream_idle_timeout_s,
                              connect_timeout_s=config.upstream_connect_timeout_s,
                              max_connections=config.upstream_max_connections,
                              pool_timeout_s=config.upstream_pool_timeout_s)
    return LiteLLMUpstream(config.upstream, api_key=key, api_base=config.upstream_api_base,
                           timeout_s=config.upstream_timeout_s)


class Drain:
    """The requests in flight, so that a shutdown that must cut them still answers: streams end with
    an error event and ``[DONE]``, other requests get a 503 (guard.server.run cuts them shortly
    before ``shutdown_grace_s`` runs out)."""

    message = "The guard is shutting down; this stream was cut. Retry the request."

    def __init__(self):
        self.streams: set[Any] = set()  # GuardedStreams being sent
        self.tasks: set[asyncio.Future] = set()  # non-streamed requests in the pipeline (answered 503 when cut)
        self.cutting = False

    def cut(self) -> int:
        self.cutting = True
        n = len(self.streams) + len(self.tasks)
        for gs in list(self.streams):
            gs.abort(self.message)
        for task in list(self.tasks):
            task.cancel()
        if n:
            log.warning("guard_requests_cut_on_shutdown", streams=len(self.streams), requests=len(self.tasks))
        return n


def upstream_chooser(upstream, config: ServeConfig):
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

    return upstream_for


def create_app(config: ServeConfig, *, guard: Guard | None = None, upstream: Any = None) -> GuardHTTP:
    guard = guard or Guard.create(config)
    upstream = upstream if upstream is not None else make_upstream(config)
    app = Starlette(routes=list(ROUTES), lifespan=lifespan, exception_handlers={
        HTTPError: on_http_error, HTTPException: on_starlette_error, Exception: on_crash})
    app.state.guard, app.state.config, app.state.upstream = guard, config, upstream
    app.state.upstream_for, app.state.drain = upstream_chooser(upstream, config), Drain()
    reload.enable(app, config.admin_key.get_secret_value() if config.admin_key else None)
    guard.log_results = False  # the middleware logs one event per request, with the result's summary merged in
    http = GuardHTTP(app, api_keys=[k.get_secret_value() for k in config.api_keys], max_body_bytes=config.max_body_bytes,
                     metrics=guard.metrics, access_log=config.access_log, log_content=config.log_content,
                     routes=tuple(r.path for r in app.routes))
    http.drain, http.shutdown_grace_s = app.state.drain, config.shutdown_grace_s
    return http


@asynccontextmanager
async def lifespan(app: Starlette):
    guard, upstream = app.state.guard, app.state.upstream
    warm = getattr(guard.judge, "warm_up", None)  # optional parts of the Judge protocol (docs/judges.md)
    if warm is not None:
        await asyncio.to_thread(warm, guard.spec)  # load the model now, not on the first request
    await routes.probe_judge(app.state)  # an unreachable, missing or too-small judge is said at start
    log.info("guard_ready", policy_version=guard.spec.version, judge=guard.judge.name,
             upstream=getattr(upstream, "name", None), mode=app.state.config.mode)
    yield
    if hasattr(upstream, "close"):
        await upstream.close()


async def on_http_error(request: Request, exc: HTTPError) -> Response:
    return error_response(exc.status, exc.message, exc.param, exc.code)


async def on_starlette_error(request: Request, exc: HTTPException) -> Response:
    message = {404: f"Unknown route {request.method} {request.url.path}.",
               405: f"Method {request.method} is not allowed on {request.url.path}."}.get(exc.status_code, str(exc.detail))
    return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))


async def on_crash(request: Request, exc: Exception) -> Response:
    log.error("guard_internal_error", error=type(exc).__name__, path=request.url.path, exc_info=exc)
    return error_response(500, "The guard failed on this request; it has been logged.")
