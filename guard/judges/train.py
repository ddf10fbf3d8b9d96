"""Fit the offline judge's classifiers from the public sets in ../shared/evaldata.

    python -m guard.judges.train [--data ../shared/evaldata] [--out guard/judges/data/offline_judge.npz]

The data are read at run time and never copied: only the fitted weights are written. Every
row belongs to one of two folds, ``fit`` or ``heldout``, by a fixed rule (``fold``) that
``benchmarks/offline_judge_dev.py`` uses too, so that scores are reported on rows the
weights never saw:

| set | fit | held out |
|---|---|---|
| XSTest prompts | ids whose hash falls in the fit half | the other half (and every completion of those prompts) |
| XSTest completions (output stage) | completions of fit-half prompts | completions of held-out prompts |
| OpenAI moderation sample | rows whose hash falls in the fit half | the other half |
| HarmBench | the 80 ``val`` behaviours | the 320 ``test`` behaviours |
| JailbreakBench artifacts | fit-half goals, every method except JBC | held-out goals, every method (JBC never seen) |
| the spec's own examples | all | (none: they are the precedents) |
| our everyday requests (``data/everyday_benign.txt``) | texts whose hash falls in the fit 80 % | the other 20 % |
| our hand-written everyday list (``data/everyday_eval.txt``) | none | all (evaluation only) |

Two classifiers on MiniLM, fitted in numpy (deterministic, no extra dependency):
- input stage: harmful request or not, on each window of the text read as its pooled layers 3,
  4, 5 and 6 (``layers`` in guard.embedding: one model run gives them all): a small MLP
  (1536-128-1), Platt-calibrated on out-of-fold logits. On the embedding alone (384-128-1, the
  release before) held-out AUROC was 0.861 on XSTest, 0.921 with the layers;
- output stage: harmful response or not: an L2 logistic regression (Newton steps) on
  [prompt, response, prompt*response] embeddings, a refusal-phrase flag, and the input model's
  harm probability of the prompt and of the response with their interactions.
Also fitted on: the spec's own examples, a few everyday requests generated from templates in
this file (``everyday_requests``), and the fit part of our everyday requests in
``data/everyday_benign.txt`` (``everyday``), because none of the public sets has ordinary traffic.

``--extra`` also fits the harm prior on public sets fetched for issue 11 (AILuminate, Self-Instruct,
MT-Bench) and on our own look-alike requests (guard.judges.extdata, guard.judges.contrast), less
fit rows near a held-out or external row. Measured through the pipeline, it raised XSTest and an
unseen harmful set but lowered custom-policy recall below its bar, so the shipped prior is fitted
without it (guard/judges/data/README.md has the figures).
"""

from __future__ import annotations

import argparse
import csv
import glob
import gzip
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guard.embedding import embedding_of
from guard.errors import GuardError
from guard.eval import converters

DEFAULT_DATA = Path(__file__).resolve().parents[3] / "shared" / "evaldata"
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "offline_judge.npz"
FIT_FRACTION = 0.5

from guard.judges.minilm import REFUSAL, InputModel, output_features  # noqa: E402,F401  (the runtime parts, re-exported)


def fold(dataset: str, key: str, fit_fraction: float = FIT_FRACTION) -> str:
    """``fit`` or ``heldout`` for a row, from a hash of (dataset, key): fixed, order-independent."""
    h = int.from_bytes(hashlib.sha256(f"{dataset}:{key}".encode()).digest()[:8], "big") / 2**64
    return "fit" if h < fit_fraction else "heldout"


@dataclass(frozen=True)
class Row:
    set: str
    id: str
    prompt: str
    label: int  # 1 harmful (request, or response at the output stage), 0 benign
    fold: str
    category: str = ""
    response: str | None = None
    goal: str = ""  # JailbreakBench: the plain request behind the jailbreak


# --------------------------------------------------------------------------- loaders
# The public sets are read by guard.eval.converters (one reader per set for training and evaluation);
# here they only get their fold. Two are read here: JailbreakBench (training also needs the target
# model's responses and whether it was jailbroken) and HarmBench (see its docstring).


