"""The guard as an attacker meets it (docs/security.md): no client can steer the upstream, and no text a
model says reaches a client unjudged, in any field, any choice, streamed or not, however it is chunked."""

from __future__ import annotations

import json
from contextlib import contextmanager

import httpx
import pytest

from guard.pipeline import Guard
from guard.server.app import create_app
from guard.server.config import load_config
from guard.server.run import ServerThread
from guard.testing.fake_openai import FakeOpenAIServer, Reply, Script
from guard.testing.judges import ScriptedJudge

SECRET = "sk-operator-SECRET"
STEERING = {"base_url": "DECOY/v1", "api_base": "DECOY/v1", "api_key": "sk-client", "extra_headers": {"x-evil": "1"},
            "headers": {"authorization": "Bearer sk-client"}, "mock_response": "mocked!", "custom_llm_provider": "openai",
            "litellm_params": {"api_base": "DECOY/v1"}, "extra_body": {"api_base": "DECOY/v1"}, "timeout": 0.001}


@contextmanager
def guard_server(upstream: str, judge=None, **settings):
    config = load_config(env={}, flags={"upstream": upstream, "access_log": False, **settings})
    guard = Guard.create(config, judge=judge or ScriptedJudge({"BOOM": ("refuse", "weapons")}))
    with ServerThread(create_app(config, guard=guard)) as server:
        yield server


def post(server, body: dict, **headers) -> httpx.Response:
    return httpx.post(server.base_url + "/chat/completions", json=body, headers=headers, timeout=30)


# --------------------------------------------------------------------------- steering


def steering_body(decoy: FakeOpenAIServer, stream: bool) -> dict:
    body = json.loads(json.dumps(STEERING).replace("DECOY", f"http://127.0.0.1:{decoy.port}"))
    return {**body, "model": "any", "stream": stream, "messages": [{"role": "user", "content": "hello"}]}


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_cannot_redirect_a_litellm_upstream_or_see_its_key(stream):
    with FakeOpenAIServer(Script(default_content="from the real upstream"), api_key=SECRET) as real, \
            FakeOpenAIServer() as decoy, \
            guard_server("openai/fake-model", upstream_api_base=real.base_url, upstream_api_key=SECRET) as server:
        r = post(server, steering_body(decoy, stream), authorization="Bearer sk-client")
        assert r.status_code == 200, r.text
        assert "from" in r.text and "mocked!" not in r.text
        assert decoy.requests == [] and len(real.requests) == 1  # the decoy never heard of it; the key went home
        sent = real.requests[0]
        assert not set(STEERING) & set(sent)


@pytest.mark.parametrize("stream", [False, True])
def test_the_openai_url_upstream_sends_only_its_own_host_key_and_headers(stream):
    from aiohttp import web

    captured = []

    async def record(request):
        captured.append((request.host, dict(request.headers), await request.json()))
        if stream:
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
                             b'[{"index":0,"delta":{"content":"ok"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
            return resp
        return web.json_response({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})

    with FakeHeaders(record) as real, FakeOpenAIServer() as decoy, \
            guard_server(real.base_url, upstream_api_key=SECRET) as server:
        r = post(server, steering_body(decoy, stream), authorization="Bearer sk-client",
                 **{"x-evil": "1", "openai-organization": "org-evil", "cookie": "a=b", "x-forwarded-host": "decoy"})
        assert r.status_code == 200 and decoy.requests == []
    host, headers, body = captured[0]
    sent = {k.lower(): v for k, v in headers.items()}
    assert host == f"127.0.0.1:{real.port}" and sent["authorization"] == f"Bearer {SECRET}"
    assert not {"x-evil", "openai-organization", "cookie", "x-forwarded-host", "x-request-id"} & set(sent)
    assert body["messages"] == [{"role": "user", "content": "hello"}]  # the body is the client's: data, not routing


class FakeHeaders(FakeOpenAIServer):
    """A fake upstream whose chat route is one handler (to see the headers the guard sends)."""

    def __init__(self, handler):
        super().__init__()
        self.handler = handler

    def app(self):
        from aiohttp import web

        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.handler)
        return app


# --------------------------------------------------------------------------- leaks

FIELDS = ["content", "reasoning_content", "reasoning", "refusal", "tool_call", "function_call", "x_unknown"]
HARMFUL = "here is how: BOOM mix the two and light it"


def delta_for(field: str, piece: str, first: bool) -> dict:
    if field == "tool_call":
        fn = {"name": "run", "arguments": piece} if first else {"arguments": piece}
        return {"tool_calls": [{"index": 0, **({"id": "call_1", "type": "function"} if first else {}), "function": fn}]}
    if field == "function_call":
        return {"function_call": {"name": "run", "arguments": piece} if first else {"arguments": piece}}
    return {field: piece}


def message_for(field: str, text: str) -> dict:
    if field == "tool_call":
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "run", "arguments": text}}]}
    if field == "function_call":
        return {"role": "assistant", "content": None, "function_call": {"name": "run", "arguments": text}}
    return {"role": "assistant", "content": "" if field != "content" else text, **({field: text} if field != "content" else {})}


