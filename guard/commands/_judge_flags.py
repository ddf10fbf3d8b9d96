"""The judge's flags, shared by ``guard check`` and ``guard eval``: every judge setting as a flag,
over ``GUARD_*`` environment variables, over the defaults (as for ``guard serve``)."""

from __future__ import annotations

import os
from typing import Any

from guard.errors import GuardError

# flag dest -> GuardSettings field
_FIELDS = {"judge": "judge", "judge_api_base": "judge_api_base", "judge_api_key": "judge_api_key",
           "judge_timeout": "judge_timeout_s", "judge_max_tokens": "judge_max_tokens",
           "judge_context_tokens": "judge_context_tokens", "judge_structured_output": "judge_structured_output",
           "judge_concurrency": "judge_concurrency", "escalate_below": "escalate_below",
           "reasoning_effort": "reasoning_effort", "on_escalation_failure": "on_escalation_failure",
           "judge_price": "judge_price"}


def add_judge_flags(p) -> None:
    g = p.add_argument_group("judge (each flag overrides its GUARD_* environment variable)")
    g.add_argument("--judge", default=None, help="offline (default), cascade:MODEL, a judge plugin, or a litellm model string")
    g.add_argument("--judge-api-base", default=None, metavar="URL", help="the judge's server, e.g. a local llama.cpp or Ollama")
    g.add_argument("--judge-api-key", default=None, metavar="KEY", help="the judge's key (a local server needs none)")
    g.add_argument("--judge-timeout", type=float, default=None, metavar="S", help="deadline of one judge check (default 20)")
    g.add_argument("--judge-max-tokens", type=int, default=None, metavar="N", help="cap on the answer, reasoning included")
    g.add_argument("--judge-context-tokens", type=int, default=None, metavar="N",
                   help="the judge model's context window (default: litellm's figure, else 2048)")
    g.add_argument("--judge-structured-output", default=None, metavar="HOW",
                   help="auto (default), json_schema, json_object_schema, guided_json, json_object or prompt")
    g.add_argument("--judge-concurrency", type=int, default=None, metavar="N", help="judge calls in flight at once (default 4)")
    g.add_argument("--escalate-below", type=float, default=None, metavar="CONF",
                   help="cascade: offline verdicts below this confidence go to the model (default 0.8)")
    g.add_argument("--on-escalation-failure", choices=["offline", "fail_mode"], default=None,
                   help="cascade: a failed escalation keeps the offline verdict (default) or follows fail_mode")
    g.add_argument("--reasoning-effort", choices=["low", "medium", "high"], default=None)
    g.add_argument("--judge-price", default=None, metavar="IN/OUT",
                   help="judge price in USD per million input/output tokens, e.g. 0.15/0.60 (default: litellm's price map)")


def _price(text: str) -> dict[str, float]:
    try:
        i, o = (float(x) for x in text.replace(",", "/").split("/"))
    except ValueError:
        raise GuardError(f"--judge-price must be IN/OUT in USD per million tokens, e.g. 0.15/0.60, not {text!r}") from None
    return {"input_per_mtok": i, "output_per_mtok": o}


def settings_from(args, env: dict[str, str] | None = None, **fixed: Any):
    """GuardSettings from defaults < GUARD_* variables < judge flags < ``fixed`` (the command's own flags)."""
    from pydantic import ValidationError

    from guard.server.config import _from_env
    from guard.settings import GuardSettings

    merged = {k: v for k, v in _from_env(os.environ if env is None else env).items() if k in GuardSettings.model_fields}
    for dest, field in _FIELDS.items():
        value = getattr(args, dest, None)
        if value is not None:
            merged[field] = _price(value) if field == "judge_price" else value
    merged.update({k: v for k, v in fixed.items() if v is not None})
    try:
        return GuardSettings.model_validate(merged)
    except ValidationError as e:
        err = e.errors()[0]
        raise GuardError(f"invalid setting {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
