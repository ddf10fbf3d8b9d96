"""``guard policy lint|show|retrieve``: the safety engineer's tools for writing a spec."""

from __future__ import annotations

import sys

from guard.errors import PolicyErrors


def register(sub) -> None:
    p = sub.add_parser("policy", help="lint, show and try policies")
    ps = p.add_subparsers(dest="policy_command", required=True, parser_class=type(p))
    lint = ps.add_parser("lint", help="check policy files; print file:line: reason for each problem (exit 1)")
    lint.add_argument("paths", nargs="+", metavar="PATH")
    lint.set_defaults(run=run_lint)
    show = ps.add_parser("show", help="list sections with their decisions and token counts")
    show.add_argument("paths", nargs="+", metavar="PATH")
    show.set_defaults(run=run_show)
    ret = ps.add_parser("retrieve", help="which sections a text retrieves, with scores")
    ret.add_argument("paths", nargs="+", metavar="PATH", help="policy files, then the text as the last argument")
    ret.add_argument("--stage", choices=["input", "output"], default="input")
    ret.add_argument("--top-k", type=int, default=4)
    ret.set_defaults(run=run_retrieve)


def run_lint(args) -> int:
    from guard.policy import load_spec

    try:
        spec = load_spec(args.paths)
    except PolicyErrors as e:
        for err in e.errors:
            print(err)
        print(f"{len(e.errors)} problem(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(spec.sections)} sections ({len(spec.rules)} rules, "
          f"{sum(len(s.examples) for s in spec.rules)} examples) in {len(spec.sources)} file(s); version {spec.version}")
    return 0


def run_show(args) -> int:
    from guard.policy import load_spec

    spec = load_spec(args.paths)
    print(f"spec version {spec.version}: {', '.join(spec.sources)}")
    print(f"{'section':<22} {'policy':<12} {'kind':<9} {'decision':<14} {'prio':>4} {'ex':>3} {'tokens':>6}  title")
    for s in spec.sections:
        print(f"{s.id:<22} {s.policy:<12} {s.kind:<9} {(s.decision.value if s.decision else '-'):<14} "
              f"{s.priority:>4} {len(s.examples):>3} {s.tokens:>6}  {s.title}")
    print(f"total {sum(s.tokens for s in spec.sections)} tokens (about 4 characters per token)")
    return 0


def run_retrieve(args) -> int:
    from guard.errors import GuardError
    from guard.policy import load_spec
    from guard.retrieval import BM25Retriever

    if len(args.paths) < 2:
        raise GuardError("usage: guard policy retrieve PATH... TEXT")
    *paths, text = args.paths
    if not text.strip():
        raise GuardError("the text to retrieve for is empty")
    spec = load_spec(paths)
    retriever = BM25Retriever(spec, top_k=args.top_k)
    r = retriever.retrieve(text, args.stage)
    print("always:    " + ", ".join(s.id for s in r.always))
    ranked = retriever.scores(text, args.stage)
    chosen = set(r.ids)
    for section, score in ranked[: max(args.top_k + 3, 8)]:
        mark = "*" if section.id in chosen else " "
        print(f"{mark} {score:7.3f}  {section.id:<22} {section.decision.value if section.decision else '-'}")
    print("(* = sent to the judge)")
    return 0
