"""What the cascade saves: escalation rate and judge cost per 1,000 requests, against always
calling the reasoning judge (issue 4, part 4).

    .venv/bin/python benchmarks/cascade.py [--sets xstest,moderation] [--escalate-below 0.8] [--model openai/gpt-4o-mini] [--limit N]

No reasoning judge can run on this machine, so the LLM judge is served by the fake
OpenAI-compatible server (guard.testing.fake_openai) over real HTTP through litellm, scripted as
an *oracle*: it answers valid verdict JSON with the row's true label (refuse citing a retrieved
section for a harmful row, allow for a benign one) and a fixed, realistic usage of 900 prompt +
150 completion tokens, priced at the model's price in litellm's price map. Three passes over
the same rows, in one run:

1. offline judge alone (the confidences that decide what escalates);
2. the cascade ``cascade:MODEL`` at the configured band: the offline judge decides confident
   rows, the rest go to the LLM judge over HTTP;
3. the LLM judge alone on every row.

Cost figures are measured (token usage reported by the server x price). Quality figures of
passes 2 and 3 assume a perfect reasoning judge, so they are a ceiling, not a measurement of
any real model. The table of other bands is computed from pass 1's confidences and pass 3's
per-call cost. Writes benchmarks/results/cascade.md; prints one line per pass.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("OPENAI_API_KEY", "sk-fake-for-the-local-fake-server")

from guard.accounting import known_price  # noqa: E402
from guard.eval.converters import SETS, convert  # noqa: E402
from guard.eval.fitted import fitted_on, heldout_filter  # noqa: E402
from guard.eval.progress import Progress  # noqa: E402
from guard.eval.runner import evaluate, summarize  # noqa: E402
from guard.pipeline import Guard  # noqa: E402
from guard.settings import GuardSettings  # noqa: E402
from guard.types import Usage  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PROMPT_TOKENS, COMPLETION_TOKENS = 900, 150
BANDS = (0.55, 0.6, 0.7, 0.8, 0.9, 0.95)
SERVER_KIND = ["?"]
LATENCY_NOTE = (" The p50 column is measured with 4 checks in flight: the offline judge computes on the event loop (its deliberate() does not yield), so a check's latency includes waiting behind other checks' embedding work, which is why the cascade's p50 can exceed the LLM-only run's.")

_IDS = re.compile(r"cite them by id: ([^)]*)\)")
_CONVO = re.compile(r"CONVERSATION:\n\[user\] (.*?)\n(?:\nDRAFT RESPONSE:\n(.*?)\n)?</DATA-", re.S)


class Oracle:
    """Answers a judge request with the true label of the row it is about, as valid verdict JSON."""

    def __init__(self, rows):
        self.labels = {(r.prompt, r.response if r.response is not None else None): r.label for r in rows}
        self.by_prompt = {r.prompt: r.label for r in rows}
        self.calls = 0

    def verdict(self, messages: list[dict]) -> str:
        self.calls += 1
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        ids = [i.strip() for i in (_IDS.search(system).group(1).split(",") if _IDS.search(system) else []) if i.strip()]
        m = _CONVO.search(user)
        prompt, draft = (m.group(1), m.group(2)) if m else ("", None)
        label = self.labels.get((prompt, draft)) or self.by_prompt.get(prompt, "benign")
        if label == "harmful" and ids:
            return json.dumps({"decision": "refuse", "sections": [ids[-1]], "confidence": 0.95,
                               "rationale": f"oracle: harmful; {ids[-1]} applies."})
        return json.dumps({"decision": "allow", "sections": [], "confidence": 0.95, "rationale": "oracle: benign."})


def serve(oracle: Oracle):
    """The fake OpenAI-compatible server, answering every chat completion with the oracle's verdict."""
    from guard.testing.fake_openai import FakeOpenAIServer

    def reply(body: dict) -> dict:
        return {"content": oracle.verdict(body.get("messages") or []),
                "usage": {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS}}

    return FakeOpenAIServer(reply=reply)


def run(guard, rows, stage, label):
    with Progress(len(rows), label=f"{label:<9}") as bar:
        results, s = evaluate(guard, rows, stage, concurrency=4, on_done=lambda _r: bar.update())
    return results, s


def _f(x, d=3):
    return "–" if x is None else f"{x:.{d}f}"


def _usd(x):
    return "–" if x is None else f"${x:.4f}"


