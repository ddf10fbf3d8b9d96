"""``@guarded``: put the guard around your own model call, keeping its types.

    @guarded()
    def ask(messages, **kw) -> ChatCompletion:
        return client.chat.completions.create(model="gpt-4o-mini", messages=messages, **kw)

The input is checked before the call (a refusal means the call never happens), the output after.
What comes back has the type the function returns:

- an openai ``ChatCompletion`` (any pydantic model with ``model_validate``) stays one; an allowed
  answer is the function's own object, a replaced one is rebuilt in that type, with
  ``finish_reason: "content_filter"`` for a refusal and the guard's details in ``reply.guard``
  (a dict: decision, stage, sections, rationale, policy_version, degraded);
- a chat.completion dict stays a dict (``reply["guard"]`` on a replacement); text stays text;
- a stream (an openai ``Stream`` / ``AsyncStream``, or any iterator of chunks) comes back as a
  guarded stream of the same chunk type, under guard.streaming's hold-back contract: no text is
  released before a check has allowed it.

A refusal raises GuardRefused carrying the GuardResult (from a stream: when the refusal is
reached; the text released before it had been allowed). With ``on_refuse="return"`` the refusal
comes back in the function's type instead.

When the input is refused the function never ran, so its type is not known. It is taken from,
in order: ``returns=`` ("text", "dict", "stream", or a model class such as ChatCompletion), the
function's return annotation, the type it returned last time; else text. Whether a call streams
is decided before it runs, the same way, or by a ``stream=True`` keyword argument.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

from guard.errors import GuardRefused
from guard.pipeline import Guard
from guard.settings import GuardSettings
from guard.streaming import GuardedStream
from guard.types import ChatRequest, Decision, GuardResult

Kind = Any  # "text" | "dict" | "stream" | a model class


def guarded(guard: Guard | None = None, *, on_refuse: Literal["raise", "return"] = "raise", returns: Kind = None,
            stream_first_window_chars: int = 40, stream_window_chars: int = 160, **settings: Any) -> Callable:
    """Wrap ``fn(messages, ...)`` (``messages`` first or by keyword); a sync function stays sync, an
    async one async. Without a ``guard``, one is created from ``GuardSettings(**settings)``."""
    g = guard if guard is not None else Guard.create(GuardSettings(**settings))
    windows = {"first_window_chars": stream_first_window_chars, "window_chars": stream_window_chars}
    hinted = _kind_of(returns)
    if returns is not None and hinted is None:
        raise ValueError(f"returns= must be 'text', 'dict', 'stream' or a model class, not {returns!r}")

    def decorate(fn: Callable) -> Callable:
        call = _GuardedCall(g, fn, hinted if returns is not None else _annotated_kind(fn), on_refuse, windows)
        if _is_async(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args, **kwargs):
                out = await call.run(args, kwargs)
                return AsyncGuardedChunks(*out, raise_refusal=call.raises) if isinstance(out, tuple) else out
            wrapper = async_wrapper
        else:
            @functools.wraps(fn)
            def sync_wrapper(*args, **kwargs):
                return call.run_sync(args, kwargs)
            wrapper = sync_wrapper
        wrapper.guard = g  # type: ignore[attr-defined]
        return wrapper

    return decorate


class _GuardedCall:
    """One decorated function: runs each call through the pipeline and answers in the function's type."""

    def __init__(self, g: Guard, fn: Callable, declared: Kind, on_refuse: str, windows: dict[str, int]):
        self.g, self.fn, self.declared, self.windows = g, fn, declared, windows
        self.raises = on_refuse == "raise"
        self.seen: Kind = None  # the kind fn returned last time

    def kind_for(self, kwargs: dict[str, Any]) -> Kind:
        if self.declared is not None:
            return self.declared
        if kwargs.get("stream") is True:
            return "stream"
        return self.seen or "text"

    async def run(self, args: tuple, kwargs: dict[str, Any]) -> Any:
        """The answer; for a stream, the started GuardedStream and its upstream (wrapped by the caller)."""
        upstream = FunctionUpstream(self.fn, args, kwargs)
        if upstream.messages is None:
            raise TypeError(f"{upstream.name} must take the messages as its first argument or as messages=")
        req = ChatRequest.model_validate({"messages": upstream.messages, "model": kwargs.get("model")})
        if self.kind_for(kwargs) == "stream":
            gs = GuardedStream(self.g, req, upstream, **self.windows)
            await gs.start()
            if not upstream.called and gs.input_verdict is not None and self._raise_on(gs.input_verdict.decision):
                async for _ in gs:  # completes the record (and its log event)
                    pass
                raise GuardRefused(gs.result)
            return gs, upstream
        result = await self.g.complete(req, upstream=upstream)
        if upstream.called:
            self.seen = upstream.kind
        if result.enforced and self._raise_on(result.decision):
            raise GuardRefused(result)
        return self.deliver(result, upstream, self.kind_for(kwargs))

    def _raise_on(self, decision: Decision) -> bool:
        return self.raises and decision is Decision.refuse and self.g.settings.mode == "enforce"

    @staticmethod
    def deliver(result: GuardResult, upstream: FunctionUpstream, kind: Kind) -> Any:
        if upstream.called and not result.enforced:
            return upstream.returned  # allowed: the function's own object
        kind = upstream.kind if upstream.called else kind
        if kind == "text":
            return result.text
        if kind == "dict":
            return result.response
        return kind.model_validate(result.response)

    def run_sync(self, args: tuple, kwargs: dict[str, Any]) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("a sync @guarded function was called inside a running event loop; define it with async def")
        loop = asyncio.new_event_loop()
        try:
            out = loop.run_until_complete(self.run(args, kwargs))
        except BaseException:
            loop.close()
            raise
        if isinstance(out, tuple):  # the loop lives on with the stream, which closes it
            return GuardedChunks(loop, *out, raise_refusal=self.raises)
        loop.close()
        return out


