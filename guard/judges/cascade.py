"""The cascade: the offline judge decides the confident cases; the uncertain ones go to the
reasoning judge, whose verdict wins. Cost is paid only where it buys a better decision.

When the escalation fails (unreachable, timed out, unusable answer), the offline verdict stands,
marked degraded, with the tokens the failed call spent: an unreliable LLM judge never makes the
guard worse than the offline judge alone. ``on_escalation_failure="fail_mode"`` makes the failure
a judge failure instead, decided by ``fail_mode`` like any other.
"""

from __future__ import annotations

from typing import Literal

from guard.errors import JudgeError
from guard.judges.base import Case, Judge, Judgment, ProbeResult
from guard.types import Cost, Usage


class CascadeJudge:
    def __init__(self, first: Judge, second: Judge, escalate_below: float = 0.8,
                 on_escalation_failure: Literal["offline", "fail_mode"] = "offline"):
        self.first, self.second, self.escalate_below = first, second, escalate_below
        self.on_escalation_failure = on_escalation_failure
        self.name = f"cascade:{first.name}>{second.name}@{escalate_below:g}"

    async def deliberate(self, case: Case) -> Judgment:
        first = await self.first.deliberate(case)
        if first.confidence >= self.escalate_below:
            return first
        try:
            second = await self.second.deliberate(case)
        except JudgeError as e:
            if self.on_escalation_failure != "offline":
                raise
            usage, cost = e.usage or Usage(), e.cost or Cost(usd=None, reason="escalation failed")
            return first.model_copy(update={
                "escalated": True, "degraded": True, "degraded_reason": f"escalation failed: {e}",
                "usage": first.usage + usage, "cost": Cost.add(first.cost, cost),
                "rationale": f"{first.rationale} (escalation failed, the offline verdict stands: {e})"})
        return second.model_copy(update={
            "escalated": True,
            "usage": first.usage + second.usage,
            "cost": Cost.add(first.cost, second.cost),
            "rationale": f"{second.rationale} (escalated: offline confidence {first.confidence:.2f} "
                         f"< {self.escalate_below:g}; offline said {first.decision.value})",
        })

    # ------------------------------------------------------------------ optional parts, forwarded

    def warm_up(self, spec) -> None:
        for judge in (self.first, self.second):
            fn = getattr(judge, "warm_up", None)
            if callable(fn):
                fn(spec)

    async def probe(self) -> ProbeResult:
        fn = getattr(self.second, "probe", None)
        if fn is None:
            return ProbeResult(ok=True, judge=self.name, detail=f"{self.second.name} has nothing to probe")
        result = await fn()
        return result.model_copy(update={"judge": self.name, "still_decides": self.on_escalation_failure == "offline"})

    @property
    def fitted_on(self):
        return getattr(self.first, "fitted_on", None) or getattr(self.second, "fitted_on", None)
