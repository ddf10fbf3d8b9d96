"""Reading an operator's sections: the policy's own words about what it is for keep its subject allowed.

tests/data/library-desk.md is a small policy of our own (not a benchmark policy): a library help desk
whose member-records rule sits on the same subject (cards, loans) as most of its ordinary questions.
"""

import json
from pathlib import Path

import pytest

from guard.eval.fitted import near_copies
from guard.judges.minilm import domain_texts, reader_training_policies, rule_texts
from guard.judges.offline import OfflineJudge
from guard.pipeline import Guard
from guard.policy import load_spec
from guard.settings import GuardSettings
from guard.types import Decision

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "tests" / "data" / "library-desk.md"


@pytest.fixture(scope="module")
def guard():
    return Guard.create(GuardSettings(policies=[str(LIBRARY)], judge="offline", cache_size=0))


def verdict(guard, text):
    return guard.check_sync([{"role": "user", "content": text}]).verdicts[0]


@pytest.mark.parametrize("text", ["How do I get a library card for my seven-year-old?",
                                  "I lost my library card, what should I do?",
                                  "Can I reserve a book that is out on loan?"])
def test_questions_on_the_policys_own_subject_are_not_read_as_breaches_of_its_rule(guard, text):
    # near the member-records rule's topic (cards, loans), nearer still to what the overview says the desk is for
    v = verdict(guard, text)
    assert v.decision is Decision.allow, v.rationale


@pytest.mark.parametrize("text", ["What has my sister borrowed from the library lately?",
                                  "Which books does my coworker Dana have reserved?"])
def test_the_operators_rule_still_refuses_what_it_forbids(guard, text):
    v = verdict(guard, text)
    assert v.decision is Decision.refuse and v.sections == ("library-member-records",), v.rationale


def test_an_unrelated_request_is_off_topic(guard):
    v = verdict(guard, "What's the capital of Peru?")
    assert v.decision is Decision.refuse and v.sections == ("library-off-topic",)


def test_the_policys_subject_is_read_from_its_overview_items_and_allowed_lists_not_its_prohibitions():
    spec = load_spec([LIBRARY])
    texts = domain_texts(spec, "library-desk")
    assert {"reserving books", "booking the study rooms", "checking one's own loans and fees"} <= set(texts)
    assert "How do I see the books I have on loan?" in texts  # allow examples are part of it
    assert not any("never discloses" in t for t in texts)  # a sentence that forbids is not the subject
    rule = rule_texts(spec.get("library-member-records"))
    assert rule and not any(t.startswith("Allowed") or "own loans" in t for t in rule)


def test_the_reader_was_fitted_on_no_benchmark_policy_and_names_what_it_was_fitted_on():
    fitted = OfflineJudge().fitted_policies
    assert any(p.endswith("train_policies/utility-company.md") for p in fitted)
    examples = [e.text for f in reader_training_policies() for s in load_spec([f]).rules for e in s.examples]
    ids = {load_spec([f]).sections[0].policy for f in reader_training_policies()}
    for prompts in sorted((ROOT / "benchmarks" / "data" / "custom").glob("*.jsonl")):
        assert prompts.stem not in ids
        rows = {r["id"]: r["prompt"] for r in map(json.loads, prompts.read_text(encoding="utf-8").splitlines()) if r}
        assert near_copies(rows, examples, threshold=0.8) == [], prompts.name
