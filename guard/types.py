"""The data the guard works on, as pydantic models.

Internal records are frozen and forbid unknown fields; the OpenAI-shaped request and
response keep unknown fields (``extra="allow"``) so that tools, response_format, seed and
everything else the guard does not use pass through untouched.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Decision(str, Enum):
    allow = "allow"
    refuse = "refuse"
    safe_complete = "safe_complete"


Stage = Literal["input", "output"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- OpenAI shapes


class Message(BaseModel):
    """One chat message. ``content`` may be a string, a list of parts, or None (tool calls)."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """Everything in the message a judge should read (guard.fields: content, tool and function
        calls, refusal, reasoning, and any unknown field that holds text)."""
        extra = self.model_extra
        if not extra and isinstance(self.content, str):  # the common case, without building a dict
            return self.content
        from guard.fields import message_text

        return message_text({"content": self.content, **(extra or {})})


class ChatRequest(BaseModel):
    """An OpenAI chat-completions request; unknown fields are kept and forwarded."""

    model_config = ConfigDict(extra="allow")

    messages: list[Message] = Field(min_length=1)
    model: str | None = None
    stream: bool | None = False  # clients send ``"stream": null``: not streamed

    @property
    def streamed(self) -> bool:
        return bool(self.stream)

    def upstream_body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={"stream"} if not self.stream else set())


def response_text(response: dict[str, Any]) -> str:
    """The judged text of an OpenAI chat.completion, all choices (guard.fields.choice_texts per choice)."""
    from guard.fields import choice_texts

    return "\n".join(t for t in choice_texts(response) if t)


# --------------------------------------------------------------------------- the spec


class Example(_Frozen):
    """A labelled boundary case in a section: the judge's precedent, cited as ``section#n``."""

    id: str
    decision: Decision
    text: str
    response: str | None = None  # output-stage precedents: PROMPT => RESPONSE
    line: int


class PolicySection(_Frozen):
    id: str
    policy: str
    title: str
    kind: Literal["rule", "overview", "style"] = "rule"
    decision: Decision | None = None
    priority: int = 0
    stage: Literal["input", "output", "both"] = "both"
    refusal: str | None = None
    safe_reply: str | None = None
    body: str
    precedence: str = ""
    safe_completion: str = ""
    examples: tuple[Example, ...] = ()
    source: str
    line: int

    @property
    def tokens(self) -> int:
        return approx_tokens(self.render())

    def render(self, with_examples: bool = True) -> str:
        """The section as the judge sees it."""
        head = f"[{self.id}] {self.title}"
        if self.decision:
            head += f" (decision: {self.decision.value}, priority {self.priority})"
        out = [head, self.body.strip()]
        if self.precedence:
            out.append("Precedence: " + self.precedence.strip())
        if self.safe_completion:
            out.append("Safe completion: " + self.safe_completion.strip())
        if with_examples and self.examples:
            out.append("Examples:")
            for ex in self.examples:
                text = ex.text if ex.response is None else f"{ex.text} => {ex.response}"
                out.append(f"  ({ex.id}) {ex.decision.value}: {text}")
        return "\n".join(s for s in out if s)


def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate (about 4 characters per token for English)."""
    return max(1, (len(text) + 3) // 4)


# --------------------------------------------------------------------------- verdicts


class Usage(_Frozen):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int | None = None  # None: the provider did not report it

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        r = None if self.reasoning_tokens is None and other.reasoning_tokens is None else (self.reasoning_tokens or 0) + (other.reasoning_tokens or 0)
        return Usage(prompt_tokens=self.prompt_tokens + other.prompt_tokens,
                     completion_tokens=self.completion_tokens + other.completion_tokens, reasoning_tokens=r)


class Cost(_Frozen):
    """Money spent; ``usd`` is None only together with a ``reason``."""

    usd: float | None
    reason: str | None = None

    @staticmethod
    def add(a: Cost, b: Cost) -> Cost:
        if a.usd is None or b.usd is None:
            return Cost(usd=None, reason=a.reason or b.reason)
        return Cost(usd=a.usd + b.usd)


class Retrieved(_Frozen):
    id: str
    score: float


class Verdict(_Frozen):
    """One stage's decision, with everything needed to explain and bill it."""

    stage: Stage
    decision: Decision
    sections: tuple[str, ...] = ()
    precedents: tuple[str, ...] = ()
    rationale: str
    confidence: float = Field(ge=0.0, le=1.0)
    rewrite: str | None = None
    judge: str
    policy_version: str
    retrieved: tuple[Retrieved, ...] = ()
    degraded: bool = False
    degraded_reason: str | None = None
    escalated: bool = False
    structured_output: str | None = None  # LLM judges: how the answer's schema was enforced
    cache_hit: bool = False
    latency_ms: float = 0.0
    usage: Usage = Usage()
    cost: Cost = Cost(usd=0.0)


_RANK = {Decision.allow: 0, Decision.safe_complete: 1, Decision.refuse: 2}


def decisive(verdicts) -> Verdict | None:
    """The verdict that sets the outcome: a refusal beats a safe completion beats an allow."""
    return max(verdicts, key=lambda v: _RANK[v.decision], default=None)


class StageTiming(_Frozen):
    stage: str
    ms: float


class GuardResult(_Frozen):
    """What the pipeline did with one request: the response the caller gets, and why."""

    request_id: str
    mode: Literal["enforce", "shadow"]
    decision: Decision  # the final decision (in shadow mode: what enforce would have done)
    enforced: bool  # False when allowed, or in shadow mode
    response: dict[str, Any] | None  # OpenAI chat.completion returned to the caller (None for check-only)
    text: str | None  # its message text
    verdicts: tuple[Verdict, ...]
    sections: tuple[str, ...]
    policy_version: str
    upstream_called: bool
    upstream_usage: Usage | None = None
    upstream_cost: Cost | None = None
    judge_usage: Usage = Usage()
    judge_cost: Cost = Cost(usd=0.0)
    timings: tuple[StageTiming, ...] = ()
    latency_ms: float
    cache_hit: bool = False
    degraded: bool = False
    note: str | None = None  # e.g. "upstream not called: input refused"

    @property
    def guard_ms(self) -> float:
        """The guard's own time: its checks, without the upstream call (``latency_ms`` includes that)."""
        return sum(v.latency_ms for v in self.verdicts)

    @property
    def refused(self) -> bool:
        return self.decision is not Decision.allow

    def summary(self) -> dict[str, Any]:
        """The fields of the one-per-request log event (no message content)."""
        return {
            "request_id": self.request_id, "mode": self.mode, "decision": self.decision.value,
            "enforced": self.enforced, "sections": list(self.sections), "policy_version": self.policy_version,
            "timings_ms": {t.stage: round(t.ms, 3) for t in self.timings}, "latency_ms": round(self.latency_ms, 3),
            "guard_ms": round(self.guard_ms, 3), "judge_tokens": self.judge_usage.total_tokens, "judge_cost_usd": self.judge_cost.usd,
            "upstream_called": self.upstream_called, "cache_hit": self.cache_hit, "degraded": self.degraded,
        }
