"""Two `guard serve` replicas sharing one Redis verdict cache, against two replicas with their own caches.

    .venv/bin/python benchmarks/replicas.py [--requests 600] [--unique 150] [--concurrency 4]

The workload replays XSTest prompts (../shared/evaldata, read at run time) with repeats: a Zipf-like
draw over ``--unique`` prompts, as real traffic repeats its popular questions. A round-robin "load
balancer" spreads it over the two replicas, which run the default spec and the offline judge in
front of a fake upstream (``guard.testing.fake_openai``). Both setups replay the same sequence, one
after the other, with fresh replicas and an empty Redis. Reported per setup: the verdict cache hit
rate (from the replicas' /metrics), judge calls (every miss is one), the judge calls the shared cache
saved, and client-side latency p50/p95 with the guard's own share (``x-guard-latency-ms``).
Needs ``redis-server`` on PATH. Writes benchmarks/results/replicas.md.
"""

from __future__ import annotations

import argparse
import random
import re
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guard.eval.converters import xstest_prompts  # noqa: E402
from guard.testing.fake_openai import FakeOpenAIServer  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_redis() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc, f"redis://127.0.0.1:{port}/0"


def start_replica(upstream: str, cache_url: str | None) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "guard.cli", "serve", "--port", "0", "--upstream", upstream, "--log-level", "error"]
    if cache_url:
        cmd += ["--cache-url", cache_url]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    if "listening on" not in line:
        raise RuntimeError(f"guard serve did not start: {line}{proc.stderr.read()}")
    root = line.split("listening on ")[1].split()[0].removesuffix("/v1")
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(root + "/readyz", timeout=2).status_code == 200:
                return proc, root
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("guard serve did not become ready")
        time.sleep(0.2)


def workload(n: int, unique: int, seed: int = 7) -> list[str]:
    prompts = [r.prompt for r in xstest_prompts()]
    rng = random.Random(seed)
    pool = rng.sample(prompts, min(unique, len(prompts)))
    weights = [1 / (i + 1) ** 0.9 for i in range(len(pool))]  # Zipf-like popularity
    return rng.choices(pool, weights=weights, k=n)


def counters(root: str) -> dict[str, float]:
    text = httpx.get(root + "/metrics").text
    out: dict[str, float] = {}
    for name, labels, value in re.findall(r"^(guard_cache(?:_hits|_errors)?_total)\{([^}]*)\} ([0-9.e+]+)$", text, re.M):
        out[f"{name}{{{labels}}}"] = out.get(f"{name}{{{labels}}}", 0) + float(value)
    return out


