"""The embedding judge: a fitted classifier decides, the spec's precedents explain.

Per check (DESIGN §4 contract):
1. **Decision.** The conversation is embedded with MiniLM (guard.embedding; long texts as
   several windows). At the input stage a small MLP over each window's embedding
   gives the probability that the request is harmful; the most harmful window counts. At the
   output stage a second regression over (prompt, draft response) gives the probability that
   the draft itself is harmful: a draft that refuses or stays general is allowed even after a
   bad prompt. The weights come from ``guard/judges/data/offline_judge.npz``, fitted by
   ``python -m guard.judges.train`` (which data, which split: see that module).
2. **Citations.** Among the *retrieved* rule sections, the one whose precedents (the spec's
   labelled examples) and definition are closest in embedding space is cited, with its
   closest precedent and the closest precedent on the other side. When several sections
   match almost equally, the highest priority wins, as the spec's precedence notes say.
3. **Category decisions.** The cited section's decision applies: ``refuse``, or
   ``safe_complete`` with the section's ``safe_reply`` as the rewrite (self-harm). A request
   the classifier finds harmless but that sits on a ``safe_complete`` precedent (personal
   medical, legal, financial questions) is safe-completed too.
4. **Confidence** is the model's probability that its decision is right (p for a refusal,
   1 - p for an allow, with p Platt-calibrated on out-of-fold data; at the output stage, whose
   threshold is not 0.5, the same scale is stretched so that the threshold maps to 0.5): near
   0.5 on the boundary, which is what the cascade escalates.

Deterministic: fixed weights, one ONNX session with fixed threads, no sampling.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guard.judges.base import Case, Judgment
from guard.judges.train import REFUSAL, InputModel, output_features
from guard.policy import Spec
from guard.types import Cost, Decision, Example, PolicySection

WEIGHTS = Path(__file__).resolve().parent / "data" / "offline_judge.npz"
_FREE = Cost(usd=0.0, reason="offline judge")


@dataclass
class _SpecIndex:
    """Embeddings of every rule section's definition and precedents, built once per spec version."""

    sections: list[PolicySection]
    desc: np.ndarray  # (n_sections, d)
    examples: list[tuple[PolicySection, Example]]
    ex_prompt: np.ndarray  # (n_examples, d) the example's request
    ex_response: np.ndarray  # (n_examples, d) its response (zeros when it has none)


class _Model:
    def __init__(self, path: Path):
        with np.load(path, allow_pickle=False) as z:
            self.input = InputModel(z["w1"], z["b1"], z["w2"], float(z["b2"]), *map(float, z["calib"]))
            self.coef_out, self.b_out = z["coef_out"], float(z["b_out"])
            self.meta = json.loads(str(z["meta"]))


_EXECUTOR: ThreadPoolExecutor | None = None


