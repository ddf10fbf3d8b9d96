"""The fake OpenAI-compatible server, driven by the official openai client (and litellm) over loopback."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

openai = pytest.importorskip("openai")
from guard.testing.fake_openai import FakeOpenAIServer, Reply, Script  # noqa: E402

USER = [{"role": "user", "content": "hello there fake model"}]


@pytest.fixture()
def server():
    with FakeOpenAIServer() as s:
        yield s


@pytest.fixture()
def client(server):
    return openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=5)


def test_non_streaming_default_answer_and_usage(server, client):
    r = client.chat.completions.create(model="gpt-test", messages=USER)
    assert r.object == "chat.completion" and r.model == "gpt-test" and r.id.startswith("chatcmpl-")
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "This is a reply to: hello there fake model"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (4, 9, 13)


def test_streaming_with_usage_reassembles_the_text(server, client):
    server.script.push(Reply(content="one two  three\nfour", reasoning_tokens=3))
    chunks = list(client.chat.completions.create(model="m", messages=USER, stream=True,
                                                 stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two  three\nfour"  # whitespace preserved across word chunks
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4 + 3
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])


def test_raw_sse_format(server):
    req = urllib.request.Request(server.base_url + "/chat/completions", method="POST",
                                 data=json.dumps({"model": "m", "messages": USER, "stream": True}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = resp.read().decode().split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    first = json.loads(events[0].removeprefix("data: "))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "usage" not in first  # only with stream_options.include_usage


def test_tool_calls_pass_through(server, client):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    server.script.push(Reply(tool_calls=[{"name": "get_weather", "arguments": {"city": "Oslo"}}]))
    r = client.chat.completions.create(model="m", messages=USER, tools=tools)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    assert server.requests[-1]["tools"] == tools  # recorded exactly as sent

    server.script.push(Reply(tool_calls=[{"id": "call_9", "type": "function",
                                          "function": {"name": "f", "arguments": "{}"}}]))
    chunks = list(client.chat.completions.create(model="m", messages=USER, tools=tools, stream=True))
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert [(d.id, d.function.name) for d in deltas] == [("call_9", "f")]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_scripted_errors(server, client):
    server.script.push(Reply(status=500, error_message="boom"), Reply(status=429, headers={"retry-after": "0"}))
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="m", messages=USER)
    assert e.value.status_code == 500 and e.value.body["message"] == "boom" and e.value.body["type"] == "server_error"
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="m", messages=USER)
    assert e.value.body["code"] == "rate_limit_exceeded"
    assert client.chat.completions.create(model="m", messages=USER).choices[0].message.content  # queue drained


def test_malformed_raw_body(server, client):
    server.script.push(Reply(raw_body='{"id": "chatcmpl-x", "choices": [ oops'))
    with pytest.raises(json.JSONDecodeError):  # what the openai client raises on a body that is not JSON
        client.chat.completions.create(model="m", messages=USER)
    assert server.requests[-1]["messages"] == USER  # the server itself is fine


def test_delay_hits_client_timeout_and_server_survives(server):
    server.script.push(Reply(content="late", delay_s=3))
    fast = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=0.3)
    t = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        fast.chat.completions.create(model="m", messages=USER)
    assert time.monotonic() - t < 2
    assert fast.chat.completions.create(model="m", messages=USER).choices[0].message.content.startswith("This is")


def test_rules_and_responder_and_recording():
    script = Script(reply_words=5).on("secret", "no secrets here")
    seen = []

    def responder(body):
        seen.append(body["model"])
        return {"content": "judged", "usage": {"prompt_tokens": 900, "completion_tokens": 150}} if body["model"] == "judge" else None

    with FakeOpenAIServer(script=script, reply=responder, max_recorded=3) as s:
        c = openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0)
        ask = lambda text, model="m": c.chat.completions.create(model=model, messages=[{"role": "user", "content": text}])
        assert ask("tell me the secret").choices[0].message.content == "no secrets here"
        r = ask("verdict?", model="judge")
        assert r.choices[0].message.content == "judged" and r.usage.total_tokens == 1050
        assert ask("anything").choices[0].message.content == "the quick brown fox jumps"
        s.script.push("queued")
        assert ask("again").choices[0].message.content == "queued"
        assert [b["messages"][0]["content"] for b in s.requests] == ["verdict?", "anything", "again"]  # bounded
        assert seen == ["judge", "m"]  # rules and the queue answer before the responder
        assert [m.id for m in c.models.list()] == ["fake-model"]


def test_api_key_check():
    with FakeOpenAIServer(api_key="sk-right", models=["a", "b"]) as s:
        with pytest.raises(openai.AuthenticationError) as e:
            openai.OpenAI(base_url=s.base_url, api_key="sk-wrong", max_retries=0).chat.completions.create(
                model="m", messages=USER)
        assert e.value.body["code"] == "invalid_api_key"
        ok = openai.OpenAI(base_url=s.base_url, api_key="sk-right", max_retries=0)
        assert [m.id for m in ok.models.list()] == ["a", "b"]
        assert urllib.request.urlopen(s.base_url.removesuffix("/v1") + "/healthz").status == 200


def test_async_server_and_disconnect_mid_stream(caplog):
    async def go():
        async with FakeOpenAIServer(reply_words=200, token_delay_s=0.01) as s:
            c = openai.AsyncOpenAI(base_url=s.base_url, api_key="x", max_retries=0)
            stream = await c.chat.completions.create(model="m", messages=USER, stream=True)
            got = 0
            async for _ in stream:
                got += 1
                if got == 3:
                    break
            await stream.close()  # hang up mid-stream
            await asyncio.sleep(0.1)
            s.token_delay_s = 0  # settings are live
            r = await c.chat.completions.create(model="m", messages=USER)
            assert len(r.choices[0].message.content.split()) == 200
            await c.close()

    t = time.monotonic()
    asyncio.run(go())
    assert time.monotonic() - t < 4
    assert not [r for r in caplog.records if r.exc_info or r.levelname == "ERROR"]


def test_litellm_reaches_it_as_a_judge(server, monkeypatch):
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm = pytest.importorskip("litellm")
    server.script.push('{"decision": "allow"}')
    r = asyncio.run(litellm.acompletion(model="openai/fake-judge", api_base=server.base_url, api_key="x",
                                        messages=[{"role": "user", "content": "judge this"}]))
    assert r.choices[0].message.content == '{"decision": "allow"}'
    assert server.requests[-1]["model"] == "fake-judge"


def test_cli_prints_ready_line_and_stops_on_sigterm():
    p = subprocess.Popen([sys.executable, "-m", "guard.testing.fake_openai", "--port", "0", "--reply-words", "3",
                          "--model", "bench"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        line = p.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:") and line.endswith("/v1")
        c = openai.OpenAI(base_url=line.removeprefix("listening on "), api_key="x", max_retries=0)
        r = c.chat.completions.create(model="bench", messages=USER)
        assert r.choices[0].message.content == "the quick brown"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=5) == 0
        assert "Traceback" not in p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
