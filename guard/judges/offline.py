"""The offline judges: no model server, no network.

``OfflineJudge`` (what ``judge: offline`` means) is the embedding judge in guard.judges.minilm:
a classifier fitted on public safety sets decides, and the spec's precedents and sections,
found by embedding similarity, explain and categorise. ``PrecedentJudge`` below is the
earlier, dependency-free nearest-precedent judge (``judge: offline:precedent``).

The precedent judge reads the retrieved sections' labelled examples as precedents, finds the ones closest to
the conversation (TF-IDF cosine over stemmed words), and lets the closest precedents vote.
A harmful precedent must beat the closest benign one by a margin, so that "how do I kill a
Python process" (close to an allow precedent) passes while "synthesise methamphetamine"
(close to a refuse precedent) does not. When several sections call for action, the one with
the highest priority wins, as the spec's precedence notes say.

It cites the section and the precedents that decided, and its confidence grows with the
margin between the two sides, so a cascade can escalate the narrow calls.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache

from guard.judges.base import Case, Judgment
from guard.policy import Spec
from guard.text import tokens
from guard.types import Cost, Decision, Example, PolicySection

_REFUSAL = re.compile(r"\b(i can(?:'|no)t|i cannot|i won'?t|i'm (?:not able|unable|sorry)|i am (?:not able|unable|sorry)|as an ai)\b", re.I)


class _Index:
    """IDF weights and vectors for every precedent of a spec (built once per spec version)."""

    def __init__(self, spec: Spec):
        docs: list[list[str]] = []
        self.examples: list[tuple[PolicySection, Example, list[str]]] = []
        for s in spec.rules:
            docs.append(tokens(s.body))
            for ex in s.examples:
                toks = tokens(ex.text + (" " + ex.response if ex.response else ""))
                self.examples.append((s, ex, toks))
                docs.append(toks)
        df = Counter(t for d in docs for t in set(d))
        n = len(docs)
        self.idf = {t: math.log(1 + n / c) for t, c in df.items()}
        self.default_idf = math.log(1 + n)
        self.vectors = {ex.id: self.vector(toks) for _, ex, toks in self.examples}

    def vector(self, toks: list[str]) -> dict[str, float]:
        tf = Counter(toks)
        v = {t: (1 + math.log(c)) * self.idf.get(t, self.default_idf) for t, c in tf.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {t: x / norm for t, x in v.items()}


def _cos(a: dict[str, float], b: dict[str, float]) -> float:
    if len(a) > len(b):
        a, b = b, a
    return sum(x * b.get(t, 0.0) for t, x in a.items())


@lru_cache(maxsize=8)
def _index_for(spec: Spec) -> _Index:
    return _Index(spec)


class PrecedentJudge:
    """Nearest-precedent judge (TF-IDF). ``threshold``: least similarity for a harmful precedent to count;
    ``margin``: how much closer it must be than the closest benign precedent."""

    name = "offline:precedent-v1"

    def __init__(self, threshold: float = 0.22, margin: float = 0.02):
        self.threshold, self.margin = threshold, margin

    async def deliberate(self, case: Case) -> Judgment:
        return self.decide(case)

    def decide(self, case: Case) -> Judgment:
        index = _index_for(case.spec)
        if case.stage == "output" and case.draft is not None and _REFUSAL.search(case.draft[:300]):
            return Judgment(decision=Decision.allow, rationale="The response declines; it adds no harmful content.",
                            confidence=0.9, judge=self.name, cost=Cost(usd=0.0, reason="offline judge"))
        text = case.query if case.stage == "input" else f"{case.prompt}\n{case.draft or ''}"
        q = index.vector(tokens(text))
        retrieved = {s.id for s in case.retrieval.rules}
        scored = [(_cos(q, index.vectors[ex.id]), s, ex) for s, ex, _ in index.examples if s.id in retrieved]
        best_allow = max(((sim, s, ex) for sim, s, ex in scored if ex.decision is Decision.allow),
                         default=(0.0, None, None), key=lambda x: x[0])
        harmful = [(sim, s, ex) for sim, s, ex in scored
                   if ex.decision is not Decision.allow and sim >= self.threshold and sim >= best_allow[0] + self.margin]
        if not harmful:
            return self._allow(best_allow, scored)
        # the highest-priority section with a winning precedent decides; similarity breaks ties
        sim, section, ex = max(harmful, key=lambda x: (x[1].priority, x[0]))
        decision = ex.decision if section.decision is None else section.decision
        confidence = _confidence(sim - best_allow[0], sim)
        rationale = (f"Closest harmful precedent {ex.id} ({ex.decision.value}, similarity {sim:.2f}) in "
                     f"[{section.id}] outweighs the closest benign precedent"
                     + (f" {best_allow[2].id} ({best_allow[0]:.2f})" if best_allow[2] else " (none)")
                     + f"; [{section.id}] calls for {decision.value}.")
        rewrite = section.safe_reply if decision is Decision.safe_complete else None
        precedents = tuple(dict.fromkeys([ex.id] + ([best_allow[2].id] if best_allow[2] else [])))
        return Judgment(decision=decision, sections=(section.id,), precedents=precedents, rationale=rationale,
                        confidence=confidence, rewrite=rewrite, judge=self.name, cost=Cost(usd=0.0, reason="offline judge"))

    def _allow(self, best_allow, scored) -> Judgment:
        sim, section, ex = best_allow
        top_harm = max(((h, hx) for h, _, hx in scored if hx.decision is not Decision.allow),
                       default=(0.0, None), key=lambda x: x[0])
        if ex is None:
            rationale = "No precedent in the retrieved sections resembles this conversation; nothing in the spec forbids it."
            return Judgment(decision=Decision.allow, rationale=rationale, confidence=_confidence(self.threshold - top_harm[0], 0.0),
                            judge=self.name, cost=Cost(usd=0.0, reason="offline judge"))
        rationale = (f"Closest precedent {ex.id} in [{section.id}] is allowed (similarity {sim:.2f})"
                     + (f"; closest harmful precedent {top_harm[1].id} is weaker ({top_harm[0]:.2f})." if top_harm[1] else "."))
        return Judgment(decision=Decision.allow, sections=(section.id,), precedents=(ex.id,), rationale=rationale,
                        confidence=_confidence(max(sim - top_harm[0], self.threshold - top_harm[0]), sim),
                        judge=self.name, cost=Cost(usd=0.0, reason="offline judge"))


def _confidence(margin: float, strength: float) -> float:
    """Map the winning margin to (0.5, 1): narrow calls sit near 0.5 and are the ones to escalate."""
    return round(min(0.99, 0.5 + 0.5 * math.tanh(4 * max(margin, 0.0) + strength)), 3)


from guard.judges.minilm import EmbeddingJudge as OfflineJudge  # noqa: E402  (the default offline judge)

__all__ = ["OfflineJudge", "PrecedentJudge"]
