"""The guard's settings, validated: one model read by the pipeline, the CLI and the server."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from guard.accounting import Price


class GuardSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policies: list[str] = Field(default_factory=list, description="policy files or folders; empty: the default spec")
    judge: str = Field("offline", description="'offline', 'cascade:JUDGE', a judge plugin, or a litellm model string")
    judge_api_base: str | None = Field(None, description="the judge's server (a local one needs no key)")
    judge_api_key: SecretStr | None = None
    judge_timeout_s: float = Field(20.0, gt=0, description="deadline of one judge check, queueing included")
    judge_max_tokens: int | None = Field(None, gt=0, description=(
        "caps the answer, reasoning included (reasoning judges can be baited into long thinking); "
        "default 512, or 4096 for a model with a context of 16k tokens or more"))
    judge_context_tokens: int | None = Field(None, gt=0, description=(
        "the judge model's context window; default: litellm's figure for known models, else 2048 "
        "(llama.cpp's default). The prompt is trimmed to leave room for the answer"))
    judge_structured_output: Literal["auto", "json_schema", "json_object_schema", "guided_json", "json_object",
                                     "prompt"] = Field("auto", description="how the answer's schema is enforced")
    judge_concurrency: int = Field(4, ge=1, description="judge calls in flight at once; the rest queue")
    judge_stream: bool | None = Field(None, description=(
        "stream judge calls so that an abandoned call stops the server generating; default: on for a "
        "local server (judge_api_base with an openai/ model), where usage may be litellm's count"))
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    judge_price: Price | None = None
    escalate_below: float = Field(0.8, ge=0, le=1, description="cascade: offline verdicts below this confidence escalate")
    on_escalation_failure: Literal["offline", "fail_mode"] = Field("offline", description=(
        "cascade: when the escalation fails, the offline verdict stands (marked degraded), or fail_mode decides"))
    fail_mode: Literal["closed", "open"] = Field("closed", description="what a judge failure or timeout means")
    mode: Literal["enforce", "shadow"] = "enforce"
    stages: list[Literal["input", "output"]] = Field(default_factory=lambda: ["input", "output"])
    parallel_upstream: bool = Field(False, description="start the upstream call during the input check; cancel it on refusal")
    safe_complete_via: Literal["judge", "upstream"] = Field(
        "judge", description="write safe completions from the judge's rewrite, or re-ask the upstream with guidance")
    top_k: int = Field(4, ge=1)
    retrieval_budget_tokens: int = Field(2500, ge=100)
    cache_size: int = Field(10_000, ge=0)
    cache_ttl_s: float = Field(3600.0, gt=0)
    cache_url: str | None = Field(None, description="redis://HOST:PORT/DB: a verdict cache shared by replicas (docs/deploy.md)")
    cache_shared_size: int = Field(100_000, ge=1, description="verdicts kept in the shared cache (oldest deleted first)")
    prices: dict[str, Price] = Field(default_factory=dict, description="USD per million tokens by model name")
    max_check_chars: int = Field(100_000, ge=1000, description=(
        "most text one check reads: the conversation at the input stage, the draft at the output stage"))
    oversize: Literal["refuse", "truncate"] = Field("refuse", description=(
        "text beyond max_check_chars: refuse (fail closed) or judge its head and tail only"))
    forward_reasoning: bool = Field(False, description="pass the upstream's (judged) reasoning on to clients")
    unknown_fields: Literal["judge", "drop"] = Field(
        "judge", description="text in answer fields the guard does not know: judge it, or remove it")
    log_content: bool = Field(False, description="log message content (off: only decisions, ids, timings, costs)")
