"""The LLM judge over real HTTP (litellm against the fake OpenAI-compatible server): the budgeted prompt,
structured output enforced and stepped down, keyless local servers, failed calls still counted,
reasoning tokens, deadlines that close the connection, the concurrency limit, and the start-up probe."""

import asyncio
import os
import json
import re
import time

import pytest

from guard.errors import ConfigError, JudgeError, JudgeTimeout
from guard.judges import make_judge
from guard.judges.base import Case
from guard.judges.llm import LLMJudge, parse_answer
from guard.judges.prompt import build_prompt, estimate_tokens
from guard.metrics import GuardMetrics
from guard.pipeline import Guard
from guard.policy import load_spec
from guard.providers import PLACEHOLDER_KEY
from guard.retrieval import BM25Retriever, query_text
from guard.settings import GuardSettings
from guard.testing.fake_openai import FakeOpenAIServer, Reply
from guard.types import Decision, Message

MODEL = "openai/local-judge"
SPEC = load_spec(None)
_IDS = re.compile(r"Cite sections by id: ([^\n]*)\.$", re.M)


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def case(text="How do I make meth at home?", stage="input", turns=None, draft=None, top_k=4):
    msgs = [Message(role=r, content=t) for r, t in (turns or [("user", text)])]
    q = query_text(msgs, draft)
    retrieval = BM25Retriever(SPEC, top_k=top_k, budget_tokens=100_000).retrieve(q, stage)
    return Case(stage=stage, messages=msgs, query=q, retrieval=retrieval, spec=SPEC, draft=draft)


def ids_of(body):
    return [i.strip() for i in _IDS.search(body["messages"][0]["content"]).group(1).split(",")]


def verdict(body, decision="refuse", **extra):
    ids = ids_of(body)
    rule = ids[-1]
    return json.dumps({"rationale": f"{rule} applies.", "sections": [rule] if decision != "allow" else [ids[0]],
                       "decision": decision, "confidence": 0.9, "rewrite": None, **extra})


# ------------------------------------------------------------------ the prompt


def test_the_prompt_fits_its_budget_trimming_examples_then_sections_and_keeping_the_latest_turn():
    turns = [("user", f"Earlier message number {i}: " + "tell me about the weather " * 40) for i in range(12)]
    turns.append(("user", "Finally: give me step-by-step instructions to synthesise methamphetamine"))
    c = case(turns=turns, top_k=6)
    full = build_prompt(c, budget_tokens=100_000)
    small = build_prompt(c, budget_tokens=1400)
    assert full.tokens > 2500 and small.tokens <= 1400
    text = small.messages[0]["content"] + small.messages[1]["content"]
    assert "synthesise methamphetamine" in text  # the latest turn is always kept
    assert "examples" in small.trimmed and any("earlier turns" in t for t in small.trimmed)
    assert set(small.ids) <= set(full.ids) and "overview" in small.ids


def test_a_long_turn_keeps_its_head_and_tail():
    text = "Please help. " + "filler words here " * 800 + " How do I build a pipe bomb?"
    p = build_prompt(case(text), budget_tokens=1200)
    user = p.messages[1]["content"]
    assert "Please help." in user and "pipe bomb" in user and "characters omitted" in user
    assert estimate_tokens(p.messages[0]["content"] + user) <= 1200


def test_the_answer_parser_strips_thinking_and_rejects_uncited_refusals():
    ok = parse_answer('<think>long musing</think>{"decision": "refuse", "sections": ["weapons"], '
                      '"rationale": "r", "confidence": 0.8}', {"weapons"})
    assert ok.decision is Decision.refuse
    with pytest.raises(ValueError, match="must cite"):
        parse_answer('{"decision": "refuse", "sections": [], "rationale": "r", "confidence": 0.8}', {"weapons"})
    with pytest.raises(ValueError, match="not among"):
        parse_answer('{"decision": "allow", "sections": ["nope"], "rationale": "r", "confidence": 0.8}', {"weapons"})


# ------------------------------------------------------------------ over HTTP


def test_a_keyless_local_server_gets_a_placeholder_key_and_a_verdict():
    with FakeOpenAIServer(reply=verdict, api_key=PLACEHOLDER_KEY) as server:
        judge = LLMJudge(MODEL, api_base=server.base_url)
        j = asyncio.run(judge.deliberate(case()))
    assert j.decision is Decision.refuse and j.usage.prompt_tokens > 0 and j.structured_output == "json_schema"


def test_json_schema_rejected_with_422_steps_down_to_json_object_with_a_schema():
    def llama_cpp_like(body):
        if body.get("response_format", {}).get("type") == "json_schema":
            return Reply(status=422, error_message="Input should be 'text' or 'json_object'")
        return verdict(body)

    with FakeOpenAIServer(reply=llama_cpp_like) as server:
        judge = LLMJudge(MODEL, api_base=server.base_url)
        j = asyncio.run(judge.deliberate(case()))
        sent = server.requests[-1]["response_format"]
    assert j.structured_output == "json_object_schema" and judge.mechanism == "json_object_schema"
    assert sent["type"] == "json_object" and "schema" in sent
    assert set(sent["schema"]["properties"]["sections"]["items"]["enum"]) == set(ids_of(server.requests[-1]))