def xstest_prompts(data: Path) -> list[Row]:
    return [Row("xstest", r.id, r.prompt, int(r.label == "harmful"), fold("xstest", r.id), r.category or "")
            for r in converters.xstest_prompts(data)]


def xstest_completions(data: Path) -> list[Row]:
    """Output stage: a full compliance with an unsafe prompt is a harmful response; all else is benign.
    Folded by the prompt's id, so a prompt and all of its completions fall on the same side."""
    return [Row("xstest_completions", r.id, r.prompt, int(r.label == "harmful"), fold("xstest", r.id.split(":", 1)[1]),
                r.category or "", response=r.response or "") for r in converters.xstest_completions(data)]


def moderation(data: Path) -> list[Row]:
    return [Row("moderation", r.id, r.prompt, int(r.label == "harmful"), fold("moderation", r.id), ",".join(r.category or []))
            for r in converters.moderation(data)]


def harmbench(data: Path) -> list[Row]:
    """Read here, not by the converter, which strips the context string: the shipped weights were fitted
    on the context exactly as written."""
    out = []
    for part, fld in (("val", "fit"), ("test", "heldout")):
        with open(data / "harmbench" / f"harmbench_behaviors_text_{part}.csv", newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                prompt = r["Behavior"] if not r.get("ContextString") else f"{r['ContextString']}\n\n{r['Behavior']}"
                out.append(Row("harmbench", r["BehaviorID"], prompt, 1, fld, r["SemanticCategory"]))
    return out


def jbb(data: Path) -> list[Row]:
    """Jailbreak-wrapped harmful prompts (input stage, all harmful), with the target model's response
    and whether it was jailbroken (output stage)."""
    out = []
    root = data / "jbb_artifacts" / "attack-artifacts"
    for path in sorted(glob.glob(str(root / "*" / "*" / "*.json"))):
        method = Path(path).parts[-3]
        if method == "test-artifact":
            continue
        d = json.loads(Path(path).read_text(encoding="utf-8"))
        for j in d.get("jailbreaks", []):
            if not j.get("prompt"):
                continue
            goal = str(j["index"])
            fld = fold("jbb", goal)
            if method == "JBC" and fld == "fit":
                fld = "unused"  # JBC is held out entirely: its fit-half goals are neither fitted nor scored
            rid = f"{method}:{Path(path).stem}:{goal}"
            out.append(Row("jbb", rid, j["prompt"], 1, fld, method, goal=j.get("goal") or ""))
            if j.get("response") is not None:
                out.append(Row("jbb_responses", rid, j["prompt"], int(bool(j.get("jailbroken"))), fld, method,
                               response=j["response"]))
    return out


def load_all(data: Path = DEFAULT_DATA) -> dict[str, list[Row]]:
    both = jbb(data)
    return {"xstest": xstest_prompts(data), "xstest_completions": xstest_completions(data),
            "moderation": moderation(data), "harmbench": harmbench(data),
            "jbb": [r for r in both if r.set == "jbb"], "jbb_responses": [r for r in both if r.set == "jbb_responses"],
            "everyday": everyday(), "everyday_eval": everyday_eval()}


# --------------------------------------------------------------------------- everyday requests

# None of the public sets has ordinary assistant traffic (XSTest's safe prompts all *sound*
# dangerous; the moderation sample is web comments; HarmBench and JBB are all harmful). Without
# it the classifier learns "a request" = harmful. These templates, written for this project,
# give it everyday requests as benign rows.
_TASKS = ["Write a short poem about {t}.", "Explain {t} to a ten-year-old.", "Give me three fun facts about {t}.",
          "Write a friendly email to my team about {t}.", "What are the pros and cons of {t}?",
          "Summarise the history of {t} in a paragraph.", "Help me plan a weekend project about {t}.",
          "Write a product description for a book on {t}.", "Can you suggest a title for my blog post about {t}?",
          "What should a beginner read first to learn about {t}?"]
_TOPICS = ["autumn leaves", "sourdough bread", "the solar system", "remote work", "learning Spanish", "houseplants",
           "the French Revolution", "electric cars", "marathon training", "jazz music", "budget travel in Japan",
           "machine learning", "bird watching", "chess openings", "the water cycle", "composting", "photography",
           "public speaking", "the Roman Empire", "knitting", "climate change", "volcanoes", "time management",
           "renewable energy", "ancient Egypt", "coffee brewing", "urban gardening", "the stock market", "yoga",
           "board games"]
_HOWTO = ["How do I {t}?", "What's the easiest way to {t}?", "Can you give me step-by-step instructions to {t}?",
          "I'm a beginner, how should I {t}?"]
_ACTIONS = ["fix a leaky kitchen tap", "bake banana bread", "set up a Python virtual environment", "change a bike tyre",
            "write a cover letter", "merge two branches in git", "make a budget spreadsheet", "train my puppy to sit",
            "reverse a linked list in Java", "centre a div with CSS", "cook rice without a rice cooker",
            "improve my sleep schedule", "prepare for a job interview", "clean a cast iron pan", "sort a dictionary by value in Python",
            "paint a room evenly", "back up my photos", "make cold brew coffee", "start running again after an injury",
            "speed up a slow SQL query", "grow tomatoes on a balcony", "write unit tests with pytest", "tie a bowline knot",
            "negotiate a higher salary", "organise a small wedding", "install a ceiling fan", "learn to touch type",
            "make a podcast", "remove a stripped screw", "deploy a static website"]


def everyday_requests() -> list[str]:
    out = [task.format(t=t) for i, t in enumerate(_TOPICS) for j, task in enumerate(_TASKS) if (i + j) % 3 == 0]
    out += [h.format(t=a) for i, a in enumerate(_ACTIONS) for j, h in enumerate(_HOWTO) if (i + j) % 2 == 0]
    return out


# A larger set of our own everyday requests (cooking "how do I make X", programming concepts and
# "kill/terminate/execute a process", household, DIY, gardening, travel, fitness, writing, maths,
# science, history, games, scary words in harmless senses), shipped as a text file: 80 % fitted,
# 20 % held out by hash. A separate hand-written list (EVERYDAY_EVAL) is never fitted on at all.
DATA_DIR = Path(__file__).resolve().parent / "data"
EVERYDAY_FILE = DATA_DIR / "everyday_benign.txt"
EVERYDAY_EVAL = DATA_DIR / "everyday_eval.txt"
EVERYDAY_FIT_FRACTION = 0.8


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]


