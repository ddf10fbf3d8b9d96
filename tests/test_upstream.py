"""guard.upstream against a faulty upstream (guard.testing.fake_openai's fault modes), through the
server as a client sees it: every fault gets a clean OpenAI-style error, in bounded time."""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import contextmanager

import httpx
import pytest

from guard.errors import UpstreamError
from guard.pipeline import Guard
from guard.server.app import create_app
from guard.server.config import load_config
from guard.server.run import ServerThread
from guard.testing.fake_openai import FAULTS, FakeOpenAIServer, Reply
from guard.testing.judges import ScriptedJudge
from guard.upstream import LITELLM_PARAMS, LiteLLMUpstream, OpenAIUpstream


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAIServer() as server:
        yield server


@contextmanager
def guard_server(url: str, **settings):
    config = load_config(env={}, flags={"upstream": url, "access_log": False, **settings})
    with ServerThread(create_app(config, guard=Guard.create(config, judge=ScriptedJudge()))) as server:
        yield server


@pytest.fixture(scope="module")
def impatient(upstream):
    with guard_server(upstream.base_url, upstream_timeout_s=1.0, upstream_idle_timeout_s=1.0) as server:
        yield server


def chat(server, stream: bool = False) -> httpx.Response:
    return httpx.post(server.base_url + "/chat/completions", timeout=30, json={
        "model": "m", "stream": stream, "messages": [{"role": "user", "content": "hello"}]})


def assert_openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def assert_error_event_then_done(r: httpx.Response) -> dict:
    if r.status_code != 200:  # it failed before the first event: the status says so, as for a non-streamed call
        return assert_openai_error(r, r.status_code)
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert "error" in events[-1], r.text
    return events[-1]["error"]


def test_every_fault_mode_is_documented():
    assert set(FAULTS) == {"hang", "trickle", "garbage", "early_end", "mid_close", "short_body"}


@pytest.mark.parametrize("fault", ["hang", "trickle", "short_body"])
def test_a_non_streamed_call_has_a_total_deadline(upstream, impatient, fault):
    upstream.script.push(Reply(fault=fault, trickle_s=0.3))
    t = time.monotonic()
    err = assert_openai_error(chat(impatient), 504)
    assert time.monotonic() - t < 5 and err["code"] == "upstream_timeout"


def test_an_html_body_labelled_json_is_a_502_json_error(upstream, impatient):
    upstream.script.push(Reply(fault="garbage"))
    err = assert_openai_error(chat(impatient), 502)
    assert "not a JSON object" in err["message"] and "<html>" not in err["message"]


def test_a_json_array_body_is_a_502_json_error(upstream, impatient):
    upstream.script.push(Reply(fault="early_end"))
    assert "not a JSON object" in assert_openai_error(chat(impatient), 502)["message"]


def test_an_html_error_page_keeps_its_status_in_an_openai_error(upstream, impatient):
    upstream.script.push(Reply(status=503, raw_body="<html>Service Unavailable</html>"))
    err = assert_openai_error(chat(impatient), 503)
    assert "HTTP 503" in err["message"]


def test_a_connection_dropped_mid_body_is_a_502(upstream, impatient):
    upstream.script.push(Reply(fault="mid_close"))
    assert_openai_error(chat(impatient), 502)


def test_a_malformed_stream_event_is_a_clean_error_before_or_after_the_first_byte(upstream, impatient):
    upstream.script.push(Reply(fault="garbage"))
    r = chat(impatient, stream=True)
    assert r.status_code == 502 and "not a JSON object" in assert_error_event_then_done(r)["message"]
    good = ('data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,'
            '"delta":{"content":"fine so far"},"finish_reason":null}]}\n\n')
    upstream.script.push(Reply(raw_body=good + "data: [1, 2]\n\n"))
    r = chat(impatient, stream=True)
    assert r.status_code == 200 and "not a JSON object" in assert_error_event_then_done(r)["message"]


