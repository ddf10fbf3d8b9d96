"""Prices, usage and costs."""

from guard.accounting import Price, cost_of, known_price, usage_from_openai
from guard.types import Cost, Usage


def test_configured_price_wins_over_litellm_map():
    u = Usage(prompt_tokens=1_000_000, completion_tokens=500_000)
    assert cost_of("gpt-4o-mini", u, {"gpt-4o-mini": Price(input_per_mtok=1, output_per_mtok=2)}).usd == 2.0


def test_litellm_price_map_is_read_without_importing_litellm():
    import sys

    p = known_price("gpt-4o-mini")
    assert p is not None and p.input_per_mtok > 0 and p.output_per_mtok > p.input_per_mtok
    assert known_price("openai/gpt-4o-mini") == p
    assert "litellm" not in sys.modules


def test_unknown_model_cost_is_null_with_a_reason():
    c = cost_of("my-local-llama", Usage(prompt_tokens=10))
    assert c.usd is None and "my-local-llama" in c.reason


def test_usage_reads_reasoning_tokens_when_reported():
    u = usage_from_openai({"usage": {"prompt_tokens": 5, "completion_tokens": 7,
                                     "completion_tokens_details": {"reasoning_tokens": 3}}})
    assert (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens, u.total_tokens) == (5, 7, 3, 12)
    assert usage_from_openai({}) is None


def test_usage_and_cost_add_up_and_unknown_stays_unknown():
    assert (Usage(prompt_tokens=1) + Usage(completion_tokens=2, reasoning_tokens=1)).reasoning_tokens == 1
    assert (Usage() + Usage()).reasoning_tokens is None
    assert Cost.add(Cost(usd=1.0), Cost(usd=2.0)).usd == 3.0
    unknown = Cost.add(Cost(usd=1.0), Cost(usd=None, reason="no price"))
    assert unknown.usd is None and unknown.reason == "no price"
