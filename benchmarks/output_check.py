"""Cost of the offline judge's output check, against a baseline commit, in one process.

    .venv/bin/python benchmarks/output_check.py [--baseline main] [--limit 40] [--rounds 2]

Both judges are built side by side: this checkout's ``OfflineJudge`` and the one at ``--baseline``
(its guard/judges/offline.py loaded under another module name, with its own weights files), so
the ratios are measured in the same machine state (the machine is shared: absolute figures move,
ratios much less). Drafts: held-out XSTest completions (guard.judges.train.fold; never fitted),
the first ``--limit`` of them in a fixed shuffle (``--join 4``: each draft four of them joined, a
long answer of about 500 words). Two setups, the two judges interleaved per draft:

- ``whole``: one output check per draft, the embedder's cache cleared before each (nothing reused
  from an input check or an earlier draft: the prompt is embedded too);
- ``stream``: the checks guard.streaming runs on a growing draft with its default windows (after
  40 characters, then windows doubling to 160), the cache cleared once per draft, so what a check
  can reuse from the previous one on the same draft is reused; per draft, the sum over its checks.

The clock covers the judge (``decide``), not retrieval, which is the same for both and runs before
it (with the default spec, BM25 and the embedder's nearest sections: about 4 more model runs per
output check). Prints one line per (setup, judge): p50 and p90 in ms, the ratio to the baseline and
the mean number of model runs (per check, or per streamed draft); then how
many drafts the two judges decided differently (whole drafts).
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as the guard command sets it (guard/cli.py), before numpy loads

import argparse
import importlib.util
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from guard.judges.base import Case  # noqa: E402
from guard.judges.offline import OfflineJudge  # noqa: E402
from guard.judges.train import DEFAULT_DATA, xstest_completions  # noqa: E402
from guard.policy import load_spec  # noqa: E402
from guard.retrieval import BM25Retriever, query_text  # noqa: E402
from guard.types import Message  # noqa: E402

FILES = ("guard/judges/data/offline_judge.npz", "guard/judges/data/draft_model.npz")


def baseline_judge(ref: str, tmp: Path):
    """The OfflineJudge of commit ``ref``: its offline.py as module ``baseline_offline``, its weights in ``tmp``."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:guard/judges/offline.py"], check=True,
                         capture_output=True, text=True).stdout
    path = tmp / "baseline_offline.py"
    path.write_text(src, encoding="utf-8")
    for f in FILES:
        blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{ref}:{f}"], check=True, capture_output=True).stdout
        (tmp / Path(f).name).write_bytes(blob)
    spec = importlib.util.spec_from_file_location("baseline_offline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["baseline_offline"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod.OfflineJudge(weights=tmp / "offline_judge.npz")


def stream_prefixes(draft: str, first: int = 40, window: int = 160) -> list[str]:
    """The draft as guard.streaming checks it: after ``first`` characters, then windows doubling to ``window``."""
    out, at, w = [], 0, first
    while at < len(draft):
        at = min(at + w, len(draft))
        out.append(draft[:at])
        w = min(w * 2, window)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", default="main")
    ap.add_argument("--limit", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--setups", default="whole,stream")
    ap.add_argument("--join", type=int, default=1, help="join N drafts into one long draft (default 1: as they are)")
    a = ap.parse_args()
    spec = load_spec()
    ret = BM25Retriever(spec)
    rows = [r for r in xstest_completions(DEFAULT_DATA) if r.fold == "heldout" and r.response]
    random.Random(0).shuffle(rows)
    # --join N: each draft is N held-out drafts joined by blank lines (a long answer), with the first one's prompt
    rows = [(rows[i].prompt, "\n\n".join(r.response for r in rows[i:i + a.join]))
            for i in range(0, a.limit * a.join, a.join)]
    with tempfile.TemporaryDirectory() as tmp:
        judges = {"baseline": baseline_judge(a.baseline, Path(tmp)), "this": OfflineJudge()}
        emb = judges["this"].embedder
        for j in judges.values():
            j._embedder = emb
            j.warm_up(spec)

        def check(judge, prompt: str, draft: str):
            """The judge's part of one output check (retrieval, the same for both judges, runs before the clock)."""
            msgs = [Message(role="user", content=prompt)]
            q = query_text(msgs, draft)
            case = Case(stage="output", messages=msgs, query=q, retrieval=ret.retrieve(q, "output"), spec=spec,
                        draft=draft, prompt=prompt)
            t, r0 = time.perf_counter(), emb._runs
            j = judge.decide(case)
            spent[0] += time.perf_counter() - t
            spent[1] += emb._runs - r0
            return j

        spent = [0.0, 0]  # seconds in the judge (retrieval excluded), model runs
        times = {(s, n): [] for s in a.setups.split(",") for n in judges}
        runs = {k: [] for k in times}
        decisions = {n: [] for n in judges}
        for rnd in range(a.rounds):
            for prompt, draft in rows:
                for name, judge in (judges.items() if rnd % 2 == 0 else reversed(judges.items())):
                    if "whole" in a.setups:
                        emb._cache.clear()
                        spent[:] = [0.0, 0]
                        j = check(judge, prompt, draft)
                        times[("whole", name)].append(spent[0] * 1000)
                        runs[("whole", name)].append(spent[1])
                        if rnd == 0:
                            decisions[name].append(j.decision)
                    if "stream" in a.setups:
                        emb._cache.clear()
                        spent[:] = [0.0, 0]
                        for prefix in stream_prefixes(draft):
                            check(judge, prompt, prefix)
                        times[("stream", name)].append(spent[0] * 1000)
                        runs[("stream", name)].append(spent[1])
    checks = statistics.mean(len(stream_prefixes(d)) for _, d in rows)
    for (setup, name), ts in times.items():
        base = statistics.median(times[(setup, "baseline")])
        p50, p90 = statistics.median(ts), statistics.quantiles(ts, n=10)[-1]
        extra = f" ({checks:.1f} checks per draft)" if setup == "stream" else ""
        print(f"output-check {setup:6s} {name:8s} n={len(ts)} p50={p50:.1f}ms p90={p90:.1f}ms "
              f"ratio={p50 / base:.2f} model_runs={statistics.mean(runs[(setup, name)]):.1f}{extra}")
    if decisions["baseline"]:
        diff = sum(x != y for x, y in zip(decisions["baseline"], decisions["this"]))
        print(f"decisions differing from the baseline: {diff}/{len(rows)}")


if __name__ == "__main__":
    main()
