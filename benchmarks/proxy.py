"""Proxy overhead benchmark: the upstream directly vs `guard serve` vs a LiteLLM proxy.

    .venv/bin/python benchmarks/proxy.py            # full matrix, about 12-15 minutes on 2 cores
    .venv/bin/python benchmarks/proxy.py --quick    # smoke run, about 2 minutes

Every setup runs as its own process on 127.0.0.1, in front of the same fake OpenAI-compatible
upstream (guard.testing.fake_openai, replies of about 40 words, 0 or 20 ms per token):

- direct          the load generator calls the fake upstream itself
- guard-offline   `guard serve --judge offline`, both stages judged on every request
                  (each request carries a unique reference number, so no verdict is cached)
- guard-cached    `guard serve --judge offline` with a warm verdict cache: a fixed small set
                  of request bodies, each sent once before measuring, so judging is
                  short-circuited; the hit rate is read back from /metrics
- litellm         `litellm --config cfg.yaml` (no database), model `openai/<model>` whose
                  api_base is the fake upstream

The load generator is closed-loop (C workers, each sending back to back for a fixed time, with a
hard cap on requests and wall time). Each matrix cell (streaming or not x concurrency 1/16/64 x
upstream delay 0/20 ms) runs every setup in turn, round-robin, `--rounds` times with a rotating
start, so machine noise hits every setup alike; ratios are taken against `direct` from the same
cell of the same run. One summary line per setup and cell is printed; the table, the machine
facts and the targets of issue 3 go to benchmarks/results/proxy.md, the chart to proxy.png.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
VENV_BIN = Path(sys.executable).parent
MODEL = "bench-model"
SETUPS = ["direct", "guard-offline", "guard-cached", "litellm"]
GUARD_SETUPS = ("guard-offline", "guard-cached")

# A fixed, small set of benign requests: the warm-cache setup sees only these, so all are cached.
# All must be allowed by the offline judge: a refusal skips the upstream and would flatter the guard
# (refusals are counted per cell and reported; the run warns when there are any).
PROMPTS = [
    "Give me three tips for keeping basil alive on a windowsill.",
    "What is a good way to learn to touch type?",
    "Summarise the plot of a heist movie in two sentences.",
    "Suggest a name for a friendly orange cat.",
    "What is the capital of Australia?",
    "Explain how photosynthesis works in simple terms.",
    "Write a haiku about autumn rain.",
    "What should I pack for a weekend hiking trip?",
]


# ---------------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)  # its own session: it and its workers
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def spawn(name: str, cmd: list[str], logdir: Path, env: dict[str, str | None] | None = None) -> Proc:
    log = logdir / f"{name}.log"
    fh = open(log, "wb")
    full_env = {k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None}
    popen = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env, cwd=str(logdir),
                             start_new_session=True)
    fh.close()
    return Proc(name, popen, log)


async def wait_http(url: str, proc: Proc, timeout_s: float) -> float:
    """Poll `url` until it answers 200; returns the seconds it took."""
    t0 = time.perf_counter()
    async with aiohttp.ClientSession() as s:
        while time.perf_counter() - t0 < timeout_s:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError, OSError):
                async with s.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{proc.name} not ready at {url} after {timeout_s:.0f} s:\n{proc.tail()}")


def rss_mb(pid: int) -> tuple[float, float]:
    """(RSS of the process, RSS of the process plus its descendants), MB, from /proc."""
    def one(p: int) -> float:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def children(p: int) -> list[int]:
        out = []
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
        return out

    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        total += one(p)
        stack += children(p)
    return one(pid), total


def litellm_command() -> list[str] | None:
    """The `litellm` CLI with its proxy extras: the project venv's if it can start a proxy, else
    one from LITELLM_BIN (a separate venv, so the proxy's extras, uvloop among them, do not
    change the project's own environment)."""
    candidates = [os.environ.get("LITELLM_BIN"), str(VENV_BIN / "litellm"), "/tmp/litellm-venv/bin/litellm"]
    for c in candidates:
        if not c or not Path(c).exists():
            continue
        py = Path(c).parent / "python"
        ok = subprocess.run([str(py), "-c", "import fastapi, backoff, litellm.proxy.proxy_server"],
                            capture_output=True, env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
        if ok.returncode == 0:
            return [c]
    return None


# ---------------------------------------------------------------------------------- load

@dataclass
class Sample:
    latency: float
    ttft: float | None = None
    t_hold: float | None = None  # when the content received reached the hold-back size (streaming)
    ok: bool = True
    refused: bool = False


@dataclass
class RunResult:
    samples: list[Sample] = field(default_factory=list)
    elapsed: float = 0.0
    errors: list[str] = field(default_factory=list)


def make_body(i: int, stream: bool, unique: bool, nonce: int) -> bytes:
    text = PROMPTS[i % len(PROMPTS)]
    if unique:  # a new conversation for every request: no verdict can come from the cache
        text = f"{text} (ref {nonce})"
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 200}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


async def one_request(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool,
                      headers: dict[str, str] | None = None, hold_chars: int = 0) -> Sample:
    t0 = time.perf_counter()
    async with session.post(url, data=body, headers={"content-type": "application/json", **(headers or {})}) as resp:
        if not stream:
            data = await resp.read()
            return Sample(time.perf_counter() - t0, ok=resp.status == 200, refused=b"content_filter" in data)
        ttft, t_hold, chars, refused, done = None, None, 0, False, False
        async for line in resp.content:
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if payload == b"[DONE]":
                done = True
                continue
            if b"content_filter" in payload:
                refused = True
            if (ttft is None or (hold_chars and t_hold is None)) and b'"content"' in payload:
                obj = json.loads(payload)
                for ch in obj.get("choices") or ():
                    text = (ch.get("delta") or {}).get("content")
                    if text:
                        now = time.perf_counter() - t0
                        ttft = now if ttft is None else ttft
                        chars += len(text)
                        if hold_chars and t_hold is None and chars >= hold_chars:
                            t_hold = now
        return Sample(time.perf_counter() - t0, ttft, t_hold, ok=resp.status == 200 and done, refused=refused)


async def run_load(url: str, stream: bool, conc: int, duration: float, unique: bool,
                   max_requests: int, seed: int, headers: dict[str, str] | None = None,
                   hold_chars: int = 0) -> RunResult:
    """Closed loop: `conc` workers send back to back until `duration` has passed (or the request
    cap is reached); a first request per worker warms its connection and is not counted."""
    res = RunResult()
    counter = {"n": 0}
    nonce = [seed * 10_000_000]
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=conc, limit_per_host=conc)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(i: int, record: bool) -> None:
            nonce[0] += 1
            body = make_body(i, stream, unique, nonce[0])
            try:
                s = await one_request(session, url, body, stream, headers, hold_chars)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
                s = Sample(0.0, ok=False)
                if len(res.errors) < 5:
                    res.errors.append(f"{type(e).__name__}: {e}")
            if record:
                res.samples.append(s)

        await asyncio.gather(*(send(w, False) for w in range(conc)))  # warm-up: connections
        t0 = time.perf_counter()
        deadline = t0 + duration

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < deadline and counter["n"] < max_requests:
                counter["n"] += 1
                i += conc
                await send(i, True)

        try:
            await asyncio.wait_for(asyncio.gather(*(worker(w) for w in range(conc))), duration + 90)
        except asyncio.TimeoutError:
            res.errors.append("hard time cap reached")
        res.elapsed = time.perf_counter() - t0
    return res


