"""``guard train``: fit the offline judge's spec-conditioned part on labelled rows (from guard synth).

    guard train --policy my-bot.md --data rows.jsonl --out my-bot.judge
    guard eval --data my-bot.judge.heldout.jsonl --policy my-bot.md --judge offline:my-bot.judge

A share of the rows (``--heldout``, default 20%, chosen by a hash of each row's id, so reruns agree)
is kept out of fitting and written in guard eval's format, so that before/after figures are measured
on rows the judge never saw.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from guard.errors import GuardError

# where the spec-conditioned offline judge's fitting function may live (looked up lazily)
def register(sub) -> None:
    p = sub.add_parser("train", help="fit the offline judge to a policy from labelled rows (guard synth's output)")
    p.add_argument("--policy", action="append", required=True, metavar="PATH", help="policy file or folder (repeatable)")
    p.add_argument("--data", action="append", required=True, metavar="ROWS.jsonl",
                   help='rows {"text", "response"?, "stage", "section", "decision"} (repeatable)')
    p.add_argument("--out", required=True, metavar="PATH", help="where to write the fitted judge (load it with --judge offline:PATH)")
    p.add_argument("--heldout", type=float, default=0.2, metavar="FRACTION",
                   help="share of rows kept out of fitting and written to PATH.heldout.jsonl (default 0.2)")
    p.set_defaults(run=run)


def read_rows(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise GuardError(f"{path}: cannot read: {e.strerror}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise GuardError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str) or "section" not in row \
                    or row.get("decision") not in ("allow", "refuse", "safe_complete"):
                raise GuardError(f"{path}:{n}: a row needs text, section and decision (allow|refuse|safe_complete)")
            rows.append(row)
    if not rows:
        raise GuardError("no rows to train on")
    return rows


def is_heldout(row: dict, fraction: float) -> bool:
    key = str(row.get("id") or row["text"]).encode()
    return int(hashlib.sha256(key).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def run(args) -> int:
    from guard.policy import load_spec

    if not 0 <= args.heldout < 1:
        raise GuardError("--heldout must be a fraction in [0, 1)")
    from guard.judges.fit_sections import fit_policy  # numpy only, out of the runtime import path

    spec = load_spec(args.policy)
    rows = read_rows(args.data)
    fit = [r for r in rows if not is_heldout(r, args.heldout)]
    held = [r for r in rows if is_heldout(r, args.heldout)]
    unknown = sorted({r["section"] for r in rows} - {s.id for s in spec.sections})
    if unknown:
        raise GuardError(f"rows cite sections the policy does not have: {', '.join(unknown)}")
    fit_rows = [{"text": r["text"], "response": r.get("response"), "stage": r.get("stage", "input"),
                 "section": r["section"], "decision": r["decision"]} for r in fit]
    out = Path(args.out)
    report = fit_policy(spec, fit_rows, out)
    heldout_path = Path(f"{out}.heldout.jsonl")
    with heldout_path.open("w", encoding="utf-8") as f:
        for i, r in enumerate(held):
            f.write(json.dumps({"id": str(r.get("id") or f"heldout:{i}"), "prompt": r["text"],
                                **({"response": r["response"]} if r.get("response") else {}),
                                "label": "benign" if r["decision"] == "allow" else "harmful",
                                "category": r["section"]}, ensure_ascii=False) + "\n")
    print(f"guard train: fitted on {len(fit)} rows ({len(held)} held out -> {heldout_path}) -> {out}")
    if isinstance(report, dict) and report:
        print("  " + json.dumps(report, ensure_ascii=False, default=str)[:600])
    policies = " ".join(f"--policy {p}" for p in args.policy)
    print(f"  before: guard eval --data {heldout_path} {policies}\n"
          f"  after:  guard eval --data {heldout_path} {policies} --judge offline:{out}")
    return 0
