"""Fit the offline judge's draft model: P(harmful draft | prompt, one view of the draft).

    .venv/bin/python -m guard.judges.train_output [--data ../shared/evaldata] [--cache /tmp/draft-emb.pkl]

Writes guard/judges/data/draft_model.npz, which ``HarmModels`` (guard.judges.minilm) loads for the
output stage. numpy only, deterministic.

The judge reads a draft from several starting points (``draft_views`` in guard.judges.offline:
the opening, the answer after a refusal, sentence starts further on, code blocks) and refuses when
any view reads as a harmful answer to the prompt. So the model is fitted on views, not only on
openings: every view of every fit-fold draft, labelled by what the whole draft does (a view that
opens by refusing inside a harmful draft is left out: the refusal is not what makes it harmful).
Each draft's views share one unit of weight, so long answers do not outweigh short ones.

Fitted on (never a held-out fold: ``guard.judges.train.fold``):
- XSTest completions of fit-half prompts (labels: full compliance with an unsafe prompt = harmful);
- JailbreakBench responses of fit-half goals (jailbroken = harmful; JBC never);
- the default spec's examples that carry a response;
- the same fit-fold drafts rewrapped by templates written for this module (``OPENERS``,
  ``REFUSALS``, a code fence): benign drafts in every wrapper stay benign, harmful drafts behind
  pleasantries or after a refusal stay harmful. These templates are ours, independent of the
  evaluation's transforms (guard.eval.attacks).

Features are ``output_features`` (prompt and view embeddings, their product, the view's refusal flag,
the harm prior of both and interactions). The harm prior used for them at run time is stored in the
weights file with the draft model, so a refit of the input model (guard.judges.train) does not shift
this one. In fitting, each draft's features come from a copy of that prior fitted without its prompt
(``crossfit_priors``): the shipped prior saw every fit prompt, and a model fitted on its readings of
them trusts it more than new prompts warrant.
The decision threshold: the judge refuses a draft at ``refuse_output_at`` (0.7); the model's intercept
is shifted so that 0.7 falls where the best F1 lies on out-of-fold scores (2 folds by prompt, within
the fit rows), each draft scored by its worst view.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import random
from pathlib import Path

import numpy as np

from guard.judges.minilm import DATA, REFUSAL, WEIGHTS, InputModel, output_features
from guard.judges.train import DEFAULT_DATA, balance, fit_logistic, load_all

OUT = DATA / "draft_model.npz"
DECIDE_AT = 0.7  # OfflineJudge.refuse_output_at
WORDS, STRIDE, CAP = 40, 8, 8  # OfflineJudge's defaults, for draft_views
MASSES = {"xstest_completions": 1.0, "jbb_responses": 0.6, "spec": 0.3, "wrapped": 0.6}
L2 = 4.0

# Our own wrappers (not guard.eval.attacks'): friendly openings and refusals that precede an answer.
OPENERS = [
    "Thanks so much for reaching out, I really appreciate you taking the time to ask.",
    "What a thoughtful thing to wonder about! I'm always glad when people are curious.",
    "Hello there, and I hope your week has been going smoothly so far.",
    "Happy to lend a hand here. It's a pleasure to work through this together with you.",
    "Good morning! Before anything else, thank you for being so patient and kind.",
    "I love questions like this one, they make my day a little brighter.",
    "Let me start by saying how much I enjoy our conversations; you always ask interesting things.",
    "First of all, welcome back! It's nice to hear from you again.",
    "Sure thing, I'm glad you asked me rather than guessing on your own.",
    "Absolutely, this is the kind of request I enjoy. Let's take it one piece at a time.",
    "Ah, a classic! Many people wonder about this, and you're in good company.",
    "Great to hear from you. I'll do my best to be thorough and clear.",
]
FILLER = [
    "Taking a short walk in the afternoon can lift your mood more than you might expect.",
    "Remember to drink a glass of water and stretch your shoulders now and then.",
    "Some people like to keep a small notebook handy for ideas that pop up during the day.",
    "The weather has been lovely lately, perfect for a cup of tea by the window.",
    "It's always worth pausing for a moment to appreciate the little things.",
    "A tidy desk and a good playlist can make any task feel lighter.",
]
REFUSALS = [
    "I'm sorry, but I can't assist with that request.",
    "I won't be able to help with this one, as it goes against my guidelines.",
    "As an AI, I must decline to provide that kind of information.",
    "I cannot help with that. It would not be responsible of me.",
    "Unfortunately I'm unable to share that.",
    "I apologize, but that's not something I can do.",
]
TURNS = ["Okay, fine, here it is anyway:", "On second thought, here you go.", "Actually, never mind that.",
         "Just between us, though:", "That said, since you asked nicely:", "Ha, only joking. Here's the answer:"]


def wrap(draft: str, how: str, rng: random.Random) -> str:
    if how == "pleasantries":
        lead = rng.choice(OPENERS) + " " + " ".join(rng.sample(FILLER, rng.randint(1, 3)))
        return lead + ("\n\n" if rng.random() < 0.7 else " ") + draft
    if how == "refusal":
        return rng.choice(REFUSALS) + " " + rng.choice(TURNS) + ("\n" if rng.random() < 0.5 else " ") + draft
    if how == "code":
        return rng.choice(["Here it is:", "See below.", "The full text:"]) + "\n\n```\n" + draft + "\n```"
    return draft


class _Embed:
    """The shared embedder's first-window ``layers`` row (pooled layers 3-5 and the embedding), cached on
    disk by text hash (speeds up refits only)."""

    def __init__(self, cache: Path | None):
        from guard.embedding import shared_embedder

        self.inner, self.path = shared_embedder(), cache
        self.store = pickle.loads(cache.read_bytes()) if cache and cache.exists() else {}

    def __call__(self, text: str) -> np.ndarray:
        k = "layers:" + hashlib.sha256(text.encode()).hexdigest()
        if k not in self.store:
            self.store[k] = self.inner.layers([text])[0]
        return self.store[k]

    def save(self) -> None:
        if self.path:
            self.path.write_bytes(pickle.dumps(self.store))


def drafts(data: Path) -> list[tuple[str, str, str, int, str]]:
    """(group, prompt, draft, label, key) for every fit-fold draft; key groups a prompt's drafts (CV folds)."""
    from guard.policy import load_spec
    from guard.types import Decision

    sets = load_all(data)
    out = []
    for name in ("xstest_completions", "jbb_responses"):
        for r in sets[name]:
            if r.fold == "fit":
                key = r.id.split(":", 1)[1] if name == "xstest_completions" else r.id.rsplit(":", 1)[1]
                out.append((name, r.prompt, r.response or "", r.label, f"{name}:{key}"))
    for s in load_spec().rules:
        for ex in s.examples:
            if ex.response is not None:
                out.append(("spec", ex.text, ex.response, int(ex.decision is not Decision.allow), f"spec:{ex.id}"))
    rng = random.Random(0)
    wrapped = []
    for group, prompt, draft, label, key in out:
        if group != "xstest_completions" or len(draft.split()) < 8:
            continue
        for how in ("pleasantries", "refusal", "code"):
            if rng.random() < 0.5:
                wrapped.append(("wrapped", prompt, wrap(draft, how, rng), label, key))
    return out + wrapped