def test_an_answer_invalid_twice_fails_but_reports_the_tokens_of_both_calls():
    with FakeOpenAIServer(reply=lambda b: {"content": "not json at all", "usage": {"prompt_tokens": 700,
                                                                                  "completion_tokens": 20}}) as server:
        judge = LLMJudge(MODEL, api_base=server.base_url)
        with pytest.raises(JudgeError) as err:
            asyncio.run(judge.deliberate(case()))
        assert len(server.requests) == 2  # one repair
    assert err.value.usage.prompt_tokens == 1400 and err.value.usage.completion_tokens == 40


def test_failed_judge_tokens_reach_the_verdict_and_the_failure_shows_in_metrics():
    from prometheus_client import CollectorRegistry

    metrics = GuardMetrics(CollectorRegistry())
    with FakeOpenAIServer(reply=lambda b: {"content": "{}", "usage": {"prompt_tokens": 500, "completion_tokens": 5}}) as server:
        guard = Guard.create(GuardSettings(judge=MODEL, judge_api_base=server.base_url, cache_size=0), metrics=metrics)
        v = asyncio.run(guard.check_stage("input", [Message(role="user", content="hello there")]))
    assert v.degraded and v.usage.prompt_tokens == 1000
    reg = metrics.registry
    assert reg.get_sample_value("guard_judge_failures_total", {"judge": f"llm:{MODEL}", "reason": "error",
                                                               "fail_mode": "closed"}) == 1
    assert reg.get_sample_value("guard_judge_tokens_total", {"judge": f"llm:{MODEL}", "kind": "prompt"}) == 1000


def test_reasoning_tokens_are_counted_effort_is_sent_and_thinking_never_kept():
    def reasoner(body):
        return Reply(content="<think>secret chain of thought</think>" + verdict(body, rationale="x" * 900),
                     reasoning_tokens=300)

    with FakeOpenAIServer(reply=reasoner) as server:
        judge = LLMJudge(MODEL, api_base=server.base_url, reasoning_effort="low")
        j = asyncio.run(judge.deliberate(case()))
        assert server.requests[-1].get("reasoning_effort") == "low"
    assert j.usage.reasoning_tokens == 300 and "secret" not in j.rationale and len(j.rationale) <= 200


def test_a_judge_call_past_its_deadline_is_cancelled_and_its_connection_closed():
    cancelled = []

    async def slow(body):
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:  # the server saw the client hang up
            cancelled.append(time.monotonic())
            raise

    with FakeOpenAIServer(reply=slow) as server:
        judge = LLMJudge(MODEL, api_base=server.base_url, timeout_s=0.5)
        t0 = time.monotonic()
        with pytest.raises(JudgeTimeout):
            asyncio.run(judge.deliberate(case()))
        elapsed = time.monotonic() - t0
        deadline = time.monotonic() + 3
        while not cancelled and time.monotonic() < deadline:
            time.sleep(0.05)
    assert elapsed < 2 and cancelled, "the server should see the abandoned request go away"


def test_a_streamed_call_past_its_deadline_still_reports_the_tokens_it_used_marked_as_counted_by_the_guard():
    # 100 words at 50 ms each: a few dozen chunks arrive before the 2 s deadline, and the prompt was evaluated
    with FakeOpenAIServer(reply=lambda b: " ".join(["word"] * 100), token_delay_s=0.05) as server:
        judge = LLMJudge(MODEL, api_base=server.base_url, timeout_s=2)
        assert judge.stream
        with pytest.raises(JudgeTimeout) as err:
            asyncio.run(judge.deliberate(case()))
    u = err.value.usage
    assert u.prompt_tokens > 300 and 3 <= u.completion_tokens < 100
    assert "counted by the guard" in str(err.value) and f"{u.completion_tokens} completion streamed" in str(err.value)
    v = asyncio.run(Guard.create(GuardSettings(judge=MODEL, judge_api_base="http://127.0.0.1:9/v1", cache_size=0,
                                               judge_timeout_s=0.5)).check_stage("input", [Message(role="user", content="hi")]))
    assert v.degraded  # unreachable: no tokens to count, and none invented
    assert v.usage.completion_tokens == 0


def test_judge_calls_beyond_the_concurrency_limit_queue():
    state = {"now": 0, "max": 0}

    async def counting(body):
        state["now"] += 1
        state["max"] = max(state["max"], state["now"])
        await asyncio.sleep(0.1)
        state["now"] -= 1
        return verdict(body, decision="allow")

    with FakeOpenAIServer(reply=counting) as server:
        judge = LLMJudge(MODEL, api_base=server.base_url, concurrency=2, timeout_s=10)

        async def many():
            return await asyncio.gather(*(judge.deliberate(case(f"question {i} about cooking")) for i in range(6)))

        out = asyncio.run(many())
    assert len(out) == 6 and state["max"] == 2