# ---------------------------------------------------------------------------------- stats

def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass
class CellStats:
    n: int
    errors: int
    refused: int
    rps: float
    p50: float
    p99: float
    ttft50: float | None
    hold50: float | None = None  # p50 time until the received content reached --hold-back-chars


def summarize(runs: list[RunResult]) -> CellStats:
    samples = [s for r in runs for s in r.samples]
    good = [s for s in samples if s.ok]
    lat = [s.latency * 1000 for s in good]
    ttft = [s.ttft * 1000 for s in good if s.ttft is not None]
    hold = [s.t_hold * 1000 for s in good if s.t_hold is not None]
    elapsed = sum(r.elapsed for r in runs)
    return CellStats(n=len(good), errors=len(samples) - len(good), refused=sum(s.refused for s in good),
                     rps=len(good) / elapsed if elapsed else 0.0, p50=pct(lat, 0.5), p99=pct(lat, 0.99),
                     ttft50=statistics.median(ttft) if ttft else None,
                     hold50=statistics.median(hold) if hold else None)


# ---------------------------------------------------------------------------------- setups

async def scrape_cache(base: str) -> dict[str, float]:
    out = {"hit": 0.0, "miss": 0.0}
    async with aiohttp.ClientSession() as s, s.get(f"{base}/metrics") as r:
        text = await r.text()
    for m in re.finditer(r'^guard_cache_total\{result="(\w+)"\}\s+([0-9.e+]+)', text, re.M):
        out[m.group(1)] = float(m.group(2))
    return out


