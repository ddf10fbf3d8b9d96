"""Fit the section reader (guard.judges.minilm.SectionReader), and fit one spec for ``offline:PATH``.

    python -m guard.judges.train            # fits the harm models and then this reader

Training code: never imported at run time. numpy only, deterministic.

**The reader** learns how to read *a* section, not the sections it saw: its features are
similarities that mean the same for any section (guard.judges.minilm.PAIR_FEATURES), so it is
fitted on pairs (section, text) from many policies:

- every training spec (guard.judges.minilm.reader_training_policies): the default spec, the
  example support bot, and the fourteen operator-style policies in ``data/train_policies/``
  (travel agency, car insurance, cookware brand, utility company, university admissions, game
  community, legal-aid intake, real-estate agency, mobile carrier, fitness club, second-hand
  marketplace, food delivery, home-improvement store, car rental: written for this project,
  none in the domain of a benchmark policy in policies/examples/ or a test policy in tests/data/);
- each section's own examples, left out one at a time (the example is scored against the
  section without it): action examples are positives, allow examples negatives (the hard
  negatives: look-alikes the section itself lists);
- every other section's examples against this section: negatives;
- our everyday requests (``data/everyday_benign.txt``, fit fold only) against every section:
  negatives; for "stay on topic" sections they are positives (off topic for every training
  policy), and the policy's own allow examples are negatives;
- our labelled prompts for the training policies (``data/train_policies/<policy>.jsonl``: requests
  written for this project, not copies of the examples) against their policy's stay-on-topic
  section: off-topic prompts positive, the rest (breaches of other sections and benign questions
  on the policy's subject) negative. The pair model is not fitted on them, nor on the six
  policies added in this release (``SCOPE_ONLY``): as pair rows they moved the default spec's
  harm sections (held-out moderation F1 0.680 -> 0.661, HarmBench 0.919 -> 0.909) without a
  gain on the operator benchmark beyond what the judge's rules gave;
- the fit half of XSTest's safe prompts against the default spec: negatives; HarmBench ``val``
  behaviours against the default section their category maps to: positives.

The threshold is the one that maximises balanced accuracy on the fitted pairs; the band
around it (scores the cascade should escalate) is half the distance to where 90 % of either
side lies.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from guard.judges.minilm import (PAIR_FEATURES, READER, SCOPE_FEATURES, TRAIN_POLICIES, SectionIndex, SectionProto,
                                 pair_features, prior_of_texts, reader_training_policies, scope_features)
from guard.types import Decision

DATA_DIR = Path(__file__).resolve().parent / "data"
HARMBENCH_TO_SECTION = {"chemical_biological": "cbrn", "illegal": "illicit-behaviour", "cybercrime_intrusion": "cyber-abuse",
                        "harassment_bullying": "hate-harassment", "misinformation_disinformation": "misinformation",
                        "copyright": "copyright"}
EVERYDAY_PER_SECTION = 60


def _drop_same(a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rows of ``a`` that are not the text ``v`` itself (leave-one-out)."""
    if not len(a):
        return a
    return a[(a @ v) < 0.999]


def _loo(p: SectionProto, v: np.ndarray) -> SectionProto:
    action = _drop_same(p.action, v)
    tight = float((action @ action.T)[np.triu_indices(len(action), 1)].mean()) if len(action) >= 2 else 0.4
    return SectionProto(p.section, p.prose, action, p.action_ids[: len(action)], _drop_same(p.allow, v),
                        p.allow_ids, tight, None if p.scope is None else _drop_same(p.scope, v),
                        None if p.veto is None else _drop_same(p.veto, v), p.background, p.harm,
                        None if p.domain is None else _drop_same(p.domain, v),
                        None if p.rule is None else _drop_same(p.rule, v), p.policy_harm)


def _pick(texts: list[str], n: int, salt: str) -> list[str]:
    return sorted(texts, key=lambda t: hashlib.sha256(f"{salt}:{t}".encode()).digest())[:n]


# the policies added in this release train the stay-on-topic model only: as pair rows they (with the labelled
# prompts and small talk) moved the default spec's harm sections, which the public sets measure (moderation
# F1 0.680 -> 0.661, HarmBench 0.919 -> 0.909 held out), for no gain on operator policies beyond the rules'
SCOPE_ONLY = {"tp-mobile", "tp-gym", "tp-market", "tp-food", "tp-diy", "tp-rental"}


