"""Hypothesis-driven HTTP fuzzing of every route (bounded for CI: 500 generated requests): no 5xx, every
error body OpenAI-shaped, every stream ends with [DONE]. benchmarks/fuzz.py runs the same for longer."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings

from fuzz_http import problem, request, send
from guard.pipeline import Guard
from guard.server.app import create_app
from guard.server.config import load_config
from guard.server.run import ServerThread
from guard.testing.fake_openai import FakeOpenAIServer

N = 500  # marked slow (about 20 s); still run in CI


@pytest.fixture(scope="module")
def target():
    with FakeOpenAIServer() as up:
        config = load_config(env={}, flags={"upstream": up.base_url, "access_log": False, "body_read_timeout_s": 0.5})
        with ServerThread(create_app(config, guard=Guard.create(config))) as server, \
                httpx.Client(timeout=30) as client:
            yield client, server.base_url.removesuffix("/v1")


counted: list[int] = []


@pytest.mark.slow
@settings(max_examples=N, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(req=request)
def test_no_request_gets_a_5xx_or_a_non_openai_error(target, req):
    client, base = target
    r = send(client, base, req)
    counted.append(r.status_code)
    assert problem(r) is None, (req, problem(r))


@pytest.mark.slow
def test_the_fuzz_run_sent_at_least_500_requests_across_statuses():
    assert len(counted) >= N and len(set(counted)) >= 3
