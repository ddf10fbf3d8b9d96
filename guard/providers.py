"""The one place that talks to litellm, shared by the LLM judge and the litellm upstream.

litellm is imported lazily (``import litellm`` takes about 4 s) and told to use the price map it
ships instead of downloading one. ``call_args`` builds the arguments every call shares: model,
base URL, key, timeout, no retries. A local server (``api_base`` set) needs no key, but litellm
refuses an ``openai/...`` model without one: when neither a key nor the provider's key variable is
set, a placeholder is sent.
"""

from __future__ import annotations

import os
from typing import Any

PLACEHOLDER_KEY = "sk-local-no-key"  # what a keyless local server receives; it checks nothing


def litellm():
    """The litellm module, imported on first use."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-list download at import
    import litellm as _lm

    _lm.suppress_debug_info = True
    return _lm


def provider_of(model: str) -> str:
    """litellm's provider prefix of a model string (``openai`` when there is none)."""
    return model.split("/", 1)[0] if "/" in model else "openai"


def needs_placeholder_key(model: str, api_base: str | None, api_key: str | None) -> bool:
    if api_key or not api_base:
        return False
    try:
        env = litellm().validate_environment(model=model, api_base=api_base)
    except Exception:  # an unknown provider: let the call say what is wrong
        return False
    return not env.get("keys_in_environment", True)


def call_args(model: str, *, api_base: str | None = None, api_key: str | None = None,
              timeout_s: float | None = None, **extra: Any) -> dict[str, Any]:
    """Arguments for ``litellm.acompletion`` that only the operator sets (never a client)."""
    kwargs: dict[str, Any] = dict(model=model, num_retries=0, **extra)
    if timeout_s is not None:
        kwargs["timeout"] = timeout_s
    if api_base:
        kwargs["api_base"] = api_base
    if api_key:
        kwargs["api_key"] = api_key
    elif needs_placeholder_key(model, api_base, api_key):
        kwargs["api_key"] = PLACEHOLDER_KEY
    return kwargs


def known_context_tokens(model: str) -> int | None:
    """The model's input window from litellm's shipped map (read as a file, without importing litellm)."""
    from guard.accounting import model_facts

    facts = model_facts(model)
    return facts.context_tokens if facts else None


def status_of(error: BaseException) -> int | None:
    """The HTTP status a litellm exception carries, if any."""
    status = getattr(error, "status_code", None)
    return status if isinstance(status, int) else None