def litellm_config(path: Path, upstream: str) -> None:
    path.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream}\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "  drop_params: true\n"
        "  set_verbose: false\n"
        "  json_logs: false\n"
        "general_settings:\n"
        "  disable_spend_logs: true\n"
        "  disable_error_logs: true\n"
        "  background_health_checks: false\n")


LITELLM_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the price list at import
    "LITELLM_LOG": "ERROR",
    "DATABASE_URL": None, "STORE_MODEL_IN_DB": "False",  # None: removed from the environment "DISABLE_SCHEMA_UPDATE": "True",
    "LITELLM_TELEMETRY": "False", "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    "NO_DOCS": "True", "NO_REDOC": "True",
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
}


@dataclass
class Setup:
    name: str
    url: str                 # chat completions endpoint
    base: str                # server root (for /metrics)
    proc: Proc | None = None
    unique: bool = False
    startup_s: float | None = None
    headers: dict[str, str] = field(default_factory=dict)


async def start_phase(delay_ms: int, args, logdir: Path, setups: list[str], litellm_cmd) -> tuple[list[Proc], dict[str, Setup]]:
    procs: list[Proc] = []
    up_port = free_port()
    fake_cmd = shlex.split(os.environ.get("GUARD_BENCH_FAKE", "-m guard.testing.fake_openai"))
    fake = spawn(f"fake-{delay_ms}ms", [sys.executable, *fake_cmd, "--port", str(up_port),
                                         "--token-delay-ms", str(delay_ms), "--reply-words", str(args.reply_words),
                                         "--model", MODEL], logdir)
    procs.append(fake)
    upstream = f"http://127.0.0.1:{up_port}/v1"
    await wait_http(f"{upstream}/models", fake, 30)
    out = {"direct": Setup("direct", f"{upstream}/chat/completions", f"http://127.0.0.1:{up_port}")}

    starters = []
    for name in setups:
        if name in GUARD_SETUPS:
            port = free_port()
            cmd = [os.environ.get("GUARD_BIN", str(VENV_BIN / "guard")), "serve", "--upstream", upstream, "--port", str(port), "--judge", "offline"]
            env = {"GUARD_STREAM_FIRST_WINDOW_CHARS": str(args.hold_back_chars)} if args.hold_back_chars else None
            proc = spawn(f"{name}-{delay_ms}ms", cmd, logdir, env)
            base = f"http://127.0.0.1:{port}"
            out[name] = Setup(name, f"{base}/v1/chat/completions", base, proc, unique=(name == "guard-offline"))
            starters.append((out[name], f"{base}/healthz", 60))
        elif name == "litellm" and litellm_cmd:
            port = free_port()
            cfg = logdir / f"litellm-{delay_ms}ms.yaml"
            litellm_config(cfg, upstream)
            cmd = litellm_cmd + ["--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                                 "--num_workers", "1", "--telemetry", "False"]
            key = "sk-" + secrets.token_hex(24)  # it refuses to start without a master key
            proc = spawn(f"litellm-{delay_ms}ms", cmd, logdir, {**LITELLM_ENV, "LITELLM_MASTER_KEY": key})
            base = f"http://127.0.0.1:{port}"
            out[name] = Setup(name, f"{base}/v1/chat/completions", base, proc,
                              headers={"authorization": f"Bearer {key}"})
            starters.append((out[name], f"{base}/health/liveliness", 180))
    procs += [s.proc for s, _, _ in starters]
    for s, url, t in starters:
        try:
            s.startup_s = await wait_http(url, s.proc, t)
        except RuntimeError as e:
            print(f"  ! {s.name} did not start: {e}", flush=True)
            s.proc.stop()
            del out[s.name]
    return procs, out


async def prewarm(setup: Setup) -> None:
    """Send every benchmark body once (streaming and not) so its verdicts are cached."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for stream in (False, True):
            for i in range(len(PROMPTS)):
                for _ in range(2):
                    await one_request(session, setup.url, make_body(i, stream, False, 0), stream)


# ---------------------------------------------------------------------------------- main

@dataclass
class Row:
    delay: int
    stream: bool
    conc: int
    setup: str
    stats: CellStats


async def main_async(args) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    logdir = Path(tempfile.mkdtemp(prefix="guard-bench-"))
    setups = [s for s in SETUPS if s in args.setups]
    load_before = os.getloadavg()
    t_start = time.time()

    litellm_cmd = litellm_command() if "litellm" in setups else None
    if "litellm" in setups and not litellm_cmd:
        print("! no litellm CLI with the proxy extras found: litellm setup skipped", flush=True)

    rows: list[Row] = []
    notes: dict[str, object] = {"rss": {}, "startup": {}, "cache": {}, "errors": []}
    seed = 0
    for delay in args.delays:
        print(f"== upstream delay {delay} ms/token: starting processes (logs in {logdir})", flush=True)
        procs, live = await start_phase(delay, args, logdir, setups, litellm_cmd)
        try:
            for name, s in live.items():
                if s.startup_s is not None:
                    notes["startup"][f"{name}@{delay}ms"] = s.startup_s
            if "guard-cached" in live:
                await prewarm(live["guard-cached"])
                before = {n: await scrape_cache(live[n].base) for n in GUARD_SETUPS if n in live}
            order = [n for n in SETUPS if n in live]
            for stream in (False, True):
                for conc in args.concurrency:
                    runs: dict[str, list[RunResult]] = {n: [] for n in order}
                    for rnd in range(args.rounds):
                        rot = order[rnd % len(order):] + order[:rnd % len(order)]
                        for name in rot:
                            seed += 1
                            cap = max(100, int(args.duration * 6000))
                            r = await run_load(live[name].url, stream, conc, args.duration, live[name].unique, cap, seed,
                                             live[name].headers, args.hold_back_chars or 0)
                            runs[name].append(r)
                            for e in r.errors:
                                notes["errors"].append(f"{name} delay={delay} stream={stream} c={conc}: {e}")
                    direct = summarize(runs["direct"]) if "direct" in runs else None
                    for name in order:
                        st = summarize(runs[name])
                        rows.append(Row(delay, stream, conc, name, st))
                        print(summary_line(delay, stream, conc, name, st, direct), flush=True)
            if "guard-cached" in live:
                for n in GUARD_SETUPS:
                    if n in live:
                        after = await scrape_cache(live[n].base)
                        hit, miss = after["hit"] - before[n]["hit"], after["miss"] - before[n]["miss"]
                        notes["cache"][f"{n}@{delay}ms"] = (hit, miss)
            for name, s in live.items():
                if s.proc is not None:
                    notes["rss"][f"{name}@{delay}ms"] = rss_mb(s.proc.popen.pid)
            for p in procs:
                if p.name.startswith("fake"):
                    notes["rss"][f"fake-upstream@{delay}ms"] = rss_mb(p.popen.pid)
        finally:
            for p in reversed(procs):
                p.stop()

    load_after = os.getloadavg()
    wall = time.time() - t_start
    write_report(args, rows, notes, load_before, load_after, wall, litellm_cmd)
    print(f"wrote {RESULTS / args.name}.md and .png in {wall:.0f} s; load average before {fmt_load(load_before)}, "
          f"after {fmt_load(load_after)}", flush=True)
    return 0


def fmt_load(la) -> str:
    return " ".join(f"{x:.2f}" for x in la)


def summary_line(delay, stream, conc, name, st: CellStats, direct: CellStats | None) -> str:
    ratio = f"{st.rps / direct.rps:5.2f}x" if direct and direct.rps else "   - "
    added = f"{st.p50 - direct.p50:+8.2f}" if direct else "     -"
    ttft = f"{st.ttft50:8.2f}" if st.ttft50 is not None else "       -"
    return (f"delay={delay:>2}ms {'stream' if stream else 'json  '} c={conc:<3} {name:<14} n={st.n:<6} err={st.errors:<3} "
            f"rps={st.rps:8.1f} ({ratio}) p50={st.p50:8.2f}ms ({added}) p99={st.p99:8.2f}ms ttft50={ttft}ms"
            + (f"  REFUSED={st.refused}" if st.refused else ""))


# ---------------------------------------------------------------------------------- report

def litellm_version(cmd: list[str] | None) -> str:
    if not cmd:
        return "not available"
    py = Path(cmd[0]).parent / "python"
    out = subprocess.run([str(py), "-c", "from importlib.metadata import version; print(version('litellm'))"],
                         capture_output=True, text=True)
    return f"{out.stdout.strip() or '?'} ({cmd[0]})"


def machine_facts() -> list[str]:
    cpu = ""
    with contextlib.suppress(OSError):
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "")
    versions = []
    for pkg in ("aiohttp", "starlette", "uvicorn"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version
            versions.append(f"{pkg} {version(pkg)}")
    return [f"nproc: {os.cpu_count()} ({cpu})", f"Python {platform.python_version()} on {platform.platform()}",
            "packages: " + ", ".join(versions)]


def write_report(args, rows: list[Row], notes, load_before, load_after, wall, litellm_cmd) -> None:
    def get(delay, stream, conc, setup) -> CellStats | None:
        return next((r.stats for r in rows if (r.delay, r.stream, r.conc, r.setup) == (delay, stream, conc, setup)), None)

    cmd = ".venv/bin/python benchmarks/proxy.py" + ("".join(f" {a}" for a in sys.argv[1:]))
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    L = [f"# Proxy benchmark: direct vs `guard serve` vs LiteLLM proxy", "",
         f"Produced by `{cmd}` on {now} ({wall / 60:.1f} min wall).", ""]
    L += ["## Machine", ""] + [f"- {x}" for x in machine_facts()]
    L += [f"- LiteLLM proxy: litellm {litellm_version(litellm_cmd)}"]
    L += [f"- load average (1/5/15 min) before the run: {fmt_load(load_before)}; after: {fmt_load(load_after)}",
          "- the machine is shared with other sessions' builds and tests: absolute numbers are noisy; "
          "ratios compare setups measured interleaved in the same cell of the same run", ""]
    L += ["## Method", "",
          f"- fake upstream: `python -m guard.testing.fake_openai --token-delay-ms D --reply-words {args.reply_words}`",
          f"- closed loop: C workers send back to back for {args.duration:g} s per run, {args.rounds} round(s) per setup and "
          "cell, setups round-robin within each cell (rotating start); one warm-up request per worker not counted",
          "- `guard-offline`: offline judge on the input and output stages, a unique reference number in every "
          "request so no verdict comes from the cache; `guard-cached`: the same server with a fixed set of "
          f"{len(PROMPTS)} requests, each sent before measuring, so verdicts come from the cache",
          "- `litellm`: `litellm --config cfg.yaml --num_workers 1` (no database), model `openai/" + MODEL + "` with "
          "api_base = the fake upstream",
          "- ratio = requests/s of the setup / requests/s of direct in the same cell; added = p50 of the setup - p50 of "
          "direct (ms); TTFT = time to the first chunk with content (streaming only)", ""]

    L += ["## Results", "",
          "| delay ms/token | mode | C | setup | n | err | refused | req/s | × direct | p50 ms | added p50 ms | p99 ms | TTFT p50 ms | added TTFT ms |",
          "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d = get(r.delay, r.stream, r.conc, "direct")
        st = r.stats
        ratio = f"{st.rps / d.rps:.2f}" if d and d.rps else "–"
        added = f"{st.p50 - d.p50:+.2f}" if d else "–"
        ttft = f"{st.ttft50:.1f}" if st.ttft50 is not None else "–"
        addt = f"{st.ttft50 - d.ttft50:+.2f}" if (d and st.ttft50 is not None and d.ttft50 is not None) else "–"
        L.append(f"| {r.delay} | {'stream' if r.stream else 'json'} | {r.conc} | {r.setup} | {st.n} | {st.errors} | "
                 f"{st.refused} | {st.rps:.1f} | {ratio} | {st.p50:.2f} | {added} | {st.p99:.2f} | {ttft} | {addt} |")
    L.append("")

    # targets (issue 3)
    L += ["## Targets (issue 3)", "", "| target | cell | measured | verdict |", "|---|---|---|---|"]
    slow = max(args.delays)
    fast = min(args.delays)

    def ratio(setup, delay, stream, conc):
        s, d = get(delay, stream, conc, setup), get(delay, stream, conc, "direct")
        return (s.rps / d.rps) if s and d and d.rps else None

    def added(setup, delay, stream, conc):
        s, d = get(delay, stream, conc, setup), get(delay, stream, conc, "direct")
        return (s.p50 - d.p50) if s and d else None

    def verdict(val, limit, higher_better):
        if val is None:
            return "not measured"
        margin = (val - limit) if higher_better else (limit - val)
        return f"met (margin {margin:.2f})" if margin >= 0 else f"**missed** by {-margin:.2f}"

    top = max(args.concurrency)
    low = min(args.concurrency)
    for stream in (False, True):
        m = "stream" if stream else "json"
        v = added("guard-cached", fast, stream, low)
        L.append(f"| warm cache adds ≤ 1 ms p50 at C={low} | {m}, {fast} ms/token | "
                 f"{'–' if v is None else f'{v:+.2f} ms'} | {verdict(v, 1.0, False)} |")
    for stream in (False, True):
        m = "stream" if stream else "json"
        v = ratio("guard-cached", slow, stream, top)
        L.append(f"| warm cache keeps ≥ 0.9× direct throughput at C={top} | {m}, {slow} ms/token | "
                 f"{'–' if v is None else f'{v:.2f}×'} | {verdict(v, 0.9, True)} |")
    for stream in (False, True):
        m = "stream" if stream else "json"
        v = ratio("guard-offline", slow, stream, top)
        L.append(f"| offline judge keeps ≥ 0.8× direct throughput at C={top} | {m}, {slow} ms/token | "
                 f"{'–' if v is None else f'{v:.2f}×'} | {verdict(v, 0.8, True)} |")
    for delay in args.delays:
        # bound: the upstream's time to produce the hold-back window (direct stream, same cell; the whole
        # reply when it is shorter) plus the time of the checks (guard-offline's added p50, json, same delay)
        s, d = get(delay, True, low, "guard-offline"), get(delay, True, low, "direct")
        sj, dj = get(delay, False, low, "guard-offline"), get(delay, False, low, "direct")
        if s and d and s.ttft50 is not None:
            window = d.hold50 if d.hold50 is not None else d.p50
            check = max(0.0, sj.p50 - dj.p50) if sj and dj else 0.0
            bound = window + check
            L.append(f"| offline judge: streaming TTFT within the hold-back bound | stream, {delay} ms/token, C={low}, "
                     f"hold-back {args.hold_back_chars if args.hold_back_chars is not None else 'default'} chars | "
                     f"TTFT p50 {s.ttft50:.1f} ms; bound {bound:.1f} ms = upstream's time to the window {window:.1f} + "
                     f"checks {check:.1f} | {verdict(s.ttft50, bound, False)} |")
    worst = None
    for k, (own, tree) in notes["rss"].items():
        if k.startswith("guard-offline") or k.startswith("guard-cached"):
            worst = max(worst or 0, tree)
    L.append(f"| guard RSS ≤ 150 MB with the offline judge loaded | after the load | "
             f"{'–' if worst is None else f'{worst:.0f} MB (largest guard process)'} | {verdict(worst, 150, False)} |")
    L.append("")

    L += ["## Memory and start-up", "", "| process | RSS MB (process) | RSS MB (with children) | start-up s |",
          "|---|---:|---:|---:|"]
    for k, (own, tree) in notes["rss"].items():
        su = notes["startup"].get(k)
        L.append(f"| {k} | {own:.0f} | {tree:.0f} | {'' if su is None else f'{su:.1f}'} |")
    L.append("")
    if notes["cache"]:
        L += ["## Verdict cache during the measured runs (from /metrics `guard_cache_total`)", ""]
        for k, (hit, miss) in notes["cache"].items():
            tot = hit + miss
            L.append(f"- {k}: {hit:.0f} hits, {miss:.0f} misses"
                     + (f" → hit rate {hit / tot:.1%}" if tot else ""))
        L.append("")
    if not litellm_cmd and "litellm" in args.setups:
        L += ["**No LiteLLM proxy could be started here: see the report.**", ""]
    if notes["errors"]:
        L += ["## Errors seen (first few per run)", ""] + [f"- {e}" for e in notes["errors"][:30]] + [""]
    L += ["![chart](proxy.png)", ""]
    (RESULTS / f"{args.name}.md").write_text("\n".join(L))
    chart(args, rows, get)


def chart(args, rows, get) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing (pip install -e .[bench]): no chart", flush=True)
        return
    setups = [s for s in SETUPS if s != "direct" and any(r.setup == s for r in rows)]
    cells = [(d, st) for d in args.delays for st in (False, True)]
    labels = [f"{'stream' if st else 'json'}\n{d} ms/tok" for d, st in cells]
    top, low = max(args.concurrency), min(args.concurrency)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    width = 0.8 / max(1, len(setups))
    for ax, (title, fn) in zip(axes, [
            (f"throughput / direct at C={top} (higher is better)",
             lambda s, d, st: (lambda a, b: a.rps / b.rps if a and b and b.rps else 0)(get(d, st, top, s), get(d, st, top, "direct"))),
            (f"added p50 latency vs direct at C={low}, ms (lower is better)",
             lambda s, d, st: (lambda a, b: a.p50 - b.p50 if a and b else 0)(get(d, st, low, s), get(d, st, low, "direct")))]):
        for i, s in enumerate(setups):
            vals = [fn(s, d, st) for d, st in cells]
            xs = [j + (i - (len(setups) - 1) / 2) * width for j in range(len(cells))]
            bars = ax.bar(xs, vals, width, label=s)
            for b, v in zip(bars, vals):
                ax.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, max(v, 0)), ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(cells)), labels)
        ax.set_title(title, fontsize=10)
        ax.axhline(0, color="black", linewidth=0.5)
    axes[0].axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    axes[0].axhline(0.9, color="green", linestyle=":", linewidth=0.8)
    axes[1].axhline(1.0, color="green", linestyle=":", linewidth=0.8)
    axes[0].legend(fontsize=8)
    fig.suptitle("guard serve vs LiteLLM proxy, in front of the same fake upstream (2 cores, loopback)", fontsize=11)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{args.name}.png", dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smoke run: short runs, about 2 minutes")
    p.add_argument("--duration", type=float, help="seconds per run (default 5, quick 1.5)")
    p.add_argument("--rounds", type=int, help="runs per setup and cell, interleaved (default 2, quick 1)")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--delays", type=int, nargs="+", default=[0, 20], help="upstream ms per token")
    p.add_argument("--reply-words", type=int, default=40)
    p.add_argument("--hold-back-chars", type=int, default=40, help="guard serve's first hold-back window (its default: 40)")
    p.add_argument("--setups", nargs="+", default=SETUPS, choices=SETUPS)
    p.add_argument("--name", help="output file stem under benchmarks/results (default proxy, quick: proxy-quick)")
    args = p.parse_args()
    args.duration = args.duration or (1.5 if args.quick else 5.0)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.name = args.name or ("proxy-quick" if args.quick else "proxy")
    if "direct" not in args.setups:
        args.setups = ["direct"] + args.setups
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
