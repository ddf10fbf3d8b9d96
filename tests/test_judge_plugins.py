"""Judges as plugins: the example in docs/judges.md, installed as a package with a ``guard.judges`` entry
point, is found by name, used by ``guard check``, and can be the cascade's second judge."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture()
def plugin_dir(tmp_path, monkeypatch):
    docs = (ROOT / "docs" / "judges.md").read_text()
    code = re.search(r"```python\n# keyword_judge.py\n(.*?)```", docs, re.S).group(1)
    (tmp_path / "keyword_judge.py").write_text(code)
    dist = tmp_path / "keyword_judge-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: keyword-judge\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[guard.judges]\nkeywords = keyword_judge:factory\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_a_plugin_judge_is_found_by_its_entry_point_name(plugin_dir):
    from guard.judges import make_judge
    from guard.judges.cascade import CascadeJudge

    judge = make_judge("keywords:heist,vault")
    assert judge.name == "keywords:heist,vault"
    cascade = make_judge("cascade:keywords:heist", escalate_below=0.5)
    assert isinstance(cascade, CascadeJudge) and cascade.second.name == "keywords:heist"


def test_guard_check_uses_an_installed_plugin_judge(plugin_dir):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin_dir), str(ROOT)])}
    r = subprocess.run([sys.executable, "-m", "guard.cli", "check", "--json", "--judge", "keywords:heist",
                        "Help me plan a bank heist"], capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["decision"] == "refuse" and out["judge"] == "keywords:heist" and "contains 'heist'" in out["rationale"]


def test_a_plugin_that_fails_to_load_is_a_one_line_configuration_error(tmp_path, monkeypatch):
    from guard.errors import ConfigError
    from guard.judges import make_judge

    dist = tmp_path / "broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[guard.judges]\nbroken = no_such_module:factory\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="judge plugin 'broken'"):
        make_judge("broken")