def training_prompts() -> dict[str, list[tuple[str, int]]]:
    """Our labelled prompts for the training policies (``data/train_policies/*.jsonl``: requests written for
    this project, not copies of a policy's examples): {section id: [(text, 1 if it breaches the section
    else 0)]}; a benign prompt is on its policy's subject (a hard negative for every section of its policy)."""
    out: dict[str, list[tuple[str, int]]] = {}
    for f in sorted(TRAIN_POLICIES.glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                out.setdefault(r["section"], []).append((r["prompt"], int(r["label"] == "harmful")))
    return out


def training_specs():
    from guard.policy import load_spec

    paths = reader_training_policies()
    defaults = [p for p in paths if p.parent != TRAIN_POLICIES and p.name != "support-bot.md"]
    return [load_spec(defaults)] + [load_spec([p]) for p in paths if p not in defaults]


def pairs(embed, specs, everyday: list[str], public: dict[str, list[tuple[str, str | None, int]]] | None = None,
          background: np.ndarray | None = None, harm=None, prompts: dict[str, list[tuple[str, int]]] | None = None):
    """(features, label, group) rows for the pair model and for the scope model. ``prompts`` (see
    ``training_prompts``): each policy's labelled requests against its stay-on-topic section, off topic
    when they are that section's, on topic otherwise. Sections of the ``SCOPE_ONLY`` policies give
    stay-on-topic rows only."""
    public, prompts = public or {}, prompts or {}
    pair_x, pair_y, pair_g, scope_x, scope_y, scope_g = [], [], [], [], [], []
    ev = embed(everyday) if everyday else np.zeros((0, 384), np.float32)
    ev_h = harm(everyday) if len(ev) else np.zeros(0)
    for spec in specs:
        idx = SectionIndex(spec, embed, background=background, harm=harm)
        examples = [(s, ex) for s in spec.rules for ex in s.examples if ex.response is None]
        ex_v = embed([ex.text for _, ex in examples])
        ex_h = harm([ex.text for _, ex in examples])
        asked = [(sid, t, y) for sid in idx.protos for t, y in prompts.get(sid, [])]
        ask_v = embed([t for _, t, _ in asked]) if asked else np.zeros((0, ex_v.shape[1]), np.float32)
        ask_h = harm([t for _, t, _ in asked]) if len(ask_v) else np.zeros(0)
        for sid, p in idx.protos.items():
            s = p.section
            if s.decision in (None, Decision.allow):
                continue
            scope = p.scope is not None
            if not scope and s.policy in SCOPE_ONLY:
                continue
            xs, ys, gs = (scope_x, scope_y, scope_g) if scope else (pair_x, pair_y, pair_g)
            feats = (lambda q, x, hx: scope_features(q, x)) if scope else pair_features
            for (s2, ex), v, hv in zip(examples, ex_v, ex_h):
                if s2.id == sid:
                    label = int(ex.decision is not Decision.allow)
                    xs.append(feats(_loo(p, v), v[None, :], hv[None])[0]), ys.append(label), gs.append(f"own:{label}")
                elif scope:
                    if s2.policy == s.policy:  # the policy's other sections are on topic
                        xs.append(feats(p, v[None, :], hv[None])[0]), ys.append(0), gs.append("own:0")
                    else:  # another policy's texts are off topic, unless they are generic
                        xs.append(feats(p, v[None, :], hv[None])[0]), ys.append(1), gs.append("other:1")
                else:
                    xs.append(feats(p, v[None, :], hv[None])[0]), ys.append(0), gs.append("other:0")
            if len(ask_v) and scope:  # (the stay-on-topic model only: as pair rows they moved the default spec's
                # harm sections, whose readings the public sets measure: moderation F1 -0.01 to -0.02)
                lab = [int(y and s2 == sid) for s2, _, y in asked]
                xs.extend(feats(p, ask_v, ask_h)), ys.extend(lab), gs.extend([f"prompts:{y}" for y in lab])
            pick = _pick(list(range(len(everyday))), EVERYDAY_PER_SECTION, sid) if len(ev) else []
            if pick:
                f = feats(p, ev[pick], ev_h[pick])
                xs.extend(f), ys.extend([int(scope)] * len(pick)), gs.extend([f"everyday:{int(scope)}"] * len(pick))
            for name, rows in public.items():
                texts = [(t, sec, lab) for t, sec, lab in rows if sec is None or sec == sid]
                if not texts or scope:
                    continue
                v = embed([t for t, _, _ in texts])
                lab = [int(lab and sec == sid) for _, sec, lab in texts]
                xs.extend(feats(p, v, harm([t for t, _, _ in texts]))), ys.extend(lab), gs.extend([f"{name}:{y}" for y in lab])
    return ((np.array(pair_x), np.array(pair_y, float), pair_g), (np.array(scope_x), np.array(scope_y, float), scope_g))


def _group_weights(y: np.ndarray, groups: list[str]) -> np.ndarray:
    """Each group the same total mass, each class half of it (so the many easy negatives do not swamp)."""
    from guard.judges.train import balance

    kinds = sorted({g.split(":")[0] for g in groups})
    return balance(y, [g.split(":")[0] for g in groups], {k: 1.0 for k in kinds})


def _threshold(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    best, thr = -1.0, 0.5
    for t in np.linspace(0.05, 0.95, 91):
        tpr = (w * (p >= t) * y).sum() / max((w * y).sum(), 1e-9)
        tnr = (w * (p < t) * (1 - y)).sum() / max((w * (1 - y)).sum(), 1e-9)
        if (tpr + tnr) / 2 > best:
            best, thr = (tpr + tnr) / 2, float(t)
    pos, neg = np.sort(p[y == 1]), np.sort(p[y == 0])
    band = 0.5 * min(abs(thr - (np.quantile(pos, 0.1) if len(pos) else thr)),
                     abs((np.quantile(neg, 0.9) if len(neg) else thr) - thr))
    return round(thr, 3), round(float(min(max(band, 0.05), 0.2)), 3)


def fit_reader(embed, everyday: list[str], public=None, out: Path = READER, extra_meta: dict | None = None,
               background_texts: list[str] | None = None, layers=None) -> dict:
    """``layers``: the embedder's pooled layers for the harm prior (default: the shared embedder's)."""
    from guard.embedding import shared_embedder
    from guard.judges.train import fit_logistic

    layers = layers or shared_embedder().layers

    specs = training_specs()
    background = embed(background_texts) if background_texts else None
    if background is not None:
        np.save(out.with_name("section_background.npy"), background.astype(np.float16))
    from guard.judges.minilm import HarmModels

    harm = prior_of_texts(HarmModels().input, layers)
    (px, py, pg), (sx, sy, sg) = pairs(embed, specs, everyday, public, background, harm, training_prompts())
    pw, sw = _group_weights(py, pg), _group_weights(sy, sg)
    pc, pb = fit_logistic(px, py, pw, l2=0.1)
    sc, sb = fit_logistic(sx, sy, sw, l2=0.1)
    pp, sp = 1 / (1 + np.exp(-(px @ pc + pb))), 1 / (1 + np.exp(-(sx @ sc + sb)))
    thr, band = _threshold(pp, py, pw)
    sthr, _ = _threshold(sp, sy, sw)
    meta = {"specs": [s.sections[0].policy for s in specs], "pair_rows": int(len(py)), "pair_positives": int(py.sum()),
            "scope_rows": int(len(sy)), "scope_positives": int(sy.sum()),
            "groups": {g: pg.count(g) for g in sorted(set(pg))} | {f"scope/{g}": sg.count(g) for g in sorted(set(sg))},
            "fit": "L2 logistic (Newton, l2 0.1), per-group balanced weights; threshold maximises balanced accuracy"}
    meta |= extra_meta or {}
    d = {"pair": {"features": list(PAIR_FEATURES), "coef": [round(float(c), 5) for c in pc], "intercept": round(pb, 5)},
         "scope": {"features": list(SCOPE_FEATURES), "coef": [round(float(c), 5) for c in sc], "intercept": round(sb, 5)},
         "background": "section_background.npy", "threshold": thr, "scope_threshold": sthr, "band": band, "meta": meta}
    out.write_text(json.dumps(d, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return d


# --------------------------------------------------------------------------- one spec, for offline:PATH


def fit_policy(spec, rows: list[dict], out: Path, embedder=None) -> dict:
    """Fit the offline judge to one spec from labelled rows; write ``out`` for ``--judge offline:PATH``.

    ``rows``: ``{"text", "response"?, "stage": "input"|"output", "section": id|None, "decision":
    "allow"|"refuse"|"safe_complete"}`` (e.g. synthetic rows from ``guard synth``). Input-stage rows
    that name a rule section of ``spec`` become that section's examples (its action rows as action
    examples, its allow rows as look-alikes it allows). Each section's threshold is then calibrated on
    the same rows, each of the section's own rows scored with itself left out (as the reader was
    fitted): the threshold that maximises balanced accuracy (the section's action rows against every
    other row), **never above the stock threshold** (the section's threshold without the fitted
    examples, or with them, whichever is lower). Fitting adds what the rows teach and never raises a
    bar. Returns a summary: rows used, per-section thresholds (stock and fitted), and recall and pass
    rate at both (the fitted ones left-one-out).
    """
    from guard.embedding import shared_embedder
    from guard.judges.minilm import HarmModels, SectionReader

    emb = embedder or shared_embedder()
    reader = SectionReader()
    harm = prior_of_texts(HarmModels().input, emb.layers)
    rules = {s.id: s for s in spec.rules}
    usable = [r for r in rows if r.get("stage", "input") == "input" and (r.get("text") or "").strip()]
    examples: dict[str, list[dict]] = {}
    for r in usable:
        if r.get("section") in rules:
            examples.setdefault(r["section"], []).append({"decision": r.get("decision", "refuse"), "text": r["text"]})
    extra = {sid: [(x["decision"], x["text"]) for x in xs] for sid, xs in examples.items()}
    stock = SectionIndex(spec, emb.embed, None, reader.background, harm)
    idx = SectionIndex(spec, emb.embed, extra, reader.background, harm)
    v = emb.embed([r["text"] for r in usable]) if usable else np.zeros((0, 384), np.float32)
    hv = harm([r["text"] for r in usable]) if len(v) else np.zeros(0)
    thresholds, report = {}, {}
    for sid, p in idx.protos.items():
        s = p.section
        if s.decision in (None, Decision.allow) or not len(v) or sid not in examples:
            continue
        bound = min(reader.calibrate(stock.protos[sid]), reader.calibrate(p))
        own = np.array([r.get("section") == sid for r in usable])
        # a row of this section is scored without itself among the examples (left out, as the reader was fitted)
        probs = np.array([reader.score(_loo(p, v[i]) if own[i] else p, v[i:i + 1], hv[i:i + 1])[0][0]
                          for i in range(len(usable))])
        stock_probs, _ = reader.score(stock.protos[sid], v, hv)
        y = np.array([int(own[i] and r.get("decision", "refuse") != "allow") for i, r in enumerate(usable)], float)
        if y.sum() < 1 or (1 - y).sum() < 1:
            continue
        thr = _calibrated(probs, y, bound)
        thresholds[sid] = thr
        report[sid] = {"rows": int(len(y)), "action_rows": int(y.sum()), "stock_threshold": round(bound, 3),
                       "threshold": thr,
                       "recall": {"stock": round(float((stock_probs[y == 1] >= bound).mean()), 3),
                                  "fitted_left_out": round(float((probs[y == 1] >= thr).mean()), 3)},
                       "others_passed": {"stock": round(float((stock_probs[y == 0] < bound).mean()), 3),
                                         "fitted_left_out": round(float((probs[y == 0] < thr).mean()), 3)}}
    d = {"spec_version": spec.version, "examples": examples, "thresholds": thresholds, "report": report,
         "rows": {"given": len(rows), "used_input": len(usable), "as_examples": sum(map(len, examples.values()))}}
    Path(out).write_text(json.dumps(d, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return {k: d[k] for k in ("spec_version", "thresholds", "report", "rows")}


def _calibrated(p: np.ndarray, y: np.ndarray, bound: float) -> float:
    """The threshold at or below ``bound`` that maximises balanced accuracy on (p, y); among equals the
    highest (the least change from the stock judge)."""
    best, thr = -1.0, bound
    for t in sorted({round(bound, 3)} | {round(float(t), 3) for t in np.linspace(0.05, 0.95, 91) if t < bound},
                    reverse=True):
        tpr = float((p[y == 1] >= t).mean()) if (y == 1).any() else 1.0
        tnr = float((p[y == 0] < t).mean()) if (y == 0).any() else 1.0
        if (tpr + tnr) / 2 > best + 1e-9:
            best, thr = (tpr + tnr) / 2, t
    return float(thr)
