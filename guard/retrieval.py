"""Pick the spec sections that matter for a conversation, under a token budget.

BM25 over each rule section (title, definition and examples) is the embedded default: it
indexes a spec in milliseconds and needs no model. Overview and style sections are always
included. Retrieval is a quality feature as much as a cost one: reasoning judges decide
better over a few focused sections than over a whole spec (DESIGN §1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from guard.policy import Spec
from guard.text import tokens
from guard.types import Message, PolicySection, Retrieved, Stage


@dataclass(frozen=True)
class Retrieval:
    """The sections chosen for one check: the always-on ones, then rules by score."""

    always: tuple[PolicySection, ...]
    rules: tuple[PolicySection, ...]
    scores: tuple[Retrieved, ...]  # for the chosen rules, best first

    @property
    def sections(self) -> tuple[PolicySection, ...]:
        return self.always + self.rules

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(s.id for s in self.sections)


class Retriever(Protocol):
    def retrieve(self, query: str, stage: Stage) -> Retrieval: ...


def query_text(messages: list[Message], draft: str | None = None, user_turns: int = 2) -> str:
    """What retrieval and judging look at: the latest user turns, plus the draft response."""
    users = [m.text() for m in messages if m.role == "user"][-user_turns:]
    if not users:  # a conversation with no user turn is judged on whatever it has
        users = [messages[-1].text()] if messages else []
    parts = users + ([draft] if draft else [])
    return "\n".join(p for p in parts if p)


class BM25Retriever:
    """Rank rule sections with BM25 (bm25s); keep the top ones that fit ``budget_tokens``."""

    name = "bm25"

    def __init__(self, spec: Spec, top_k: int = 4, budget_tokens: int = 2000, min_score: float = 0.0):
        import bm25s  # numpy/scipy: imported here so `import guard` stays light

        self.spec, self.top_k, self.budget_tokens, self.min_score = spec, top_k, budget_tokens, min_score
        self._rules = spec.rules
        self._index = bm25s.BM25()
        corpus = [tokens(f"{s.title} {s.title} {s.render()}") or ["_"] for s in self._rules]
        self._index.index(corpus, show_progress=False)

    def scores(self, query: str, stage: Stage) -> list[tuple[PolicySection, float]]:
        q = tokens(query)
        raw = self._index.get_scores(q) if q else [0.0] * len(self._rules)
        ranked = [(s, float(x)) for s, x in zip(self._rules, raw) if s.stage in (stage, "both")]
        # ties broken by spec order: deterministic
        return sorted(ranked, key=lambda p: -p[1])

    def retrieve(self, query: str, stage: Stage) -> Retrieval:
        always = tuple(s for s in self.spec.always)
        budget = self.budget_tokens - sum(s.tokens for s in always)
        chosen: list[tuple[PolicySection, float]] = []
        for section, score in self.scores(query, stage):
            if len(chosen) >= self.top_k or score <= self.min_score:
                break
            if section.tokens > budget and chosen:
                continue
            chosen.append((section, score))
            budget -= section.tokens
        return Retrieval(always=always, rules=tuple(s for s, _ in chosen),
                         scores=tuple(Retrieved(id=s.id, score=round(x, 4)) for s, x in chosen))


class StaticRetriever:
    """Always returns the same sections (for tests and for tiny specs)."""

    name = "static"

    def __init__(self, spec: Spec, ids: list[str] | None = None):
        self.spec = spec
        self._rules = tuple(s for s in spec.rules if ids is None or s.id in ids)

    def retrieve(self, query: str, stage: Stage) -> Retrieval:
        return Retrieval(always=tuple(self.spec.always), rules=self._rules,
                         scores=tuple(Retrieved(id=s.id, score=1.0) for s in self._rules))
