"""``@guarded``: put the guard around your own model call.

    @guarded()
    def ask(messages): return client.chat.completions.create(model=..., messages=messages)

The input is checked before the call (a refusal means the call never happens), the output
after. A refusal raises GuardRefused carrying the GuardResult; with ``on_refuse="return"`` the
refusal comes back in the shape the function returns (text, or a chat.completion dict).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Literal

from guard.errors import GuardRefused
from guard.pipeline import Guard
from guard.settings import GuardSettings
from guard.types import Decision, GuardResult
from guard.upstream import FunctionUpstream, _is_async


def guarded(guard: Guard | None = None, *, on_refuse: Literal["raise", "return"] = "raise",
            **settings: Any) -> Callable:
    """Wrap ``fn(messages, **kwargs)``; a sync function stays sync, an async one stays async.
    Without a ``guard``, one is created from ``GuardSettings(**settings)`` (offline by default)."""
    g = guard if guard is not None else Guard.create(GuardSettings(**settings))

    def decorate(fn: Callable) -> Callable:
        async def run(messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> Any:
            upstream = FunctionUpstream(fn, kwargs)
            result = await g.complete({"messages": messages, "model": kwargs.get("model")}, upstream=upstream)
            # when the input stage refused, fn never ran: answer with text
            return deliver(result, upstream.returned_text if upstream.called else True)

        def deliver(result: GuardResult, as_text: bool) -> Any:
            if result.enforced and result.decision is Decision.refuse and on_refuse == "raise":
                raise GuardRefused(result)
            return result.text if as_text else result.response

        if _is_async(fn):
            @functools.wraps(fn)
            async def async_wrapper(messages, **kwargs):
                return await run(messages, kwargs)
            async_wrapper.guard = g  # type: ignore[attr-defined]
            return async_wrapper

        @functools.wraps(fn)
        def sync_wrapper(messages, **kwargs):
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(run(messages, kwargs))
            raise RuntimeError("a sync @guarded function was called inside a running event loop; define it with async def")
        sync_wrapper.guard = g  # type: ignore[attr-defined]
        return sync_wrapper

    return decorate
