"""Fit the lexical pre-scorer (guard.prescore) that ranks segments before the model runs.

    .venv/bin/python -m guard.judges.fit_prescore [--data ../shared/evaldata] [--out guard/judges/data/prescore.npz]

Positive ("worth a model run"): harmful requests of the fit folds (XSTest unsafe prompts,
OpenAI moderation rows flagged, HarmBench ``val`` behaviours, JailbreakBench goals of the fit
half, the plain behaviour only), the default spec's refuse and safe-complete examples and the
sentences of those sections' prose, and XSTest's *safe* prompts too: they sound dangerous ("how do I kill a
Python process"), and the ranker's job is to send anything that might be harmful to the model,
which then tells the two apart. Negative: our everyday requests (fit 80 %), our ordinary prose
sentences (``data/prose_benign.txt``, fit 80 %) and the moderation rows not flagged (fit half). Held-out folds are never read. Numpy only, deterministic
(full-batch Adam from zeros); prints held-out AUROC per set.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from guard.judges import train
from guard.prescore import DIM, WEIGHTS, features

# total weight per (set, class) (train.balance); everyday requests weigh little: at more they teach that
# "how do I make ... at home" is benign whatever follows, and a harmful request phrased that way ranks low
MASS = {"xstest": 2.0, "harmbench": 1.0, "jbb": 1.0, "moderation": 1.5, "spec": 1.0, "everyday": 0.5, "prose": 2.0}
PROSE = train.DATA_DIR / "prose_benign.txt"


def _rows(data: Path) -> list[tuple[str, str, int, str]]:
    """(group, text, label, fold) for every row the fit may use or report on."""
    from guard.policy import load_spec
    from guard.types import Decision

    out = [("xstest", r.prompt, 1, r.fold) for r in train.xstest_prompts(data)]  # safe ones too: see above
    out += [("moderation", r.prompt, r.label, r.fold) for r in train.moderation(data)]
    out += [("harmbench", " ".join(r.prompt.split()[-80:]), 1, r.fold) for r in train.harmbench(data)]
    out += [("everyday", r.prompt, 0, r.fold) for r in train.everyday()]
    out += [("prose", t, 0, train.fold("prose", t, 0.8)) for t in train._lines(PROSE)]
    goals = {}
    for r in train.jbb(data):  # the behaviours behind the jailbreaks (not the jailbreak prompts)
        if r.set == "jbb":
            goals.setdefault(r.id.rsplit(":", 1)[1], r)
    out += [("jbb", _goal(data, g), 1, r.fold if r.fold != "unused" else "fit") for g, r in goals.items()]
    out = [o for o in out if o[1]]
    spec = load_spec()
    action = [s for s in spec.rules if s.decision not in (None, Decision.allow)]
    out += [("spec", ex.text, 1, "fit") for s in action for ex in s.examples if ex.decision is not Decision.allow]
    # the action sections' own prose, sentence by sentence: the words the spec uses for harm
    out += [("spec", t.strip(), 1, "fit") for s in action for t in re.split(r"(?<=[.!?])\s+|\n+", s.body)
            if len(t.split()) >= 4 and not t.lstrip().startswith(("-", "*", "Examples", "#"))]
    return out


_GOALS: dict[str, str] = {}


def _goal(data: Path, index: str) -> str:
    """JailbreakBench's goal (the plain harmful behaviour) for a goal index."""
    if not _GOALS:
        import glob

        for path in sorted(glob.glob(str(data / "jbb_artifacts" / "attack-artifacts" / "*" / "*" / "*.json"))):
            for j in json.loads(Path(path).read_text(encoding="utf-8")).get("jailbreaks", []):
                if j.get("goal"):
                    _GOALS.setdefault(str(j["index"]), j["goal"])
    return _GOALS.get(index, "")


def _design(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows, cols, vals = [], [], []
    for i, t in enumerate(texts):
        idx = features(t)
        if idx:
            rows += [i] * len(idx)
            cols += idx
            vals += [1.0 / np.sqrt(len(idx))] * len(idx)
    return np.array(rows), np.array(cols), np.array(vals)


def fit(data: Path, l2: float = 1e-4, iters: int = 600, lr: float = 0.05) -> tuple[np.ndarray, float, dict]:
    allrows = _rows(data)
    fitrows = [r for r in allrows if r[3] == "fit"]
    y = np.array([r[2] for r in fitrows], float)
    w = train.balance(y, [r[0] for r in fitrows], MASS)
    rows, cols, vals = _design([r[1] for r in fitrows])
    n = len(fitrows)
    coef, b = np.zeros(DIM), 0.0
    m1, m2, mb1, mb2 = np.zeros(DIM), np.zeros(DIM), 0.0, 0.0
    for it in range(1, iters + 1):
        z = b + np.bincount(rows, weights=coef[cols] * vals, minlength=n)
        g = w * (1 / (1 + np.exp(-z)) - y) / n
        gw = np.bincount(cols, weights=g[rows] * vals, minlength=DIM) + l2 * coef
        gb = g.sum()
        m1, m2 = 0.9 * m1 + 0.1 * gw, 0.999 * m2 + 0.001 * gw * gw
        mb1, mb2 = 0.9 * mb1 + 0.1 * gb, 0.999 * mb2 + 0.001 * gb * gb
        coef -= lr * (m1 / (1 - 0.9 ** it)) / (np.sqrt(m2 / (1 - 0.999 ** it)) + 1e-8)
        b -= lr * (mb1 / (1 - 0.9 ** it)) / (np.sqrt(mb2 / (1 - 0.999 ** it)) + 1e-8)
    report = {"fit_rows": {g: sum(1 for r in fitrows if r[0] == g) for g in MASS}, "heldout_auroc": {}}
    held = [r for r in allrows if r[3] == "heldout"]
    rows_h, cols_h, vals_h = _design([r[1] for r in held])
    zh = b + np.bincount(rows_h, weights=coef[cols_h] * vals_h, minlength=len(held))
    # held-out ranking quality: every held-out set's positives against the held-out everyday requests
    neg = np.array([z for r, z in zip(held, zh) if r[0] in ("everyday", "prose") or (r[0] == "moderation" and r[2] == 0)])
    for g in ("xstest", "moderation", "harmbench"):
        pos = np.array([z for r, z in zip(held, zh) if r[0] == g and r[2] == 1])
        if len(pos) and len(neg):
            report["heldout_auroc"][g] = round(float((pos[:, None] > neg[None, :]).mean()), 3)
    prose = np.array([z for r, z in zip(held, zh) if r[0] == "prose"])
    unsafe = [z for r, z in zip(held, zh) if r[0] in ("xstest", "harmbench") and r[2] == 1]
    report["heldout_share_above_all_prose"] = round(float(np.mean([z > prose.max() for z in unsafe])), 3)
    return coef.astype(np.float16), float(b), report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=train.DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    a = ap.parse_args(argv)
    coef, b, report = fit(a.data)
    np.savez_compressed(a.out, w=coef, b=np.float32(b), meta=json.dumps(report))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
