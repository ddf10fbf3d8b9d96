"""The LLM judge: any model litellm can reach (OpenAI, Anthropic, vLLM, Ollama, llama.cpp
server, gpt-oss-safeguard...), asked to reason over the retrieved sections and answer in JSON.

An answer that is not valid JSON, breaks the schema, or cites sections that were not
retrieved is sent back once with the reason; a second bad answer is a judge failure.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guard.accounting import Price, cost_of
from guard.errors import JudgeError, JudgeTimeout
from guard.judges.base import Case, Judgment
from guard.judges.prompt import build_messages
from guard.types import Cost, Decision, Usage


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    decision: Decision
    sections: list[str] = Field(default_factory=list)
    rationale: str
    confidence: float = Field(ge=0.0, le=1.0)
    rewrite: str | None = None


_FENCED = re.compile(r"```(?:json)?\s*(\{.*\})\s*```", re.S)


def parse_answer(text: str, allowed_ids: set[str]) -> _Answer:
    """Validate a judge's raw text; raise ValueError with a reason the judge can act on."""
    m = _FENCED.search(text or "")
    raw = m.group(1) if m else (text or "")
    start, end = raw.find("{"), raw.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the answer contains no JSON object")
    try:
        answer = _Answer.model_validate(json.loads(raw[start : end + 1]))
    except json.JSONDecodeError as e:
        raise ValueError(f"the answer is not valid JSON ({e.msg})") from None
    except ValidationError as e:
        first = e.errors()[0]
        raise ValueError(f"field '{'.'.join(map(str, first['loc']))}': {first['msg']}") from None
    unknown = [s for s in answer.sections if s not in allowed_ids]
    if unknown:
        raise ValueError(f"cited section ids {unknown} are not among the policy sections given ({sorted(allowed_ids)})")
    if answer.decision is not Decision.allow and not answer.sections:
        raise ValueError(f"a '{answer.decision.value}' decision must cite at least one section id")
    return answer


def _litellm():
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-list download at import
    import litellm

    litellm.suppress_debug_info = True
    return litellm


class LLMJudge:
    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None,
                 timeout_s: float = 20.0, max_tokens: int = 1024, reasoning_effort: str | None = None,
                 price: Price | None = None, json_mode: bool = True):
        self.model, self.api_base, self.api_key = model, api_base, api_key
        self.timeout_s, self.max_tokens, self.reasoning_effort = timeout_s, max_tokens, reasoning_effort
        self.price, self.json_mode = price, json_mode
        self.name = f"llm:{model}"

    def __repr__(self) -> str:  # never show the key
        return f"LLMJudge(model={self.model!r}, api_base={self.api_base!r})"

    async def deliberate(self, case: Case) -> Judgment:
        messages = build_messages(case)
        allowed = set(case.retrieval.ids)
        usage, cost = Usage(), Cost(usd=0.0)
        for attempt in (1, 2):
            text, u, c = await self._call(messages)
            usage, cost = usage + u, Cost.add(cost, c)
            try:
                answer = parse_answer(text, allowed)
            except ValueError as e:
                if attempt == 2:
                    raise JudgeError(f"judge answer invalid after one repair: {e}") from None
                messages = messages + [
                    {"role": "assistant", "content": text or ""},
                    {"role": "user", "content": f"Your answer was invalid: {e}. Reply with only the corrected JSON object."},
                ]
                continue
            rewrite = answer.rewrite if answer.decision is Decision.safe_complete else None
            return Judgment(decision=answer.decision, sections=tuple(answer.sections), rationale=answer.rationale,
                            confidence=answer.confidence, rewrite=rewrite or None, usage=usage, cost=cost, judge=self.name)
        raise AssertionError("unreachable")

    async def _call(self, messages: list[dict[str, str]]) -> tuple[str, Usage, Cost]:
        litellm = _litellm()
        kwargs: dict[str, Any] = dict(model=self.model, messages=messages, max_tokens=self.max_tokens,
                                      timeout=self.timeout_s, temperature=0, drop_params=True, num_retries=0)
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.api_key:
            kwargs["api_key"] = self.api_key
        if self.reasoning_effort:
            kwargs["reasoning_effort"] = self.reasoning_effort
        if self.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        try:
            resp = await asyncio.wait_for(litellm.acompletion(**kwargs), timeout=self.timeout_s)
        except (asyncio.TimeoutError, litellm.exceptions.Timeout):
            raise JudgeTimeout(f"judge {self.model} timed out after {self.timeout_s:g}s") from None
        except Exception as e:  # litellm's provider errors share no narrower base; keep the type, drop the body
            raise JudgeError(f"judge {self.model} failed: {type(e).__name__}: {str(e)[:200]}") from None
        text = resp.choices[0].message.content or ""
        u = getattr(resp, "usage", None)
        details = getattr(u, "completion_tokens_details", None)
        usage = Usage(prompt_tokens=getattr(u, "prompt_tokens", 0) or 0,
                      completion_tokens=getattr(u, "completion_tokens", 0) or 0,
                      reasoning_tokens=getattr(details, "reasoning_tokens", None))
        return text, usage, (self.price.cost(usage) if self.price else cost_of(self.model, usage))
