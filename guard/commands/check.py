"""``guard check PROMPT``: judge one prompt (and optionally a response to it), print the verdict."""

from __future__ import annotations

import asyncio
import json
import sys

from guard.commands._judge_flags import add_judge_flags, settings_from
from guard.errors import ConfigError, GuardError


def register(sub) -> None:
    p = sub.add_parser("check", help="judge one prompt (and, with --response, a response); offline by default")
    p.add_argument("prompt", help="the user's message")
    p.add_argument("--policy", action="append", default=[], metavar="PATH", help="policy file or folder (repeatable)")
    p.add_argument("--response", default=None, help="a response to judge at the output stage")
    p.add_argument("--fail-open", action="store_true", help="a failed judge allows instead of refusing")
    p.add_argument("--no-probe", action="store_true",
                   help="skip the start-up check of an LLM judge (reachable, model served, context large enough)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_judge_flags(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from guard.pipeline import Guard
    from guard.present import result_json
    from guard.types import decisive

    if not args.prompt.strip():
        raise GuardError("the prompt is empty")
    settings = settings_from(args, policies=args.policy or None, fail_mode="open" if args.fail_open else None)
    guard = Guard.create(settings)  # an unknown judge is a ConfigError here, before any waiting

    async def probe_then_check():
        warm = getattr(guard.judge, "warm_up", None)  # as `guard serve` does: the probe then primes the judge's cache
        if warm is not None:
            warm(guard.spec)
        probe = getattr(guard.judge, "probe", None)
        if probe is not None and not args.no_probe:
            ready = await probe()
            if not ready.ok and not ready.still_decides:
                raise ConfigError(ready.detail)
            if not ready.ok:  # a cascade: its offline verdicts stand, and say they are degraded
                print(f"guard: warning: {ready.detail} (escalations will fail; offline verdicts stand)", file=sys.stderr)
        return await guard.check([{"role": "user", "content": args.prompt}], response=args.response)

    result = asyncio.run(probe_then_check())
    if args.json:
        print(json.dumps(result_json(result), ensure_ascii=False))
    else:
        print(render(result, decisive(result.verdicts)))
    return 0


def render(result, decisive) -> str:
    color = sys.stdout.isatty()
    mark = {"allow": "\033[32m", "refuse": "\033[31m", "safe_complete": "\033[33m"}.get(result.decision.value, "")
    d = result.decision.value.upper()
    lines = [f"{mark}{d}\033[0m" if color else d]
    lines.append(f"  sections:   {', '.join(result.sections) or '-'}")
    if decisive.precedents:
        lines.append(f"  precedents: {', '.join(decisive.precedents)}")
    lines.append(f"  rationale:  {decisive.rationale}")
    lines.append(f"  confidence: {decisive.confidence:.2f}   judge: {decisive.judge}   policy: {result.policy_version}")
    cost = f"${result.judge_cost.usd:.6f}" if result.judge_cost.usd is not None else f"unknown ({result.judge_cost.reason})"
    lines.append(f"  latency:    {result.latency_ms:.1f} ms   judge tokens: {result.judge_usage.total_tokens}   cost: {cost}")
    if decisive.structured_output:
        lines.append(f"  output:     {decisive.structured_output} (how the judge's JSON was enforced)")
    if result.degraded:
        why = next((v.degraded_reason for v in result.verdicts if v.degraded), None) or "the judge failed"
        lines.append(f"  DEGRADED:   {why}")
    if result.decision.value != "allow" and result.text:
        lines.append(f"  reply:      {result.text}")
    return "\n".join(lines)
