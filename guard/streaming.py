"""Guarding a streamed answer (DESIGN §5).

The bound we keep: **no character reaches the client before an output check has allowed the
whole draft up to and including it.** Text is held back in windows: once ``first_window_chars``
of unchecked text have arrived, a check runs over the draft so far; the windows then double up
to ``window_chars``. Checks run while the upstream keeps generating, so a check costs the client
only when it is slower than the next window. When a check does not allow, the held-back text is
dropped, the upstream call is cancelled, and the stream ends with the refusal (or the safe
completion) as a last content chunk with ``finish_reason: "content_filter"``, then ``[DONE]``.

The cost, stated: the first text reaches the client after ``first_window_chars`` characters have
been generated plus one check (and after the input check, before the upstream is called at all).

``GuardedStream`` yields lists of OpenAI ``chat.completion.chunk`` dicts: the chunks released
together (after one check), so that a server writes them in one go; it only serialises them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from guard import enforce
from guard.types import ChatRequest, Decision, GuardResult, StageTiming, Verdict, decisive

if TYPE_CHECKING:
    from guard.pipeline import Guard


class StreamingUpstream(Protocol):
    name: str

    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield the upstream's chunks as dicts; raise UpstreamError before the first one on failure."""
        ...


def chunk_text(chunk: dict[str, Any]) -> str:
    """The judged text a chunk adds: content deltas and tool-call argument deltas."""
    parts = []
    for choice in chunk.get("choices") or []:
        delta = (choice.get("delta") if isinstance(choice, dict) else None) or {}
        if isinstance(delta.get("content"), str):
            parts.append(delta["content"])
        for call in delta.get("tool_calls") or []:
            fn = (call.get("function") if isinstance(call, dict) else None) or {}
            if not isinstance(fn, dict):
                parts.append(str(fn))
                continue
            if fn.get("name"):
                parts.append(f"[tool call {fn['name']}] ")
            if isinstance(fn.get("arguments"), str):
                parts.append(fn["arguments"])
    return "".join(parts)


