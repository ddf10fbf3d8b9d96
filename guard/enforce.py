"""Turn a verdict into what the caller receives. The guard carries the spec's style itself
(a spec handed to a model at inference time is weakest on response style; see docs/architecture.md):
refusals are the cited section's refusal text, safe completions the judge's
rewrite or the section's own safe reply."""

from __future__ import annotations

import time
from typing import Any

from guard.policy import Spec
from guard.types import Decision, PolicySection, Verdict


def deciding_section(spec: Spec, verdict: Verdict) -> PolicySection | None:
    cited = [s for s in (spec.get(i) for i in verdict.sections) if s is not None and s.kind == "rule"]
    return max(cited, key=lambda s: s.priority, default=None)


def refusal_text(spec: Spec, verdict: Verdict) -> str:
    section = deciding_section(spec, verdict)
    return (section.refusal if section and section.refusal else None) or spec.default_refusal()


def safe_completion_text(spec: Spec, verdict: Verdict) -> str:
    """The judge's rewrite, else the section's safe reply, else a refusal (never the raw draft)."""
    if verdict.rewrite:
        return verdict.rewrite
    section = deciding_section(spec, verdict)
    if section and section.safe_reply:
        return section.safe_reply
    return refusal_text(spec, verdict)


def guidance(spec: Spec, verdict: Verdict) -> str:
    """A system message for re-asking the upstream to answer safely, built from the cited sections."""
    parts = ["Answer the user's request safely, following these policy sections. Do not include anything they forbid."]
    for sid in verdict.sections:
        s = spec.get(sid)
        if s:
            parts.append(f"[{s.id}] {s.title}: {s.body.strip()}")
            if s.safe_completion:
                parts.append(f"How to answer: {s.safe_completion.strip()}")
    return "\n\n".join(parts)


def replacement_text(spec: Spec, verdict: Verdict) -> str:
    return safe_completion_text(spec, verdict) if verdict.decision is Decision.safe_complete else refusal_text(spec, verdict)


def completion(text: str, model: str | None, request_id: str, finish_reason: str,
               usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` written by the guard."""
    return {
        "id": f"chatcmpl-guard-{request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or "guard",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}],
        "usage": usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
