"""Live policy reload (``guard serve``: SIGHUP, or ``POST /v1/guard/reload`` with the admin key).

The policies are read again from the paths the guard was started with and validated whole; a
broken file is rejected with its ``file:line: reason`` errors and the running version keeps
serving. A good spec becomes a new ``Guard`` that shares everything else with the old one (judge,
upstream, verdict cache, metrics) and replaces it in one assignment. Requests hold the ``Guard``
they started with, so a request in flight finishes on its version, and every request that starts
after the switch (its verdicts, its headers, the ``policy`` label of the metrics) sees the new one.
Cache keys carry the policy version, so no verdict of the old spec is served for the new one.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from dataclasses import dataclass, field
from typing import Any

from guard.errors import PolicyError, PolicyErrors
from guard.logs import get_logger
from guard.pipeline import Guard
from guard.policy import load_spec

log = get_logger("guard.reload")

RELOAD_PATH = "/v1/guard/reload"


@dataclass(frozen=True)
class ReloadOutcome:
    status: str  # "reloaded" | "unchanged" | "rejected"
    version: str  # the version serving after this call
    previous: str
    errors: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "policy_version": self.version, "previous_version": self.previous}
        if self.errors:
            out["errors"] = self.errors
        return out


def reloaded(guard: Guard) -> Guard:
    """A guard on the policies as they are on disk now, sharing every other part with ``guard``.
    Raises PolicyErrors (every problem, with file:line) and leaves ``guard`` untouched."""
    spec = load_spec(guard.settings.policies or None)
    new = copy.copy(guard)  # the same judge, upstream, cache, metrics and flags
    new.spec = spec
    new.retriever = Guard(spec, guard.judge, settings=guard.settings, cache=guard.cache,  # built as the constructor builds it
                          metrics=guard.metrics).retriever
    judge = guard.judge
    warm = getattr(judge, "warm_up", None)
    if warm is not None:
        warm(spec)  # the judge's per-spec index now, not on the first request after the switch
    return new


class Reloader:
    """Swaps ``holder.guard`` (the server's ``app.state``) for a reloaded guard; one reload at a time."""

    def __init__(self, holder: Any):
        self.holder = holder
        self._lock = threading.Lock()

    def reload(self) -> ReloadOutcome:
        """Blocking (it parses and indexes the spec): call it from a thread, not the event loop."""
        with self._lock:
            old: Guard = self.holder.guard
            metrics = old.metrics
            try:
                new = reloaded(old)
            except PolicyError as e:
                errors = [str(x) for x in (e.errors if isinstance(e, PolicyErrors) else [e])]
                metrics.child(metrics.policy_reloads, "rejected").inc()
                log.warning("guard_policy_reload_rejected", serving=old.spec.version, errors=errors)
                return ReloadOutcome("rejected", old.spec.version, old.spec.version, errors)
            if new.spec.version == old.spec.version:
                metrics.child(metrics.policy_reloads, "unchanged").inc()
                log.info("guard_policy_reload_unchanged", policy_version=old.spec.version)
                return ReloadOutcome("unchanged", old.spec.version, old.spec.version)
            self.holder.guard = new  # the switch: one assignment
            metrics.child(metrics.policy_reloads, "reloaded").inc()
            log.info("guard_policy_reloaded", policy_version=new.spec.version, previous=old.spec.version,
                     sections=len(new.spec.sections))
            return ReloadOutcome("reloaded", new.spec.version, old.spec.version)

    async def reload_async(self) -> ReloadOutcome:
        return await asyncio.to_thread(self.reload)

    def on_signal(self, *_: Any) -> None:
        """A SIGHUP handler: reload in a thread, so the signal never blocks the event loop."""
        threading.Thread(target=self.reload, name="guard-reload", daemon=True).start()


async def reload_endpoint(request):
    """``POST /v1/guard/reload``: only with ``Authorization: Bearer <admin_key>``; 200 reloaded or
    unchanged, 422 with the errors when the new policies are rejected (the old version still serves)."""
    import hmac

    from starlette.responses import JSONResponse

    from guard.server.http import HTTPError

    state = request.app.state
    key = getattr(state, "admin_key", None)
    if not key:
        raise HTTPError(403, "Reloading over HTTP is off: start the guard with an admin key (GUARD_ADMIN_KEY), "
                             "or send it SIGHUP.", code="reload_disabled")
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not hmac.compare_digest(token.encode(), key.encode()):
        raise HTTPError(401, "Missing or invalid admin key for reloading (Authorization: Bearer ...).",
                        code="invalid_api_key")
    outcome = await state.reloader.reload_async()
    body = outcome.json()
    if outcome.status == "rejected":
        body["error"] = {"message": f"The new policies were rejected; version {outcome.version} keeps serving.",
                         "type": "invalid_request_error", "param": None, "code": "policy_invalid"}
        return JSONResponse(body, status_code=422)
    return JSONResponse(body)


def enable(app, admin_key: str | None) -> Reloader:
    """Wire reloading into a Starlette app whose ``state.guard`` is the serving guard."""
    app.state.admin_key = admin_key
    app.state.reloader = reloader = Reloader(app.state)
    return reloader