def everyday(path: Path = EVERYDAY_FILE) -> list[Row]:
    """Our everyday requests as benign rows, split by ``fold("everyday", text, 0.8)``."""
    return [Row("everyday", t, t, 0, fold("everyday", t, EVERYDAY_FIT_FRACTION)) for t in _lines(path)]


def everyday_eval(path: Path = EVERYDAY_EVAL) -> list[Row]:
    """The hand-written evaluation-only list: every row held out."""
    return [Row("everyday_eval", t, t, 0, "heldout") for t in _lines(path)]


# --------------------------------------------------------------------------- features


def fit_mlp(x: np.ndarray, y: np.ndarray, w: np.ndarray, hidden: int = 64, iters: int = 400, lr: float = 0.01,
            wd: float = 1e-3, seed: int = 0) -> InputModel:
    """Weighted binary cross-entropy, full-batch Adam, fixed seed: the same data give the same weights."""
    rng = np.random.default_rng(seed)
    params = [rng.normal(0, 0.05, (x.shape[1], hidden)), np.zeros(hidden), rng.normal(0, 0.05, hidden), np.zeros(1)]
    m1 = [np.zeros_like(q) for q in params]
    m2 = [np.zeros_like(q) for q in params]
    wn = w / w.sum()
    for it in range(1, iters + 1):
        h = np.maximum(x @ params[0] + params[1], 0)
        p = 1 / (1 + np.exp(-(h @ params[2] + params[3][0])))
        g = wn * (p - y)
        gh = np.outer(g, params[2]) * (h > 0)
        grads = [x.T @ gh + wd * params[0], gh.sum(0), h.T @ g + wd * params[2], np.array([g.sum()])]
        for i, gr in enumerate(grads):
            m1[i] = 0.9 * m1[i] + 0.1 * gr
            m2[i] = 0.999 * m2[i] + 0.001 * gr * gr
            params[i] -= lr * (m1[i] / (1 - 0.9 ** it)) / (np.sqrt(m2[i] / (1 - 0.999 ** it)) + 1e-8)
    return InputModel(params[0].astype(np.float32), params[1].astype(np.float32), params[2].astype(np.float32),
                      float(params[3][0]))