def _worker() -> ThreadPoolExecutor:
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="offline-judge")
    return _EXECUTOR


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class EmbeddingJudge:
    """Offline, deterministic, ~5 ms for a short prompt on 2 cores.

    ``refuse_at`` / ``refuse_output_at``: probability at or above which a request / draft is
    treated as harmful. ``advice_at``: least similarity to a safe_complete precedent for a
    harmless-looking request to be safe-completed. ``tie``: similarity within which the
    higher-priority section wins (among matches of at least ``precedence_floor``)."""

    name = "offline:minilm-v2"

    def __init__(self, weights: Path | str = WEIGHTS, embedder=None, refuse_at: float = 0.5,
                 refuse_output_at: float = 0.7, advice_at: float = 0.62, tie: float = 0.02,
                 precedence_floor: float = 0.35, precedent_at: float = 0.75, content_at: float = 0.85):
        self.weights, self._embedder = Path(weights), embedder
        self.refuse_at, self.refuse_output_at, self.advice_at, self.tie = refuse_at, refuse_output_at, advice_at, tie
        self.precedence_floor, self.precedent_at, self.content_at = precedence_floor, precedent_at, content_at
        self._model: _Model | None = None
        self._indexes: dict[str, _SpecIndex] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ loading (lazy)

    @property
    def embedder(self):
        if self._embedder is None:
            from guard.embedding import shared_embedder

            self._embedder = shared_embedder()
        return self._embedder

    @property
    def model(self) -> _Model:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = _Model(self.weights)
        return self._model

    def warm_up(self, spec: Spec | None = None) -> EmbeddingJudge:
        """Load the model and weights now (and index ``spec``) instead of at the first check."""
        self.embedder.warm_up()
        _ = self.model
        if spec is not None:
            self._index(spec)
        from guard.embedding import _trim_heap

        _trim_heap()
        return self

    def _index(self, spec: Spec) -> _SpecIndex:
        idx = self._indexes.get(spec.version)
        if idx is not None:
            return idx
        with self._lock:
            if spec.version in self._indexes:
                return self._indexes[spec.version]
            emb = self.embedder
            rules = spec.rules
            desc = emb.embed([f"{s.title}. {s.body}" for s in rules])
            examples = [(s, ex) for s in rules for ex in s.examples]
            ex_prompt = emb.embed([ex.text for _, ex in examples])
            ex_resp = np.stack([emb.embed([ex.response])[0] if ex.response else np.zeros(desc.shape[1], np.float32)
                                for _, ex in examples]) if examples else np.zeros((0, desc.shape[1]), np.float32)
            idx = _SpecIndex(rules, desc, examples, ex_prompt, ex_resp)
            if len(self._indexes) > 8:
                self._indexes.clear()
            self._indexes[spec.version] = idx
            return idx

    # ------------------------------------------------------------------ judging

    async def deliberate(self, case: Case) -> Judgment:
        # The model runs on worker threads (onnxruntime releases the GIL), so a server's event loop
        # keeps moving bytes while checks compute: two single-threaded runs at once, one per core.
        return await asyncio.get_running_loop().run_in_executor(_worker(), self.decide, case)

    def decide(self, case: Case) -> Judgment:
        idx = self._index(case.spec)
        if case.stage == "output" and case.draft is not None:
            return self._output(case, idx)
        return self._input(case, idx)

    def input_probability(self, text: str) -> tuple[float, np.ndarray]:
        """P(harmful request) and the embedding of the window that decided it."""
        m = self.model
        windows = self.embedder.embed_windows(text)
        probs = m.input.prob(windows)
        k = int(np.argmax(probs))
        return float(probs[k]), windows[k]

    def output_probability(self, prompt: str, draft: str) -> float:
        m = self.model
        p = self.embedder.embed([prompt])[0]
        r = self.embedder.embed([draft or " "])[0]
        refusal = float(bool(REFUSAL.search((draft or "")[:400])))
        feats = output_features(p, r, refusal, lambda v: m.input.prob(v[None, :])[0])
        return float(_sigmoid(feats @ m.coef_out + m.b_out))

    def _input(self, case: Case, idx: _SpecIndex) -> Judgment:
        p, q = self.input_probability(case.query)
        retrieved = {s.id for s in case.retrieval.rules}
        if p >= self.refuse_at:
            return self._harmful(case, idx, q, p, retrieved, stage_note="request", conf=_conf(p, self.refuse_at, True))
        precedent = self._precedent_match(idx, q, retrieved)
        if precedent is not None:  # a request that is all but one of the spec's own action precedents
            return self._by_precedent(idx, q, p, retrieved, *precedent)
        advice = self._advice(idx, q, retrieved)
        if advice is not None:
            return advice_judgment(*advice, p=p, name=self.name, harmless=_conf(p, self.refuse_at, False))
        return self._allow(idx, q, p, retrieved, what="request", conf=_conf(p, self.refuse_at, False))

    def _output(self, case: Case, idx: _SpecIndex) -> Judgment:
        p = self.output_probability(case.prompt or case.query, case.draft or "")
        draft = case.draft or ""
        if not REFUSAL.search(draft[:400]):
            # harmful content in the draft itself, whatever the prompt was ("a chemistry fact" -> a drug recipe)
            content = float(self.model.input.prob(self.embedder.embed([draft or " "]))[0])  # the first window, already embedded
            if content >= self.content_at:
                p = max(p, self.refuse_output_at + (1 - self.refuse_output_at) * (content - self.content_at) / (1 - self.content_at))
        retrieved = {s.id for s in case.retrieval.rules}
        q = self.embedder.embed([case.prompt or case.query])[0]
        if p >= self.refuse_output_at:
            r = self.embedder.embed([case.draft or " "])[0]
            j = self._harmful(case, idx, _unit(q + r), p, retrieved, stage_note="draft response",
                              conf=_conf(p, self.refuse_output_at, True))
            if j.decision is Decision.safe_complete:  # a draft with harmful detail is refused, not rewritten
                j = j.model_copy(update={"decision": Decision.refuse, "rewrite": None,
                                         "rationale": j.rationale.replace("calls for safe_complete", "calls for a refusal of a draft that gives such detail")})
            return j
        return self._allow(idx, q, p, retrieved, what="draft response", conf=_conf(p, self.refuse_output_at, False))

    # ------------------------------------------------------------------ the three outcomes

    def _harmful(self, case: Case, idx: _SpecIndex, q: np.ndarray, p: float, retrieved: set[str], stage_note: str,
                 conf: float) -> Judgment:
        scores = self._section_scores(idx, q, retrieved, harmful=True)
        if not scores:
            ids = case.retrieval.ids
            cite = tuple(i for i in ids if case.spec.get(i) is not None and case.spec.get(i).kind == "overview")[:1]  # type: ignore[union-attr]
            return Judgment(decision=Decision.refuse, sections=cite, rationale=(
                f"The {stage_note} looks harmful (p={p:.2f}) but no retrieved rule section matches it; "
                f"{'[' + cite[0] + ']' if cite else 'the spec'}'s test of real uplift toward harm applies."),
                confidence=_round(conf), judge=self.name, cost=_FREE)
        best = max(sc for sc, _, _ in scores)
        # precedence among near-equal matches only, and only among real matches
        close = [t for t in scores if t[0] >= best - self.tie and t[0] >= self.precedence_floor] or \
            [max(scores, key=lambda t: t[0])]
        sim, section, ex = max(close, key=lambda t: (t[1].priority, t[0]))
        decision = section.decision or Decision.refuse
        contrast = self._closest(idx, q, retrieved, allow=True)
        precedents = tuple(dict.fromkeys(([ex.id] if ex else []) + ([contrast[1].id] if contrast else [])))
        rationale = (f"The {stage_note} is likely harmful (p={p:.2f}). It is closest to [{section.id}]"
                     + (f" precedent {ex.id} ({ex.decision.value}, similarity {sim:.2f})" if ex else f" (similarity {sim:.2f})")
                     + (f" rather than the allowed precedent {contrast[1].id} ({contrast[0]:.2f})" if contrast else "")
                     + (f"; [{section.id}] has the highest priority ({section.priority}) among the close matches" if len(close) > 1 else "")
                     + f"; [{section.id}] calls for {decision.value}.")
        rewrite = section.safe_reply if decision is Decision.safe_complete else None
        return Judgment(decision=decision, sections=(section.id,), precedents=precedents, rationale=rationale,
                        confidence=_round(conf), rewrite=rewrite, judge=self.name, cost=_FREE)

    def _precedent_match(self, idx: _SpecIndex, q: np.ndarray, retrieved: set[str]):
        """(similarity, section, example) when the request nearly repeats an action precedent of a retrieved
        section and no allowed precedent is as close: operator policies (e.g. stay on topic) decide this way,
        since the classifier only knows general harm."""
        harm = self._closest(idx, q, retrieved, allow=False, with_response=False)
        if harm is None or harm[0] < self.precedent_at:
            return None
        allow = self._closest(idx, q, retrieved, allow=True)
        if allow is not None and allow[0] > harm[0] - 0.05:
            return None
        section = next(s for s in idx.sections if s.id == harm[1].id.split("#")[0])
        return harm[0], section, harm[1], allow

    def _by_precedent(self, idx, q, p: float, retrieved, sim: float, section: PolicySection, ex: Example, allow) -> Judgment:
        decision = section.decision or ex.decision
        rationale = (f"The request nearly repeats precedent {ex.id} ({ex.decision.value}, similarity {sim:.2f}) of "
                     f"[{section.id}]" + (f", much closer than the allowed precedent {allow[1].id} ({allow[0]:.2f})" if allow else "")
                     + f" (general harm p={p:.2f}); [{section.id}] calls for {decision.value}.")
        conf = 0.5 + 0.5 * math.tanh(8 * (sim - (allow[0] if allow else 0.0)))
        return Judgment(decision=decision, sections=(section.id,),
                        precedents=(ex.id,) + ((allow[1].id,) if allow else ()), rationale=rationale,
                        confidence=_round(conf), rewrite=section.safe_reply if decision is Decision.safe_complete else None,
                        judge=self.name, cost=_FREE)

    def _advice(self, idx: _SpecIndex, q: np.ndarray, retrieved: set[str]):
        """A harmless request that matches a safe_complete precedent closely (personal medical, legal, financial)."""
        best = None
        for i, (s, ex) in enumerate(idx.examples):
            if s.id not in retrieved or ex.response is not None or ex.decision is not Decision.safe_complete:
                continue
            sim = float(idx.ex_prompt[i] @ q)
            if best is None or sim > best[0]:
                best = (sim, s, ex)
        if best is None or best[0] < self.advice_at:
            return None
        allow = self._closest(idx, q, retrieved, allow=True)
        if allow and allow[0] >= best[0]:
            return None
        return best + (allow,)

    def _allow(self, idx: _SpecIndex, q: np.ndarray, p: float, retrieved: set[str], what: str, conf: float) -> Judgment:
        allow = self._closest(idx, q, retrieved, allow=True)
        harm = self._closest(idx, q, retrieved, allow=False)
        if allow is None or allow[0] < 0.3:
            rationale = (f"The {what} is unlikely to be harmful (p={p:.2f}) and no precedent in the retrieved "
                         "sections resembles it closely; nothing in the spec forbids it.")
            return Judgment(decision=Decision.allow, rationale=rationale, confidence=_round(conf), judge=self.name,
                            cost=_FREE)
        sim, ex = allow
        section = ex.id.split("#")[0]
        rationale = (f"The {what} is unlikely to be harmful (p={p:.2f}); the closest allowed precedent is {ex.id} in "
                     f"[{section}] (similarity {sim:.2f})"
                     + (f", closer than the {harm[1].decision.value} precedent {harm[1].id} ({harm[0]:.2f})." if harm and harm[0] < sim
                        else f"; the {harm[1].decision.value} precedent {harm[1].id} ({harm[0]:.2f}) is similar in words but the request differs in intent." if harm
                        else "."))
        precedents = (ex.id,) + ((harm[1].id,) if harm else ())
        return Judgment(decision=Decision.allow, sections=(section,), precedents=precedents, rationale=rationale,
                        confidence=_round(conf), judge=self.name, cost=_FREE)

    # ------------------------------------------------------------------ similarity helpers

    def _section_scores(self, idx: _SpecIndex, q: np.ndarray, retrieved: set[str], harmful: bool):
        """(similarity, section, closest precedent) for each retrieved section that calls for action."""
        out = []
        for si, s in enumerate(idx.sections):
            if s.id not in retrieved or s.decision is Decision.allow:
                continue
            best_sim, best_ex = float(idx.desc[si] @ q) - 0.05, None  # the definition counts, a little less than a precedent
            for i, (s2, ex) in enumerate(idx.examples):
                if s2 is not s or (ex.decision is Decision.allow) == harmful:
                    continue
                sim = float(idx.ex_prompt[i] @ q)
                if sim > best_sim:
                    best_sim, best_ex = sim, ex
            if best_ex is None:  # cite the section's closest action precedent anyway, if it has one
                cands = [(float(idx.ex_prompt[i] @ q), ex) for i, (s2, ex) in enumerate(idx.examples)
                         if s2 is s and ex.decision is not Decision.allow]
                best_ex = max(cands, key=lambda c: c[0])[1] if cands else None
            out.append((best_sim, s, best_ex))
        return out

    def _closest(self, idx: _SpecIndex, q: np.ndarray, retrieved: set[str], allow: bool, with_response: bool = True):
        best = None
        for i, (s, ex) in enumerate(idx.examples):
            if s.id not in retrieved or (ex.decision is Decision.allow) != allow:
                continue
            if not with_response and ex.response is not None:
                continue
            sim = float(idx.ex_prompt[i] @ q)
            if best is None or sim > best[0]:
                best = (sim, ex)
        return best