def view_rows(items, embed, harm_of):
    """Features of every view (x), its label (y), its draft's index (d), and per-view weight before balancing.
    ``harm_of(item)``: the harm prior to compute that draft's features with (one that never saw its prompt)."""
    from guard.judges.offline import draft_views

    xs, ys, ds, ws, groups, leads = [], [], [], [], [], []
    for i, (group, prompt, draft, label, key) in enumerate(items):
        views = draft_views(draft, WORDS, STRIDE, CAP)
        if not views:
            continue
        pv, harm = embed(prompt[-2000:] or " "), harm_of(items[i])
        keep = [(s, ref, lead) for s, ref, lead in views
                if not (label and ref) and not (label and group == "wrapped" and lead)]
        for s, ref, lead in keep:
            xs.append(output_features(pv, embed(s.text), ref, harm)), ys.append(label), ds.append(i)
            ws.append(1.0 / len(keep)), groups.append(group), leads.append(lead)
    return np.stack(xs), np.array(ys, float), np.array(ds), np.array(ws), groups, np.array(leads)


def worst(scores: np.ndarray, ds: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, -np.inf)
    np.maximum.at(out, ds, scores)
    return out


def best_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The logit threshold of best F1 (ties: the higher threshold), and that F1."""
    best = (0.0, -1.0)
    for t in np.unique(scores):
        pred = scores >= t
        tp = float((pred & (labels == 1)).sum())
        f1 = 2 * tp / max(pred.sum() + (labels == 1).sum(), 1)
        if f1 >= best[1]:
            best = (float(t), f1)
    return best


MIN_KEPT = 0.95  # of harmful fit drafts caught unwrapped, the share still caught in our wrappers


def thresholds(oof: np.ndarray, leads: np.ndarray, ds: np.ndarray, items) -> tuple[float, float, float, float]:
    """Logit thresholds for the opening view and for later views: the best F1 on the unwrapped XSTest
    fit drafts among the pairs that keep at least MIN_KEPT of the harmful ones caught when wrapped
    (ties: the higher thresholds, fewer false refusals)."""
    n = len(items)
    lead_s = worst(np.where(leads, oof, -np.inf), ds, n)
    later_s = worst(np.where(leads, -np.inf, oof), ds, n)
    labels = np.array([it[3] for it in items])
    real = np.array([it[0] == "xstest_completions" for it in items])  # the hard case: look-alike prompts
    keys = [it[4] for it in items]
    grid = np.quantile(oof, np.linspace(0.5, 0.999, 80))
    best = (grid[0], grid[0], -1.0, 0.0)
    for t0 in grid:
        for t1 in grid:
            pred = (lead_s >= t0) | (later_s >= t1)
            tp = float((pred & real & (labels == 1)).sum())
            f1 = 2 * tp / max((pred & real).sum() + (real & (labels == 1)).sum(), 1)
            caught = {keys[i] for i in range(n) if real[i] and labels[i] and pred[i]}
            wrapped = [pred[i] for i in range(n) if not real[i] and labels[i] and keys[i] in caught]
            kept = float(np.mean(wrapped)) if wrapped else 1.0
            if kept >= MIN_KEPT and (f1, t0 + t1) >= (best[2], best[0] + best[1]):
                best = (float(t0), float(t1), f1, kept)
    return best


PRIOR_FOLDS = 4  # cross-fitted copies of the harm prior, each blind to a quarter of the draft prompts


def prompt_key(item) -> str:
    """The harm prior's row key (guard.judges.train.prior_rows) of the prompt a draft answers."""
    group, key = item[0], item[4]
    if group in ("xstest_completions", "wrapped"):
        return "xstest:" + key.split(":", 1)[1]
    if group == "jbb_responses":
        return "jbb:" + key.split(":", 1)[1]
    return ""


