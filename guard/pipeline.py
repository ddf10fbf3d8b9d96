"""The Guard: the one place that knows the order of the stages.

    input stage   retrieve the sections for the conversation -> deliberate -> Verdict
    upstream      the guarded model (optionally started during the input stage)
    output stage  retrieve for (conversation, draft) -> deliberate -> Verdict
    enforce       allow | refuse | safe_complete, in the spec's style

Adapters (CLI, decorator, HTTP proxy) translate to and from this; none of them decides.
"""

from __future__ import annotations

import asyncio
import time
import secrets
from collections.abc import Callable
from typing import Any

import structlog

from guard import enforce
from guard.accounting import cost_of, usage_from_openai
from guard.cache import VerdictCache, cache_key
from guard.errors import JudgeError, JudgeTimeout
from guard.judges import Case, Deliberator, judge_settings, make_judge
from guard.metrics import GuardMetrics
from guard.policy import Spec, load_spec
from guard.retrieval import BM25Retriever, Retriever, query_text
from guard.settings import GuardSettings
from guard.types import (ChatRequest, Cost, Decision, GuardResult, Message, Stage, StageTiming, Usage, Verdict,
                         decisive, response_text)
from guard.upstream import Upstream

log = structlog.get_logger("guard")


class Guard:
    """Constructors do no I/O; ``Guard.create`` loads policies and builds the parts from settings."""

    def __init__(self, spec: Spec, judge: Deliberator, retriever: Retriever | None = None,
                 upstream: Upstream | None = None, settings: GuardSettings | None = None,
                 cache: VerdictCache | None = None, metrics: GuardMetrics | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.settings = settings or GuardSettings()
        self.spec, self.judge, self.upstream, self.clock = spec, judge, upstream, clock
        self.retriever = retriever or BM25Retriever(spec, top_k=self.settings.top_k,
                                                    budget_tokens=self.settings.retrieval_budget_tokens)
        self.cache = cache if cache is not None else (
            VerdictCache(self.settings.cache_size, self.settings.cache_ttl_s) if self.settings.cache_size else None)
        self.metrics = metrics or GuardMetrics()
        self.log_results = True  # one guard_request_done event per result; the server logs its own, merged

    @classmethod
    def create(cls, settings: GuardSettings | None = None, *, upstream: Upstream | None = None,
               judge: Deliberator | None = None, **kwargs: Any) -> Guard:
        s = settings or GuardSettings()
        spec = load_spec(s.policies or None)
        if judge is None:
            judge = make_judge(s.judge, **judge_settings(s))
        return cls(spec, judge, upstream=upstream, settings=s, **kwargs)

    # ------------------------------------------------------------------ one stage

    async def check_stage(self, stage: Stage, messages: list[Message], draft: str | None = None) -> Verdict:
        t0 = self.clock()
        key = cache_key(self.spec.version, stage, self.judge.name, [f"{m.role}:{m.text()}" for m in messages] + [draft or ""])
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.metrics.child(self.metrics.cache, "hit").inc()
            verdict = hit.model_copy(update={"cache_hit": True, "usage": Usage(), "cost": Cost(usd=0.0),
                                             "latency_ms": (self.clock() - t0) * 1000})
            self._count(verdict)
            return verdict
        if self.cache is not None:
            self.metrics.child(self.metrics.cache, "miss").inc()

        query = query_text(messages, draft)
        retrieval = self.retriever.retrieve(query, stage)
        prompt = next((m.text() for m in reversed(messages) if m.role == "user"), "")
        case = Case(stage=stage, messages=messages, query=query, retrieval=retrieval, spec=self.spec,
                    draft=draft, prompt=prompt)
        try:
            j = await self.judge.deliberate(case)
        except JudgeError as e:
            verdict = self._degraded(stage, e, retrieval.scores, t0)
        else:
            verdict = Verdict(stage=stage, decision=j.decision, sections=j.sections, precedents=j.precedents,
                              rationale=j.rationale, confidence=j.confidence, rewrite=j.rewrite, judge=j.judge,
                              policy_version=self.spec.version, retrieved=retrieval.scores, escalated=j.escalated,
                              latency_ms=(self.clock() - t0) * 1000, usage=j.usage, cost=j.cost, degraded=j.degraded,
                              degraded_reason=j.degraded_reason, structured_output=j.structured_output)
            if j.degraded:  # decided, but without the judge that should have: counted, never cached
                self.metrics.judge_failures.labels(self.judge.name, "escalation", "offline").inc()
            elif self.cache is not None:
                self.cache.put(key, verdict)
        self._count(verdict)
        return verdict

    def _degraded(self, stage: Stage, error: JudgeError, retrieved, t0: float) -> Verdict:
        """A judge that failed decides nothing: ``fail_mode`` does, and the verdict says so."""
        closed = self.settings.fail_mode == "closed"
        reason = "timeout" if isinstance(error, JudgeTimeout) else "error"
        self.metrics.judge_failures.labels(self.judge.name, reason, self.settings.fail_mode).inc()
        log.warning("guard_judge_failed", stage=stage, judge=self.judge.name, reason=reason, error=str(error),
                    fail_mode=self.settings.fail_mode)
        return Verdict(stage=stage, decision=Decision.refuse if closed else Decision.allow, rationale=(
            f"Judge failed ({error}); fail_mode={self.settings.fail_mode} "
            f"{'refuses' if closed else 'allows'} without a judgment."), confidence=0.0, judge=self.judge.name,
            policy_version=self.spec.version, retrieved=retrieved, degraded=True, degraded_reason=str(error),
            latency_ms=(self.clock() - t0) * 1000, usage=error.usage or Usage(),
            cost=error.cost or Cost(usd=None, reason="judge failed"))

    def _count(self, v: Verdict) -> None:
        m, c, judge = self.metrics, self.metrics.child, self.judge.name
        c(m.decisions, v.stage, v.decision.value, self.spec.version).inc()
        c(m.stage_latency, v.stage).observe(v.latency_ms)
        if v.escalated:
            m.escalations.inc()
        if not v.cache_hit:
            c(m.judge_tokens, judge, "prompt").inc(v.usage.prompt_tokens)
            c(m.judge_tokens, judge, "completion").inc(v.usage.completion_tokens)
            c(m.judge_tokens, judge, "reasoning").inc(v.usage.reasoning_tokens or 0)
            if v.cost.usd is None:
                c(m.judge_cost_unknown, judge).inc()
            else:
                c(m.judge_cost, judge).inc(v.cost.usd)

    # ------------------------------------------------------------------ check only

    async def check(self, messages: list[Message] | list[dict], response: str | None = None, *,
                    request_id: str | None = None) -> GuardResult:
        """Judge a conversation (and, given one, a response to it) without calling any model."""
        t0, rid = self.clock(), request_id or secrets.token_hex(8)
        msgs = _messages(messages)
        verdicts = [await self.check_stage("input", msgs)]
        if response is not None:
            verdicts.append(await self.check_stage("output", msgs, response))
        final = decisive(verdicts)
        text = enforce.replacement_text(self.spec, final) if final.decision is not Decision.allow else response
        return self.record(rid, t0, verdicts, final, response=None, text=text, upstream_called=False)

    # ------------------------------------------------------------------ the full pipeline

    async def complete(self, request: ChatRequest | dict[str, Any], upstream: Upstream | None = None, *,
                       body: dict[str, Any] | None = None, request_id: str | None = None) -> GuardResult:
        """``body``: the request exactly as the client sent it, forwarded as is (the proxy passes it;
        otherwise it is rebuilt from ``request``)."""
        t0, rid = self.clock(), request_id or secrets.token_hex(8)
        req = request if isinstance(request, ChatRequest) else ChatRequest.model_validate(request)
        upstream = upstream or self.upstream
        if upstream is None:
            raise ValueError("Guard.complete needs an upstream (pass one to Guard.create or to complete)")
        if body is None:
            body = req.upstream_body()
        if "stream" in body:  # this call is not streamed (GuardedStream handles streams)
            body = {k: v for k, v in body.items() if k != "stream"}
        shadow = self.settings.mode == "shadow"
        verdicts: list[Verdict] = []
        timings: list[StageTiming] = []

        # input stage, with the upstream optionally already on its way
        call = asyncio.ensure_future(self._timed_call(upstream, body)) if self.settings.parallel_upstream else None
        if "input" in self.settings.stages:
            verdicts.append(v_in := await self.check_stage("input", req.messages))
            timings.append(StageTiming(stage="input", ms=v_in.latency_ms))
            if v_in.decision is not Decision.allow and not shadow:
                if call is not None:
                    call.cancel()
                if v_in.decision is Decision.safe_complete and self.settings.safe_complete_via == "upstream":
                    return await self._safe_complete_upstream(rid, t0, req, upstream, verdicts, timings)
                self.metrics.upstream_skipped.inc()
                return self.record(rid, t0, verdicts, v_in, response=self._replacement(v_in, req, rid),
                                    upstream_called=False, timings=timings,
                                    note="upstream not called: the input stage decided")

        # upstream (errors propagate: the adapter maps them to its own error shape)
        response, upstream_ms = await (call if call is not None else self._timed_call(upstream, body))
        timings.append(StageTiming(stage="upstream", ms=upstream_ms))

        # output stage over the draft
        draft = response_text(response)
        if "output" in self.settings.stages:
            verdicts.append(v_out := await self.check_stage("output", req.messages, draft))
            timings.append(StageTiming(stage="output", ms=v_out.latency_ms))
        final = decisive(verdicts)
        if final is None or final.decision is Decision.allow or shadow:  # the draft goes out as it is
            return self.record(rid, t0, verdicts, final, response=response, text=draft, upstream_called=True,
                               upstream_response=response, timings=timings, model=req.model)
        return self.record(rid, t0, verdicts, final, response=self._replacement(final, req, rid, response),
                           upstream_called=True, upstream_response=response, timings=timings, model=req.model)

    async def _timed_call(self, upstream: Upstream, body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        t = self.clock()
        response = await upstream.complete(body)
        return response, (self.clock() - t) * 1000

    async def _safe_complete_upstream(self, rid, t0, req: ChatRequest, upstream: Upstream, verdicts, timings) -> GuardResult:
        """Re-ask the upstream with the cited sections as guidance; its answer is checked like any draft."""
        v_in = verdicts[-1]
        body = req.upstream_body()
        body.pop("stream", None)
        body["messages"] = [{"role": "system", "content": enforce.guidance(self.spec, v_in)}] + body["messages"]
        response, ms = await self._timed_call(upstream, body)
        timings.append(StageTiming(stage="upstream", ms=ms))
        v_out = await self.check_stage("output", req.messages, response_text(response))
        verdicts.append(v_out)
        timings.append(StageTiming(stage="output", ms=v_out.latency_ms))
        if v_out.decision is Decision.refuse:
            response = self._replacement(v_out, req, rid, response)
        else:
            response = _with_guard(response, self.guard_info(v_in))
        return self.record(rid, t0, verdicts, v_in, response=response, upstream_called=True,
                            upstream_response=response, timings=timings, model=req.model,
                            note="safe completion written by the upstream with the cited sections as guidance")

    def _replacement(self, verdict: Verdict, req: ChatRequest, rid: str, draft: dict | None = None) -> dict[str, Any]:
        text = enforce.replacement_text(self.spec, verdict)
        finish = "content_filter" if verdict.decision is Decision.refuse else "stop"
        model = (draft or {}).get("model") or req.model
        return _with_guard(enforce.completion(text, model, rid, finish, (draft or {}).get("usage")), self.guard_info(verdict))

    def guard_info(self, v: Verdict) -> dict[str, Any]:
        return {"decision": v.decision.value, "stage": v.stage, "sections": list(v.sections),
                "rationale": v.rationale, "policy_version": v.policy_version, "degraded": v.degraded}

    # ------------------------------------------------------------------ the record

    def record(self, rid: str, t0: float, verdicts: list[Verdict], final: Verdict | None, *,
               response: dict[str, Any] | None, upstream_called: bool, text: str | None = None,
               upstream_response: dict[str, Any] | None = None, timings: list[StageTiming] | None = None,
               model: str | None = None, note: str | None = None) -> GuardResult:
        """The GuardResult of one request (and its log event): ``final`` is the verdict that decided."""
        judge_usage, judge_cost = Usage(), Cost(usd=0.0)
        for v in verdicts:
            judge_usage, judge_cost = judge_usage + v.usage, Cost.add(judge_cost, v.cost)
        up_usage = usage_from_openai(upstream_response) if upstream_response else None
        up_model = (upstream_response or {}).get("model") or model
        up_cost = (cost_of(up_model, up_usage, self.settings.prices) if up_usage else
                   Cost(usd=None, reason="upstream reported no usage")) if upstream_called else None
        decision = final.decision if final else Decision.allow
        if text is None and response is not None:
            text = response_text(response)
        result = GuardResult(
            request_id=rid, mode=self.settings.mode, decision=decision,
            enforced=decision is not Decision.allow and self.settings.mode == "enforce",
            response=response, text=text, verdicts=tuple(verdicts),
            sections=final.sections if final else (), policy_version=self.spec.version,
            upstream_called=upstream_called, upstream_usage=up_usage, upstream_cost=up_cost,
            judge_usage=judge_usage, judge_cost=judge_cost, timings=tuple(timings or ()),
            latency_ms=(self.clock() - t0) * 1000, cache_hit=bool(verdicts) and all(v.cache_hit for v in verdicts),
            degraded=any(v.degraded for v in verdicts), note=note)
        if self.log_results:
            event = result.summary()
            if self.settings.log_content:
                event["text"] = text
            log.info("guard_request_done", **event)
        return result

    # ------------------------------------------------------------------ sync conveniences

    def check_sync(self, messages, response: str | None = None) -> GuardResult:
        return asyncio.run(self.check(messages, response))

    def complete_sync(self, request, upstream: Upstream | None = None) -> GuardResult:
        return asyncio.run(self.complete(request, upstream))


def _messages(messages: list[Message] | list[dict] | str) -> list[Message]:
    if isinstance(messages, str):
        return [Message(role="user", content=messages)]
    return [m if isinstance(m, Message) else Message.model_validate(m) for m in messages]


def _with_guard(response: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    return {**response, "guard": info}