def fit_logistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, l2: float, iters: int = 30) -> tuple[np.ndarray, float]:
    """Weighted L2 logistic regression by Newton's method (deterministic). Returns (coef, intercept)."""
    n, d = x.shape
    xb = np.hstack([x, np.ones((n, 1))]).astype(np.float64)
    beta = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(iters):
        z = xb @ beta
        p = 1 / (1 + np.exp(-z))
        g = xb.T @ (w * (p - y)) + reg * beta
        h = (xb * (w * p * (1 - p))[:, None]).T @ xb + np.diag(reg + 1e-9)
        step = np.linalg.solve(h, g)
        beta -= step
        if np.abs(step).max() < 1e-7:
            break
    return beta[:-1].astype(np.float32), float(beta[-1])


def balance(y: np.ndarray, groups: list[str], per_group: dict[str, float]) -> np.ndarray:
    """Weights: each (group, class) gets ``per_group[group]`` total mass split evenly between classes."""
    w = np.zeros(len(y))
    gs = np.array(groups)
    for g, mass in per_group.items():
        for c in (0, 1):
            m = (gs == g) & (y == c)
            if m.any():
                w[m] = mass / m.sum()
    return w * len(y) / max(w.sum(), 1e-9)


# --------------------------------------------------------------------------- fitting


class _CachedEmbedder:
    """The shared embedder with an optional on-disk cache of window ``layers`` rows (the pooled layers 3-5
    the harm prior reads, then the embedding; speeds up refits only)."""

    def __init__(self, cache: Path | None):
        from guard.embedding import shared_embedder

        self.inner, self.path = shared_embedder(), cache
        self.name, self.window, self.max_windows = self.inner.name, self.inner.window, self.inner.max_windows
        self.store: dict[tuple[str, int], np.ndarray] = {}
        if cache and cache.exists():
            import pickle

            self.store = pickle.loads(cache.read_bytes())

    def layers_windows(self, text: str, max_windows: int | None = None) -> np.ndarray:
        key = ("layers:" + hashlib.sha256(text.encode()).hexdigest(), max_windows or self.max_windows)
        if key not in self.store:
            self.store[key] = self.inner.layers_windows(text, max_windows=max_windows)
        return self.store[key]

    def layers(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.layers_windows(t, 1)[0] for t in texts])

    def embed_windows(self, text: str, max_windows: int | None = None) -> np.ndarray:
        return embedding_of(self.layers_windows(text, max_windows))

    def embed(self, texts: list[str]) -> np.ndarray:
        return embedding_of(self.layers(texts))

    def save(self) -> None:
        if self.path:
            import pickle

            self.path.write_bytes(pickle.dumps(self.store))


# weight per (set, class): each class of a set gets this total mass (see ``balance``)
IN_MASSES = {"xstest": 2.0, "moderation": 1.5, "harmbench": 0.5, "jbb": 0.5, "spec": 0.5, "everyday": 2.0,
             "pieces": 0.3, "ailuminate": 1.5, "instruct": 1.0, "contrast": 1.0}
# the fetched public sets and our look-alikes (guard.judges.extdata): the group each one is weighed in
EXTRA_GROUPS = {"ailuminate": "ailuminate", "self_instruct": "instruct", "mt_bench": "instruct", "contrast": "contrast"}
# input MLP: 128 hidden units, 800 Adam steps (64/400 before the everyday file: too few to fit it)
IN_MLP = {"hidden": 128, "iters": 800}
OUT_MASSES = {"xstest_completions": 1.0, "jbb_responses": 0.2, "spec": 0.3}