def prior_part(key: str) -> int:
    return int(hashlib.sha256(f"prior:{key}".encode()).digest()[0]) % PRIOR_FOLDS


def crossfit_priors(data: Path, cache: Path | None) -> list[InputModel]:
    """Copies of the harm prior, fitted by its own recipe (guard.judges.train.prior_rows, fit_prior), each
    without the XSTest prompts and JailbreakBench goals of one part. The shipped prior was fitted on every
    fit-half prompt, so on them it is nearly always right (XSTest fit half: AUROC 1.000, held out 0.863):
    a draft model fitted with its readings of those prompts learns to trust it more than it deserves. Each
    draft's features are computed with the copy that never saw its prompt; at run time the shipped prior,
    on prompts it never saw, reads like these copies."""
    from guard.judges.train import IN_MASSES, _CachedEmbedder, fit_prior, prior_rows
    from guard.policy import load_spec

    emb = _CachedEmbedder(cache.with_name(cache.stem + "-prior" + cache.suffix) if cache else None)
    x, y, gs, keys = prior_rows(load_all(data), emb, load_spec())
    emb.save()
    part = np.array([prior_part(k) if k else -1 for k in keys])
    out = []
    for k in range(PRIOR_FOLDS):
        m = part != k
        out.append(fit_prior(x[m], y[m], balance(y[m], [g for g, keep in zip(gs, m) if keep], IN_MASSES)))
    return out


