"""``guard eval``: measure the guard on labelled rows; ``guard eval convert``: make such rows from the public sets.

    guard eval --data ROWS.jsonl [--stage input|output] [--judge offline|MODEL|cascade:MODEL] [--json] [--out RESULTS.jsonl]
    guard eval --set xstest [--heldout]          # convert a public set in memory and evaluate it
    guard eval --set xstest --attack pad-before-2000 --attack base64   # robustness: flip rates per attack
    guard eval --attack list                    # the attack transforms
    guard eval convert xstest [--out FILE]      # write converted rows (default .cache/evaldata/xstest.jsonl)
    guard eval convert all                      # every set
    guard eval convert --list

Exit 0 when the evaluation ran (whatever the figures), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys

from guard.commands._judge_flags import add_judge_flags, settings_from
from guard.errors import GuardError


EXAMPLES = """examples:
  guard eval convert --list                       the public sets and their stages
  guard eval convert xstest                       -> .cache/evaldata/xstest.jsonl
  guard eval --data .cache/evaldata/xstest.jsonl  judge every row at the input stage
  guard eval --set xstest-completions --heldout   output stage, rows the judge was not fitted on
  guard eval --set xstest --judge cascade:openai/gpt-4o-mini --escalate-below 0.7 --json
  guard eval --data rows.jsonl --attack all       every attack transform: flip rates and benign allowed
  guard eval --attack list                        the attack transforms
"""


def register(sub) -> None:
    p = sub.add_parser("eval", help="measure the guard on labelled JSONL rows (recall, over-refusal, F1, latency, cost)",
                       description="Measure the guard on labelled rows, or convert a public safety set to rows "
                                   "('guard eval convert NAME').", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--data", metavar="FILE", help='JSONL rows: {"id", "prompt", "response"?, "label": "harmful"|"benign", "category"?}')
    src.add_argument("--set", metavar="NAME", dest="set_name", help="a public set, converted in memory (see 'guard eval convert --list')")
    p.add_argument("--stage", choices=["input", "output"], default=None,
                   help="stage to judge (default: output when every row has a response, else input; a --set knows its own)")
    p.add_argument("--policy", action="append", default=[], metavar="PATH", help="policy file or folder (repeatable)")
    p.add_argument("--concurrency", type=int, default=4, metavar="N", help="checks in flight at once (default 4)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N rows")
    p.add_argument("--heldout", action="store_true",
                   help="with --set: only rows the judge was not fitted on (when it says what it was fitted on)")
    p.add_argument("--no-cache", action="store_true", help="judge every row even when an identical one was judged")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", metavar="RESULTS.jsonl", help="write one result per row (id, label, decision, sections, ...)")
    p.add_argument("--attack", action="append", default=[], metavar="NAME",
                   help="also judge every row rewrapped by this attack and report flip rates (repeatable; "
                        "'all' for every one, 'list' to list them)")
    p.add_argument("--attack-seed", type=int, default=0, metavar="N", help="seed of the attack transforms (default 0)")
    add_judge_flags(p)  # every judge setting, over GUARD_* variables
    p.set_defaults(run=run)

    conv = p.add_subparsers(dest="eval_command", title="subcommand", metavar="convert", required=False)
    c = conv.add_parser("convert", help="convert a public set from ../shared/evaldata to JSONL rows")
    c.add_argument("name", nargs="?", help="set name, or 'all'")
    c.add_argument("--out", dest="convert_out", metavar="FILE", help="output file (default .cache/evaldata/NAME.jsonl)")
    c.add_argument("--out-dir", metavar="DIR", help="output folder for 'all' (default .cache/evaldata)")
    c.add_argument("--list", action="store_true", help="list the sets")
    c.set_defaults(run=run_convert)


# --------------------------------------------------------------------------- convert


def run_convert(args) -> int:
    from pathlib import Path

    from guard.eval.converters import SETS, convert, default_out, evaldata_dir, get_set
    from guard.eval.data import write_rows

    if args.list or not args.name:
        if not args.list:
            raise GuardError("name a set to convert, or 'all' (guard eval convert --list)")
        for s in SETS.values():
            print(f"{s.name:<20} {s.stage:<7} {s.about}")
        print(f"(data: {evaldata_dir()})")
        return 0
    names = [n for n, s in SETS.items() if s.present()] if args.name == "all" else [get_set(args.name).name]
    if args.convert_out and len(names) > 1:
        raise GuardError("--out names one file; use --out-dir with 'all'")
    for name in names:
        out = Path(args.convert_out) if args.convert_out else (
            Path(args.out_dir) / f"{name}.jsonl" if args.out_dir else default_out(name))
        rows = convert(name)
        try:
            n = write_rows(out, rows)
        except OSError as e:
            raise GuardError(f"cannot write {out}: {e.strerror}") from None
        harmful = sum(r.harmful for r in rows)
        print(f"{name}: {n} rows ({harmful} harmful, {n - harmful} benign; stage {get_set(name).stage}) -> {out}")
    return 0


# --------------------------------------------------------------------------- eval


def _price(text: str | None):
    if text is None:
        return None
    from guard.accounting import Price

    try:
        i, o = (float(x) for x in text.replace(",", "/").split("/"))
    except ValueError:
        raise GuardError(f"--judge-price must be IN/OUT in USD per million tokens, e.g. 0.15/0.60, not {text!r}") from None
    return Price(input_per_mtok=i, output_per_mtok=o)


def load_rows(args):
    """Rows and stage from --data or --set; a bad file raises EvalDataError (exit 2)."""
    from guard.eval.converters import convert, get_set
    from guard.eval.data import read_rows

    if args.limit is not None and args.limit < 1:
        raise GuardError("--limit must be at least 1")
    if args.set_name:
        ds = get_set(args.set_name)
        rows = convert(ds.name)
        stage = args.stage or ds.stage
        if stage == "output" and any(r.response is None for r in rows):
            raise GuardError(f"set {ds.name} has no responses: it can only be judged at the input stage")
        return rows, stage, ds.name
    if not args.data:
        raise GuardError("give the rows with --data FILE or --set NAME (or: guard eval convert --list)")
    rows = read_rows(args.data, stage=args.stage, limit=None if args.heldout else args.limit)
    stage = args.stage or ("output" if all(r.response is not None for r in rows) else "input")
    return rows, stage, None


def build_guard(args):
    from guard.pipeline import Guard

    settings = settings_from(args, policies=args.policy or None, cache_size=0 if args.no_cache else None)
    return Guard.create(settings)


def warm_up(guard) -> None:
    """Load models before timing, so the first check's latency is a check, not a model load."""
    fn = getattr(guard.judge, "warm_up", None)  # a cascade forwards it to both of its judges
    if callable(fn):
        fn(guard.spec)