def run_setup(name: str, shared: bool, upstream: str, redis_url: str, prompts: list[str], concurrency: int) -> dict:
    if shared:
        subprocess.run(["redis-cli", "-u", redis_url, "flushall"], capture_output=True)
    replicas = [start_replica(upstream, redis_url if shared else None) for _ in range(2)]
    try:
        targets = cycle([root for _, root in replicas])
        jobs = [(next(targets), p) for p in prompts]
        clients = [httpx.Client(timeout=60) for _ in range(concurrency)]

        def send(i_job):
            i, (root, prompt) = i_job
            c = clients[i % concurrency]
            t = time.perf_counter()
            r = c.post(root + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": prompt}]})
            ms = (time.perf_counter() - t) * 1000
            return ms, float(r.headers["x-guard-latency-ms"]), r.headers["x-guard-cache"]

        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            results = list(pool.map(send, enumerate(jobs)))
        wall = time.perf_counter() - t0
        for c in clients:
            c.close()
        totals: dict[str, float] = {}
        for _, root in replicas:
            for k, v in counters(root).items():
                totals[k] = totals.get(k, 0) + v
    finally:
        for proc, _ in replicas:
            proc.terminate()
            proc.wait(timeout=30)
    lat = sorted(r[0] for r in results)
    guard_ms = sorted(r[1] for r in results)
    hits = totals.get('guard_cache_total{result="hit"}', 0)
    misses = totals.get('guard_cache_total{result="miss"}', 0)
    return {
        "name": name, "requests": len(results), "wall_s": wall,
        "responses_all_hit": sum(r[2] == "hit" for r in results),
        "lookups": hits + misses, "hits": hits, "judge_calls": misses,
        "hits_local": totals.get('guard_cache_hits_total{tier="local"}', 0),
        "hits_redis": totals.get('guard_cache_hits_total{tier="redis"}', 0),
        "errors": sum(v for k, v in totals.items() if k.startswith("guard_cache_errors")),
        "p50": statistics.median(lat), "p95": lat[int(0.95 * (len(lat) - 1))],
        "guard_p50": statistics.median(guard_ms), "guard_p95": guard_ms[int(0.95 * (len(guard_ms) - 1))],
        "mean_guard": statistics.fmean(guard_ms),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=600)
    ap.add_argument("--unique", type=int, default=150)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "replicas.md"))
    a = ap.parse_args()
    prompts = workload(a.requests, a.unique)
    distinct = len(set(prompts))
    redis_proc, redis_url = start_redis()
    try:
        with FakeOpenAIServer(reply_words=30) as upstream:
            rows = [run_setup("two replicas, separate caches", False, upstream.base_url, redis_url, prompts, a.concurrency),
                    run_setup("two replicas, shared Redis", True, upstream.base_url, redis_url, prompts, a.concurrency)]
    finally:
        redis_proc.terminate()
    sep, shr = rows
    saved = sep["judge_calls"] - shr["judge_calls"]
    for r in rows:
        print(f"{r['name']}: hit rate {r['hits'] / r['lookups']:.3f}, judge calls {r['judge_calls']:.0f}, "
              f"p50 {r['p50']:.1f} ms, p95 {r['p95']:.1f} ms, guard p50 {r['guard_p50']:.2f} ms, "
              f"guard mean {r['mean_guard']:.2f} ms, redis errors {r['errors']:.0f}")
    print(f"shared Redis saved {saved:.0f} judge calls ({saved / sep['judge_calls']:.1%}) on {a.requests} requests "
          f"({distinct} distinct prompts)")
    write_report(a, rows, distinct, saved)
    return 0


def write_report(a, rows, distinct, saved) -> None:
    sep = rows[0]
    L = ["# Two replicas: a shared Redis verdict cache against separate caches", "",
         f"`.venv/bin/python benchmarks/replicas.py --requests {a.requests} --unique {a.unique} --concurrency {a.concurrency}`",
         "", f"Workload: {a.requests} chat requests replaying {distinct} distinct XSTest prompts with Zipf-like repeats,",
         f"round-robin over two `guard serve` replicas (default spec, offline judge, both stages) in front of a fake",
         f"upstream that answers 30 words at once; {a.concurrency} concurrent clients; 2 cores shared with other work,",
         "so latencies are noisy: compare the two rows, which ran one after the other in the same run.", "",
         "| setup | cache lookups | hit rate | local hits | Redis hits | judge calls | judge calls saved | "
         "p50 ms | p95 ms | guard p50 ms | guard mean ms | Redis errors |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        saved_r = sep["judge_calls"] - r["judge_calls"]
        L.append(f"| {r['name']} | {r['lookups']:.0f} | {r['hits'] / r['lookups']:.3f} | {r['hits_local']:.0f} | "
                 f"{r['hits_redis']:.0f} | {r['judge_calls']:.0f} | {saved_r:.0f} | {r['p50']:.1f} | {r['p95']:.1f} | "
                 f"{r['guard_p50']:.2f} | {r['mean_guard']:.2f} | {r['errors']:.0f} |")
    L += ["", f"Sharing the cache saved {saved:.0f} of {sep['judge_calls']:.0f} judge calls "
              f"({saved / sep['judge_calls']:.1%}). A lookup is one stage's verdict (input and output per request).",
          "With separate caches each replica judges every prompt once for itself; with Redis a verdict judged by",
          "either replica is reused by the other. The offline judge costs milliseconds and no money; with an LLM",
          "judge every saved call is a saved model call (hundreds of milliseconds and its token price).", ""]
    Path(a.out).write_text("\n".join(L))


if __name__ == "__main__":
    sys.exit(main())
