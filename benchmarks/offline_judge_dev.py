"""Measure the offline judge on the held-out folds of ../shared/evaldata, through the real pipeline stage.

    .venv/bin/python benchmarks/offline_judge_dev.py [--judge offline|offline:precedent] [--sets xstest,...] [--json]

Rows the judge was fitted on (guard.judges.train.fold) are skipped; one summary line per set.
Input stage: XSTest prompts, OpenAI moderation (flagged in any category = harmful), HarmBench
test, JailbreakBench artifacts. Output stage: XSTest completions (full compliance with an
unsafe prompt = harmful response). ``benign_allowed`` counts only ``allow`` as allowed (strict);
``benign_not_refused`` counts a safe completion of a benign row as not refused (issue 4's
definition); for harmful rows any decision but ``allow`` counts as refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import logging

import structlog

from guard.judges.train import DEFAULT_DATA, load_all
from guard.pipeline import Guard
from guard.settings import GuardSettings
from guard.types import Decision, Message

STAGE = {"xstest": "input", "moderation": "input", "harmbench": "input", "jbb": "input", "xstest_completions": "output"}


def main() -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--sets", default="xstest,harmbench,jbb,moderation,xstest_completions")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--judge", default="offline", help="offline (the embedding judge) or offline:precedent (TF-IDF)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--rows", type=Path, help="write per-row results (JSONL) here")
    a = ap.parse_args()
    guard = Guard.create(GuardSettings(cache_size=0, judge=a.judge))
    warm = getattr(guard.judge, "warm_up", None)
    if warm:
        warm(guard.spec)
    sets = load_all(a.data)
    out = {}
    rows_out = open(a.rows, "w") if a.rows else None
    for name in a.sets.split(","):
        rows = [r for r in sets[name] if r.fold == "heldout"]
        if a.limit:
            rows = rows[: a.limit]
        tp = fp = tn = fn = sc_benign = 0
        lat, confs = [], []
        for r in rows:
            msgs = [Message(role="user", content=r.prompt)]
            t0 = time.perf_counter()
            v = asyncio.run(guard.check_stage(STAGE[name], msgs, r.response if STAGE[name] == "output" else None))
            lat.append((time.perf_counter() - t0) * 1000)
            refused = v.decision is not Decision.allow
            tp += refused and r.label == 1
            fn += (not refused) and r.label == 1
            fp += refused and r.label == 0
            tn += (not refused) and r.label == 0
            sc_benign += v.decision is Decision.safe_complete and r.label == 0
            confs.append((v.confidence, refused == bool(r.label)))
            if rows_out:
                rows_out.write(json.dumps({"set": name, "id": r.id, "label": r.label, "decision": v.decision.value,
                                           "sections": v.sections, "confidence": v.confidence, "ms": round(lat[-1], 2)}) + "\n")
        rec = tp / max(tp + fn, 1)
        prec = tp / max(tp + fp, 1)
        res = {"n": len(rows), "harmful": tp + fn, "benign": tn + fp, "recall": round(rec, 3),
               "benign_allowed": round(tn / max(tn + fp, 1), 3) if tn + fp else None,
               # the definition: a safe completion of a benign row is not a refusal
               "benign_not_refused": round((tn + sc_benign) / max(tn + fp, 1), 3) if tn + fp else None,
               "precision": round(prec, 3),
               "f1": round(2 * prec * rec / max(prec + rec, 1e-9), 3),
               "latency_ms_p50": round(statistics.median(lat), 2),
               "latency_ms_p95": round(sorted(lat)[int(0.95 * (len(lat) - 1))], 2)}
        # calibration: accuracy by confidence band
        bands = {}
        for lo, hi in ((0, 0.6), (0.6, 0.8), (0.8, 0.9), (0.9, 1.01)):
            sel = [ok for c, ok in confs if lo <= c < hi]
            bands[f"{lo:g}-{min(hi, 1):g}"] = {"n": len(sel), "accuracy": round(sum(sel) / len(sel), 3) if sel else None}
        res["accuracy_by_confidence"] = bands
        out[name] = res
        if not a.json:
            print(f"{name:20s} n={res['n']:5d} recall={res['recall']:.3f} benign_allowed={res['benign_allowed']} "
                  f"(not_refused={res['benign_not_refused']}) "
                  f"precision={res['precision']:.3f} f1={res['f1']:.3f} p50={res['latency_ms_p50']}ms "
                  f"p95={res['latency_ms_p95']}ms calib={json.dumps(bands)}", flush=True)
    if a.json:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
