"""The cascade: the offline judge decides the confident cases; the uncertain ones go to the
reasoning judge, whose verdict wins. Cost is paid only where it buys a better decision."""

from __future__ import annotations

from guard.judges.base import Case, Deliberator, Judgment
from guard.types import Cost


class CascadeJudge:
    def __init__(self, first: Deliberator, second: Deliberator, escalate_below: float = 0.8):
        self.first, self.second, self.escalate_below = first, second, escalate_below
        self.name = f"cascade:{first.name}>{second.name}@{escalate_below:g}"

    async def deliberate(self, case: Case) -> Judgment:
        first = await self.first.deliberate(case)
        if first.confidence >= self.escalate_below:
            return first
        second = await self.second.deliberate(case)
        return second.model_copy(update={
            "escalated": True,
            "usage": first.usage + second.usage,
            "cost": Cost.add(first.cost, second.cost),
            "rationale": f"{second.rationale} (escalated: offline confidence {first.confidence:.2f} "
                         f"< {self.escalate_below:g}; offline said {first.decision.value})",
        })
