"""Graceful shutdown: in-flight requests drain for ``shutdown_grace_s``; streams still open when it runs
out end with an error event and ``[DONE]``, never mid-event."""

from __future__ import annotations

import threading
import time

import httpx

from guard.pipeline import Guard
from guard.server.app import create_app
from guard.server.config import load_config
from guard.server.run import ServerThread
from guard.testing.fake_openai import FakeOpenAIServer, Script
from guard.testing.judges import ScriptedJudge


def test_shutdown_drains_short_requests_and_ends_long_streams_with_an_error_event_and_done():
    with FakeOpenAIServer(Script(reply_words=1000), token_delay_s=0.01) as up:  # a 10 s stream
        config = load_config(env={}, flags={"upstream": up.base_url, "access_log": False, "shutdown_grace_s": 2.0})
        server = ServerThread(create_app(config, guard=Guard.create(config, judge=ScriptedJudge()))).__enter__()
        bodies: dict[str, str] = {}
        started = threading.Barrier(4)

        def stream(name: str) -> None:
            body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": name}]}
            with httpx.stream("POST", server.base_url + "/chat/completions", json=body, timeout=30) as r:
                it = r.iter_text()
                first = next(it)
                started.wait()
                bodies[name] = first + "".join(it)

        long_streams = [threading.Thread(target=stream, args=(f"long{i}",)) for i in range(3)]
        for t in long_streams:
            t.start()
        started.wait()
        t0 = time.monotonic()
        server.stop()
        took = time.monotonic() - t0
        for t in long_streams:
            t.join(timeout=10)
    assert 0.5 < took < 6  # waited for the grace (2 s), not for the 10 s streams
    assert len(bodies) == 3
    for body in bodies.values():
        assert body.endswith("data: [DONE]\n\n"), body[-300:]
        assert "shutting down" in body and '"error"' in body
    assert up.disconnects >= 3  # the upstream calls were closed, not left generating


def test_shutdown_lets_a_request_that_finishes_within_the_grace_complete():
    with FakeOpenAIServer(Script(reply_words=60), token_delay_s=0.01) as up:  # a 0.6 s stream
        config = load_config(env={}, flags={"upstream": up.base_url, "access_log": False, "shutdown_grace_s": 5.0})
        server = ServerThread(create_app(config, guard=Guard.create(config, judge=ScriptedJudge()))).__enter__()
        out: list[str] = []

        def stream() -> None:
            with httpx.stream("POST", server.base_url + "/chat/completions", timeout=30, json={
                    "model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
                out.append(r.read().decode())

        t = threading.Thread(target=stream)
        t.start()
        time.sleep(0.2)
        server.stop()
        t.join(timeout=10)
    assert out and out[0].endswith("data: [DONE]\n\n") and '"error"' not in out[0] and '"finish_reason":"stop"' in out[0]


def test_a_non_streamed_request_cut_by_shutdown_gets_a_503_error():
    from guard.testing.fake_openai import Reply

    with FakeOpenAIServer(Script().push(Reply(content="too late", delay_s=10))) as up:
        config = load_config(env={}, flags={"upstream": up.base_url, "access_log": False, "shutdown_grace_s": 1.0})
        server = ServerThread(create_app(config, guard=Guard.create(config, judge=ScriptedJudge()))).__enter__()
        out: list[httpx.Response] = []
        t = threading.Thread(target=lambda: out.append(httpx.post(server.base_url + "/chat/completions", timeout=30, json={
            "model": "m", "messages": [{"role": "user", "content": "hi"}]})))
        t.start()
        time.sleep(0.3)
        server.stop()
        t.join(timeout=10)
    assert out and out[0].status_code == 503 and out[0].json()["error"]["code"] == "shutting_down"
