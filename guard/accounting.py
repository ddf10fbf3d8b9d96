"""What a decision cost: prices per token, from the configuration first, then from the price
map litellm ships (read as a file, so pricing never pays litellm's import time)."""

from __future__ import annotations

import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from pydantic import BaseModel

from guard.types import Cost, Usage


class Price(BaseModel):
    """USD per million tokens (set these for local models, which litellm cannot price)."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def cost(self, usage: Usage) -> Cost:
        return Cost(usd=(usage.prompt_tokens * self.input_per_mtok + usage.completion_tokens * self.output_per_mtok) / 1e6)


class ModelFacts(NamedTuple):
    """What litellm's shipped model map says about one model (USD per token; input window)."""

    input_per_token: float | None
    output_per_token: float | None
    context_tokens: int | None


@lru_cache(maxsize=1)
def model_table() -> dict[str, ModelFacts]:
    """litellm's shipped model map, read as a file (pricing never pays litellm's import time); only
    prices and context windows are kept (the whole map is ~5 MB parsed)."""
    spec = importlib.util.find_spec("litellm")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(list(spec.submodule_search_locations)[0]) / "model_prices_and_context_window_backup.json"
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}

    def num(v):
        return float(v) if isinstance(v, (int, float)) else None

    out = {}
    for name, e in table.items():
        if isinstance(e, dict):
            ctx = e.get("max_input_tokens") or e.get("max_tokens")
            out[name] = ModelFacts(input_per_token=num(e.get("input_cost_per_token")),
                                   output_per_token=num(e.get("output_cost_per_token")),
                                   context_tokens=ctx if isinstance(ctx, int) and ctx > 0 else None)
    return out


def model_facts(model: str) -> ModelFacts | None:
    table = model_table()
    for key in (model, model.split("/", 1)[-1]):
        if key in table:
            return table[key]
    return None


@lru_cache(maxsize=256)
def known_price(model: str) -> Price | None:
    facts = model_facts(model)
    if facts is None or facts.input_per_token is None:
        return None
    return Price(input_per_mtok=facts.input_per_token * 1e6, output_per_mtok=(facts.output_per_token or 0.0) * 1e6)


def cost_of(model: str | None, usage: Usage, prices: dict[str, Price] | None = None) -> Cost:
    """Configured price, else litellm's map, else an explicit unknown with the reason."""
    if not model:
        return Cost(usd=None, reason="model unknown")
    price = (prices or {}).get(model) or known_price(model)
    if price is None:
        return Cost(usd=None, reason=f"no price known for '{model}': set prices.{model} in the config")
    return price.cost(usage)


def usage_from_openai(body: dict | None) -> Usage | None:
    u = (body or {}).get("usage")
    if not isinstance(u, dict):
        return None
    details = u.get("completion_tokens_details") or {}
    return Usage(prompt_tokens=int(u.get("prompt_tokens") or 0), completion_tokens=int(u.get("completion_tokens") or 0),
                 reasoning_tokens=details.get("reasoning_tokens") if isinstance(details, dict) else None)