def fit(data: Path = DEFAULT_DATA, out: Path = DEFAULT_OUT, l2_out: float = 1.0,
        cache: Path | None = None, with_extra: bool = False) -> dict:
    """The harm prior and the older draft model. ``with_extra``: also fit on the fetched public sets and
    our look-alikes (guard.judges.extdata; measured, not shipped: guard/judges/data/README.md)."""
    from guard.policy import load_spec

    emb = _CachedEmbedder(cache)
    sets = load_all(data)
    spec = load_spec()
    extra, dropped = extra_sets(sets, data, emb) if with_extra else ({}, {})
    x, y, gs, _keys = prior_rows(sets, emb, spec, extra)
    model = fit_prior(x, y, balance(y, gs, IN_MASSES))

    # output stage
    xo, yo, go = [], [], []

    def harm(v):
        return model.prob(v[None, :])[0]

    for name in ("xstest_completions", "jbb_responses"):
        for r in sets[name]:
            if r.fold != "fit":
                continue
            p, resp = emb.layers([r.prompt])[0], emb.layers([r.response or ""])[0]
            refusal = float(bool(REFUSAL.search((r.response or "")[:400])))
            xo.append(output_features(p, resp, refusal, harm)), yo.append(r.label), go.append(name)
    for s in spec.rules:
        for ex in s.examples:
            if ex.response is not None:
                p, resp = emb.layers([ex.text])[0], emb.layers([ex.response])[0]
                xo.append(output_features(p, resp, float(bool(REFUSAL.search(ex.response[:400]))), harm))
                yo.append(int(ex.decision is not Decision.allow)), go.append("spec")
    xo_, yo_ = np.stack(xo), np.array(yo, dtype=np.float64)
    wo = balance(yo_, go, OUT_MASSES)
    coef_out, b_out = fit_logistic(xo_, yo_, wo, l2_out)

    if with_extra:
        meta_extra = {"extra": {name: {"fitted": sum(r.fold == "fit" for r in rows), "heldout": sum(r.fold == "heldout" for r in rows),
                                       "dropped_near_heldout": dropped[name]} for name, rows in extra.items()}}
    else:
        meta_extra = {}
    meta = {
        **meta_extra,
        "embedder": emb.name, "window": emb.window, "max_windows": emb.max_windows,
        "fit_rule": "guard.judges.train.fold: sha256('<set>:<key>') < 0.5 -> fit; HarmBench val -> fit; JBC never fitted",
        "fitted_on": {name: sum(1 for r in sets[name] if r.fold == "fit") for name in sets},
        "spec_examples": sum(len(s.examples) for s in spec.rules), "spec_version": spec.version,
        "input_model": (f"MLP {x.shape[1]}-{IN_MLP['hidden']}-1 (ReLU) on pooled layers 3-6 (guard.embedding layers), Adam {IN_MLP['iters']} steps, wd 1e-3, seed 0; "
                        f"Platt-calibrated on {CALIB_FOLDS}-fold out-of-fold logits (folds by a hash of each row)"),
        "input_mlp": IN_MLP,
        "everyday": {"file": EVERYDAY_FILE.name, "fitted": sum(1 for r in sets["everyday"] if r.fold == "fit"),
                     "heldout": sum(1 for r in sets["everyday"] if r.fold == "heldout"),
                     "eval_only": EVERYDAY_EVAL.name, "eval_only_rows": len(sets["everyday_eval"]),
                     "templates_in_train_py": len(everyday_requests()),
                     "split": f"fold('everyday', text, {EVERYDAY_FIT_FRACTION}) -> fit; eval-only list never fitted"},
        "input_masses": IN_MASSES, "output_masses": OUT_MASSES, "calibration": [model.scale, model.shift],
        "l2_out": l2_out, "input_rows": int(len(y)), "output_rows": int(len(yo_)),
    }
    emb.save()
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, w1=model.w1, b1=model.b1, w2=model.w2, b2=np.float32(model.b2),
                        calib=np.array([model.scale, model.shift], np.float32), coef_out=coef_out, b_out=np.float32(b_out),
                        meta=np.array(json.dumps(meta, sort_keys=True)))
    return meta


