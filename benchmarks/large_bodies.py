"""Large bodies do not stall the server or keep its memory: ``/healthz`` latency while 4 MB messages are
judged, and the server's RSS after ten of them.

    .venv/bin/python benchmarks/large_bodies.py [--messages 10] [--mb 4]

Runs ``guard serve`` (offline judge) as a child process against the fake upstream, once per
``oversize`` setting (refuse: the default; truncate: the check reads head and tail), polls ``/healthz``
every 10 ms while the messages go through ``/v1/chat/completions`` and ``/v1/guard/check`` two at a
time, and prints one summary line per setup. Targets: /healthz p99 < 50 ms, RSS < 250 MB after.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time

import httpx

from guard.testing.fake_openai import FakeOpenAIServer

WORDS = ("the of and to in is for on that with as by this be are from at or an it was which not can have more "
         "process server memory python kill request answer water garden recipe history river music").split()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def text_of(n_chars: int, seed: int) -> str:
    rnd = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        w = rnd.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)[:n_chars]


def poll(base: str, stop, mark, results) -> None:
    """/healthz every 10 ms until ``stop``: latencies before ``mark`` is set (idle) and after (busy)."""
    idle, busy = [], []
    with httpx.Client(timeout=30) as c:
        while not stop.is_set():
            t = time.perf_counter()
            c.get(base + "/healthz")
            (busy if mark.value else idle).append((time.perf_counter() - t) * 1000)
            time.sleep(0.01)
    results.put((idle, busy))


def p(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def run_setup(upstream: str, oversize: str, messages: int, mb: float, judge: str, idle_s: float = 4.0) -> str:
    env = {**os.environ, "GUARD_OVERSIZE": oversize, "GUARD_ACCESS_LOG": "false", "GUARD_JUDGE": judge}
    proc = subprocess.Popen([sys.executable, "-m", "guard.cli", "serve", "--port", "0", "--upstream", upstream,
                             "--log-level", "warning"], stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = re.search(r"listening on (\S+)", proc.stderr.readline()).group(1)
        base = url.removesuffix("/v1")
        with httpx.Client(timeout=120) as c:
            while c.get(base + "/readyz").status_code != 200:
                time.sleep(0.2)
            c.post(url + "/guard/check", json={"messages": [{"role": "user", "content": "warm up"}]})
        ready = rss_mb(proc.pid)
        # bodies encoded up front, and the poller in its own process: the client's work must not be measured
        bodies = [json.dumps({"model": "m", "messages": [{"role": "user", "content": text_of(int(mb * 1_000_000), i)}]})
                  .encode() for i in range(messages)]
        results = multiprocessing.Queue()
        stop = multiprocessing.Event()
        mark = multiprocessing.Value("i", 0)
        poller = multiprocessing.Process(target=poll, args=(base, stop, mark, results))
        poller.start()
        time.sleep(idle_s)  # the machine's own noise, measured the same way
        statuses: list[int] = []
        peak = [ready]

        def send(i: int) -> None:
            route = "/chat/completions" if i % 2 else "/guard/check"
            with httpx.Client(timeout=300) as c:
                statuses.append(c.post(url + route, content=bodies[i], headers={"content-type": "application/json"})
                                .status_code)
            peak[0] = max(peak[0], rss_mb(proc.pid))

        mark.value = 1

        t0 = time.monotonic()
        for i in range(0, messages, 2):
            pair = [threading.Thread(target=send, args=(j,)) for j in range(i, min(i + 2, messages))]
            for t in pair:
                t.start()
            for t in pair:
                t.join()
        took = time.monotonic() - t0
        stop.set()
        idle, busy = results.get(timeout=30)
        poller.join()
        time.sleep(2.0)
        after = rss_mb(proc.pid)
        return (f"judge={judge} oversize={oversize:8s} {messages} x {mb:g} MB in {took:5.1f}s statuses {sorted(set(statuses))}: "
                f"/healthz p50 {statistics.median(busy):.1f} ms p99 {p(busy, 0.99):.1f} ms max {max(busy):.1f} ms "
                f"(n={len(busy)}; idle: p99 {p(idle, 0.99):.1f} ms max {max(idle):.1f} ms n={len(idle)}); RSS ready {ready:.0f} MB, peak {peak[0]:.0f} MB, "
                f"2 s after {after:.0f} MB")
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10)
    ap.add_argument("--mb", type=float, default=4.0)
    ap.add_argument("--oversize", nargs="*", default=["refuse", "truncate"])
    ap.add_argument("--judge", default="offline", help="offline (MiniLM), offline:precedent (TF-IDF), ...")
    a = ap.parse_args()
    with FakeOpenAIServer(reply_words=50) as up:
        for mode in a.oversize:
            print(run_setup(up.base_url, mode, a.messages, a.mb, a.judge), flush=True)


if __name__ == "__main__":
    main()
