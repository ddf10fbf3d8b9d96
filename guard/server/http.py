"""HTTP plumbing for ``guard serve``: OpenAI-style error bodies, and one pure-ASGI middleware that
gives every response an ``x-request-id``, checks client bearer keys, counts and logs requests.
(Pure ASGI rather than BaseHTTPMiddleware: it adds microseconds, not a task per request.)"""

from __future__ import annotations

import hmac
import json
import re
import time
import secrets
from typing import Any

from guard.logs import get_logger
from starlette.responses import Response

from guard.metrics import GuardMetrics

access = get_logger("guard.access")

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                405: "invalid_request_error", 413: "invalid_request_error", 502: "upstream_error",
                503: "service_unavailable", 504: "timeout"}
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_OWN_AUTH = "/v1/guard/reload"  # checks the admin key itself (guard.reload)


class HTTPError(Exception):
    """Raised by handlers for a client-visible error; rendered as an OpenAI error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error" if status >= 500 else
                                                                       "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(error_body(status, message, param, code)), status_code=status,
                    media_type="application/json", headers=headers)


class GuardHTTP:
    """Request id, client authentication on /v1/*, body-size limit by Content-Length, metrics, access log."""

    def __init__(self, app, *, api_keys: list[str], max_body_bytes: int, metrics: GuardMetrics, access_log: bool,
                 log_content: bool = False, routes: tuple[str, ...] = ()):
        self.app, self.keys, self.max_body = app, [k.encode() for k in api_keys], max_body_bytes
        self.routes = frozenset(routes)  # metric labels: known paths, everything else is "other" (bounded)
        self.metrics, self.access_log, self.log_content = metrics, access_log, log_content

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0 = time.perf_counter()
        headers = dict(scope["headers"])
        rid = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = rid if _SAFE_ID.match(rid) else secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = rid
        rid_header = (b"x-request-id", rid.encode())
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), rid_header]
            await send(message)

        path = scope["path"]
        try:
            denied = self._deny(path, headers)
            if denied is not None:
                await denied(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            route = path if path in self.routes else "other"
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"  # bounded label values
            ms = (time.perf_counter() - t0) * 1000
            m = self.metrics
            m.child(m.requests, route, method, str(status)).inc()
            m.child(m.request_latency, route).observe(ms)
            result = scope["state"].get("guard_result")
            if result is not None:  # one event per request: the guard's summary with the HTTP facts
                event = result.summary()
                if self.log_content:
                    event["text"] = result.text
                access.info("guard_request_done", **event, method=method, path=route, status=status,
                            ms=round(ms, 3), client=(scope.get("client") or ("?",))[0])
            elif self.access_log:
                access.info("http_request", method=method, path=route, status=status,
                            ms=round(ms, 3), request_id=rid, client=(scope.get("client") or ("?",))[0])

    def _deny(self, path: str, headers: dict[bytes, bytes]) -> Response | None:
        if self.keys and path.startswith("/v1/") and path != _OWN_AUTH:
            auth = headers.get(b"authorization", b"")
            token = auth[7:].strip() if auth[:7].lower() == b"bearer " else b""
            if not any(hmac.compare_digest(token, k) for k in self.keys):
                return error_response(401, "Missing or invalid API key for this guard (Authorization: Bearer ...).",
                                      code="invalid_api_key")
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return error_response(413, f"Request body is {int(length)} bytes; this guard accepts at most "
                                       f"{self.max_body} bytes.", code="request_too_large")
        return None