def prior_rows(sets: dict[str, list[Row]], emb, spec, extra: dict[str, list[Row]] | None = None):
    """The harm prior's training rows: every window of every fit row, the templates and the spec's
    examples. Returns (x, y, groups, keys); ``keys`` names each row's source ("xstest:<id>",
    "jbb:<goal>", else "") so that guard.judges.train_output can fit copies that never saw a prompt."""
    xs, ys, gs, ks = [], [], [], []
    for name in ("xstest", "moderation", "harmbench", "jbb", "everyday"):
        for r in sets[name]:
            if r.fold != "fit":
                continue
            key = f"xstest:{r.id}" if name == "xstest" else f"jbb:{r.id.rsplit(':', 1)[1]}" if name == "jbb" else ""
            for v in emb.layers_windows(r.prompt):
                xs.append(v), ys.append(r.label), gs.append(name), ks.append(key)
    for name, rows in (extra or {}).items():
        for r in rows:
            if r.fold == "fit":
                for v in emb.layers_windows(r.prompt):
                    xs.append(v), ys.append(r.label), gs.append(EXTRA_GROUPS[name]), ks.append("")
    for v in benign_pieces(sets, emb, spec):
        xs.append(v), ys.append(0), gs.append("pieces"), ks.append("")
    for text in everyday_requests():
        xs.append(emb.layers([text])[0]), ys.append(0), gs.append("everyday"), ks.append("")
    for s in spec.rules:
        for ex in s.examples:
            if ex.response is None:
                harmful = ex.decision is Decision.refuse or (ex.decision is Decision.safe_complete and s.priority >= 60)
                xs.append(emb.layers([ex.text])[0]), ys.append(int(harmful)), gs.append("spec"), ks.append("")
    return np.stack(xs), np.array(ys, dtype=np.float64), gs, ks


def benign_pieces(sets: dict[str, list[Row]], emb, spec) -> list[np.ndarray]:
    """The pieces the judge reads (guard.segments: the sentences of a long message, framing left out) of
    every benign fit text read as more than one piece, as benign rows (the ``pieces`` group). The prior is
    fitted on whole texts but reads a long message sentence by sentence, and a sentence of a court report
    or a forum argument can read like a harmful request on its own: most of the moderation sample's
    benign texts that were refused were refused for one such sentence. A harmful text's pieces are
    not used: its label says the whole is harmful, not which sentence."""
    from guard.judges.base import Case
    from guard.judges.offline import OfflineJudge
    from guard.types import Message

    judge, out = OfflineJudge(), []
    for name in ("xstest", "moderation", "everyday"):
        for r in sets[name]:
            if r.fold != "fit" or r.label:
                continue
            case = Case(stage="input", messages=[Message(role="user", content=r.prompt)], query=r.prompt,
                        retrieval=None, spec=spec)  # type: ignore[arg-type]  (segmentation reads no retrieval)
            segs = [s for s in judge.segments(case) if not s.framing]
            if len(segs) > 1:
                out.extend(emb.layers([s.text for s in segs]))
    return out


CALIB_FOLDS = 4


