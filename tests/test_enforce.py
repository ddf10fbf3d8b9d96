"""guard.enforce: what a caller receives for a verdict, in the spec's style."""

from guard import enforce
from guard.policy import parse_policy, Spec
from guard.types import Decision, Verdict

POLICY = """---
id: t
title: test
---

## Style {#style}
kind: style
refusal: Sorry, no.

How to refuse.

## Low {#low}
decision: refuse
priority: 10
refusal: Not that, sorry.

Low-priority things.

## High {#high}
decision: safe_complete
priority: 50
safe_reply: Please talk to someone you trust.

High-priority things.

### Safe completion
Be warm and point to help.
"""


def spec() -> Spec:
    sections, errors = parse_policy(POLICY, "t.md")
    assert not errors
    return Spec(sections=tuple(sections), version="v1", sources=("t.md",))


def verdict(decision: Decision, sections=(), rewrite=None) -> Verdict:
    return Verdict(stage="input", decision=decision, sections=tuple(sections), rationale="r", confidence=0.9,
                   rewrite=rewrite, judge="scripted", policy_version="v1")


def test_a_refusal_uses_the_highest_priority_cited_sections_own_refusal_text():
    assert enforce.replacement_text(spec(), verdict(Decision.refuse, ["low"])) == "Not that, sorry."
    assert enforce.deciding_section(spec(), verdict(Decision.refuse, ["low", "high"])).id == "high"


def test_a_refusal_citing_no_rule_falls_back_to_the_style_sections_refusal():
    assert enforce.replacement_text(spec(), verdict(Decision.refuse, ["style"])) == "Sorry, no."
    assert enforce.replacement_text(spec(), verdict(Decision.refuse, [])) == "Sorry, no."


def test_a_safe_completion_prefers_the_judges_rewrite_then_the_sections_safe_reply_never_the_draft():
    s = spec()
    assert enforce.replacement_text(s, verdict(Decision.safe_complete, ["high"], rewrite="I hear you.")) == "I hear you."
    assert enforce.replacement_text(s, verdict(Decision.safe_complete, ["high"])) == "Please talk to someone you trust."
    assert enforce.replacement_text(s, verdict(Decision.safe_complete, ["low"])) == "Not that, sorry."


def test_guidance_for_the_upstream_carries_the_cited_sections_and_how_to_answer():
    text = enforce.guidance(spec(), verdict(Decision.safe_complete, ["high"]))
    assert "[high]" in text and "High-priority things." in text and "How to answer: Be warm" in text
    assert "[low]" not in text


def test_the_guards_own_completion_is_an_openai_chat_completion():
    c = enforce.completion("Sorry, no.", None, "abc", "content_filter")
    assert c["object"] == "chat.completion" and c["model"] == "guard" and c["id"] == "chatcmpl-guard-abc"
    assert c["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Sorry, no."},
                             "finish_reason": "content_filter"}]
