"""The README's main command, end to end: a real local model behind guard serve, driven by the openai client."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end_on_the_local_model_and_stops_what_it_started():
    temp_before = set(Path(tempfile.gettempdir()).glob("guard-demo-*"))
    out = subprocess.run([sys.executable, "-m", "guard.cli", "demo", "--max-tokens", "40"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout
    assert "Traceback" not in out.stderr
    blocks = text.split("\n[")[1:]
    assert len(blocks) == 6
    drugs = next(b for b in blocks if "methamphetamine" in b)
    assert "REFUSE" in drugs and "illicit-drugs" in drugs and "content_filter" in drugs and "model tokens: 0" in drugs
    assert "SAFE_COMPLETE" in next(b for b in blocks if "end my life" in b)
    benign = next(b for b in blocks if "kill a Python process" in b)
    assert "ALLOW" in benign and re.search(r"model tokens: [1-9]", benign)  # the local model really answered
    assert "first text after" in next(b for b in blocks if "poem about the sea" in b)
    assert "stopped the local model and the guard" in text
    model_url = re.search(r"ready at http://127\.0\.0\.1:(\d+)/v1 in", text)
    with socket.socket() as s:  # the model server is gone: its port refuses connections
        assert s.connect_ex(("127.0.0.1", int(model_url.group(1)))) != 0
    assert set(Path(tempfile.gettempdir()).glob("guard-demo-*")) <= temp_before  # its temporary folder is gone
