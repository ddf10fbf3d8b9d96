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

from guard import enforce
from guard.accounting import cost_of, usage_from_openai
from guard.cache import CacheTier, cache_key, make_cache
from guard.errors import JudgeError, JudgeTimeout
from guard.logs import get_logger
from guard.judges import Case, Deliberator, judge_settings, make_judge
from guard.metrics import GuardMetrics
from guard.policy import Spec, load_spec
from guard.retrieval import BM25Retriever, Retriever, query_text
from guard.settings import GuardSettings
from guard.fields import choice_texts, outgoing
from guard.types import (ChatRequest, Cost, Decision, GuardResult, Message, Stage, StageTiming, Usage, Verdict,
                         decisive, response_text)
from guard.upstream import Upstream

log = get_logger("guard")
_OFF_LOOP_CHARS = 16_000  # above this, hashing and retrieval go to a worker thread (a thread hop costs ~50 us)


class Guard:
    """Constructors do no I/O; ``Guard.create`` loads policies and builds the parts from settings."""

    def __init__(self, spec: Spec, judge: Deliberator, retriever: Retriever | None = None,
                 upstream: Upstream | None = None, settings: GuardSettings | None = None,
                 cache: CacheTier | None = None, metrics: GuardMetrics | None = None,
                 clock: Callable[[], float] = time.perf_counter):
        self.settings = settings or GuardSettings()
        self.spec, self.judge, self.upstream, self.clock = spec, judge, upstream, clock
        self.retriever = retriever or BM25Retriever(spec, top_k=self.settings.top_k,
                                                    budget_tokens=self.settings.retrieval_budget_tokens)
        self.metrics = metrics or GuardMetrics()
        self.cache = cache if cache is not None else make_cache(
            self.settings.cache_size, self.settings.cache_ttl_s, self.settings.cache_url, self.settings.cache_shared_size,
            on_error=lambda op, exc: self.metrics.child(self.metrics.cache_errors, op).inc())
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
        """One check, over a bounded amount of text (``max_check_chars``, see docs/security.md); the
        hashing and retrieval of a large text run on a worker thread, off the event loop."""
        t0 = self.clock()
        s = self.settings
        texts = [m.text() for m in messages]
        size = len(draft) if stage == "output" and draft is not None else sum(map(len, texts))
        if size > s.max_check_chars and s.oversize == "refuse":
            return self._oversize(stage, size, t0)
        if size > s.max_check_chars or sum(map(len, texts)) > s.max_check_chars:
            messages, draft = bounded(messages, draft, s.max_check_chars)
            texts = [m.text() for m in messages]
        big = max(size, sum(map(len, texts))) > _OFF_LOOP_CHARS
        key = await asyncio.to_thread(self._key, stage, messages, texts, draft) if big else \
            self._key(stage, messages, texts, draft)
        if self.cache is not None and (found := await self.cache.lookup(key)) is not None:
            hit, tier = found
            self.metrics.child(self.metrics.cache, "hit").inc()
            self.metrics.child(self.metrics.cache_hits, tier).inc()
            verdict = hit.model_copy(update={"cache_hit": True, "usage": Usage(), "cost": Cost(usd=0.0),
                                             "latency_ms": (self.clock() - t0) * 1000})
            self._count(verdict)
            return verdict
        if self.cache is not None:
            self.metrics.child(self.metrics.cache, "miss").inc()
        case = await asyncio.to_thread(self._case, stage, messages, draft) if big else self._case(stage, messages, draft)
        try:
            j = await self.judge.deliberate(case)
        except JudgeError as e:
            verdict = self._degraded(stage, e, case.retrieval.scores, t0)
        else:
            # a Verdict is the Judgment (every field of it) plus what only the pipeline knows
            verdict = Verdict(**dict(j), stage=stage, policy_version=self.spec.version,
                              retrieved=case.retrieval.scores, latency_ms=(self.clock() - t0) * 1000)
            if j.degraded:  # decided, but without the judge that should have: counted, never cached
                self.metrics.judge_failures.labels(self.judge.name, "escalation", "offline").inc()
            elif self.cache is not None:
                await self.cache.store(key, verdict)
        self._count(verdict)
        return verdict

    def _key(self, stage: Stage, messages: list[Message], texts: list[str], draft: str | None) -> str:
        return cache_key(self.spec.version, stage, self.judge.name,
                         [f"{m.role}:{t}" for m, t in zip(messages, texts)] + [draft or ""])

    def _case(self, stage: Stage, messages: list[Message], draft: str | None) -> Case:
        query = query_text(messages, draft)
        prompt = next((m.text() for m in reversed(messages) if m.role == "user"), "")
        return Case(stage=stage, messages=messages, query=query, retrieval=self.retriever.retrieve(query, stage),
                    spec=self.spec, draft=draft, prompt=prompt)

    async def check_output(self, messages: list[Message], drafts: list[str]) -> list[Verdict]:
        """The output stage: every choice judged on its own (``n > 1``), concurrently."""
        if len(drafts) == 1:
            return [await self.check_stage("output", messages, drafts[0])]
        return list(await asyncio.gather(*(self.check_stage("output", messages, d) for d in drafts)))

    def _oversize(self, stage: Stage, size: int, t0: float) -> Verdict:
        """Text the guard will not read is refused, never passed unread (``oversize: truncate`` reads head and tail)."""
        self.metrics.judge_failures.labels(self.judge.name, "oversize", self.settings.fail_mode).inc()
        reason = f"{size} characters to judge exceed max_check_chars={self.settings.max_check_chars}"
        v = Verdict(stage=stage, decision=Decision.refuse, rationale=f"Not judged: {reason}; oversize=refuse refuses it.",
                    confidence=1.0, judge="guard:size-limit", policy_version=self.spec.version, degraded=True,
                    degraded_reason=reason, latency_ms=(self.clock() - t0) * 1000)
        self._count(v)
        return v

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

    @property
    def shadow(self) -> bool:
        return self.settings.mode == "shadow"

    async def complete(self, request: ChatRequest | dict[str, Any], upstream: Upstream | None = None, *,
                       body: dict[str, Any] | None = None, request_id: str | None = None) -> GuardResult:
        """``body``: the request exactly as the client sent it, forwarded as is (the proxy passes it;
        otherwise it is rebuilt from ``request``). Streams go through ``guard.streaming.GuardedStream``,
        which runs these same stages (input_stage, the upstream, check_output, replacement, record)."""
        t0, rid = self.clock(), request_id or secrets.token_hex(8)
        req = request if isinstance(request, ChatRequest) else ChatRequest.model_validate(request)
        upstream = self.upstream_or(upstream)
        body = {k: v for k, v in (req.upstream_body() if body is None else body).items() if k != "stream"}
        verdicts: list[Verdict] = []
        timings: list[StageTiming] = []

        # input stage, with the upstream optionally already on its way
        call = asyncio.ensure_future(self._timed_call(upstream, body)) if self.settings.parallel_upstream else None
        try:
            v_in = await self.input_stage(req, verdicts, timings)
        except BaseException:
            if call is not None:
                call.cancel()
            raise
        if self.decided_at_input(v_in):
            if call is not None:
                call.cancel()
            return await self.decide_at_input(rid, t0, req, upstream, verdicts, timings)

        # upstream (errors propagate: the adapter maps them to its own error shape)
        response, upstream_ms = await (call if call is not None else self._timed_call(upstream, body))
        timings.append(StageTiming(stage="upstream", ms=upstream_ms))

        # output stage over every choice of the draft
        drafts = choice_texts(response, self.settings.unknown_fields)
        if "output" in self.settings.stages:
            verdicts += await self.check_output(req.messages, drafts)
            timings.append(StageTiming(stage="output", ms=max(v.latency_ms for v in verdicts if v.stage == "output")))
        final = decisive(verdicts)
        if final is None or final.decision is Decision.allow or self.shadow:  # the draft goes out (minus reasoning)
            out = outgoing(response, "message", forward_reasoning=self.settings.forward_reasoning,
                           unknown=self.settings.unknown_fields)
            return self.record(rid, t0, verdicts, final, response=response if out is None else out,
                               text="\n".join(d for d in drafts if d), upstream_called=True, upstream_response=response,
                               timings=timings, model=req.model)
        return self.record(rid, t0, verdicts, final, response=self.replacement(final, req, rid, response),
                           upstream_called=True, upstream_response=response, timings=timings, model=req.model)

    def upstream_or(self, upstream: Upstream | None) -> Upstream:
        upstream = upstream or self.upstream
        if upstream is None:
            raise ValueError("Guard.complete needs an upstream (pass one to Guard.create or to complete)")
        return upstream

    async def input_stage(self, req: ChatRequest, verdicts: list[Verdict], timings: list[StageTiming]) -> Verdict | None:
        if "input" not in self.settings.stages:
            return None
        v = await self.check_stage("input", req.messages)
        verdicts.append(v)
        timings.append(StageTiming(stage="input", ms=v.latency_ms))
        return v

    def decided_at_input(self, v: Verdict | None) -> bool:
        return v is not None and v.decision is not Decision.allow and not self.shadow

    async def decide_at_input(self, rid: str, t0: float, req: ChatRequest, upstream: Upstream,
                              verdicts: list[Verdict], timings: list[StageTiming]) -> GuardResult:
        """The input stage did not allow: a refusal, or a safe completion (the judge's, or the upstream's)."""
        v_in = verdicts[-1]
        if v_in.decision is Decision.safe_complete and self.settings.safe_complete_via == "upstream":
            return await self._safe_complete_upstream(rid, t0, req, upstream, verdicts, timings)
        self.metrics.upstream_skipped.inc()
        return self.record(rid, t0, verdicts, v_in, response=self.replacement(v_in, req, rid), upstream_called=False,
                           timings=timings, note="upstream not called: the input stage decided")

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
        outs = await self.check_output(req.messages, choice_texts(response, self.settings.unknown_fields))
        verdicts += outs
        timings.append(StageTiming(stage="output", ms=max(v.latency_ms for v in outs)))
        v_out = decisive(outs)
        if v_out.decision is Decision.refuse:
            response = self.replacement(v_out, req, rid, response)
        else:
            response = _with_guard(outgoing(response, "message", forward_reasoning=self.settings.forward_reasoning,
                                            unknown=self.settings.unknown_fields) or response, self.guard_info(v_in))
        return self.record(rid, t0, verdicts, v_in, response=response, upstream_called=True,
                            upstream_response=response, timings=timings, model=req.model,
                            note="safe completion written by the upstream with the cited sections as guidance")

    def replacement(self, verdict: Verdict, req: ChatRequest, rid: str, draft: dict | None = None) -> dict[str, Any]:
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


def _messages(messages: list[Message] | list[dict] | str) -> list[Message]:
    if isinstance(messages, str):
        return [Message(role="user", content=messages)]
    return [m if isinstance(m, Message) else Message.model_validate(m) for m in messages]


def bounded(messages: list[Message], draft: str | None, cap: int) -> tuple[list[Message], str | None]:
    """At most ``cap`` characters of draft, and of conversation (the newest turns first), each kept as
    its head and tail: what a check reads when ``oversize: truncate`` (and the context of an output check)."""
    if draft is not None and len(draft) > cap:
        draft = head_tail(draft, cap)
    texts = [m.text() for m in messages]
    if sum(map(len, texts)) <= cap:
        return messages, draft
    kept: list[Message] = []
    budget = cap
    for m, text in zip(reversed(messages), reversed(texts)):
        if budget <= 0:
            break
        kept.append(m if len(text) <= budget else Message(role=m.role, content=head_tail(text, budget)))
        budget -= len(text)
    return kept[::-1], draft


def head_tail(text: str, n: int) -> str:
    if len(text) <= n:
        return text
    half = max(1, n // 2)
    return text[:half] + "\n[...]\n" + text[-half:]


def _with_guard(response: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    return {**response, "guard": info}