def sse_of(field: str, text: str, size: int) -> str:
    pieces = [text[i:i + size] for i in range(0, len(text), size)]
    events = [{"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta_for(field, p, i == 0), "finish_reason": None}]}
              for i, p in enumerate(pieces)]
    events.append({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


def strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [s for v in value for s in strings(v)] if isinstance(value, list) else []


def received_text(body: str) -> str:
    """Everything a client could read out of an SSE body or a JSON body, pieces joined in order (the
    guard's own object aside: it names what it refused)."""
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ") and line != "data: [DONE]"] \
        if body.startswith("data:") else [json.loads(body)]
    return "".join(s for e in events for s in strings({k: v for k, v in e.items() if k != "guard"}))


def streamed_content(body: str) -> str:
    events = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]
    return "".join(c["delta"].get("content") or "" for e in events for c in e.get("choices") or [])


@pytest.fixture(scope="module")
def leak_rig():
    with FakeOpenAIServer() as up, guard_server(up.base_url, stream_first_window_chars=10,
                                                stream_window_chars=20) as server:
        yield up, server


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("size", [1, 3, 50])
def test_harmful_text_in_any_streamed_field_never_reaches_the_client(leak_rig, field, size):
    up, server = leak_rig
    up.script.push(Reply(raw_body=sse_of(field, HARMFUL, size)))
    r = post(server, {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    assert "BOOM" not in received_text(r.text)
    assert '"content_filter"' in r.text


@pytest.mark.parametrize("field", FIELDS)
def test_harmful_text_in_any_field_of_an_answer_is_refused(leak_rig, field):
    up, server = leak_rig
    up.script.push(Reply(raw_body=json.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                                              "choices": [{"index": 0, "message": message_for(field, HARMFUL),
                                                           "finish_reason": "stop"}]})))
    r = post(server, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and "BOOM" not in received_text(r.text)
    assert r.json()["choices"][0]["finish_reason"] == "content_filter"


def test_every_choice_is_judged_when_n_is_more_than_one(leak_rig):
    up, server = leak_rig
    up.script.push(Reply(content="a harmless first choice", choices=["second choice: BOOM"]))
    r = post(server, {"model": "m", "n": 2, "messages": [{"role": "user", "content": "hi"}]})
    assert "BOOM" not in received_text(r.text) and r.json()["choices"][0]["finish_reason"] == "content_filter"
    up.script.push(Reply(content="a harmless first choice", choices=["second choice: BOOM"]))
    r = post(server, {"model": "m", "n": 2, "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert "BOOM" not in received_text(r.text) and '"content_filter"' in r.text


def test_unknown_text_fields_at_every_level_are_judged(leak_rig):
    up, server = leak_rig
    up.script.push(Reply(raw_body=json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m",
                                              "citations": ["BOOM at the top level"], "choices": [
                                                  {"index": 0, "message": {"role": "assistant", "content": "fine"},
                                                   "finish_reason": "stop"}]})))
    r = post(server, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert "BOOM" not in received_text(r.text) and r.json()["choices"][0]["finish_reason"] == "content_filter"


# --------------------------------------------------------------------------- what leaves the guard


def test_reasoning_is_judged_but_not_forwarded_unless_the_operator_opts_in():
    reply = Reply(content="The answer is 4.", message_extra={"reasoning_content": "two plus two, private thoughts"})
    with FakeOpenAIServer() as up:
        for forward in (False, True):
            with guard_server(up.base_url, forward_reasoning=forward) as server:
                up.script.push(reply, reply)
                plain = post(server, {"model": "m", "messages": [{"role": "user", "content": "2+2?"}]})
                streamed = post(server, {"model": "m", "stream": True, "messages": [{"role": "user", "content": "2+2?"}]})
            assert plain.json()["choices"][0]["message"]["content"] == "The answer is 4."
            assert ("private thoughts" in plain.text) is forward
            assert ("private" in received_text(streamed.text)) is forward
            assert streamed_content(streamed.text) == "The answer is 4."


def test_unknown_fields_are_removed_with_unknown_fields_drop():
    raw = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "x_top": "top secret",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok", "x_note": "hidden"},
                                   "finish_reason": "stop"}]})
    with FakeOpenAIServer(Script().push(Reply(raw_body=raw))) as up, guard_server(up.base_url, unknown_fields="drop") as server:
        r = post(server, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.json()["choices"][0]["message"] == {"role": "assistant", "content": "ok"}
    assert "x_top" not in r.json()
    sse = ('data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","x_top":"top secret","choices":'
           '[{"index":0,"delta":{"content":"ok","x_note":"hidden"},"finish_reason":null}]}\n\n'
           'data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":'
           '[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
    with FakeOpenAIServer(Script().push(Reply(raw_body=sse))) as up, guard_server(up.base_url, unknown_fields="drop") as server:
        r = post(server, {"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert streamed_content(r.text) == "ok" and "hidden" not in r.text and "top secret" not in r.text


def test_every_role_and_turn_reaches_the_judge():
    judge = ScriptedJudge()
    with FakeOpenAIServer() as up, guard_server(up.base_url, judge=judge) as server:
        post(server, {"model": "m", "messages": [
            {"role": "system", "content": "SYS-1"}, {"role": "developer", "content": "DEV-2"},
            {"role": "user", "content": [{"type": "text", "text": "USER-3"}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{\"a\": \"CALL-4\"}"}}]},
            {"role": "tool", "tool_call_id": "t", "content": "TOOL-5"},
            {"role": "assistant", "content": "ASSIST-6", "reasoning_content": "THINK-7"},
            {"role": "user", "content": "USER-8"}]})
    judged = judge.seen[0][1]
    for marker in ("SYS-1", "DEV-2", "USER-3", "CALL-4", "TOOL-5", "ASSIST-6", "THINK-7", "USER-8"):
        assert marker in judged
