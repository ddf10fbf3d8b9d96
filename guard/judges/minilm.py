"""The offline judge's fitted parts, on MiniLM embeddings (numpy only; fitted by guard.judges.train).

- ``InputModel``: P(harmful request) from one segment's pooled layers: the harm prior, one input
  among others (a small MLP, Platt-calibrated).
- the output model: P(harmful draft) from (prompt, draft segment) embeddings and a refusal flag.
- ``SectionIndex`` and ``SectionReader``: how strongly a text falls under one section's
  definition, read from the section itself. Each rule section is embedded once per spec
  version: its prose (title and definition), its action examples (refuse or safe_complete)
  and its allow examples. A (section, text) pair is scored from a few similarities that mean
  the same thing for any section (nearest action example, the two nearest, the prose, the
  nearest allow example, which vetoes, and how tight the section's own examples are), so a
  section an operator writes in prose with a few examples is enforced without retraining.
  "Stay on topic" sections (everything except what the policy is for) are scored by distance
  from the policy's in-scope texts instead (its overview, its allow examples, the items of
  the allowed topics its sections list, and small talk, which is never off topic) and by how
  much nearer those are than ordinary requests.
- ``domain_texts`` and ``rule_texts``: what a policy is for and what a section forbids, in the
  operator's own words; the offline judge asks an operator's rule for a text nearer the second
  than the first (guard.judges.offline). A single word of a list ("maths", "cards") is a topic,
  not a subject: a breach is as near it as an ordinary question, so it is left out.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guard.embedding import embedding_of
from guard.retrieval import is_scope_section
from guard.types import Decision, PolicySection

DATA = Path(__file__).resolve().parent / "data"
WEIGHTS = DATA / "offline_judge.npz"
DRAFT = DATA / "draft_model.npz"
READER = DATA / "section_reader.json"
TRAIN_POLICIES = DATA / "train_policies"


def reader_training_policies() -> list[Path]:
    """The policy files the section reader was fitted on (guard.judges.fit_sections): the default spec,
    the example support bot and the training policies. Benchmarks check their prompts against these."""
    from guard.policy import default_policy_paths

    support = Path(__file__).resolve().parents[2] / "policies" / "examples" / "support-bot.md"
    return [*map(Path, default_policy_paths()), *([support] if support.exists() else []),
            *sorted(TRAIN_POLICIES.glob("*.md"))]

REFUSAL = re.compile(
    r"\b(i can(?:'|’|no)?t|i cannot|i won'?t|i will not|i'm (?:not able|unable|sorry)|i am (?:not able|unable|sorry)|"
    r"as an ai|i apologi[sz]e|i must (?:decline|refuse)|not (?:appropriate|ethical) (?:for me )?to|"
    r"i'm not going to|i do not feel comfortable|i don't feel comfortable|cannot (?:provide|assist|help|fulfill))\b",
    re.I)

# conversational turns any assistant takes, whatever its topic: in scope for every stay-on-topic section
# (a greeting or a thank-you is far from any policy's subject, and from ordinary requests too)
SMALL_TALK = ["Hello!", "Hi, can you help me?", "Thanks, that's all I needed.", "Thank you so much!", "Good morning.",
              "Okay, got it.", "What can you help me with?", "Can I ask you a question?", "Sorry, I didn't understand that.",
              "Great, thanks for your help.", "Bye for now!", "Could you say that again more simply?",
              "Who am I talking to?", "Are you a real person or a bot?", "That didn't answer my question.",
              "Can you explain that in more detail?", "Hey there", "Perfect, cheers!", "One more question, please.",
              "Can I speak to a human?"]

_ALLOWED_PARA = re.compile(r"^\s*(?:allowed|in scope|on topic)\s*:\s*(.+?)(?:\n\s*\n|\Z)", re.I | re.M | re.S)
_NEGATED = re.compile(r"\b(?:not|never|no|refuse[sd]?|without|nor|cannot|won't|don't|doesn't|isn't)\b|n't\b", re.I)
_CLAUSE = re.compile(r"\s*[,;:]\s*|\s+(?:and|or)\s+(?=\w+ing\b|how\b|what\b|where\b|when\b|which\b|why\b)")


def clauses(text: str) -> list[str]:
    """The items of a list written in prose ("registration deadlines and how to register, polling
    places and hours, ..."): each names one thing a policy is for, and a request about that thing
    reads closest to the item itself, not to the whole paragraph."""
    out = []
    for c in _CLAUSE.split(" ".join(text.split())):
        c = re.sub(r"^(?:and|or|also|e\.g\.|including|such as)\s+", "", c.strip(" .-*()\"'"), flags=re.I).strip(" .()")
        if len(c) >= 4 and len(c.split()) >= 2:  # a single word ("maths", "cards") is a topic: a breach is near it too
            out.append(c)
    return out


def rule_texts(section: PolicySection) -> list[str]:
    """What a rule section forbids, in its own words: its definition's sentences, without its "Allowed:"
    paragraph. Whole sentences only: the items of a forbidding list read as harmless out of their
    sentence ("Refuse help to deceive voters about ... how to vote": "how to vote" alone is the
    policy's subject, not a breach)."""
    out = [" ".join(t.split()) for t in re.split(r"(?<=[.!?])\s+|\n\s*\n", _ALLOWED_PARA.sub("", section.body))]
    return list(dict.fromkeys(t for t in out if t))


def domain_texts(spec, policy: str) -> list[str]:
    """What one policy of a spec is for, in its own words: its overview's sentences that do not forbid
    anything (whole and as list items), every "Allowed:" paragraph of its sections (whole and as
    items) and its allow examples. A request that reads closer to these than to a section's action
    examples is on the policy's subject, not under the section: the policy's own measure of topic."""
    texts: list[str] = []
    for s in spec.sections:
        if s.policy != policy:
            continue
        if s.kind == "overview":
            for sent in re.split(r"(?<=[.!?])\s+|\n\s*[-*]\s+|\n\s*\n", s.body):
                sent = " ".join(sent.split())
                if sent and not _NEGATED.search(sent):
                    texts += [sent] + clauses(sent)
        elif s.kind == "rule":
            for m in _ALLOWED_PARA.finditer(s.body):
                texts += [" ".join(m.group(1).split())] + clauses(m.group(1))
            texts += [ex.text for ex in s.examples if ex.decision is Decision.allow and ex.response is None]
    return list(dict.fromkeys(texts))


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


class InputModel:
    """P(harmful request) from one window's features: a one-hidden-layer MLP and a Platt calibration.

    The features are the embedder's ``layers`` rows (pooled layers 3-5, then the embedding); a model
    fitted on the embedding alone (384 wide: the draft model's copy from before) reads the last 384."""

    def __init__(self, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: float, scale: float = 1.0, shift: float = 0.0):
        self.w1, self.b1, self.w2, self.b2, self.scale, self.shift = w1, b1, w2, b2, scale, shift

    def logit(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x[..., -self.w1.shape[0]:] @ self.w1 + self.b1, 0.0) @ self.w2 + self.b2

    def prob(self, x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-(self.scale * self.logit(x) + self.shift)))


def prior_of_texts(model: InputModel, layers):
    """texts -> the harm prior's reading of each (``layers``: the embedder's ``layers``)."""
    return lambda texts: model.prob(layers(list(texts))) if len(texts) else np.zeros(0)


def output_features(p: np.ndarray, r: np.ndarray, refusal: float, harm) -> np.ndarray:
    """[prompt, response, prompt*response, refusal phrase, input-harm of prompt and of response, their
    interactions]. ``p``, ``r``: the embedder's ``layers`` rows (or embeddings alone); ``harm`` maps
    such a row to P(harmful request) (the input model). The embeddings are their last 384 values."""
    hp, hr = float(harm(p)), float(harm(r))
    p, r = embedding_of(p), embedding_of(r)
    return np.concatenate([p, r, p * r, [refusal, hp, hr, hp * (1 - refusal), hp * hr, hp * refusal,
                                         (1 - refusal) * hr]]).astype(np.float32)


class HarmModels:
    """The harm prior (input, from ``offline_judge.npz``) and the draft model (output, from
    ``draft_model.npz`` beside it, fitted by guard.judges.train_output on views of drafts; it carries
    the harm prior it was fitted with, for its features). Without that file, the older draft model
    in ``offline_judge.npz`` (fitted on whole drafts only) is used."""

    def __init__(self, path: Path = WEIGHTS, draft: Path | None = None):
        with np.load(path, allow_pickle=False) as z:
            self.input = InputModel(z["w1"], z["b1"], z["w2"], float(z["b2"]), *map(float, z["calib"]))
            self.coef_out, self.b_out = z["coef_out"], float(z["b_out"])
            self.meta = json.loads(str(z["meta"]))
        self.draft_prior, self.draft_meta, self.b_later = self.input, {}, self.b_out
        draft = Path(path).with_name(DRAFT.name) if draft is None else draft
        if draft.exists():
            with np.load(draft, allow_pickle=False) as z:
                self.draft_prior = InputModel(z["w1"], z["b1"], z["w2"], float(z["b2"]), *map(float, z["calib"]))
                self.coef_out, self.b_out = z["coef"], float(z["b"])
                self.b_later = float(z["b_later"]) if "b_later" in z else self.b_out
                self.draft_meta = json.loads(str(z["meta"]))

    def output_prob(self, p: np.ndarray, r: np.ndarray, refusal: float, opening: bool = True) -> float:
        """P(harmful) of one view of a draft given the prompt (``p``, ``r``: their ``layers`` rows); a view
        further into the draft (one of several chances) has its own, higher, bar: its own intercept."""
        feats = output_features(p, r, refusal, lambda v: self.draft_prior.prob(v[None, :])[0])
        return float(sigmoid(feats @ self.coef_out + (self.b_out if opening else self.b_later)))


# --------------------------------------------------------------------------- reading sections


@dataclass
class SectionProto:
    section: PolicySection
    prose: np.ndarray  # (d,)
    action: np.ndarray  # (n_a, d) refuse / safe_complete examples (requests)
    action_ids: list[str]
    allow: np.ndarray  # (n_b, d)
    allow_ids: list[str]
    tight: float  # mean similarity among the action examples (a tight section needs a closer match)
    scope: np.ndarray | None = None  # in-scope texts, for stay-on-topic sections
    veto: np.ndarray | None = None  # every allow example of the spec: look-alikes wherever they are listed
    background: np.ndarray | None = None  # ordinary requests (the reader's background, shipped with it)
    harm: float = 0.0  # the harm prior's mean over the action examples: how much its opinion counts here
    domain: np.ndarray | None = None  # what the section's policy is for (domain_texts): its own measure of topic
    rule: np.ndarray | None = None  # what the section forbids, in its own words (rule_texts)
    policy_harm: float = 0.0  # the median of ``harm`` over its policy's action sections: a policy about harm


class SectionIndex:
    """Every rule section of a spec, embedded once per spec version (plus any fitted extra examples).
    ``operator_texts``: the operator policies' own words (their ``domain_texts`` and their rules' action
    examples), or None for a spec of harm policies alone. ``harm`` maps texts to the harm prior's
    reading of each."""

    def __init__(self, spec, embed, extra: dict[str, list[tuple[str, str]]] | None = None,
                 background: np.ndarray | None = None, harm=None):
        extra = extra or {}
        self.protos: dict[str, SectionProto] = {}
        rules = spec.rules
        overview_by_policy = {s.policy: s for s in spec.sections if s.kind == "overview"}
        prose = embed([f"{s.title}. {s.body}" for s in rules]) if rules else np.zeros((0, 384), np.float32)
        for i, s in enumerate(rules):
            acts = [(ex.id, ex.text) for ex in s.examples if ex.response is None and ex.decision is not Decision.allow]
            alls = [(ex.id, ex.text) for ex in s.examples if ex.response is None and ex.decision is Decision.allow]
            for decision, text in extra.get(s.id, []):
                (alls if decision == "allow" else acts).append((f"{s.id}#fit", text))
            a = embed([t for _, t in acts]) if acts else np.zeros((0, prose.shape[1]), np.float32)
            b = embed([t for _, t in alls]) if alls else np.zeros((0, prose.shape[1]), np.float32)
            tight = float((a @ a.T)[np.triu_indices(len(a), 1)].mean()) if len(a) >= 2 else 0.4
            self.protos[s.id] = SectionProto(s, prose[i], a, [x for x, _ in acts], b, [x for x, _ in alls], tight)
            if harm is not None and acts:
                self.protos[s.id].harm = float(np.mean(harm([t for _, t in acts])))
        allow_all = [p.allow for p in self.protos.values() if len(p.allow)]
        veto = np.concatenate(allow_all) if allow_all else np.zeros((0, prose.shape[1]), np.float32)
        by_policy: dict[str, list[float]] = {}
        for sid, p in self.protos.items():
            p.veto, p.background = veto, background
            p.rule = embed(rule_texts(p.section)) if not is_scope_section(p.section) and p.section.body.strip() else None
            if p.section.decision not in (None, Decision.allow):
                by_policy.setdefault(p.section.policy, []).append(p.harm)
        domains = {pol: domain_texts(spec, pol) for pol in dict.fromkeys(s.policy for s in rules)}
        # a policy's subject is read for operator policies only (the judge never asks it of a policy about
        # harm, such as the default spec, whose Allowed lists name look-alikes, not a subject)
        policy_harm = {pol: float(np.median(by_policy.get(pol, [0.0]))) for pol in domains}
        dom_v = {pol: embed(t) if t and policy_harm[pol] < 0.5 else None for pol, t in domains.items()}
        for p in self.protos.values():
            p.policy_harm, p.domain = policy_harm[p.section.policy], dom_v.get(p.section.policy)
        # everything an operator's policy talks about, in its own words: what it is for and what its rules
        # forbid (a default advice section yields to it: guard.judges.offline)
        ops = [d for d in dom_v.values() if d is not None and len(d)]
        ops += [p.action for p in self.protos.values() if p.policy_harm < 0.5 and not is_scope_section(p.section)
                and p.section.decision not in (None, Decision.allow) and len(p.action)]
        self.operator_texts = np.concatenate(ops) if ops else None
        for sid, p in self.protos.items():
            if not is_scope_section(p.section):
                continue
            s = p.section
            texts = [f"{o.title}. {o.body}" for o in [overview_by_policy.get(s.policy)] if o is not None]
            texts += domains.get(s.policy, [])  # the overview's items, every Allowed list, the allow examples
            texts += [t for d, t in extra.get(sid, []) if d == "allow"]
            texts += SMALL_TALK
            p.scope = embed(list(dict.fromkeys(texts))) if texts else None


PAIR_FEATURES = ("nearest_action", "top2_action", "prose", "allow_veto", "tightness", "background", "over_background")
SCOPE_FEATURES = ("nearest_in_scope", "top3_in_scope", "nearest_off_example", "prose", "in_scope_over_background")


def pair_features(p: SectionProto, v: np.ndarray, h: np.ndarray, bg: np.ndarray | None = None) -> np.ndarray:
    """Features of (section, segments): one row per segment embedding in ``v`` (n, d). Each has one
    meaning for any section, so that the model reads sections it never saw: how close the nearest
    and the two nearest action examples are, how close the prose is, how much closer an allow
    example (of any section: the spec's look-alikes) is than the nearest action example (a veto),
    how tight the section's own action examples are (a tight section needs a closer match), and how
    close ordinary requests are (the background). ``h`` (the segments' harm prior) is not a feature:
    the prior decides on its own path, and as a feature it taught the reader to echo it."""
    n = len(v)
    if len(p.action):
        sims = v @ p.action.T
        nearest = sims.max(1)
        top2 = np.sort(sims, 1)[:, -2:].mean(1) if sims.shape[1] >= 2 else nearest
    else:
        nearest = top2 = np.zeros(n, np.float32)
    prose = v @ p.prose
    allow = (v @ p.veto.T).max(1) if p.veto is not None and len(p.veto) else np.zeros(n, np.float32)
    bg = background_similarity(p.background, v) if bg is None else bg
    return np.stack([nearest, top2, prose, np.maximum(allow - nearest, 0.0), np.full(n, p.tight), bg, top2 - bg], 1)


def forbidden_and_allowed(p: SectionProto, v: np.ndarray, nearest: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per text: similarity to the nearest of what the section forbids (its action examples and its
    definition's sentences) and to the nearest of what its policy is for (domain_texts). Both sides
    are the operator's own words, so comparing them means the same in any domain: "What's on my
    ballot?" is near a non-partisan rule's topic, and nearer still to "the official list of
    candidates and measures on the ballot"."""
    n = len(v)
    if nearest is None:
        nearest = (v @ p.action.T).max(1) if len(p.action) else np.zeros(n, np.float32)
    if p.rule is not None and len(p.rule):
        nearest = np.maximum(nearest, (v @ p.rule.T).max(1))
    dom = (v @ p.domain.T).max(1) if p.domain is not None and len(p.domain) else np.zeros(n, np.float32)
    return nearest, dom


def background_similarity(background: np.ndarray | None, v: np.ndarray) -> np.ndarray:
    """Mean similarity to the 3 nearest ordinary requests (a text's own copy, if there, does not count).
    The same for every section: computed once per check."""
    if background is None or not len(background):
        return np.zeros(len(v), np.float32)
    sims = (background @ v.T).T  # (rows, d) @ (d, n): the contiguous layout, ~10x faster than v @ background.T
    sims = np.where(sims >= 0.999, -1.0, sims)
    return np.partition(sims, sims.shape[1] - 3, axis=1)[:, -3:].mean(1)


def scope_features(p: SectionProto, v: np.ndarray, bg: np.ndarray | None = None) -> np.ndarray:
    """Features of (stay-on-topic section, segments): how close the policy's in-scope texts are (nearest,
    three nearest), how close the section's off-topic examples and prose are, and how much closer the
    scope is than ordinary requests (the background): a margin each text brings its own yardstick to."""
    n = len(v)
    ins = v @ p.scope.T if p.scope is not None and len(p.scope) else np.zeros((n, 1), np.float32)
    top3 = np.sort(ins, 1)[:, -3:].mean(1)
    off = (v @ p.action.T).max(1) if len(p.action) else np.zeros(n, np.float32)
    bg = background_similarity(p.background, v) if bg is None else bg
    return np.stack([ins.max(1), top3, off, v @ p.prose, ins.max(1) - bg], 1)


class SectionReader:
    """Two logistic regressions over the features above, and the thresholds they decide at."""

    def __init__(self, path: Path = READER):
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        bg = Path(path).with_name(d.get("background", "section_background.npy"))
        self.background = np.ascontiguousarray(np.load(bg), dtype=np.float32) if bg.exists() else None
        self.pair_w, self.pair_b = np.array(d["pair"]["coef"], np.float32), float(d["pair"]["intercept"])
        self.scope_w, self.scope_b = np.array(d["scope"]["coef"], np.float32), float(d["scope"]["intercept"])
        self.threshold = float(d["threshold"])
        self.scope_threshold = float(d["scope_threshold"])
        self.band = float(d.get("band", 0.15))
        self.quantile, self.quantile_harm = float(d.get("quantile", 0.99)), float(d.get("quantile_harm", 1.0))
        self.meta = d.get("meta", {})

    def calibrate(self, p: SectionProto, quantile: float | None = None) -> float:
        """The section's own threshold: at least the global one, and high enough that few of the
        background's ordinary requests would fall under the section: 1 % of them for a section the
        harm prior does not speak for (an operator's rule), none for one it does (there the prior
        already refuses what is harmful, and the reader must be surer)."""
        base = self.scope_threshold if p.scope is not None else self.threshold
        if p.background is None or not len(p.background) or p.scope is not None:
            return base
        if quantile is None:
            quantile = self.quantile_harm if p.harm >= 0.5 else self.quantile
        probs, _ = self.score(p, p.background, np.zeros(len(p.background)))  # (the prior is not a reader feature)
        return float(max(base, np.quantile(probs, quantile)))

    def score(self, p: SectionProto, v: np.ndarray, h: np.ndarray, bg: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """P(segment falls under the section) per segment (``h``: their harm prior; ``bg``: their
        background similarity, if already computed), and the threshold."""
        if p.scope is not None:
            return sigmoid(scope_features(p, v, bg) @ self.scope_w + self.scope_b), self.scope_threshold
        return sigmoid(pair_features(p, v, h, bg) @ self.pair_w + self.pair_b), self.threshold