def run(args) -> int:
    from guard.eval.fitted import fitted_on, heldout_filter
    from guard.eval.progress import Progress
    from guard.eval.report import render
    from guard.eval.runner import evaluate, rounded

    if args.concurrency < 1:
        raise GuardError("--concurrency must be at least 1")
    if "list" in args.attack:
        return list_attacks()
    rows, stage, set_name = load_rows(args)
    attacks = _attacks(args.attack, stage)
    guard = build_guard(args)
    fitted = fitted_on(guard.judge)
    if args.heldout:
        if not set_name:
            raise GuardError("--heldout needs --set (row ids of a public set tell which rows were fitted)")
        keep = heldout_filter(guard.judge, set_name)
        if keep is not None:
            rows = [r for r in rows if keep(r.id)]
    if args.limit:
        rows = rows[: args.limit]
    if not rows:
        raise GuardError("no rows to evaluate")
    warm_up(guard)
    with Progress(len(rows), label=f"eval {stage}") as bar:
        results, summary = evaluate(guard, rows, stage, args.concurrency, on_done=lambda _r: bar.update())
    summary = {"data": args.data or f"set:{set_name}", "stage": stage, "judge": guard.judge.name,
               "policy_version": guard.spec.version, "fitted_on": fitted, **summary}
    attacked = run_attacks(guard, rows, attacks, stage, args, results) if attacks else {}
    if attacks:
        summary["attacks"] = {name: effect for name, (effect, _) in attacked.items()}
        summary["attack_seed"] = args.attack_seed
    if args.out:
        try:
            with open(args.out, "w", encoding="utf-8") as f:
                for attack, rs in [("", results)] + [(n, rs) for n, (_, rs) in attacked.items()]:
                    for r in rs:
                        f.write(json.dumps({**r.as_json(), **({"attack": attack} if attack else {})},
                                           ensure_ascii=False) + "\n")
        except OSError as e:
            raise GuardError(f"cannot write {args.out}: {e.strerror}") from None
    if args.json:
        print(json.dumps(rounded(summary), ensure_ascii=False))
    else:
        title = f"guard eval  {summary['data']}  judge {guard.judge.name}  policy {guard.spec.version}"
        print(render(summary, results, title=title, stage=stage))
        if attacks:
            from guard.eval.report import render_attacks

            print("\n" + render_attacks(summary["attacks"]))
        if fitted != "nothing fitted":
            print(f"\n  fitted on: {json.dumps(fitted)}" + ("" if args.heldout else
                  "   (rows it was fitted on are included; --set NAME --heldout scores only the others)"))
        if args.out:
            print(f"  per-row results: {args.out}", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- attacks


def list_attacks() -> int:
    from guard.eval.attacks import ATTACKS

    for a in ATTACKS.values():
        print(f"{a.name:<20} {a.about}")
    print(f"{'all':<20} every attack above that applies at the stage (draft attacks: output stage only)")
    return 0


def _attacks(names: list[str], stage: str):
    from guard.eval.attacks import resolve

    return resolve(names, stage)


def run_attacks(guard, rows, attacks, stage: str, args, baseline) -> dict:
    """{attack: (effect, results)}, every attack judged on the same rows after the baseline."""
    from guard.eval.progress import Progress
    from guard.eval.robustness import evaluate_attacks

    with Progress(len(rows) * len(attacks), label=f"attacks {stage}") as bar:
        out = evaluate_attacks(guard, rows, attacks, stage, seed=args.attack_seed, concurrency=args.concurrency,
                               on_done=lambda _r: bar.update(), baseline=baseline)
    return {name: (out["effects"][name], out["results"][name]) for name in out["results"]}