# ---------------------------------------------------------------------- what the function returns


_STREAMS = frozenset({"Stream", "AsyncStream", "Iterator", "AsyncIterator", "Iterable", "AsyncIterable", "Generator",
                      "AsyncGenerator"})


def _kind_of(value: Any) -> Kind:
    """``returns=`` or an annotation, as a kind; None when it says nothing usable."""
    if isinstance(value, str):
        return value if value in ("text", "dict", "stream") else None
    if value is str:
        return "text"
    origin = typing.get_origin(value) or value
    if origin is dict:
        return "dict"
    if isinstance(origin, type):
        if origin.__name__ in _STREAMS:
            return "stream"
        if hasattr(origin, "model_validate"):
            return origin
    return None


def _annotated_kind(fn: Callable) -> Kind:
    try:
        hint = typing.get_type_hints(fn).get("return")
    except Exception:  # noqa: BLE001 - an annotation we cannot resolve says nothing
        return None
    return _kind_of(hint) if hint is not None else None


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _is_stream(out: Any) -> bool:
    return not isinstance(out, (str, bytes, dict)) and (hasattr(out, "__aiter__") or hasattr(out, "__next__"))


def as_completion(out: Any, model: str | None = None) -> dict[str, Any]:
    """Accept text, a chat.completion dict, or an object with ``model_dump()`` (openai/litellm)."""
    if isinstance(out, str):
        from guard.enforce import completion

        return completion(out, model, "fn", "stop")
    if hasattr(out, "model_dump"):
        out = out.model_dump()
    if isinstance(out, dict) and "choices" in out:
        return out
    raise TypeError(f"a guarded function must return text, an OpenAI-style chat completion or a stream of chunks, "
                    f"got {type(out).__name__}")


class _Chunk(dict):
    """A chunk as a dict for the guard, remembering the object the function's stream yielded."""

    __slots__ = ("original",)


class FunctionUpstream:
    """The user's own model call as an upstream: sync or async; text, a completion, or a stream.
    It calls the function with the caller's own arguments (only the messages change, when the
    pipeline re-asks with guidance), and keeps what it returned. Without arguments it is called
    as ``fn(messages)`` with the messages of each request."""

    def __init__(self, fn: Callable[..., Any], args: tuple = (), kwargs: dict[str, Any] | None = None):
        self.fn, self.args, self.kwargs = fn, tuple(args), dict(kwargs or {})
        self.name = f"function:{getattr(fn, '__qualname__', repr(fn))}"
        self.messages = self.kwargs["messages"] if "messages" in self.kwargs else (self.args[0] if self.args else None)
        self._sent = None if self.messages is None else \
            ChatRequest.model_validate({"messages": self.messages}).upstream_body()["messages"]
        self.called = False
        self.returned: Any = None
        self.completion: dict[str, Any] | None = None
        self.kind: Kind = "text"

    async def _call(self, body: dict[str, Any]) -> Any:
        messages = self.messages if self._sent is not None and body.get("messages") == self._sent else body["messages"]
        args, kwargs = self.args, dict(self.kwargs)
        if "messages" in kwargs:
            kwargs["messages"] = messages
        else:
            args = (messages, *args[1:])
        if _is_async(self.fn):
            out = await self.fn(*args, **kwargs)
        else:
            out = await asyncio.to_thread(self.fn, *args, **kwargs)
        self.called, self.returned = True, out
        return out

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        out = await self._call(body)
        if _is_stream(out):
            raise TypeError(f"{self.name} returned a stream: declare it with returns='stream', annotate it, "
                            "or pass stream=True")
        self.kind = "text" if isinstance(out, str) else "dict" if isinstance(out, dict) else type(out)
        self.completion = as_completion(out, body.get("model"))
        return self.completion

    async def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        out = await self._call(body)
        if not _is_stream(out):
            raise TypeError(f"{self.name} was expected to stream but returned {type(out).__name__}")
        self.kind = "stream"
        async for c in IteratorUpstream(out, self.name).stream(body):
            yield c