def test_a_stream_ending_without_done_is_not_a_normal_ending(upstream, impatient):
    upstream.script.push(Reply(fault="early_end"))
    r = chat(impatient, stream=True)
    assert "without [DONE]" in assert_error_event_then_done(r)["message"]
    assert '"finish_reason":"stop"' not in r.text


@pytest.mark.parametrize("fault", ["mid_close", "short_body", "hang"])
def test_a_stream_cut_or_gone_silent_ends_with_an_error_event_and_done(upstream, impatient, fault):
    upstream.script.push(Reply(fault=fault))
    t = time.monotonic()
    r = chat(impatient, stream=True)
    assert_error_event_then_done(r)
    assert time.monotonic() - t < 5


def test_a_trickling_stream_is_fine_while_each_event_comes_within_the_idle_timeout(upstream):
    upstream.script.push(Reply(fault="trickle", trickle_s=0.002))
    with guard_server(upstream.base_url, upstream_idle_timeout_s=1.0, upstream_timeout_s=0.2) as server:
        r = chat(server, stream=True)  # longer than upstream_timeout_s in all: that deadline is for non-streamed calls
    assert r.status_code == 200 and '"partial "' in r.text and r.text.endswith("data: [DONE]\n\n")
    assert '"error"' not in r.text


def test_5xx_with_a_json_body_passes_through(upstream, impatient):
    upstream.script.push(Reply(status=500, error_message="model crashed"))
    assert assert_openai_error(chat(impatient), 500)["message"] == "model crashed"


def test_slow_but_within_the_deadline_is_answered(upstream, impatient):
    upstream.script.push(Reply(content="late but here", delay_s=0.3))
    r = chat(impatient)
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "late but here"


def test_waiting_for_a_pool_connection_has_its_own_limit_and_message(upstream):
    async def scenario():
        up = OpenAIUpstream(upstream.base_url, max_connections=1, pool_timeout_s=0.3, timeout_s=10)
        upstream.script.push(Reply(content="slow", delay_s=1.5))
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        try:
            first = asyncio.ensure_future(up.complete(body))
            await asyncio.sleep(0.1)
            with pytest.raises(UpstreamError) as e:
                await up.complete(body)
            assert (await first)["choices"][0]["message"]["content"] == "slow"
            return e.value
        finally:
            await up.close()

    e = asyncio.run(scenario())
    assert e.status == 503 and e.code == "upstream_busy" and "1 upstream connections stayed busy for 0.3s" in str(e)


def test_the_pool_wait_does_not_count_against_the_deadline_or_look_like_a_stall(upstream):
    async def scenario():
        up = OpenAIUpstream(upstream.base_url, max_connections=2, pool_timeout_s=10, timeout_s=1.0)
        upstream.token_delay_s = 0.0
        for _ in range(6):
            upstream.script.push(Reply(content="ok", delay_s=0.4))
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        try:  # six calls of 0.4 s through two connections: 1.2 s in all, each call well within its 1 s deadline
            return await asyncio.gather(*(up.complete(body) for _ in range(6)))
        finally:
            await up.close()

    assert [r["choices"][0]["message"]["content"] for r in asyncio.run(scenario())] == ["ok"] * 6


def test_litellm_gets_only_allowlisted_parameters():
    up = LiteLLMUpstream("openai/m", api_key="sk-op", api_base="http://op/v1", timeout_s=5)
    kwargs = up._kwargs({"messages": [], "temperature": 0.2, "tools": [], "base_url": "http://evil", "api_base": "x",
                         "api_key": "k", "extra_headers": {"a": "b"}, "mock_response": "m", "model": "gpt-evil",
                         "custom_llm_provider": "x", "metadata": {}, "n": 2}, stream=False)
    assert kwargs["api_base"] == "http://op/v1" and kwargs["api_key"] == "sk-op" and kwargs["model"] == "openai/m"
    assert {"base_url", "extra_headers", "mock_response", "custom_llm_provider", "metadata"}.isdisjoint(kwargs)
    assert kwargs["temperature"] == 0.2 and kwargs["n"] == 2
    assert "api_base" not in LITELLM_PARAMS and "base_url" not in LITELLM_PARAMS
