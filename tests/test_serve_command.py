"""`guard serve` as a user starts it: configuration precedence, clear start-up errors, a real process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import openai
import pytest

from guard.errors import ConfigError
from guard.server.config import load_config
from guard.testing.fake_openai import FakeOpenAIServer, Script


def test_flags_override_environment_which_overrides_the_yaml_file(tmp_path):
    f = tmp_path / "guard.yaml"
    f.write_text("port: 7000\nhost: 0.0.0.0\nmode: shadow\nfail_mode: open\npolicies: [mine.md]\n")
    c = load_config(str(f), env={"GUARD_PORT": "7100", "GUARD_MODE": "enforce", "GUARD_API_KEYS": "a,b"},
                    flags={"port": 7200})
    assert (c.port, c.host, c.mode, c.fail_mode) == (7200, "0.0.0.0", "enforce", "open")
    assert [k.get_secret_value() for k in c.api_keys] == ["a", "b"]
    assert c.policies == [str(tmp_path / "mine.md")]  # relative to the config file


@pytest.mark.parametrize("text, message", [
    ("port: [1, 2]\n", "invalid setting port"),
    ("prot: 8000\n", "unknown setting 'prot'"),
    ("port: 8000\n  bad: indent\n", "guard.yaml:2: invalid YAML"),
    ("- just a list\n", "must be a mapping"),
])
def test_bad_config_files_say_what_is_wrong(tmp_path, text, message):
    f = tmp_path / "guard.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(str(f), env={})


def test_bad_environment_value_is_a_config_error():
    with pytest.raises(ConfigError, match="fail_mode"):
        load_config(env={"GUARD_FAIL_MODE": "sometimes"})


def test_secrets_are_not_shown_in_the_config_repr():
    c = load_config(env={"GUARD_UPSTREAM_API_KEY": "sk-very-secret"})
    assert "sk-very-secret" not in repr(c) and "sk-very-secret" not in str(c.model_dump())


def run_guard(*args, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "guard.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_serve_with_a_bad_config_exits_2_with_one_line(tmp_path):
    f = tmp_path / "guard.yaml"
    f.write_text("judge_timeout_s: -1\n")
    out = run_guard("serve", "--config", str(f))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "judge_timeout_s" in out.stderr and "Traceback" not in out.stderr


def test_serve_with_a_broken_policy_exits_2_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.md"
    bad.write_text("no front matter here\n")
    out = run_guard("serve", "--policy", str(bad), "--port", "0")
    assert out.returncode == 2 and str(bad) in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_guard_serve_process_guards_requests_and_stops_on_sigterm():
    with FakeOpenAIServer(Script().push("Hello from upstream.")) as up:
        proc = subprocess.Popen([sys.executable, "-m", "guard.cli", "serve", "--port", "0", "--upstream", up.base_url,
                                 "--log-format", "json"], stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "GUARD_UPSTREAM_API_KEY": "sk-never-logged"})
        try:
            line = proc.stderr.readline()
            url = re.search(r"listening on (\S+)", line).group(1)
            while "guard_ready" not in line:
                line = proc.stderr.readline()
                assert line, "server exited before it was ready"
            c = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
            out = c.chat.completions.create(model="m", messages=[{"role": "user", "content": "Say hello"}])
            assert out.choices[0].message.content == "Hello from upstream."
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0
        logged = line + err
        done = next(json.loads(x) for x in logged.splitlines() if '"guard_request_done"' in x)
        assert done["status"] == 200 and done["path"] == "/v1/chat/completions" and done["decision"] == "allow"
        assert "sk-never-logged" not in logged and "Say hello" not in logged  # no secrets, no content by default
        # one JSON object per line, ours and uvicorn's alike (the start-up banner is plain text, by design)
        for x in logged.splitlines():
            assert x.startswith("guard serve: listening") or isinstance(json.loads(x), dict), x
        assert any(json.loads(x).get("logger", "").startswith("uvicorn") for x in logged.splitlines() if x.startswith("{"))


def test_the_library_is_silent_unless_logging_is_configured():
    code = ("from guard.pipeline import Guard; from guard.testing.judges import ScriptedJudge; "
            "g = Guard.create(); g.check_sync([{'role': 'user', 'content': 'hello'}]); "
            "Guard.create(judge=ScriptedJudge(fail='down')).check_sync('hi')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == "", (out.stdout, out.stderr)


def test_configured_logging_renders_tracebacks_and_foreign_records_as_json_lines():
    import io
    import logging

    from guard.logs import configure, get_logger

    buf = io.StringIO()
    configure(level="info", json=True, stream=buf)
    try:
        try:
            raise ValueError("boom")
        except ValueError as e:
            get_logger("guard.server").error("guard_internal_error", exc_info=e)
        logging.getLogger("uvicorn.error").exception("uvicorn failed", exc_info=RuntimeError("x"))
        get_logger("guard").info("guard_request_done", decision="allow")
    finally:
        logging.getLogger().handlers[:] = [h for h in logging.getLogger().handlers if not getattr(h, "_guard", False)]
        import structlog

        structlog.reset_defaults()
    lines = buf.getvalue().splitlines()
    events = [json.loads(x) for x in lines]
    assert len(lines) == 3 and [e["event"] for e in events] == ["guard_internal_error", "uvicorn failed", "guard_request_done"]
    assert "ValueError" in json.dumps(events[0]) and events[1]["logger"] == "uvicorn.error" and events[2]["level"] == "info"
