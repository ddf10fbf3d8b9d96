"""``guard synth``: turn a policy into labelled boundary cases (guard/synth.py explains how).

    guard synth --policy my-bot.md --model openai/gpt-4o-mini --per-section 20 --out rows.jsonl
    guard synth --policy my-bot.md --model openai/smollm2 --api-base http://127.0.0.1:8080/v1 --per-section 2
"""

from __future__ import annotations

import asyncio
import json
import sys

from guard.errors import GuardError


def register(sub) -> None:
    p = sub.add_parser("synth", help="generate labelled boundary cases for each section of a policy (for guard train)",
                       description="A generator model writes cases on both sides of each rule section's line; a judge "
                                   "model labels each against the spec; agreeing cases are written as JSONL rows.")
    p.add_argument("--policy", action="append", required=True, metavar="PATH", help="policy file or folder (repeatable)")
    p.add_argument("--model", required=True, help="the generator: a litellm model string")
    p.add_argument("--judge", default=None, metavar="MODEL", help="the labelling judge: a litellm model string (default: --model)")
    p.add_argument("--api-base", default=None, metavar="URL", help="the generator's server (and the judge's, unless --judge-api-base)")
    p.add_argument("--api-key", default=None, metavar="KEY", help="the generator's key (and the judge's, unless --judge-api-key)")
    p.add_argument("--judge-api-base", default=None, metavar="URL")
    p.add_argument("--judge-api-key", default=None, metavar="KEY")
    p.add_argument("--judge-context-tokens", type=int, default=None, metavar="N", help="the judge model's context window")
    p.add_argument("--per-section", type=int, default=10, metavar="N", help="cases to write per side of each section (default 10)")
    p.add_argument("--section", action="append", default=None, metavar="ID", help="only these sections (repeatable)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S", help="deadline per model call (default 120)")
    p.add_argument("--out", default="synth.jsonl", metavar="ROWS.jsonl", help="where to write the rows (default synth.jsonl)")
    p.add_argument("--eval-out", default=None, metavar="ROWS.jsonl", help="also write the rows in guard eval's format")
    p.set_defaults(run=run)


def run(args) -> int:
    from guard.eval.progress import Progress
    from guard.judges import make_judge
    from guard.policy import load_spec
    from guard.synth import Generator, synthesize

    if args.per_section < 1:
        raise GuardError("--per-section must be at least 1")
    spec = load_spec(args.policy)
    rules = [s for s in spec.rules if not args.section or s.id in args.section]
    generator = Generator(args.model, api_base=args.api_base, api_key=args.api_key, timeout_s=args.timeout)
    judge_base = args.judge_api_base or args.api_base
    judge = make_judge(args.judge or args.model, api_base=judge_base, api_key=args.judge_api_key or args.api_key,
                       timeout_s=args.timeout, context_tokens=args.judge_context_tokens,
                       concurrency=1 if judge_base else 4)  # a local server answers one request at a time
    with Progress(len(rules) * 2 * args.per_section, label="synth") as bar:
        rows, stats = asyncio.run(synthesize(spec, generator, judge, per_section=args.per_section,
                                             sections=args.section, on_progress=lambda _s: bar.update()))
    try:
        with open(args.out, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(r.model_dump_json() + "\n")
        if args.eval_out:
            with open(args.eval_out, "w", encoding="utf-8") as f:
                for r in rows:
                    f.write(json.dumps(r.eval_row(), ensure_ascii=False) + "\n")
    except OSError as e:
        raise GuardError(f"cannot write rows: {e.strerror}") from None
    rate = stats["kept"] / stats["generated"] if stats["generated"] else 0.0
    print(f"guard synth: {stats['generated']} cases written by {args.model}, {stats['kept']} kept ({rate:.0%} agree "
          f"with {judge.name}; {stats['disagreed']} disagreed, {stats['judge_failed']} judge failures) -> {args.out}")
    print("  per section: " + ", ".join(f"{k} {v}" for k, v in stats["per_section"].items()))
    print(f"  tokens: generator {stats['generator_tokens']}, judge {stats['judge_tokens']}", file=sys.stderr)
    if not rows:
        print("  no case was kept: try a stronger generator or judge model", file=sys.stderr)
    return 0
