"""A fake OpenAI-compatible chat server over real HTTP, for tests and load benchmarks.

It stands in for a model provider: as the guarded upstream model, as an LLM judge reached through
litellm (``api_base=server.base_url``), or as the baseline a proxy is benchmarked against. It speaks
``POST /v1/chat/completions`` (JSON or SSE streaming, in OpenAI's exact chunk format), ``GET /v1/models``
and ``GET /healthz``.

What it answers is decided by a :class:`Script`, checked in this order for every request:

1. ``rules``: the first :class:`Rule` whose ``contains`` is a substring of the last user message;
2. ``replies``: a FIFO queue of one-shot :class:`Reply` entries (``script.push(...)``);
3. ``responder``: a callable ``body -> Reply | dict | str`` (may be async), for answers computed per request;
4. the default: ``reply_words`` words of filler, else ``default_content``, else
   ``"This is a reply to: <last user message, truncated>"``.

Tokens are whitespace-separated words, both for ``usage`` and for streaming (one chunk per word).
``token_delay_s`` simulates generation speed: streams sleep before every word; a non-streaming answer
sleeps words x delay in one go. ``first_token_delay_s`` is added once before the first word.

Three ways to run it::

    with FakeOpenAIServer(script=Script().push("hi")) as server:      # own loop in a background thread
        client = openai.OpenAI(base_url=server.base_url, api_key="x")

    async with FakeOpenAIServer() as server: ...                      # inside a running event loop

    python -m guard.testing.fake_openai --port 8001 --token-delay-ms 20 --reply-words 50
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import itertools
import json
import re
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from guard.testing.faults import FAULTS, fault_response

__all__ = ["FAULTS", "FakeOpenAIServer", "Reply", "Rule", "Script"]

_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 403: "permission_error",
                404: "invalid_request_error", 429: "requests", 500: "server_error", 503: "server_error"}
_ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
_FILLER = "the quick brown fox jumps over a lazy dog while".split()
_WORD = re.compile(r"\s*\S+\s*")  # a word with its surrounding spaces, so chunks join back to the text


@dataclass
class Reply:
    """One scripted answer. Everything is optional; an empty Reply falls back to the default text."""

    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI shape, or shorthand {"name", "arguments": dict|str}
    status: int = 200  # >= 400: an OpenAI-style error body instead of a completion
    error_message: str | None = None
    error_type: str | None = None  # default from the status, e.g. "server_error" for 500
    error_code: str | None = None
    headers: dict[str, str] | None = None  # extra response headers, e.g. {"retry-after": "1"}
    delay_s: float = 0.0  # sleep before answering at all (headers included): for client timeouts
    raw_body: str | None = None  # sent verbatim with ``status`` (e.g. malformed JSON or a broken SSE stream)
    reasoning_tokens: int | None = None  # reported in usage.completion_tokens_details and counted in completion_tokens
    usage: dict[str, int] | None = None  # overrides the counted usage fields (total_tokens recomputed unless given)
    finish_reason: str | None = None  # default "tool_calls" when there are tool calls, else "stop"
    message_extra: dict[str, Any] | None = None  # more fields of the message (streamed: a delta of their own),
    # e.g. {"reasoning_content": "..."}, {"refusal": "..."}, {"function_call": {...}}
    choices: list[str] | None = None  # n > 1: the content of each choice (overrides ``content``)
    fault: str | None = None  # one of FAULTS: how this answer goes wrong on the wire
    trickle_s: float = 0.2  # fault "trickle": the pause between bytes

    @classmethod
    def of(cls, value: Reply | dict[str, Any] | str) -> Reply:
        """A Reply from a Reply, a dict of its fields, or plain content text."""
        if isinstance(value, Reply):
            return value
        if isinstance(value, str):
            return cls(content=value)
        return cls(**value)


@dataclass
class Rule:
    """Answer ``reply`` whenever the last user message contains ``contains`` (case-sensitive). Rules persist."""

    contains: str
    reply: Reply


Responder = Callable[[dict[str, Any]], "Reply | dict[str, Any] | str | None | Awaitable[Any]"]


@dataclass
class Script:
    """What the server answers; mutable while the server runs (tests push replies between calls)."""

    replies: deque[Reply] = field(default_factory=deque)
    rules: list[Rule] = field(default_factory=list)
    responder: Responder | None = None  # returning None falls through to the default
    reply_words: int | None = None  # default answer: this many filler words (benchmarks)
    default_content: str | None = None  # default answer: this fixed text

    def push(self, *replies: Reply | dict[str, Any] | str) -> Script:
        """Queue one-shot replies, answered in order by the next requests no rule matches."""
        self.replies.extend(Reply.of(r) for r in replies)
        return self

    def on(self, contains: str, reply: Reply | dict[str, Any] | str) -> Script:
        """Answer ``reply`` to every request whose last user message contains ``contains``."""
        self.rules.append(Rule(contains, Reply.of(reply)))
        return self

    def clear(self) -> None:
        self.replies.clear()
        self.rules.clear()

    async def answer(self, body: dict[str, Any]) -> Reply:
        last = last_user_text(body)
        for rule in self.rules:
            if rule.contains in last:
                return rule.reply
        try:
            return self.replies.popleft()
        except IndexError:
            pass
        if self.responder is not None:
            out = self.responder(body)
            if inspect.isawaitable(out):
                out = await out
            if out is not None:
                return Reply.of(out)
        return Reply(content=self.default_text(last))

    def default_text(self, last_user: str) -> str:
        if self.reply_words:
            return " ".join(itertools.islice(itertools.cycle(_FILLER), self.reply_words))
        if self.default_content is not None:
            return self.default_content
        short = last_user if len(last_user) <= 200 else last_user[:200] + "..."
        return f"This is a reply to: {short}"


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def last_user_text(body: dict[str, Any]) -> str:
    for m in reversed(body.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return content_text(m.get("content"))
    return ""


def count_words(text: str | None) -> int:
    return len(text.split()) if text else 0


def error_body(status: int, message: str | None = None, type_: str | None = None,
               code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message or f"fake server error (HTTP {status})",
                      "type": type_ or _ERROR_TYPES.get(status, "api_error"),
                      "param": param, "code": code or _ERROR_CODES.get(status)}}


def _tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalise tool calls to OpenAI's shape; the shorthand {"name", "arguments"} gets an id and a type."""
    out = []
    for i, c in enumerate(calls):
        if "function" in c:
            out.append({"id": c.get("id") or f"call_{i}", "type": c.get("type", "function"), "function": dict(c["function"])})
        else:
            out.append({"id": c.get("id") or f"call_{i}", "type": "function",
                        "function": {"name": c["name"], "arguments": c.get("arguments", "{}")}})
        fn = out[-1]["function"]
        if not isinstance(fn.get("arguments"), str):  # the wire format carries arguments as a JSON string
            fn["arguments"] = json.dumps(fn.get("arguments"))
    return out