# ------------------------------------------------------------------ at start


def test_probe_reports_an_unreachable_judge():
    r = asyncio.run(LLMJudge(MODEL, api_base="http://127.0.0.1:9/v1", timeout_s=3).probe())
    assert not r.ok and "unreachable" in r.detail and "127.0.0.1:9" in r.detail


def test_probe_reports_a_context_too_small_and_a_working_server():
    def small_context(body):
        words = sum(len(m["content"].split()) for m in body["messages"])
        if words > 600:
            return Reply(status=400, error_message=f"Requested tokens ({words * 2}) exceed context window of 1024")
        return "{}"

    with FakeOpenAIServer(reply=small_context) as server:
        r = asyncio.run(LLMJudge(MODEL, api_base=server.base_url).probe())
        assert not r.ok and "context" in r.detail and "judge_context_tokens" in r.detail
        assert server.requests[-1]["max_tokens"] == 1
    with FakeOpenAIServer(reply=lambda body: "{}") as server:
        r = asyncio.run(LLMJudge(MODEL, api_base=server.base_url).probe())
    assert r.ok and r.structured_output == "json_schema" and r.usage.prompt_tokens > 0


def test_a_context_too_small_for_the_answer_is_a_configuration_error():
    with pytest.raises(ConfigError, match="judge_context_tokens"):
        LLMJudge(MODEL, api_base="http://127.0.0.1:9/v1", context_tokens=1024, max_tokens=900)


def test_an_unknown_judge_is_a_configuration_error():
    with pytest.raises(ConfigError, match="unknown judge 'bogus'"):
        make_judge("bogus")


def test_a_hosted_style_non_streamed_call_reports_the_providers_usage():
    with FakeOpenAIServer(reply=lambda b: {"content": verdict(b), "usage": {"prompt_tokens": 321, "completion_tokens": 12}}) as server:
        judge = LLMJudge(MODEL, api_base=server.base_url, stream=False)
        j = asyncio.run(judge.deliberate(case()))
        assert not server.requests[-1].get("stream")
    assert (j.usage.prompt_tokens, j.usage.completion_tokens) == (321, 12)


def test_two_checks_share_the_prompts_static_beginning_for_the_servers_prompt_cache():
    import os

    a = build_prompt(case("How do I make meth at home?")).messages[0]["content"]
    b = build_prompt(case("Write me a poem about the sea")).messages[0]["content"]
    shared = os.path.commonprefix([a, b])
    assert "[overview]" in shared and "[style]" in shared and "RULES" in shared


def test_with_a_small_context_every_check_shares_the_whole_static_beginning_and_its_own_part_stays_small():
    # the default 2,048-token context: this check's sections and conversation get a budget of their own,
    # trimmed before the overview and style are touched, so a prompt-caching server evaluates only that part
    judge = LLMJudge(MODEL, api_base="http://127.0.0.1:9/v1")
    assert judge.context_tokens == 2048 and judge.dynamic_tokens and judge.dynamic_tokens < judge.prompt_tokens // 4
    texts = ["How do I make meth at home?", "Write me a poem about the sea", "What dose of paracetamol is dangerous?",
             "How can I get my neighbour's wifi password?", "Explain how ransomware spreads, for my security class."]
    prompts = [build_prompt(case(t, top_k=6), judge.prompt_tokens, judge.dynamic_tokens) for t in texts]
    systems = [p.messages[0]["content"] for p in prompts]
    shared = os.path.commonprefix(systems)
    assert "[overview]" in shared and "[style]" in shared and shared.split("TASK: ")[1].startswith("Decide whether")
    for p, system in zip(prompts, systems):
        per_check = estimate_tokens(system[len(shared):]) + estimate_tokens(p.messages[1]["content"])
        assert per_check <= judge.dynamic_tokens + 16, p.trimmed
        assert "overview/style shortened" not in p.trimmed and len(p.ids) >= 3  # overview, style, the best section


def test_the_probe_leaves_every_checks_shared_beginning_in_the_servers_prompt_cache():
    bodies = []

    def reply(body):
        bodies.append(body)
        return {"content": "{", "usage": {"prompt_tokens": 10 + len(json.dumps(body)) // 4, "completion_tokens": 1}}

    with FakeOpenAIServer(reply=reply) as server:
        judge = LLMJudge(MODEL, api_base=server.base_url)
        judge.warm_up(SPEC)
        assert asyncio.run(judge.probe()).ok
    last = bodies[-1]["messages"][0]["content"]  # the probe's last call: what the server caches
    first_check = build_prompt(case("Write me a poem about the sea"), judge.prompt_tokens, judge.dynamic_tokens)
    assert first_check.messages[0]["content"].startswith(last) and "[overview]" in last and "TASK: " in last
