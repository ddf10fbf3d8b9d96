"""A GuardResult as the JSON that ``guard check --json`` prints and ``POST /v1/guard/check`` returns."""

from __future__ import annotations

from typing import Any

from guard.types import Decision, GuardResult, decisive


def result_json(result: GuardResult, *, rationale: bool = True) -> dict[str, Any]:
    d = decisive(result.verdicts)
    return {
        "decision": result.decision.value,
        "sections": list(result.sections),
        "precedents": list(d.precedents) if d else [],
        "rationale": (d.rationale if d else "no stage ran") if rationale else None,
        "confidence": d.confidence if d else None,
        "judge": d.judge if d else None,
        "policy_version": result.policy_version,
        "latency_ms": round(result.latency_ms, 3),
        "usage": {"prompt_tokens": result.judge_usage.prompt_tokens, "completion_tokens": result.judge_usage.completion_tokens,
                  "reasoning_tokens": result.judge_usage.reasoning_tokens},
        "cost_usd": result.judge_cost.usd,
        "cost_note": result.judge_cost.reason,
        "cache_hit": result.cache_hit,
        "degraded": result.degraded,
        "reply": result.text if result.decision is not Decision.allow else None,
        "stages": [{"stage": v.stage, "decision": v.decision.value, "sections": list(v.sections),
                    "confidence": v.confidence, "latency_ms": round(v.latency_ms, 3), "degraded": v.degraded,
                    "degraded_reason": v.degraded_reason, "structured_output": v.structured_output,
                    "retrieved": [r.model_dump() for r in v.retrieved]} for v in result.verdicts],
    }
