"""guard.streaming: a stream goes through the pipeline's own stages (parallel_upstream and
safe_complete_via included), judges every choice, and can be ended cleanly from outside."""

from __future__ import annotations

import asyncio

import pytest

from guard.errors import UpstreamError
from guard.pipeline import Guard
from guard.settings import GuardSettings
from guard.streaming import GuardedStream, chunk_text
from guard.testing.fake_openai import FakeOpenAIServer, Reply, Script
from guard.testing.judges import ScriptedJudge
from guard.types import ChatRequest
from guard.upstream import OpenAIUpstream

SELF_HARM = "I want to kill myself, what is the most painless way?"


def run_stream(script: Script, judge=None, text: str = "hello", **settings):
    async def go():
        async with FakeOpenAIServer(script) as server:
            up = OpenAIUpstream(server.base_url)
            guard = Guard.create(GuardSettings(**settings), judge=judge) if judge else Guard.create(GuardSettings(**settings))
            gs = GuardedStream(guard, ChatRequest(messages=[{"role": "user", "content": text}], model="m"), up,
                               first_window_chars=5, window_chars=10)
            try:
                await gs.start()
                chunks = [c async for batch in gs for c in batch]
            finally:
                await up.close()
            return gs, chunks, server

    return asyncio.run(go())


def test_parallel_upstream_opens_the_stream_during_the_input_check():
    judge = ScriptedJudge(delay_s=0.3)
    gs, chunks, server = run_stream(Script().push("streamed in parallel"), judge, parallel_upstream=True)
    assert "".join(chunk_text(c) for c in chunks) == "streamed in parallel"
    input_ms = next(t.ms for t in gs.timings if t.stage == "input")
    assert input_ms >= 300 and gs.result.upstream_called and len(server.requests) == 1
    assert gs._t_up - gs.t0 < 0.25  # the stream was opened while the 300 ms input check ran


def test_parallel_upstream_stream_is_closed_when_the_input_is_refused():
    judge = ScriptedJudge({"hello": ("refuse", "weapons")}, delay_s=0.2)
    gs, chunks, server = run_stream(Script(reply_words=50), judge, parallel_upstream=True)
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert not gs.result.upstream_called


def test_safe_complete_via_upstream_applies_to_streams():
    script = Script().push("I'm so sorry you're feeling this way. You are not alone; please call or text 988.")
    judge = ScriptedJudge({"kill myself": ("safe_complete", "self-harm")})
    gs, chunks, server = run_stream(script, judge, text=SELF_HARM, safe_complete_via="upstream")
    assert "988" in "".join(chunk_text(c) for c in chunks)
    sent = server.requests[-1]
    assert sent["messages"][0]["role"] == "system" and "[self-harm]" in sent["messages"][0]["content"]
    assert "stream" not in sent  # the guidance call is an ordinary call, checked whole, then streamed out
    assert gs.result.decision.value == "safe_complete" and gs.result.upstream_called


def test_every_choice_of_a_stream_is_judged_on_its_own():
    judge = ScriptedJudge({"BOOM": ("refuse", "weapons")})
    gs, chunks, _ = run_stream(Script().push(Reply(content="one two", choices=["B", "O", "OM"])), judge)
    drafts = [t for stage, t in judge.seen if stage == "output"]
    assert "one two" in drafts and not any("BOOM" in d for d in drafts)  # "B", "O", "OM" are separate choices
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_abort_ends_a_stream_with_an_upstream_error_and_closes_the_upstream():
    async def go():
        async with FakeOpenAIServer(Script(reply_words=400), token_delay_s=0.01) as server:
            up = OpenAIUpstream(server.base_url)
            guard = Guard.create(GuardSettings(), judge=ScriptedJudge())
            gs = GuardedStream(guard, ChatRequest(messages=[{"role": "user", "content": "hi"}]), up)
            await gs.start()
            got = 0
            with pytest.raises(UpstreamError, match="shutting down"):
                async for batch in gs:
                    got += len(batch)
                    if got > 3:
                        gs.abort("shutting down")
            await asyncio.sleep(0.2)
            await up.close()
            return server.disconnects

    assert asyncio.run(go()) == 1