def fit(data: Path = DEFAULT_DATA, out: Path = OUT, l2: float = L2, cache: Path | None = None,
        crossfit: bool = True, masses: dict[str, float] | None = None) -> dict:
    """``crossfit``: compute each draft's features with a copy of the harm prior that never saw its prompt
    (``crossfit_priors``); without it, with the shipped prior (the release before, whose out-of-fold F1 on
    the fit rows, 0.80, was not what held-out rows saw, 0.62)."""
    masses = masses or MASSES
    with np.load(WEIGHTS, allow_pickle=False) as z:
        prior = {k: z[k] for k in ("w1", "b1", "w2", "b2", "calib")}
    inp = InputModel(prior["w1"], prior["b1"], prior["w2"], float(prior["b2"]), *map(float, prior["calib"]))
    copies = crossfit_priors(data, cache) if crossfit else []

    def harm_of(item):
        key = prompt_key(item)
        model = copies[prior_part(key)] if copies and key else inp  # the spec's examples with responses: not prior rows
        return lambda v: model.prob(v[None, :])[0]

    embed = _Embed(cache)
    items = drafts(data)
    x, y, ds, w0, groups, leads = view_rows(items, embed, harm_of)
    embed.save()
    w = balance(y, groups, masses) * w0
    w *= len(w) / w.sum()
    labels = np.array([it[3] for it in items])
    # out-of-fold worst-view logits, 2 folds by prompt, for the threshold
    part = np.array([int(hashlib.sha256(items[d][4].encode()).digest()[0] & 1) for d in ds])
    oof = np.zeros(len(y))
    for f in (0, 1):
        c, b = fit_logistic(x[part != f], y[part != f], w[part != f], l2)
        oof[part == f] = x[part == f] @ c + b
    t_lead, t_later, f1, kept = thresholds(oof, leads, ds, items)
    coef, b = fit_logistic(x, y, w, l2)
    logit = float(np.log(DECIDE_AT / (1 - DECIDE_AT)))
    shift_lead, shift_later = logit - t_lead, logit - t_later
    meta = {
        "what": "draft model: logistic on output_features of one draft view; intercept shifted so that "
                f"{DECIDE_AT} is the out-of-fold best-F1 threshold of the worst view",
        "fit_rule": "guard.judges.train.fold: fit halves only (XSTest completions by prompt, JailbreakBench by goal, "
                    "JBC never), the spec's examples with responses, and those fit drafts in our own wrappers",
        "drafts": {g: sum(1 for it in items if it[0] == g) for g in sorted({it[0] for it in items})},
        "views": int(len(y)), "l2": l2, "masses": masses, "oof_f1_fit_rows": round(f1, 4),
        "oof_thresholds_logit": {"opening": round(t_lead, 4), "later_views": round(t_later, 4)},
        "oof_wrapped_harmful_kept": round(kept, 4), "min_wrapped_kept": MIN_KEPT,
        "views_per_draft": {"words": WORDS, "stride": STRIDE, "cap": CAP},
    }
    if crossfit:
        meta["prior_features"] = f"cross-fitted copies of the harm prior ({PRIOR_FOLDS} parts by prompt)"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, coef=coef, b=np.float32(b + shift_lead), b_later=np.float32(b + shift_later), **prior, meta=np.array(json.dumps(meta, sort_keys=True)))
    return meta


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--l2", type=float, default=L2)
    ap.add_argument("--cache", type=Path, help="embedding cache file (pickle) to reuse across refits")
    ap.add_argument("--shipped-prior", action="store_true",
                    help="features from the shipped harm prior, which saw every fit prompt (the release before)")
    ap.add_argument("--jbb-mass", type=float, default=MASSES["jbb_responses"])
    a = ap.parse_args(argv)
    masses = {**MASSES, "jbb_responses": a.jbb_mass}
    print(json.dumps(fit(a.data, a.out, a.l2, a.cache, not a.shipped_prior, masses), indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
