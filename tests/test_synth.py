"""guard synth end to end: the CLI, litellm, and a scripted model over loopback HTTP (generator and judge)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guard.testing.fake_openai import FakeOpenAIServer
from guard.testing.synth_model import SynthModel

ROOT = Path(__file__).resolve().parent.parent
POLICY = "policies/examples/support-bot.md"


def guard(*args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_") and k != "OPENAI_API_KEY"}
    return subprocess.run([sys.executable, "-m", "guard.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120, env=env)


def test_synth_writes_labelled_rows_on_both_sides_of_every_section_and_drops_disagreements(tmp_path):
    model = SynthModel(disagree_every=4)
    out, eval_out = tmp_path / "rows.jsonl", tmp_path / "eval.jsonl"
    with FakeOpenAIServer(reply=model) as server:
        r = guard("synth", "--policy", POLICY, "--model", "openai/generator", "--judge", "openai/labeller",
                  "--api-base", server.base_url, "--per-section", "3", "--out", str(out), "--eval-out", str(eval_out))
        assert r.returncode == 0, r.stderr
        bodies = [b for b in server.requests if isinstance(b, dict)]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    sections = {"off-topic", "competitor-talk", "account-security", "refund-promises"}
    generated = len(sections) * 2 * 3
    disagreed = generated // 4
    assert f"{generated} cases written" in r.stdout and f"{generated - disagreed} kept" in r.stdout
    assert len(rows) == generated - disagreed
    assert {row["section"] for row in rows} == sections
    for row in rows:
        intended = model.written[row["text"]]
        assert row["section"] == intended[0] and row["decision"] == intended[1]
        assert row["side"] == ("allows" if row["decision"] == "allow" else "acts")
        assert row["rationale"] and row["provenance"]["generator"] == "openai/generator"
        assert row["provenance"]["judge"] == "llm:openai/labeller" and row["provenance"]["policy_version"]
    assert {r["decision"] for r in rows} == {"allow", "refuse", "safe_complete"}
    # the generator and the judge were asked by their own model names, the schema enforced
    assert {b["model"] for b in bodies} == {"generator", "labeller"}
    assert all("response_format" in b for b in bodies)
    evals = [json.loads(line) for line in eval_out.read_text().splitlines()]
    assert len(evals) == len(rows) and set(evals[0]) == {"id", "prompt", "label", "category"}
    r2 = guard("eval", "--data", str(eval_out), "--policy", "policies/default.md", "--policy", POLICY, "--json")
    assert r2.returncode == 0, r2.stderr  # the rows are guard eval's format


def test_synth_with_an_unknown_section_is_a_one_line_error(tmp_path):
    r = guard("synth", "--policy", POLICY, "--model", "openai/x", "--api-base", "http://127.0.0.1:9/v1",
              "--section", "nope", "--out", str(tmp_path / "o.jsonl"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nope" in r.stderr


def synth_rows(tmp_path, per_section=4):
    out = tmp_path / "rows.jsonl"
    with FakeOpenAIServer(reply=SynthModel()) as server:
        r = guard("synth", "--policy", POLICY, "--model", "openai/generator", "--api-base", server.base_url,
                  "--per-section", str(per_section), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return out


def test_train_fits_synth_rows_and_keeps_a_held_out_split(tmp_path):
    rows = synth_rows(tmp_path)
    r = guard("train", "--policy", POLICY, "--data", str(rows), "--out", str(tmp_path / "judge"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "judge").is_file() and (tmp_path / "judge.heldout.jsonl").exists()
    assert "--judge offline:" in r.stdout


def test_train_rejects_rows_citing_unknown_sections(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "hi", "section": "no-such", "decision": "refuse"}) + "\n")
    r = guard("train", "--policy", POLICY, "--data", str(bad), "--out", str(tmp_path / "j"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


# Synth rows -> a fitted judge that guard eval measures beside the stock one, on rows neither was fitted on.
# (The scripted model writes variants of the sections' own examples, which the stock section reader already
# enforces: this checks the plumbing and that fitting costs no recall, not that it adds some.)
def test_synth_then_train_gives_a_fitted_judge_that_guard_eval_measures_before_and_after(tmp_path):
    rows = synth_rows(tmp_path, per_section=8)
    judge = tmp_path / "support.judge"
    r = guard("train", "--policy", "policies/default.md", "--policy", POLICY, "--data", str(rows), "--out", str(judge),
              "--heldout", "0.25")
    assert r.returncode == 0, r.stderr
    held = f"{judge}.heldout.jsonl"
    policies = ["--policy", "policies/default.md", "--policy", POLICY]
    before = json.loads(guard("eval", "--data", held, *policies, "--json").stdout)
    after = json.loads(guard("eval", "--data", held, *policies, "--judge", f"offline:{judge}", "--json").stdout)
    assert before["judge"] != after["judge"] and after["judge"].endswith("+support")
    assert after["n"] == before["n"] > 0 and after["recall"] >= before["recall"] > 0.5
