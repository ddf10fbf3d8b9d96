"""The judge contract: a Case in, a Judgment out (DESIGN §4).

A judge sees only the retrieved sections, cites the ones that decided, and says how sure it
is. Judges raise JudgeError when they cannot decide; the pipeline turns that into a degraded
verdict according to ``fail_mode``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from guard.policy import Spec
from guard.retrieval import Retrieval
from guard.types import Cost, Decision, Message, Stage, Usage


@dataclass(frozen=True)
class Case:
    """Everything a judge may look at for one stage of one request."""

    stage: Stage
    messages: list[Message]
    query: str  # the text retrieval ranked on: recent user turns (+ the draft at the output stage)
    retrieval: Retrieval
    spec: Spec
    draft: str | None = None  # the upstream's response, at the output stage
    prompt: str = field(default="")  # the latest user turn (what the draft answers)


class Judgment(BaseModel):
    """A judge's answer; the pipeline adds retrieval, timing and versioning to make a Verdict."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    decision: Decision
    sections: tuple[str, ...] = ()
    precedents: tuple[str, ...] = ()
    rationale: str
    confidence: float = Field(ge=0.0, le=1.0)
    rewrite: str | None = None
    usage: Usage = Usage()
    cost: Cost = Cost(usd=0.0)
    judge: str  # which judge actually decided (the cascade reports the one whose verdict won)
    escalated: bool = False


class Deliberator(Protocol):
    """One abstract method. ``name`` identifies the judge in verdicts and cache keys."""

    name: str

    async def deliberate(self, case: Case) -> Judgment: ...
