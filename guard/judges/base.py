"""The judge contract: a Case in, a Judgment out (docs/judges.md).

A judge sees only the retrieved sections, cites the ones that decided, and says how sure it
is. Judges raise JudgeError when they cannot decide; the pipeline turns that into a degraded
verdict according to ``fail_mode``. A judge that decided with less than it should have (the
cascade when its escalation failed) says so in ``degraded``.

``Judge`` is the one protocol: ``name`` and ``deliberate`` are required; ``warm_up(spec)``,
``probe()`` and ``fitted_on`` are optional, and callers look them up with ``getattr``. Third-party
judges register under the ``guard.judges`` entry point group (see guard.judges.make_judge).
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
    degraded: bool = False  # decided without the judge that should have (an escalation that failed)
    degraded_reason: str | None = None
    structured_output: str | None = None  # how the answer's schema was enforced (guard.judges.structured)


class Judge(Protocol):
    """One abstract method. ``name`` identifies the judge in verdicts and cache keys."""

    name: str

    async def deliberate(self, case: Case) -> Judgment: ...


Deliberator = Judge  # the earlier name


class ProbeResult(BaseModel):
    """What a judge found when it checked itself at start (``await judge.probe()``)."""

    model_config = ConfigDict(frozen=True)

    ok: bool
    judge: str
    detail: str  # one line: what works, or what is wrong and how to fix it
    structured_output: str | None = None
    latency_ms: float = 0.0
    usage: Usage = Usage()
    still_decides: bool = False  # not ok, but the judge decides without the failing part (a cascade: offline)