class IteratorUpstream:
    """A stream someone else opened (a function's openai Stream, LiteLLM's response iterator), as
    the upstream of a GuardedStream: chunks become dicts for the guard, each remembering its
    original object (``chunk.original``) so that what is released is the object itself."""

    def __init__(self, chunks: Any, name: str = "iterator"):
        self.chunks, self.name = chunks, name

    async def stream(self, body: dict[str, Any] | None = None) -> AsyncIterator[dict[str, Any]]:
        out = self.chunks
        try:
            if hasattr(out, "__aiter__"):
                async for c in out:
                    yield _wrap(c)
            else:
                end = object()
                while (c := await asyncio.to_thread(next, out, end)) is not end:
                    yield _wrap(c)
        finally:
            close = getattr(out, "aclose", None) or getattr(out, "close", None)  # stop the model when the guard stops
            if close is not None:
                res = close()
                if inspect.isawaitable(res):
                    await res


def _wrap(c: Any) -> _Chunk:
    d = _Chunk(c if isinstance(c, dict) else c.model_dump(exclude_none=True))
    d.original = c
    return d


# ---------------------------------------------------------------------- the guarded stream handed back


class _Chunks:
    """What a streaming guarded function returns: its chunks, each released only after a check
    allowed the text up to it; the guard's own chunks (a refusal) in the same chunk type.
    ``result`` is the GuardResult once the stream has ended."""

    def __init__(self, gs: GuardedStream, upstream: FunctionUpstream, *, raise_refusal: bool):
        self._gs, self._up, self._raise = gs, upstream, raise_refusal
        self._it = gs.__aiter__()
        self._ready: list[Any] = []
        self._type: type | None = None

    @property
    def result(self) -> GuardResult | None:
        return self._gs.result

    def _take(self, batch: list[dict[str, Any]]) -> None:
        for c in batch:
            original = getattr(c, "original", None)
            if original is not None:
                self._type = type(original)
                self._ready.append(original)
            elif "guard" in c and self._raise and c["guard"]["decision"] == Decision.refuse.value \
                    and self._gs.guard.settings.mode == "enforce":
                raise GuardRefused(self._gs.result)
            else:
                self._ready.append(self._shape(c))

    def _shape(self, c: dict[str, Any]) -> Any:
        chunk_type = self._type or _openai_chunk_type()
        return chunk_type.model_validate(c) if chunk_type is not None and chunk_type is not dict else dict(c)


def _openai_chunk_type() -> type | None:
    try:
        from openai.types.chat import ChatCompletionChunk
    except ImportError:
        return None
    return ChatCompletionChunk


class AsyncGuardedChunks(_Chunks):
    def __aiter__(self):
        return self

    async def __anext__(self) -> Any:
        while not self._ready:
            self._take(await self._it.__anext__())
        return self._ready.pop(0)

    async def aclose(self) -> None:
        await self._it.aclose()

    close = aclose


class GuardedChunks(_Chunks):
    """The sync form: it drives its own event loop, one step per chunk (no thread of its own)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, gs: GuardedStream, upstream: FunctionUpstream, **kw: Any):
        super().__init__(gs, upstream, **kw)
        self._loop = loop

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            while not self._ready:
                if self._loop.is_closed():
                    raise StopIteration
                self._take(self._loop.run_until_complete(self._it.__anext__()))
        except StopAsyncIteration:
            self.close()
            raise StopIteration from None
        except GuardRefused:
            self.close()
            raise
        return self._ready.pop(0)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._it.aclose())
            self._loop.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - best effort at garbage collection
            pass