def line(name, s):
    return (f"{name:<22} n={s['n']} judge_calls={s['judge_calls']} escalations={s['escalations']} "
            f"escalation_rate={_f(s['escalation_rate'])} recall={_f(s['recall'])} benign_allowed={_f(s['benign_allowed'])} "
            f"f1={_f(s['f1'])} cost_per_1k={_usd(s['cost_per_1k_usd'])} p50={_f(s['latency_ms_p50'], 1)}ms")


def measure(a, name: str, price, offline, fitted) -> list[str]:
    """The three passes over one set; returns the Markdown section."""
    ds = SETS[name]
    rows = convert(name)
    keep = None if a.all_rows else heldout_filter(offline.judge, name)
    if keep is not None:
        rows = [r for r in rows if keep(r.id)]
    rows = rows[: a.limit] if a.limit else rows
    oracle = Oracle(rows)
    print(f"# {name}: {len(rows)} rows", flush=True)
    off_results, off = run(offline, rows, ds.stage, "offline")
    print(line("offline", off), flush=True)

    with serve(oracle) as server:
        SERVER_KIND[0] = "the fake OpenAI-compatible server guard.testing.fake_openai"
        common = dict(cache_size=0, judge_api_base=server.base_url, judge_price=price, judge_timeout_s=30)
        cascade = Guard.create(GuardSettings(judge=f"cascade:{a.model}", escalate_below=a.escalate_below, **common))
        cascade.judge.first = offline.judge  # the same (warm) offline judge
        before = oracle.calls
        _, cas = run(cascade, rows, ds.stage, "cascade")
        cascade_http_calls = oracle.calls - before
        print(line(f"cascade@{a.escalate_below:g}", cas), flush=True)
        llm = Guard.create(GuardSettings(judge=a.model, **common))
        before = oracle.calls
        _, always = run(llm, rows, ds.stage, "llm")
        llm_http_calls = oracle.calls - before
        print(line("always LLM", always), flush=True)

    expected = sum(r.confidence < a.escalate_below for r in off_results)
    per_call = always["cost_usd"] / max(always["judge_calls"], 1)
    bands = []
    for t in sorted(set(BANDS) | {a.escalate_below}):
        esc = [r.confidence < t for r in off_results]
        mixed = [r if not e else replace(r, decision="refuse" if r.harmful else "allow") for r, e in zip(off_results, esc)]
        s = summarize(mixed)
        kept = [r.correct for r, e in zip(off_results, esc) if not e]
        bands.append({"t": t, "rate": sum(esc) / len(esc), "cost_1k": sum(esc) * per_call / len(esc) * 1000,
                      "kept_acc": sum(kept) / len(kept) if kept else None,
                      "recall": s["recall"], "benign_allowed": s["benign_allowed"], "f1": s["f1"]})
    saving = 1 - cas["cost_usd"] / always["cost_usd"] if always["cost_usd"] else None
    consistent = cas["escalations"] == expected == cascade_http_calls
    print(f"{name} cascade@{a.escalate_below:g}: {cas['escalations']}/{cas['n']} escalated ({_f(cas['escalation_rate'])}), "
          f"{_usd(cas['cost_per_1k_usd'])} vs {_usd(always['cost_per_1k_usd'])} per 1,000 requests always calling "
          f"{a.model}: {_f(saving * 100 if saving is not None else None, 1)}% saved; "
          f"escalations = HTTP calls = offline confidences below the band: {consistent}", flush=True)
    L = [f"## {name} ({ds.stage} stage, {len(rows)} rows"
         + (", held out: the rows the offline judge was not fitted on" if keep is not None else "") + ")", "",
         "| setup | judge calls to the LLM | escalation rate | judge cost per 1,000 requests | recall | benign allowed | F1 | p50 ms |",
         "|---|---:|---:|---:|---:|---:|---:|---:|",
         f"| offline only | 0 | – | {_usd(off['cost_per_1k_usd'])} | {_f(off['recall'])} | {_f(off['benign_allowed'])} | {_f(off['f1'])} | {_f(off['latency_ms_p50'], 1)} |",
         f"| cascade, escalate below {a.escalate_below:g} | {cascade_http_calls} | {_f(cas['escalation_rate'])} | {_usd(cas['cost_per_1k_usd'])} | {_f(cas['recall'])} | {_f(cas['benign_allowed'])} | {_f(cas['f1'])} | {_f(cas['latency_ms_p50'], 1)} |",
         f"| always the LLM judge | {llm_http_calls} | 1.000 | {_usd(always['cost_per_1k_usd'])} | {_f(always['recall'])} | {_f(always['benign_allowed'])} | {_f(always['f1'])} | {_f(always['latency_ms_p50'], 1)} |",
         "",
         f"**Escalating below {a.escalate_below:g} sends {_f(cas['escalation_rate'] * 100, 1)}% of requests to the reasoning judge: "
         f"{_usd(cas['cost_per_1k_usd'])} per 1,000 requests against {_usd(always['cost_per_1k_usd'])} for always calling it, "
         f"{_f(saving * 100 if saving is not None else None, 1)}% saved.** Every escalated verdict is the LLM judge's; "
         f"escalations ({cas['escalations']}) = HTTP calls ({cascade_http_calls}) = offline verdicts below the band ({expected}).",
         "",
         "Other bands, computed from the offline pass's confidences and the measured cost per call "
         "(quality assumes the oracle on escalated rows):", "",
         "| escalate below | escalation rate | cost per 1,000 requests | saving vs always LLM | offline accuracy on the rows it keeps | recall | benign allowed | F1 |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for b in bands:
        save = 1 - b["cost_1k"] / (per_call * 1000) if per_call else None
        L.append(f"| {b['t']:g} | {b['rate']:.3f} | {_usd(b['cost_1k'])} | {_f(save * 100 if save is not None else None, 1)}% | "
                 f"{_f(b['kept_acc'])} | {_f(b['recall'])} | {_f(b['benign_allowed'])} | {_f(b['f1'])} |")
    return L + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="xstest,moderation", help="comma-separated set names")
    ap.add_argument("--escalate-below", type=float, default=GuardSettings().escalate_below)
    ap.add_argument("--model", default="openai/gpt-4o-mini", help="litellm model string of the reasoning judge (priced by name)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--all-rows", action="store_true", help="include rows the offline judge was fitted on (default: held-out rows only)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cascade.md")
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.sets.split(",") if n.strip()]
    if any(n not in SETS for n in names):
        ap.error(f"known sets: {', '.join(SETS)}")
    price = known_price(a.model)
    if price is None:
        ap.error(f"no price for {a.model} in litellm's price map")
    per_call = price.cost(Usage(prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS)).usd
    offline = Guard.create(GuardSettings(cache_size=0))
    if hasattr(offline.judge, "warm_up"):
        offline.judge.warm_up(offline.spec)
    fitted = fitted_on(offline.judge)
    sections = []
    for name in names:
        sections += measure(a, name, price, offline, fitted)

    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cmd = ".venv/bin/python benchmarks/cascade.py" + (f" --sets {a.sets}" if a.sets != "xstest,moderation" else "") + (
        f" --escalate-below {a.escalate_below:g}" if a.escalate_below != GuardSettings().escalate_below else "") + (
        f" --limit {a.limit}" if a.limit else "") + (" --all-rows" if a.all_rows else "")
    L = ["# Cascade: escalation rate and judge cost", "",
         f"Measured {date} with", "", f"    {cmd}", "",
         f"Offline judge `{offline.judge.name}` (fitted on: "
         + (fitted if isinstance(fitted, str) else "`" + json.dumps(fitted) + "`") + "). Reasoning judge "
         f"`{a.model}`, played by {SERVER_KIND[0]}, over HTTP through "
         f"litellm, answering valid verdict JSON with {PROMPT_TOKENS} prompt + {COMPLETION_TOKENS} completion tokens "
         f"per call, priced from litellm's price map at ${price.input_per_mtok:g} / ${price.output_per_mtok:g} per "
         f"million input / output tokens (${per_call:.6f} per call). The fake judge is an oracle (it answers the "
         "true label), so the quality columns of rows that reached it are a ceiling for a perfect reasoning judge, "
         "not a measurement of a model; escalations, calls and cost are measured. XSTest is adversarial by design "
         "(every prompt sits near the line), so its escalation rate is a worst case; the moderation sample is closer "
         "to ordinary traffic.", ""]
    L += sections
    L += ["Latency of the LLM rows is the fake server's (instant) plus litellm's client overhead; a real "
          "reasoning judge adds seconds per escalated call, so the escalation rate is also the share of requests "
          "that wait for it." + LATENCY_NOTE]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(L) + "\n", encoding="utf-8")
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
