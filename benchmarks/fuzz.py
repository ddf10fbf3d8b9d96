"""A long HTTP fuzz run against ``guard serve`` (not CI; tests/test_fuzz.py is the bounded version).

    .venv/bin/python benchmarks/fuzz.py --requests 2000 [--judge offline] [--seed N]

Hypothesis generates hostile requests for every route (malformed, truncated, deeply nested, lone
surrogates, steering fields, bad types, wrong methods); every answer must keep the contract: no 5xx,
OpenAI-shaped error bodies, streams ending with [DONE]. Prints one summary line; exits 1 on a problem.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import httpx
from hypothesis import HealthCheck, given, settings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fuzz_http import problem, request, send  # noqa: E402

from guard.pipeline import Guard  # noqa: E402
from guard.server.app import create_app  # noqa: E402
from guard.server.config import load_config  # noqa: E402
from guard.server.run import ServerThread  # noqa: E402
from guard.testing.fake_openai import FakeOpenAIServer  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--judge", default="offline")
    p.add_argument("--seed", type=int, default=None, help="derandomise with this seed (default: random)")
    a = p.parse_args()
    statuses: collections.Counter[int] = collections.Counter()
    problems: list[str] = []

    with FakeOpenAIServer() as up:
        config = load_config(env={}, flags={"upstream": up.base_url, "access_log": False, "judge": a.judge,
                                            "body_read_timeout_s": 0.5})
        with ServerThread(create_app(config, guard=Guard.create(config))) as server, httpx.Client(timeout=30) as client:
            base = server.base_url.removesuffix("/v1")

            @settings(max_examples=a.requests, deadline=None, database=None, derandomize=False,
                      suppress_health_check=list(HealthCheck))
            @given(req=request)
            def fuzz(req):
                r = send(client, base, req)
                statuses[r.status_code] += 1
                if (why := problem(r)) is not None:
                    problems.append(f"{why} <- {req!r:.300}")

            if a.seed is not None:
                from hypothesis import seed

                fuzz = seed(a.seed)(fuzz)
            t = time.monotonic()
            fuzz()
            took = time.monotonic() - t
            alive = client.get(base + "/healthz").status_code == 200

    sent = sum(statuses.values())
    print(f"fuzz: {sent} requests in {took:.1f}s, statuses {dict(sorted(statuses.items()))}, "
          f"problems {len(problems)}, server alive after: {alive}")
    for line in problems[:20]:
        print("  " + line)
    return 1 if problems or not alive or sent < a.requests else 0


if __name__ == "__main__":
    sys.exit(main())