@dataclass
class _Answer:
    """One completion, shared by the JSON and the streaming renderings."""

    id: str
    created: int
    model: str
    content: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    usage: dict[str, Any]


class FakeOpenAIServer:
    """The fake server. ``with`` runs it in a background thread with its own loop; ``async with`` (or
    ``await start()`` / ``await stop()``) runs it in the current loop. ``base_url`` ends in ``/v1``."""

    def __init__(self, script: Script | None = None, *, reply: Responder | None = None,
                 reply_words: int | None = None, token_delay_s: float = 0.0, first_token_delay_s: float = 0.0,
                 models: Sequence[str] = ("fake-model",), api_key: str | None = None,
                 host: str = "127.0.0.1", port: int = 0, max_recorded: int = 1000):
        self.script = script if script is not None else Script()
        if reply is not None:
            self.script.responder = reply
        if reply_words is not None:
            self.script.reply_words = reply_words
        self.token_delay_s, self.first_token_delay_s = token_delay_s, first_token_delay_s
        self.models, self.api_key = list(models), api_key
        self.host, self.port, self.max_recorded = host, port, max_recorded
        self.requests: list[Any] = []  # chat request bodies as received (dicts; the raw text if not JSON), oldest first
        self.disconnects = 0  # calls whose client hung up before the end (a proxy cancelling its call)
        self.completed_streams = 0
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- lifecycle ---------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/healthz", self._healthz)
        return app

    async def start(self) -> FakeOpenAIServer:
        # handler_cancellation: a client that hangs up cancels its handler (no orphan sleeps or writes);
        # a short shutdown_timeout so stopping never waits on a scripted delay.
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        # Bind the socket ourselves so port=0 yields a free port we can read back.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            await self._runner.cleanup()
            raise
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock, backlog=1024).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeOpenAIServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> FakeOpenAIServer:
        started = threading.Event()
        failure: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            loop = self._loop
            assert loop is not None
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as e:  # e.g. the port is taken: re-raised in __enter__
                failure.append(e)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name=f"fake-openai:{self.port}", daemon=True)
        self._thread.start()
        started.wait()
        if failure:
            self._thread.join()
            raise failure[0]
        return self

    def __exit__(self, *exc: object) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        self._loop = self._thread = None

    # -- handlers ----------------------------------------------------------------------------------

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if self.api_key is None or request.headers.get("authorization") == f"Bearer {self.api_key}":
            return None
        return web.json_response(error_body(401, "Incorrect API key provided.", code="invalid_api_key"), status=401)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _models(self, request: web.Request) -> web.Response:
        if denied := self._unauthorized(request):
            return denied
        return web.json_response({"object": "list", "data": [
            {"id": m, "object": "model", "created": 0, "owned_by": "fake-openai"} for m in self.models]})

    def _record(self, body: Any) -> None:
        self.requests.append(body)
        if len(self.requests) > self.max_recorded:
            del self.requests[: len(self.requests) - self.max_recorded]

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.text()
        try:
            body = json.loads(raw)
        except ValueError:
            self._record(raw)
            return web.json_response(error_body(400, "We could not parse the JSON body of your request."), status=400)
        self._record(body)
        if denied := self._unauthorized(request):
            return denied
        if not isinstance(body, dict):
            return web.json_response(error_body(400, "The request body must be a JSON object."), status=400)

        reply = await self.script.answer(body)
        if reply.delay_s:
            try:
                await asyncio.sleep(reply.delay_s)
            except asyncio.CancelledError:  # the client hung up while we "thought"
                self.disconnects += 1
                raise
        stream = bool(body.get("stream"))
        if reply.fault is not None:
            return await fault_response(request, reply, stream)
        if reply.raw_body is not None:
            ctype = "text/event-stream" if stream else "application/json"
            return web.Response(text=reply.raw_body, status=reply.status, content_type=ctype, headers=reply.headers)
        if reply.status >= 400:
            return web.json_response(error_body(reply.status, reply.error_message, reply.error_type, reply.error_code),
                                     status=reply.status, headers=reply.headers)

        content = reply.content
        if content is None and not reply.tool_calls:
            content = self.script.default_text(last_user_text(body))
        calls = _tool_calls(reply.tool_calls) if reply.tool_calls else None
        answer = _Answer(
            id=f"chatcmpl-fake{next(self._ids)}", created=int(time.time()),
            model=body.get("model") or (self.models[0] if self.models else "fake-model"),
            content=content, tool_calls=calls,
            finish_reason=reply.finish_reason or ("tool_calls" if calls else "stop"),
            usage=self._usage(body, content, calls, reply))
        if stream:
            return await self._stream(request, answer, reply, body)
        await asyncio.sleep(self.first_token_delay_s + count_words(content) * self.token_delay_s)
        message: dict[str, Any] = {"role": "assistant", "content": content, **(reply.message_extra or {})}
        if calls:
            message["tool_calls"] = calls
        choices = [{"index": 0, "message": message, "logprobs": None, "finish_reason": answer.finish_reason}]
        for i, text in enumerate(reply.choices or [], 1):
            choices.append({"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None,
                            "finish_reason": "stop"})
        return web.json_response({
            "id": answer.id, "object": "chat.completion", "created": answer.created, "model": answer.model,
            "choices": choices, "usage": answer.usage}, headers=reply.headers)

    def _usage(self, body: dict[str, Any], content: str | None, calls: list[dict[str, Any]] | None,
               reply: Reply) -> dict[str, Any]:
        prompt = sum(count_words(content_text(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, dict))
        completion = count_words(content) + sum(count_words(c["function"]["arguments"]) for c in calls or [])
        completion += reply.reasoning_tokens or 0  # as OpenAI does: reasoning tokens are billed as completion tokens
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion}
        if reply.usage:
            usage.update(reply.usage)
        usage.setdefault("total_tokens", usage["prompt_tokens"] + usage["completion_tokens"])
        if reply.reasoning_tokens is not None:
            usage["completion_tokens_details"] = {"reasoning_tokens": reply.reasoning_tokens}
        return usage

    async def _stream(self, request: web.Request, answer: _Answer, reply: Reply, body: dict[str, Any]) -> web.StreamResponse:
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        resp = web.StreamResponse(headers={"content-type": "text/event-stream; charset=utf-8",
                                           "cache-control": "no-cache", **(reply.headers or {})})

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, index: int = 0) -> bytes:
            c: dict[str, Any] = {"id": answer.id, "object": "chat.completion.chunk", "created": answer.created,
                                 "model": answer.model,
                                 "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
            if include_usage:
                c["usage"] = None  # as OpenAI does: every chunk but the last carries usage: null
            return b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\n\n"

        try:
            await resp.prepare(request)
            if self.first_token_delay_s:
                await asyncio.sleep(self.first_token_delay_s)
            await resp.write(chunk({"role": "assistant", "content": ""}))
            # Pace words against absolute deadlines so sleep overshoot does not add up: n words at d s/token
            # take n x d, as a real model would, however loaded the loop is.
            loop = asyncio.get_running_loop()
            start = loop.time()
            for i, word in enumerate(_WORD.findall(answer.content or ""), 1):
                if self.token_delay_s:
                    await asyncio.sleep(max(0.0, start + i * self.token_delay_s - loop.time()))
                await resp.write(chunk({"content": word}))
            for key, value in (reply.message_extra or {}).items():  # e.g. reasoning, streamed word by word
                for word in _WORD.findall(value) if isinstance(value, str) else [value]:
                    await resp.write(chunk({key: word}))
            for n, text in enumerate(reply.choices or [], 1):
                for word in _WORD.findall(text):
                    await resp.write(chunk({"content": word}, index=n))
            for i, call in enumerate(answer.tool_calls or []):
                await resp.write(chunk({"tool_calls": [{"index": i, **call}]}))
            await resp.write(chunk({}, answer.finish_reason))
            if include_usage:
                last = {"id": answer.id, "object": "chat.completion.chunk", "created": answer.created,
                        "model": answer.model, "choices": [], "usage": answer.usage}
                await resp.write(b"data: " + json.dumps(last, separators=(",", ":")).encode() + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):  # the client hung up mid-stream
            self.disconnects += 1
            if asyncio.current_task() is not None and asyncio.current_task().cancelling():
                raise
        else:
            self.completed_streams += 1
        return resp


# -- command line -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m guard.testing.fake_openai",
                                description="A fake OpenAI-compatible chat server (for benchmarks and manual tests).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on the ready line)")
    p.add_argument("--token-delay-ms", type=float, default=0.0, help="per streamed word; words x delay when not streaming")
    p.add_argument("--first-token-delay-ms", type=float, default=0.0)
    p.add_argument("--reply-words", type=int, default=None, help="answer this many filler words (default: echo the prompt)")
    p.add_argument("--model", action="append", help="model id listed by /v1/models (repeatable)")
    p.add_argument("--api-key", default=None, help="require this bearer key")
    a = p.parse_args(argv)

    async def serve() -> None:
        server = FakeOpenAIServer(reply_words=a.reply_words, token_delay_s=a.token_delay_ms / 1000,
                                  first_token_delay_s=a.first_token_delay_ms / 1000, models=a.model or ["fake-model"],
                                  api_key=a.api_key, host=a.host, port=a.port)
        done = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, done.set)
        async with server:
            print(f"listening on {server.base_url}", flush=True)
            await done.wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