class GuardedStream:
    """One guarded streaming request. ``await start()`` runs the input stage and opens the upstream
    stream (so that upstream errors surface before any byte is sent); then iterate for chunks.
    ``result`` holds the GuardResult once the stream has ended."""

    def __init__(self, guard: Guard, request: ChatRequest, upstream: StreamingUpstream, *,
                 first_window_chars: int = 40, window_chars: int = 160, request_id: str | None = None):
        self.guard, self.req, self.upstream = guard, request, upstream
        self.first_window, self.max_window = max(1, first_window_chars), max(1, window_chars, first_window_chars)
        self.rid = request_id or secrets.token_hex(8)
        self.t0 = guard.clock()
        self.input_verdict: Verdict | None = None
        self.verdicts: list[Verdict] = []
        self.timings: list[StageTiming] = []
        self.result: GuardResult | None = None
        self.checks = 0
        self._refusal: Verdict | None = None  # set when the input stage refuses
        self._source: AsyncIterator[dict[str, Any]] | None = None
        self._first: dict[str, Any] | None = None
        self._upstream_usage: dict[str, Any] | None = None
        self._model: str | None = request.model
        self._id: str | None = None  # the upstream's completion id, reused for the guard's own chunks
        self._t_up = 0.0

    @property
    def shadow(self) -> bool:
        return self.guard.settings.mode == "shadow"

    async def start(self) -> None:
        s = self.guard.settings
        if "input" in s.stages:
            v = await self.guard.check_stage("input", self.req.messages)
            self.input_verdict = v
            self.verdicts.append(v)
            self.timings.append(StageTiming(stage="input", ms=v.latency_ms))
            if v.decision is not Decision.allow and not self.shadow:
                self._refusal = v
                self.guard.metrics.upstream_skipped.inc()
                return
        body = self.req.upstream_body()
        body["stream"] = True
        self._t_up = self.guard.clock()
        self._source = self.upstream.stream(body).__aiter__()
        try:
            self._first = await self._source.__anext__()  # surfaces a refused connection or an HTTP error now
        except StopAsyncIteration:
            self._first = None

    def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]:
        if self._refusal is not None:
            return self._refused_input()
        return self._guarded()

    # ------------------------------------------------------------------ input refused: a short stream

    async def _refused_input(self) -> AsyncIterator[list[dict[str, Any]]]:
        v = self._refusal
        text = enforce.replacement_text(self.guard.spec, v)
        finish = "content_filter" if v.decision is Decision.refuse else "stop"
        self._finish(text, upstream_called=False, note="upstream not called: the input stage decided")
        yield [self._chunk({"role": "assistant", "content": ""}), self._chunk({"content": text}),
               self._chunk({}, finish, guard=self.guard.guard_info(v))]

    # ------------------------------------------------------------------ the hold-back loop

    async def _guarded(self) -> AsyncIterator[list[dict[str, Any]]]:
        check_output = "output" in self.guard.settings.stages
        hold = check_output and not self.shadow
        queue: asyncio.Queue = asyncio.Queue()
        reader = asyncio.ensure_future(self._read(queue))
        pending: deque[tuple[dict[str, Any], int]] = deque()  # chunks not yet released, with the draft length at each
        draft: list[str] = []
        draft_len = 0
        released_upto = 0  # draft length the client has received
        covered = 0  # draft length the running check covers
        window = self.first_window
        check: asyncio.Task | None = None
        upstream_done = False
        verdict: Verdict | None = None
        getter: asyncio.Future | None = None
        try:
            while True:
                if check is not None and check.done():
                    verdict, check = check.result(), None
                    if verdict.decision is not Decision.allow:
                        reader.cancel()
                        yield self._refused_output(verdict)
                        return
                    released_upto = covered
                # launch a check when a window of unchecked text has built up, or at the end
                if hold and check is None and draft_len > released_upto and (
                        draft_len - released_upto >= window or upstream_done):
                    covered = draft_len
                    check = asyncio.ensure_future(self._check("".join(draft)))
                    window = min(window * 2, self.max_window)
                # release what a check has covered (chunks without new text go out when nothing is held)
                batch = []
                while pending and (not hold or pending[0][1] <= released_upto):
                    batch.append(pending.popleft()[0])
                if batch:
                    yield batch
                if upstream_done and check is None:  # nothing can be pending here: it was checked or released
                    break
                if check is None:  # nothing else to wait for: the common case, without a task per chunk
                    item = await (getter if getter is not None else queue.get())
                    getter = None
                else:  # the next chunk or the running check, whichever comes first
                    if getter is None and not upstream_done:
                        getter = asyncio.ensure_future(queue.get())
                    waiting = {f for f in (getter, check) if f is not None}
                    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                    if getter is None or getter not in done:
                        continue
                    item, getter = getter.result(), None
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    upstream_done = True
                    continue
                text = chunk_text(item)
                if text:
                    draft.append(text)
                    draft_len += len(text)
                pending.append((item, draft_len))
            # the whole draft was released; shadow mode and unchecked streams judge it once, for the record
            if check_output and (not hold or verdict is None) and draft_len:
                verdict = await self._check("".join(draft))
            self._finish("".join(draft), upstream_called=True)
        finally:
            if getter is not None:
                getter.cancel()
            if not reader.done():
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
            if check is not None and not check.done():
                check.cancel()

    async def _read(self, queue: asyncio.Queue) -> None:
        """Pump the upstream into the queue: chunks, then None; an exception object on failure."""
        try:
            if self._first is not None:
                await queue.put(self._note(self._first))
            async for c in self._source:
                await queue.put(self._note(c))
            await queue.put(None)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await self._source.aclose()  # closes the upstream connection: the model stops generating
            raise
        except Exception as e:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put(e)
        finally:
            self.timings.append(StageTiming(stage="upstream", ms=(self.guard.clock() - self._t_up) * 1000))

    def _note(self, c: dict[str, Any]) -> dict[str, Any]:
        if c.get("usage"):
            self._upstream_usage = c["usage"]
        self._model = c.get("model") or self._model
        self._id = c.get("id") or self._id
        return c

    async def _check(self, draft: str) -> Verdict:
        self.checks += 1
        v = await self.guard.check_stage("output", self.req.messages, draft)
        self.verdicts.append(v)
        self.timings.append(StageTiming(stage="output", ms=v.latency_ms))
        return v

    def _refused_output(self, v: Verdict) -> list[dict[str, Any]]:
        text = enforce.replacement_text(self.guard.spec, v)
        self._finish(text, upstream_called=True)
        return [self._chunk({"content": ("\n\n" if self.checks > 1 else "") + text}),
                self._chunk({}, "content_filter", guard=self.guard.guard_info(v))]

    # ------------------------------------------------------------------ shapes and the record

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, guard: dict | None = None) -> dict[str, Any]:
        c: dict[str, Any] = {"id": self._id or f"chatcmpl-guard-{self.rid}",
                             "object": "chat.completion.chunk", "created": int(time.time()),
                             "model": self._model or "guard",
                             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if guard is not None:
            c["guard"] = guard
        return c

    def _finish(self, text: str, *, upstream_called: bool, note: str | None = None) -> None:
        response = {"choices": [{"message": {"role": "assistant", "content": text}}]}
        if self._upstream_usage:
            response["usage"] = self._upstream_usage
        self.result = self.guard.record(
            self.rid, self.t0, self.verdicts, decisive(self.verdicts), response=None, text=text,
            upstream_called=upstream_called, upstream_response=response if upstream_called else None,
            timings=self.timings, model=self._model, note=note)