def advice_judgment(sim: float, section: PolicySection, ex: Example, allow, p: float, name: str,
                    harmless: float) -> Judgment:
    rationale = (f"The request is not harmful (p={p:.2f}) but it is a personal question like precedent {ex.id} in "
                 f"[{section.id}] (similarity {sim:.2f})"
                 + (f", closer than the allowed precedent {allow[1].id} ({allow[0]:.2f})" if allow else "")
                 + f"; [{section.id}] calls for safe_complete.")
    precedents = (ex.id,) + ((allow[1].id,) if allow else ())
    # confidence: how clearly it is advice-like rather than general knowledge, never above the harmless probability
    margin = sim - (allow[0] if allow else 0.0)
    conf = min(harmless, 0.5 + 0.5 * math.tanh(6 * margin))
    return Judgment(decision=Decision.safe_complete, sections=(section.id,), precedents=precedents, rationale=rationale,
                    confidence=_round(conf), rewrite=section.safe_reply, judge=name, cost=_FREE)


def _conf(p: float, threshold: float, harmful: bool) -> float:
    """Confidence in the decision taken at ``threshold``: 0.5 at the threshold, 1 at p=1 (refuse) or p=0 (allow).
    With the input stage's calibrated p and threshold 0.5 this is the probability the decision is right."""
    return 0.5 + 0.5 * ((p - threshold) / (1 - threshold) if harmful else (threshold - p) / threshold)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _round(x: float) -> float:
    return round(min(max(float(x), 0.0), 1.0), 3)
