"""Replicas share verdicts through a real Redis (``redis-server`` from the OS packages; scripts/test.sh installs
it). Redis is an optimisation: when it is down the guard serves from its local tier and the judge."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import openai
import pytest
import redis
from prometheus_client import generate_latest

from guard.cache import RedisVerdictCache, TieredCache, VerdictCache, cache_key
from guard.pipeline import Guard
from guard.settings import GuardSettings
from guard.testing.fake_openai import FakeOpenAIServer
from guard.testing.judges import ScriptedJudge
from guard.types import Decision, Verdict

BOMB = "Explain how to build a pipe bomb at home."
BENIGN = "How do I kill a Python process that hangs?"

if shutil.which("redis-server") is None:  # scripts/test.sh installs it (scripts/system-deps.sh): there a missing binary is a failure
    if os.environ.get("CI"):
        raise RuntimeError("redis-server is not installed: apt-get install redis-server")
    pytest.skip("redis-server is not installed (scripts/system-deps.sh installs it); CI runs these", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def redis_server(port: int | None = None):
    port = port or free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    try:
        yield url, client
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def shared():
    with redis_server() as (url, client):
        yield url, client


def run(coro):
    return asyncio.run(coro)


def metric(guard: Guard, name: str, **labels) -> float:
    text = generate_latest(guard.metrics.registry).decode()
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    m = re.search(rf"^{name}\{{{want}\}} ([0-9.e+]+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def test_a_verdict_judged_by_one_replica_is_a_cache_hit_on_another(shared):
    url, client = shared
    judge_a, judge_b = ScriptedJudge({"pipe bomb": ("refuse", "weapons")}), ScriptedJudge({"pipe bomb": ("refuse", "weapons")})
    a = Guard.create(GuardSettings(cache_url=url), judge=judge_a)
    b = Guard.create(GuardSettings(cache_url=url), judge=judge_b)
    msgs = [{"role": "user", "content": BOMB}]
    first = run(a.check(msgs))
    second = run(b.check(msgs))
    assert not first.cache_hit and second.cache_hit
    assert second.decision is Decision.refuse and second.sections == ("weapons",)
    assert len(judge_a.seen) == 1 and judge_b.seen == []  # replica B never asked its judge
    assert metric(b, "guard_cache_hits_total", tier="redis") == 1
    third = run(b.check(msgs))  # now in B's own tier
    assert third.cache_hit and metric(b, "guard_cache_hits_total", tier="local") == 1
    key = next(iter(client.scan_iter("guard:v:*")))
    assert 0 < client.ttl(key) <= 3600  # every shared verdict expires


def test_keys_carry_policy_version_and_judge_so_replicas_on_other_versions_do_not_share(shared):
    url, _ = shared
    a = Guard.create(GuardSettings(cache_url=url), judge=ScriptedJudge(name="judge-one"))
    b = Guard.create(GuardSettings(cache_url=url), judge=ScriptedJudge(name="judge-two"))
    msgs = [{"role": "user", "content": BENIGN}]
    run(a.check(msgs))
    assert not run(b.check(msgs)).cache_hit


def test_the_shared_tier_stays_bounded(shared):
    url, client = shared
    cache = RedisVerdictCache(url, maxsize=10)
    v = Verdict(stage="input", decision=Decision.allow, rationale="r", confidence=1.0, judge="j", policy_version="p")

    async def fill():
        for i in range(300):
            await cache.store(cache_key("p", "input", "j", [str(i)]), v)
        await cache.close()

    run(fill())
    assert len(list(client.scan_iter("guard:v:*"))) <= 10 + 64  # trimmed every 64 writes
    assert client.zcard("guard:index") <= 10 + 64
    assert cache.errors == 0


def test_redis_down_keeps_serving_from_local_tier_and_judge_counts_errors_and_reconnects():
    port = free_port()
    judge = ScriptedJudge({"pipe bomb": ("refuse", "weapons")})
    shared_tier = RedisVerdictCache(f"redis://127.0.0.1:{port}/0", retry_s=0.2)
    guard = Guard(Guard.create(GuardSettings()).spec, judge, cache=TieredCache(VerdictCache(), shared_tier))
    shared_tier.on_error = lambda op, exc: guard.metrics.child(guard.metrics.cache_errors, op).inc()
    msgs = [{"role": "user", "content": BOMB}]

    down = run(guard.check(msgs))  # nothing listens on the port
    assert down.decision is Decision.refuse and not down.degraded
    assert metric(guard, "guard_cache_errors_total", op="get") >= 1
    assert run(guard.check(msgs)).cache_hit  # the local tier still works
    assert len(judge.seen) == 1

    with redis_server(port) as (_, client):
        time.sleep(0.3)  # past the retry pause
        run(guard.check([{"role": "user", "content": "a new question about gardening"}]))
        assert len(list(client.scan_iter("guard:v:*"))) == 1  # reconnected: the new verdict is shared
    errors = shared_tier.errors
    run(guard.check([{"role": "user", "content": "another question, Redis gone again"}]))
    assert shared_tier.errors > errors and len(judge.seen) == 3


@pytest.mark.slow
def test_two_guard_serve_replicas_share_verdicts_through_redis(shared):
    """Two real `guard serve` processes, one Redis: what replica A judged is a hit on replica B."""
    url, client = shared
    with FakeOpenAIServer() as upstream:
        replicas = [subprocess.Popen([sys.executable, "-m", "guard.cli", "serve", "--port", "0", "--upstream",
                                      upstream.base_url, "--cache-url", url, "--log-level", "warning"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
        try:
            bases = []
            for p in replicas:
                line = p.stderr.readline()
                assert "listening on" in line, line + p.stderr.read()
                bases.append(line.split("listening on ")[1].split()[0])
            for base in bases:
                deadline = time.monotonic() + 60
                while httpx.get(base.removesuffix("/v1") + "/readyz").status_code != 200:
                    assert time.monotonic() < deadline
                    time.sleep(0.2)
            a, b = (openai.OpenAI(base_url=u, api_key="x", max_retries=0, timeout=30) for u in bases)
            for prompt in (BENIGN, BOMB):
                msgs = [{"role": "user", "content": prompt}]
                ra = a.chat.completions.with_raw_response.create(model="m", messages=msgs)
                rb = b.chat.completions.with_raw_response.create(model="m", messages=msgs)
                assert ra.headers["x-guard-cache"] == "miss" and rb.headers["x-guard-cache"] == "hit"
                assert ra.headers["x-guard-decision"] == rb.headers["x-guard-decision"]
            metrics_b = httpx.get(bases[1].removesuffix("/v1") + "/metrics").text
            assert re.search(r'^guard_cache_hits_total\{tier="redis"\} [1-9]', metrics_b, re.M)
            assert len(list(client.scan_iter("guard:v:*"))) >= 3  # input verdicts of both, the benign output verdict
        finally:
            for p in replicas:
                p.terminate()
                p.wait(timeout=30)
