"""Guarding a streamed answer (docs/security.md, "The streaming bound").

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
from guard.errors import UpstreamError
from guard.fields import chunk_texts, outgoing
from guard.types import ChatRequest, Decision, GuardResult, StageTiming, Verdict, decisive

if TYPE_CHECKING:
    from guard.pipeline import Guard


class StreamingUpstream(Protocol):
    name: str

    def stream(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Yield the upstream's chunks as dicts; raise UpstreamError before the first one on failure."""
        ...


def chunk_text(chunk: dict[str, Any]) -> str:
    """The judged text a chunk adds, all choices together (guard.fields.chunk_texts, by choice)."""
    return "".join(chunk_texts(chunk).values())


class GuardedStream:
    """One guarded streaming request, through the pipeline's own stages (``Guard.input_stage``,
    ``decide_at_input``, ``check_output``, ``replacement``, ``record``). ``await start()`` runs the
    input stage and opens the upstream stream (so that upstream errors surface before any byte is
    sent); then iterate for chunks. ``result`` holds the GuardResult once the stream has ended."""

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
        self._decided: GuardResult | None = None  # set when the input stage decided (refusal or safe completion)
        self._source: AsyncIterator[dict[str, Any]] | None = None
        self._first: dict[str, Any] | None = None
        self._queue: asyncio.Queue = asyncio.Queue()
        self._upstream_usage: dict[str, Any] | None = None
        self._model: str | None = request.model
        self._id: str | None = None  # the upstream's completion id, reused for the guard's own chunks
        self._t_up = 0.0

    @property
    def shadow(self) -> bool:
        return self.guard.shadow

    async def start(self) -> None:
        g = self.guard
        opening = asyncio.ensure_future(self._open()) if g.settings.parallel_upstream else None
        try:
            self.input_verdict = await g.input_stage(self.req, self.verdicts, self.timings)
        except BaseException:
            await self._drop(opening)
            raise
        if g.decided_at_input(self.input_verdict):
            await self._drop(opening)
            self._decided = self.result = await g.decide_at_input(self.rid, self.t0, self.req, self.upstream,
                                                                  self.verdicts, self.timings)
            return
        await (opening if opening is not None else self._open())

    async def _open(self) -> None:
        body = self.req.upstream_body()
        body["stream"] = True
        self._t_up = self.guard.clock()
        self._source = self.upstream.stream(body).__aiter__()
        try:
            self._first = await self._source.__anext__()  # surfaces a refused connection or an HTTP error now
        except StopAsyncIteration:
            self._first = None

    async def _drop(self, opening: asyncio.Future | None) -> None:
        """The upstream stream opened in parallel with the input stage is not wanted: close it."""
        if opening is None:
            return
        opening.cancel()
        with contextlib.suppress(BaseException):
            await opening
        if self._source is not None:
            with contextlib.suppress(BaseException):
                await self._source.aclose()

    def abort(self, message: str) -> None:
        """End the stream now (server shutdown): the held-back text is dropped, the upstream closed,
        and the consumer gets an UpstreamError, rendered as an error event and ``[DONE]``."""
        self._queue.put_nowait(UpstreamError(message, status=503))

    def __aiter__(self) -> AsyncIterator[list[dict[str, Any]]]:
        if self._decided is not None:
            return self._decided_at_input()
        return self._guarded()

    # ------------------------------------------------------------------ decided at input: a short stream

    async def _decided_at_input(self) -> AsyncIterator[list[dict[str, Any]]]:
        r = self._decided
        choice = (r.response or {}).get("choices", [{}])[0]
        yield [self._chunk({"role": "assistant", "content": ""}), self._chunk({"content": r.text or ""}),
               self._chunk({}, choice.get("finish_reason") or "stop", guard=(r.response or {}).get("guard"))]

    # ------------------------------------------------------------------ the hold-back loop

    async def _guarded(self) -> AsyncIterator[list[dict[str, Any]]]:
        check_output = "output" in self.guard.settings.stages
        hold = check_output and not self.shadow
        reader = asyncio.ensure_future(self._read(self._queue))
        held = _Held()
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
                    held.released_upto = held.covered
                # launch a check when a window of unchecked text has built up, or at the end
                if hold and check is None and held.unchecked and (held.unchecked >= window or upstream_done):
                    held.covered = held.length
                    check = asyncio.ensure_future(self._check(held.drafts()))
                    window = min(window * 2, self.max_window)
                if batch := held.release(hold):
                    yield batch
                if upstream_done and check is None:  # nothing can be pending here: it was checked or released
                    break
                if check is None:  # nothing else to wait for: the common case, without a task per chunk
                    item = await (getter if getter is not None else self._queue.get())
                    getter = None
                else:  # the next chunk or the running check, whichever comes first
                    if getter is None and not upstream_done:
                        getter = asyncio.ensure_future(self._queue.get())
                    done, _ = await asyncio.wait({f for f in (getter, check) if f is not None},
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if getter is None or getter not in done:
                        continue
                    item, getter = getter.result(), None
                if isinstance(item, BaseException):
                    raise item
                if item is None:
                    upstream_done = True
                    continue
                held.add(item, chunk_texts(item, self.guard.settings.unknown_fields), self._outgoing(item))
            # the whole draft was released; shadow mode and unchecked streams judge it once, for the record
            if check_output and (not hold or verdict is None) and held.length:
                await self._check(held.drafts())
            self._finish(held.text(), upstream_called=True)
        finally:
            await _cancel(getter, reader, check)

    def _outgoing(self, chunk: dict[str, Any]) -> dict[str, Any]:
        s = self.guard.settings
        out = outgoing(chunk, "delta", forward_reasoning=s.forward_reasoning, unknown=s.unknown_fields)
        return chunk if out is None else out

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

    async def _check(self, drafts: list[str]) -> Verdict:
        self.checks += 1
        verdicts = await self.guard.check_output(self.req.messages, drafts)
        self.verdicts += verdicts
        self.timings.append(StageTiming(stage="output", ms=max(v.latency_ms for v in verdicts)))
        return decisive(verdicts)

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


class _Held:
    """The draft so far, by choice, and the chunks not yet released with the draft length at each."""

    def __init__(self):
        self.pending: deque[tuple[dict[str, Any], int]] = deque()
        self.by_choice: dict[int, list[str]] = {}
        self.length = 0  # characters of draft, all choices
        self.released_upto = 0  # draft length the client has received
        self.covered = 0  # draft length the running check covers

    @property
    def unchecked(self) -> int:
        return self.length - self.released_upto

    def add(self, chunk: dict[str, Any], texts: dict[int, str], out: dict[str, Any]) -> None:
        for index, text in texts.items():
            self.by_choice.setdefault(index, []).append(text)
            self.length += len(text)
        self.pending.append((out, self.length))

    def release(self, hold: bool) -> list[dict[str, Any]]:
        """What a check has covered (chunks without new text go out when nothing is held)."""
        batch = []
        while self.pending and (not hold or self.pending[0][1] <= self.released_upto):
            batch.append(self.pending.popleft()[0])
        return batch

    def drafts(self) -> list[str]:
        return ["".join(parts) for _, parts in sorted(self.by_choice.items())] or [""]

    def text(self) -> str:
        return "\n".join(self.drafts())


async def _cancel(*futures: asyncio.Future | None) -> None:
    for f in futures:
        if f is not None and not f.done():
            f.cancel()
            with contextlib.suppress(BaseException):
                await f
