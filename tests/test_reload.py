"""Live policy reload: POST /v1/guard/reload (admin key) and SIGHUP swap the spec atomically; a broken
policy is rejected with file:line errors while the old version keeps serving; requests in flight
finish on the version they started with."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import httpx
import openai
import pytest

from guard.pipeline import Guard
from guard.server.app import create_app
from guard.server.config import load_config
from guard.server.run import ServerThread
from guard.testing.fake_openai import FakeOpenAIServer
from guard.testing.judges import ScriptedJudge

POLICY = """---
id: tiny
title: A tiny policy
---

## No fireworks {{#fireworks}}
decision: refuse

Refuse instructions for making fireworks{extra}.

### Examples
- refuse: How do I make fireworks at home?
- allow: When is the fireworks show?
"""


def write_policy(folder, extra: str = "") -> None:
    (folder / "tiny.md").write_text(POLICY.format(extra=extra))


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAIServer() as server:
        yield server


@contextmanager
def serve(upstream, folder, judge=None, **settings):
    config = load_config(env={}, flags={"upstream": upstream.base_url, "policies": [str(folder)], "access_log": False,
                                        **settings})
    guard = Guard.create(config, judge=judge or ScriptedJudge({"fireworks": ("refuse", "fireworks")}))
    with ServerThread(create_app(config, guard=guard)) as server:
        server.root = server.base_url.removesuffix("/v1")
        yield server


def chat(server, text="hello there"):
    client = openai.OpenAI(base_url=server.base_url, api_key="x", max_retries=0, timeout=30)
    return client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": text}])


def reload(server, key="admin-secret"):
    return httpx.post(server.root + "/v1/guard/reload", headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_reload_switches_the_version_for_new_requests_and_metrics(upstream, tmp_path):
    write_policy(tmp_path)
    with serve(upstream, tmp_path, admin_key="admin-secret") as server:
        old = chat(server).headers["x-guard-policy-version"]
        assert reload(server).json()["status"] == "unchanged"
        write_policy(tmp_path, extra=" or firecrackers")
        r = reload(server)
        assert r.status_code == 200 and r.json()["status"] == "reloaded"
        new = r.json()["policy_version"]
        assert r.json()["previous_version"] == old and new != old
        resp = chat(server, "How do I make fireworks at home?")
        assert resp.headers["x-guard-policy-version"] == new
        assert resp.parse().model_extra["guard"]["policy_version"] == new
        metrics = httpx.get(server.root + "/metrics").text
        assert f'policy="{new}"' in metrics and 'guard_policy_reloads_total{result="reloaded"} 1.0' in metrics


def test_a_broken_policy_is_rejected_with_file_line_errors_and_the_old_version_keeps_serving(upstream, tmp_path):
    write_policy(tmp_path)
    with serve(upstream, tmp_path, admin_key="admin-secret") as server:
        old = chat(server).headers["x-guard-policy-version"]
        (tmp_path / "tiny.md").write_text(POLICY.format(extra="").replace("decision: refuse", "decision: maybe"))
        r = reload(server)
        assert r.status_code == 422
        body = r.json()
        assert body["status"] == "rejected" and body["policy_version"] == old
        assert any(e.startswith(f"{tmp_path / 'tiny.md'}:7: ") and "unknown decision 'maybe'" in e for e in body["errors"])
        assert old in body["error"]["message"]
        assert chat(server).headers["x-guard-policy-version"] == old
        assert chat(server, "How do I make fireworks at home?").headers["x-guard-decision"] == "refuse"


def test_reload_needs_the_admin_key_and_is_off_without_one(upstream, tmp_path):
    write_policy(tmp_path)
    with serve(upstream, tmp_path, admin_key="admin-secret", api_keys=["client-key"]) as server:
        assert reload(server, key="client-key").status_code == 401
        assert httpx.post(server.root + "/v1/guard/reload").status_code == 401
        assert reload(server).status_code == 200
    with serve(upstream, tmp_path) as server:
        r = reload(server)
        assert r.status_code == 403 and "SIGHUP" in r.json()["error"]["message"]


def test_a_request_in_flight_finishes_on_the_version_it_started_with(upstream, tmp_path):
    write_policy(tmp_path)
    judge = ScriptedJudge({"fireworks": ("refuse", "fireworks")}, delay_s=0.6)
    with serve(upstream, tmp_path, judge=judge, admin_key="admin-secret") as server:
        old = chat(server, "warm up").headers["x-guard-policy-version"]
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("r", chat(server, "a slow question")))
        t.start()
        time.sleep(0.3)  # the request is in its input check
        write_policy(tmp_path, extra=" or sparklers")
        new = reload(server).json()["policy_version"]
        t.join()
        in_flight = result["r"]
        assert in_flight.headers["x-guard-policy-version"] == old  # both of its stages ran on the old spec
        assert chat(server, "a later question").headers["x-guard-policy-version"] == new


@pytest.mark.slow
def test_sighup_reloads_a_running_guard_serve(upstream, tmp_path):
    write_policy(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "guard.cli", "serve", "--port", "0", "--policy", str(tmp_path),
                             "--upstream", upstream.base_url, "--log-level", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "listening on" in line, line + proc.stderr.read()
        root = line.split("listening on ")[1].split()[0].removesuffix("/v1")
        deadline = time.monotonic() + 60
        while httpx.get(root + "/readyz").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        before = httpx.get(root + "/readyz").json()["checks"]["policy"]
        write_policy(tmp_path, extra=" or rockets")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while httpx.get(root + "/readyz").json()["checks"]["policy"] == before:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        assert 'guard_policy_reloads_total{result="reloaded"} 1.0' in httpx.get(root + "/metrics").text
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0
