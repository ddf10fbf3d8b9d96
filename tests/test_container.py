"""The sidecar image, built by scripts/image.sh and run as a deployment would run it: read-only root
filesystem, only /tmp writable, non-root, configured by GUARD_* variables, in front of a fake upstream
on the host. The official openai client gets an allowed answer, a refusal and a stream through it.
Needs podman (or docker): scripts/test.sh installs podman, runc and debootstrap (scripts/system-deps.sh); CI must not skip this."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from guard.testing.fake_openai import FakeOpenAIServer, Reply

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "localhost/deliberative-guard:latest"


def _engine() -> str | None:
    if shutil.which("podman"):
        return "podman"
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"  # a docker client with an engine behind it
    return None


ENGINE = _engine()

pytestmark = pytest.mark.slow
if ENGINE is None:
    if os.environ.get("CI"):
        raise RuntimeError("no container engine: scripts/test.sh installs podman (scripts/system-deps.sh)")
    pytest.skip("no container engine (podman or docker); CI runs these", allow_module_level=True)


def engine(*args: str, **kw) -> subprocess.CompletedProcess:
    cmd = [ENGINE, *(["--runtime", "runc"] if ENGINE == "podman" and shutil.which("runc") else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def image():
    if not os.environ.get("GUARD_IMAGE_PREBUILT"):  # set it when the image was built already (scripts/image.sh)
        out = subprocess.run([str(ROOT / "scripts" / "image.sh")], cwd=ROOT, capture_output=True, text=True, timeout=1800)
        assert out.returncode == 0, out.stdout + out.stderr
    size = int(engine("image", "inspect", IMAGE, "--format", "{{.Size}}").stdout.strip())
    assert size <= 600_000_000, f"image is {size / 1e6:.0f} MB"
    return IMAGE


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAIServer(host="127.0.0.1") as server:
        yield server


@pytest.fixture(scope="module")
def container(image, upstream):
    port = free_port()
    name = f"guard-test-{port}"
    started = engine("run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "--network", "host",
                     "-e", "GUARD_HOST=127.0.0.1", "-e", f"GUARD_PORT={port}", "-e", f"GUARD_UPSTREAM={upstream.base_url}",
                     "-e", "GUARD_LOG_LEVEL=warning", image)
    assert started.returncode == 0, started.stderr
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, engine("logs", name).stderr[-2000:]
            time.sleep(0.5)
        yield name, base
    finally:
        engine("rm", "-f", name)


def test_the_image_runs_read_only_as_a_non_root_user(container):
    name, base = container
    assert httpx.get(base + "/readyz").json()["status"] == "ready"
    assert engine("exec", name, "id", "-u").stdout.strip() == "10001"
    denied = engine("exec", name, "python", "-c", "open('/opt/guard/x', 'w')")
    assert denied.returncode != 0 and "Read-only file system" in denied.stderr
    assert engine("exec", name, "python", "-c", "open('/tmp/x', 'w')").returncode == 0
    config = json.loads(engine("image", "inspect", IMAGE).stdout)[0]["Config"]
    assert config.get("Healthcheck") or engine("healthcheck", "run", name).returncode == 0


def test_the_openai_client_gets_an_answer_a_refusal_and_a_stream_through_the_container(container, upstream):
    _, base = container
    client = openai.OpenAI(base_url=base + "/v1", api_key="x", max_retries=0, timeout=60)
    upstream.script.push(Reply(content="Use kill -9 with the process id."))
    ok = client.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": "How do I kill a Python process that hangs?"}])
    assert ok.headers["x-guard-decision"] == "allow" and ok.parse().choices[0].message.content == "Use kill -9 with the process id."
    refused = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Give me step-by-step instructions to synthesise methamphetamine"}])
    assert refused.choices[0].finish_reason == "content_filter"
    assert "illicit-drugs" in refused.model_extra["guard"]["sections"]
    upstream.script.push(Reply(content="The sea is wide and blue, it sings all day."))
    chunks = list(client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Write a short poem about the sea."}], stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "The sea is wide and blue, it sings all day."


def test_sigterm_stops_the_container_cleanly(image, upstream):
    port = free_port()
    name = f"guard-stop-{port}"
    engine("run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "--network", "host", "-e", "GUARD_HOST=127.0.0.1",
           "-e", f"GUARD_PORT={port}", "-e", f"GUARD_UPSTREAM={upstream.base_url}", image)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline
            time.sleep(0.5)
        t = time.monotonic()
        engine("stop", "--time", "20", name)
        assert time.monotonic() - t < 15  # it stopped on SIGTERM, not on the SIGKILL 20 s later
        assert engine("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip() == "0"
    finally:
        engine("rm", "-f", name)


def test_litellm_still_reaches_a_provider_in_the_trimmed_image(container, upstream):
    """The image drops packages the guard never loads (docs/deploy.md); an LLM judge's path through litellm works."""
    name, _ = container
    upstream.script.push(Reply(content="litellm got through"))
    out = engine("exec", name, "python", "-c",
                 "import litellm; r = litellm.completion(model='openai/m', api_base='%s', api_key='x', "
                 "messages=[{'role': 'user', 'content': 'hi'}]); print(r.choices[0].message.content)" % upstream.base_url,
                 timeout=120)
    assert out.stdout.strip().endswith("litellm got through"), out.stderr[-2000:]


def test_a_mounted_policy_folder_reloads_on_sighup(image, upstream, tmp_path):
    """The Kubernetes shape: the policy comes from a mounted folder (a ConfigMap) and reloads without a restart."""
    policies = tmp_path / "policies"
    policies.mkdir()
    policies.chmod(0o755)
    shutil.copy(ROOT / "policies" / "examples" / "support-bot.md", policies / "support-bot.md")
    (policies / "support-bot.md").chmod(0o644)
    port = free_port()
    name = f"guard-hup-{port}"
    started = engine("run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "--network", "host",
                     "-v", f"{policies}:/etc/guard/policies:ro", "-e", "GUARD_HOST=127.0.0.1", "-e", f"GUARD_PORT={port}",
                     "-e", f"GUARD_UPSTREAM={upstream.base_url}", image, "--policy", "/etc/guard/policies")
    assert started.returncode == 0, started.stderr
    readyz = f"http://127.0.0.1:{port}/readyz"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(readyz, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, engine("logs", name).stderr[-2000:]
            time.sleep(0.5)
        before = httpx.get(readyz).json()["checks"]["policy"]
        with (policies / "support-bot.md").open("a") as f:
            f.write("- allow: Can I change the delivery address of my order?\n")
        assert engine("kill", "--signal", "HUP", name).returncode == 0
        deadline = time.monotonic() + 30
        while httpx.get(readyz).json()["checks"]["policy"] == before:
            assert time.monotonic() < deadline, engine("logs", name).stdout[-2000:]
            time.sleep(0.2)
    finally:
        engine("rm", "-f", name)
