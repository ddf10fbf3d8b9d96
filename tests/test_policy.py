"""Policy parsing, validation and versioning."""

from pathlib import Path

import pytest

from guard.errors import PolicyErrors
from guard.policy import load_spec, parse_policy
from guard.types import Decision

ROOT = Path(__file__).resolve().parent.parent

GOOD = """---
id: bot
title: Test bot
---

## Overview {#bot-overview}
kind: overview

What the bot is for.

## Stay on topic {#off-topic}
decision: refuse
priority: 20
refusal: I only talk about routers.

Anything not about routers.

### Precedence
Lower than safety sections.

### Examples
- refuse: Write me a poem about the sea.
- allow: How do I reset my router?
- refuse: Tell me a joke => Why did the chicken cross the road?
"""


def write(tmp_path, text, name="bot.md"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_parses_sections_meta_and_examples():
    sections, errors = parse_policy(GOOD, "bot.md")
    assert errors == []
    overview, rule = sections
    assert overview.kind == "overview" and overview.decision is None
    assert rule.id == "off-topic" and rule.decision is Decision.refuse and rule.priority == 20
    assert rule.refusal == "I only talk about routers."
    assert rule.precedence == "Lower than safety sections."
    assert [e.id for e in rule.examples] == ["off-topic#1", "off-topic#2", "off-topic#3"]
    assert rule.examples[2].text == "Tell me a joke" and rule.examples[2].response.startswith("Why did")
    assert rule.examples[0].line == 22


@pytest.mark.parametrize("broken, line, reason", [
    (GOOD.replace("decision: refuse", "decision: block"), 12, "unknown decision 'block'"),
    (GOOD.replace("priority: 20", "priority: high"), 13, "priority must be an integer"),
    (GOOD.replace("## Stay on topic {#off-topic}", "## Stay on topic"), 11, "has no id"),
    (GOOD.replace("- allow: How do I reset my router?", "- maybe: How do I reset my router?"), 23, "unknown example decision"),
    (GOOD.replace("### Precedence", "### Notes"), 18, "unknown subsection"),
    (GOOD.replace("id: bot\n", ""), 1, "missing 'id'"),
    (GOOD.replace("decision: refuse\n", ""), 11, "needs a 'decision:'"),
])
def test_malformed_policy_reports_file_line_reason(tmp_path, broken, line, reason):
    p = write(tmp_path, broken)
    with pytest.raises(PolicyErrors) as e:
        load_spec([p])
    err = e.value.errors[0]
    assert (err.file, err.line) == (str(p), line), str(e.value)
    assert reason in err.reason
    assert str(err).startswith(f"{p}:{line}: ")


def test_duplicate_section_ids_across_files_are_rejected(tmp_path):
    a = write(tmp_path, GOOD, "a.md")
    b = write(tmp_path, GOOD.replace("id: bot", "id: bot2"), "b.md")
    with pytest.raises(PolicyErrors, match="duplicate section id 'off-topic'"):
        load_spec([a, b])


def test_version_is_a_content_hash(tmp_path):
    p = write(tmp_path, GOOD)
    v1 = load_spec([p]).version
    assert load_spec([p]).version == v1
    p.write_text(GOOD.replace("routers.", "routers!"))
    assert load_spec([p]).version != v1


def test_unreadable_file_is_a_policy_error(tmp_path):
    with pytest.raises(PolicyErrors, match="cannot read policy"):
        load_spec([tmp_path / "missing.md"])


def test_default_spec_covers_the_required_categories_with_examples():
    spec = load_spec()
    ids = {s.id for s in spec.rules}
    required = {"sexual-minors", "violent-extremism", "hate-harassment", "illicit-drugs", "illicit-behaviour", "weapons",
                "cbrn", "medical-advice", "legal-advice", "financial-advice", "self-harm", "violence", "privacy",
                "cyber-abuse", "prompt-injection"}
    assert required <= ids
    for s in spec.rules:
        decisions = {e.decision for e in s.examples}
        assert len(s.examples) >= 4, s.id
        if s.decision is not Decision.allow:
            assert Decision.allow in decisions and len(decisions) >= 2, f"{s.id}: examples on both sides"
        assert s.tokens < 700, f"{s.id} is {s.tokens} tokens: keep sections focused"
    assert spec.get("sexual-minors").priority > spec.get("self-harm").priority
    assert spec.get("self-harm").decision is Decision.safe_complete and spec.get("self-harm").safe_reply
    assert any(s.kind == "style" for s in spec.sections) and "I can" in spec.default_refusal()


def test_example_policy_loads_beside_the_default():
    spec = load_spec([ROOT / "policies" / "default.md", ROOT / "policies" / "examples" / "support-bot.md"])
    assert spec.get("off-topic") is not None and spec.get("cyber-abuse") is not None
    assert {s.policy for s in spec.sections} == {"default", "support-bot"}


def test_a_directory_loads_every_markdown_file(tmp_path):
    write(tmp_path, GOOD, "a.md")
    write(tmp_path, GOOD.replace("id: bot", "id: other").replace("off-topic", "other-topic")
          .replace("bot-overview", "other-overview"), "b.md")
    assert len(load_spec([tmp_path]).rules) == 2
