"""The ``guard`` command. Each subcommand lives in guard/commands/ and registers itself here.

Bad input (an unreadable policy, an empty prompt, a bad flag) prints one line to stderr and
exits 2; a lint that finds problems exits 1; everything else exits 0.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Before numpy loads: the offline judge's matrix products are small, and a second OpenBLAS thread
# only waits for a busy core (under load, 14 ms with two threads against 0.24 ms with one for the
# same product). An operator's own setting wins. See docs/judges.md.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from guard.errors import GuardError

COMMANDS = ["check", "policy", "serve", "eval", "synth", "train", "demo"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, as for any other bad input
        self.exit(2, f"guard: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="guard", description="An inference-time guard for LLM applications.")
    parser.add_argument("--version", action="version", version="guard 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"guard.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"guard.commands.{name}":
                continue  # a command not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from guard.logs import configure

    # one-shot commands log only warnings, to stderr; `guard serve` reconfigures for its access log
    configure(level=getattr(args, "log_level", None) or "warning", json=False)
    try:
        return int(args.run(args) or 0)
    except GuardError as e:
        print(f"guard: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `guard ... | head`: the reader left; not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
