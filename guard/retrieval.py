"""Pick the spec sections that matter for a conversation, under a token budget.

BM25 over each rule section (title, definition and examples) is the embedded default: it
indexes a spec in milliseconds and needs no model. Overview and style sections are always
included. Retrieval is a quality feature as much as a cost one: reasoning judges decide
better over a few focused sections than over a whole spec.
"""

from __future__ import annotations

import re
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


_SCOPE = re.compile(r"\b(?:off[- ]topic|on[- ]topic|stay on|unrelated to|outside (?:the|its|our|this|that|of)|"
                    r"out of scope|only (?:help|answer|discuss|talk)|not (?:related|about) (?:to )?)", re.I)


def is_scope_section(s: PolicySection) -> bool:
    """A "stay on topic" rule: it forbids everything outside what the policy is for, so it applies to
    every request (retrieval always includes it; the offline judge scores distance from the scope)."""
    return s.kind == "rule" and s.decision is not None and s.decision.value != "allow" and \
        bool(_SCOPE.search(f"{s.title}\n{s.body}"))


class Retriever(Protocol):
    def retrieve(self, query: str, stage: Stage) -> Retrieval: ...


def query_text(messages: list[Message], draft: str | None = None, user_turns: int = 2, max_chars: int = 20000) -> str:
    """What retrieval ranks on: the latest user turns, every other non-assistant message after the first
    of them (system, developer, tool text can carry the request too), plus the draft response."""
    users = [i for i, m in enumerate(messages) if m.role == "user"][-user_turns:]
    if users:
        start = users[0]
        parts = [m.text() for m in messages[:start] if m.role in ("system", "developer")]
        parts += [m.text() for m in messages[start:] if m.role != "assistant"]
    else:  # a conversation with no user turn is judged on whatever it has
        parts = [m.text() for m in messages]
    parts += [draft] if draft else []
    text = "\n".join(p for p in parts if p)
    return text if len(text) <= max_chars else text[: max_chars // 2] + "\n" + text[-max_chars // 2:]


class BM25Retriever:
    """Rank rule sections with BM25 (bm25s); keep the top ones that fit ``budget_tokens``.

    A long query is scored window by window (60 words, 40 apart) and each section keeps its best
    window's score, so benign padding cannot push the sections a request needs out of the top.
    When the process already holds the shared embedder (the offline judge's), the ``dense`` sections
    closest in meaning to the query's first and last windows and its two most unusual ones (their prose or examples) join the
    BM25 ones: words an operator's section does not use ("ETF" for "investments") still reach it.
    The embedder is never loaded for retrieval alone. "Stay on topic" sections are always included:
    what they forbid is everything else."""

    name = "bm25"

    def __init__(self, spec: Spec, top_k: int = 4, budget_tokens: int = 2000, min_score: float = 0.0, dense: int = 3):
        import bm25s  # numpy/scipy: imported here so `import guard` stays light

        self.spec, self.top_k, self.budget_tokens, self.min_score = spec, top_k, budget_tokens, min_score
        self.dense = dense
        self._rules = spec.rules
        self._index = bm25s.BM25()
        corpus = [tokens(f"{s.title} {s.title} {s.render()}") or ["_"] for s in self._rules]
        self._index.index(corpus, show_progress=False)
        self._dense_index = None
        self._scope = [s for s in self._rules if is_scope_section(s)]

    def scores(self, query: str, stage: Stage) -> list[tuple[PolicySection, float]]:
        from guard.segments import windows

        best = [0.0] * len(self._rules)
        for part in windows(query) or [query]:
            q = tokens(part)
            if not q:
                continue
            for i, x in enumerate(self._index.get_scores(q)):
                best[i] = max(best[i], float(x))
        ranked = [(s, x) for s, x in zip(self._rules, best) if s.stage in (stage, "both")]
        # ties broken by spec order: deterministic
        return sorted(ranked, key=lambda p: -p[1])

    def dense_scores(self, query: str, stage: Stage) -> list[tuple[PolicySection, float]]:
        """Sections by the similarity of their prose or nearest example to the query's end windows;
        empty unless the shared embedder is already loaded."""
        from guard import embedding
        from guard.segments import windows

        emb = embedding._shared
        if not self.dense or emb is None or emb._session is None or not self._rules:
            return []
        if self._dense_index is None:
            texts, owner = [], []
            for i, s in enumerate(self._rules):
                for t in [f"{s.title}. {s.body}"] + [ex.text for ex in s.examples if ex.response is None]:
                    texts.append(t), owner.append(i)
            self._dense_index = (emb.embed(texts), owner)
        vecs, owner = self._dense_index
        from guard.segments import novelty

        parts = windows(query) or [query]
        if len(parts) > 2:  # the ends, and the two pieces least like the rest (a request hidden in padding)
            nov = novelty(parts)
            parts = [parts[0], parts[-1]] + [parts[i] for i in sorted(range(len(parts)), key=lambda i: -nov[i])[:2]]
        q = emb.embed(list(dict.fromkeys(parts)))
        sims = (q @ vecs.T).max(0)
        best = [0.0] * len(self._rules)
        for j, i in enumerate(owner):
            best[i] = max(best[i], float(sims[j]))
        ranked = [(s, x) for s, x in zip(self._rules, best) if s.stage in (stage, "both")]
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
        have = {s.id for s, _ in chosen}
        for section in self._scope:  # a stay-on-topic rule applies to every request
            if section.id not in have and section.stage in (stage, "both"):
                chosen.append((section, 0.0))
                have.add(section.id)
                budget -= section.tokens
        for section, sim in self.dense_scores(query, stage)[: self.dense]:
            if section.id not in have and sim >= 0.3 and (section.tokens <= budget or not chosen):
                chosen.append((section, sim))
                budget -= section.tokens
        return Retrieval(always=always, rules=tuple(s for s, _ in chosen),
                         scores=tuple(Retrieved(id=s.id, score=round(x, 4)) for s, x in chosen))
