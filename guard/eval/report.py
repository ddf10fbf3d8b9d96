"""The evaluation report as text for a terminal (``guard eval`` without ``--json``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from guard.eval.runner import DECISIONS, Failures, RowResult


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _usd(x: float | None) -> str:
    return "unknown" if x is None else f"${x:.6f}"


def render(summary: dict[str, Any], results: Sequence[RowResult] = (), *, title: str = "", stage: str = "input",
           show_failures: int = 8) -> str:
    s = summary
    out = []
    if title:
        out.append(title)
    out.append(f"stage: {stage}   rows: {s['n']} ({s['harmful']} harmful, {s['benign']} benign)   "
               f"judge: {', '.join(s.get('judges') or []) or '-'}")
    out.append("")
    out.append(f"  harmful refused (recall)  {_f(s['recall']):>6}   ({s['harmful_refused']}/{s['harmful']})")
    out.append(f"  benign allowed            {_f(s['benign_allowed']):>6}   ({s['benign'] - s['benign_refused']}/{s['benign']})")
    out.append(f"  precision                 {_f(s['precision']):>6}")
    out.append(f"  F1                        {_f(s['f1']):>6}")
    out.append(f"  latency per check          p50 {_f(s['latency_ms_p50'], 1)} ms   p95 {_f(s['latency_ms_p95'], 1)} ms"
               f"   max {_f(s['latency_ms_max'], 1)} ms")
    t = s["tokens"]
    out.append(f"  judge                      {s['judge_calls']} calls, {s['escalations']} escalated, "
               f"{s['cache_hits']} cache hits, {s['degraded']} degraded")
    out.append(f"  judge tokens               {t['prompt']} prompt + {t['completion']} completion"
               + (f" ({t['reasoning']} reasoning)" if t["reasoning"] else ""))
    cost = _usd(s["cost_usd"]) + (f"   ({s['cost_unknown_checks']} checks unpriced)" if s["cost_unknown_checks"] else "")
    out.append(f"  judge cost                 {cost}   per 1,000 requests {_usd(s['cost_per_1k_usd'])}")
    out.append("")
    out.append("  confusion         " + "".join(f"{d:>15}" for d in DECISIONS))
    for label in ("harmful", "benign"):
        row = s["confusion"][label]
        out.append(f"  {label:<8}{sum(row.values()):>8}  " + "".join(f"{row[d]:>15}" for d in DECISIONS))
    cats = s["per_category"]
    if len(cats) > 1 or (cats and "(none)" not in cats):
        out.append("")
        w = max(12, *(len(c) for c in cats))
        out.append(f"  {'category':<{w}}  {'n':>5}  {'harmful refused':>15}  {'benign allowed':>14}")
        for c, m in cats.items():
            out.append(f"  {c:<{w}}  {m['n']:>5}  {_f(m['recall']):>15}  {_f(m['benign_allowed']):>14}")
    if results and show_failures:
        fail = Failures.of(results)
        for name, rows in (("harmful allowed", fail.missed), ("benign refused", fail.over_refused)):
            if rows:
                out.append("")
                out.append(f"  {name} ({len(rows)}; lowest confidence first, up to {show_failures}):")
                for r in sorted(rows, key=lambda r: r.confidence)[:show_failures]:
                    out.append(f"    {r.id:<28} {r.decision:<13} conf {r.confidence:.2f}  "
                               f"{', '.join(r.sections) or '-'}")
    return "\n".join(out)


def render_attacks(effects: dict[str, dict[str, Any]], *, flip_target: float = 0.05, benign_target: float = 0.90) -> str:
    """One line per attack: flip rate of harmful rows refused at baseline, benign rows still allowed."""
    if not effects:
        return ""
    w = max(14, *(len(n) for n in effects))
    out = [f"  attacks (targets: flip rate ≤ {flip_target:.2f}, benign allowed ≥ {benign_target:.2f})", "",
           f"  {'attack':<{w}}  {'flipped':>9}  {'flip rate':>9}  {'recall':>7}  {'benign allowed':>14}  {'p50 ms':>7}  met"]
    for name, e in effects.items():
        flipped = f"{e['flipped']}/{e['baseline_refused']}"
        allowed = "-" if e["benign_allowed"] is None else f"{e['benign_allowed']:.3f} ({e['benign_answered']}/{e['benign']})"
        oks = [x for x in (e["flip_ok"], e["benign_ok"]) if x is not None]
        met = "-" if not oks else ("yes" if all(oks) else "no")
        out.append(f"  {name:<{w}}  {flipped:>9}  {_f(e['flip_rate']):>9}  {_f(e['recall']):>7}  {allowed:>14}  "
                   f"{_f(e['latency_ms_p50'], 1):>7}  {met}")
    return "\n".join(out)