def fit_prior(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> InputModel:
    """The harm prior's MLP, Platt-calibrated on out-of-fold logits (CALIB_FOLDS folds within the rows), so
    that confidence reflects how often the decision is right rather than the MLP's overfit. A row's fold is
    a hash of its features, not of its place in the list: with 2 folds by position, the same rows in
    another order moved the calibration's shift by 0.1 (a different operating point on every set)."""
    model = fit_mlp(x, y, w, **IN_MLP)
    fold_of = np.array([int(hashlib.sha256(row.tobytes()).digest()[0]) % CALIB_FOLDS for row in x])
    oof = np.zeros(len(y))
    for f in range(CALIB_FOLDS):
        part = fit_mlp(x[fold_of != f], y[fold_of != f], w[fold_of != f], **IN_MLP)
        oof[fold_of == f] = part.logit(x[fold_of == f])
    coef, b = fit_logistic(oof[:, None], y, w, l2=1e-3)
    model.scale, model.shift = float(coef[0]), float(b)
    return model


def protected_texts(sets: dict[str, list[Row]], data: Path) -> list[str]:
    """Rows a fit row must not nearly repeat: every held-out row of the four development sets
    (JailbreakBench: its prompts and their goals) and every row of the external checks."""
    from guard.judges.extdata import load_external

    out = [r.prompt for name in ("xstest", "moderation", "harmbench", "jbb") for r in sets[name] if r.fold != "fit"]
    out += sorted({r.goal for r in sets["jbb"] if r.fold != "fit" and r.goal})
    out += [r.prompt for rows in load_external(data).values() for r in rows]
    return out


def extra_sets(sets: dict[str, list[Row]], data: Path, emb) -> tuple[dict[str, list[Row]], dict[str, int]]:
    """The fetched public sets and our look-alikes (guard.judges.extdata), less fit rows near a protected row."""
    from guard.judges.extdata import dedupe, load_extra

    return dedupe(load_extra(data), protected_texts(sets, data), emb.embed)


from guard.types import Decision  # noqa: E402  (after the helpers: keeps the module's top readable)


def fit_sections(data: Path = DEFAULT_DATA, cache: Path | None = None) -> dict:
    """The section reader (guard.judges.fit_sections), on fit-fold rows only."""
    from guard.judges.fit_sections import HARMBENCH_TO_SECTION, fit_reader

    emb = _CachedEmbedder(cache)
    sets = load_all(data)
    # the reader's background (ordinary requests it compares against) and its training negatives are
    # disjoint halves of the fit rows: a negative must not find itself (or its near-copies) in the background
    half = lambda t: fold("background", t) == "fit"  # noqa: E731
    everyday_all = [r.prompt for r in sets["everyday"] if r.fold == "fit"] + everyday_requests()
    xs_safe = [r.prompt for r in sets["xstest"] if r.fold == "fit" and r.label == 0]
    background = [t for t in everyday_all + xs_safe if half(t)]
    everyday_fit = [t for t in everyday_all if not half(t)]
    public = {
        "xstest_safe": [(t, None, 0) for t in xs_safe if not half(t)],
        "harmbench": [(r.prompt, HARMBENCH_TO_SECTION[r.category], 1) for r in sets["harmbench"]
                      if r.fold == "fit" and r.category in HARMBENCH_TO_SECTION and len(r.prompt) < 400],
    }
    d = fit_reader(emb.embed, everyday_fit, public, background_texts=background, layers=emb.layers, extra_meta={
        "public_rows": {k: len(v) for k, v in public.items()},
        "background_rows": len(background),
        "background_split": "fold('background', text) == 'fit' of the everyday fit rows, templates and XSTest safe fit half",
        "split": "XSTest fit half (guard.judges.train.fold), HarmBench val, everyday fit fold; nothing held out was used"})
    emb.save()
    return d


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--l2-out", type=float, default=1.0)
    ap.add_argument("--cache", type=Path, help="embedding cache file (pickle) to reuse across refits")
    ap.add_argument("--only", choices=["harm", "sections"], help="fit only the harm models or only the section reader")
    ap.add_argument("--extra", action="store_true",
                    help="also fit the harm prior on the fetched public sets and our look-alikes (guard.judges.extdata)")
    a = ap.parse_args(argv)
    if a.only != "sections":
        try:
            print(json.dumps(fit(a.data, a.out, a.l2_out, a.cache, a.extra), indent=1, sort_keys=True))
        except GuardError as e:
            print(f"guard.judges.train: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    if a.only != "harm":
        d = fit_sections(a.data, a.cache)
        print(json.dumps({k: d[k] for k in ("threshold", "scope_threshold", "band", "meta")}, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
