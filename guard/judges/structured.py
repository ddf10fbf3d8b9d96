"""How the judge's answer is held to its JSON schema: the strongest mechanism the provider has.

    json_schema         OpenAI-style ``response_format: {"type": "json_schema", strict}`` (OpenAI, vLLM,
                        recent llama-server; litellm translates it for Ollama's ``format`` and others)
    json_object_schema  ``response_format: {"type": "json_object", "schema": ...}``: llama-cpp-python's
                        server, which rejects json_schema with HTTP 422, compiles this to a grammar
    guided_json         vLLM's ``guided_json`` extra parameter (older vLLM)
    json_object         JSON guaranteed, schema only described in the prompt
    prompt              nothing enforced: parse and repair

``candidates`` orders them for a model; the judge starts at the first and steps down when the server
rejects the request as malformed (HTTP 400/422 naming the format), so no probe is required, though
``probe()`` settles it at start. Whatever was used is recorded in the verdict.
"""

from __future__ import annotations

from typing import Any, Literal

from guard.providers import provider_of

Mechanism = Literal["json_schema", "json_object_schema", "guided_json", "json_object", "prompt"]
MECHANISMS: tuple[str, ...] = ("json_schema", "json_object_schema", "guided_json", "json_object", "prompt")

RATIONALE_MAX_CHARS = 200  # rationales stay short: the parser cuts longer ones
GRAMMAR_RATIONALE_CHARS = 100  # one sentence: where a grammar enforces it, every character is a generated token


def candidates(model: str, api_base: str | None, supports_schema: bool | None = None) -> list[str]:
    """Mechanisms to try, strongest first."""
    provider = provider_of(model)
    if provider in ("ollama", "ollama_chat"):
        return ["json_schema", "json_object", "prompt"]  # litellm sends the schema as Ollama's `format`
    if provider == "hosted_vllm":
        return ["json_schema", "guided_json", "json_object", "prompt"]
    if provider == "openai" and api_base:  # some OpenAI-compatible server: llama.cpp, vLLM, LM Studio...
        return ["json_schema", "json_object_schema", "json_object", "prompt"]
    if supports_schema is False:
        return ["json_object", "prompt"]
    return ["json_schema", "json_object", "prompt"]


def answer_schema(ids: tuple[str, ...] | list[str], *, strict: bool) -> dict[str, Any]:
    """The verdict's JSON schema; cited sections are limited to the ids the judge was shown.

    Strict json_schema (OpenAI's subset) needs every property required and no extra keys; a grammar
    (llama.cpp) may also cap the rationale at one sentence, require one or two citations, enumerate the
    confidence in tenths and leave
    ``rewrite`` optional (the section's safe reply stands in), which keeps small models short and valid:
    on a CPU every generated token, forced ones included, costs a forward pass.
    Rationale comes first so that a model without a separate reasoning channel thinks before deciding."""
    sections: dict[str, Any] = {"type": "array", "items": {"type": "string", "enum": list(ids)}}
    rationale: dict[str, Any] = {"type": "string"}
    confidence: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}
    required = ["rationale", "sections", "decision", "confidence", "rewrite"]
    if not strict:
        sections.update(minItems=1, maxItems=2)
        rationale["maxLength"] = GRAMMAR_RATIONALE_CHARS
        required.remove("rewrite")
        # llama.cpp's grammars ignore minimum/maximum (a small model then writes 5 or 90): tenths, enumerated
        confidence = {"type": "number", "enum": [round(i / 10, 1) for i in range(11)]}
    return {
        "type": "object",
        "properties": {
            "rationale": rationale,
            "sections": sections,
            "decision": {"type": "string", "enum": ["allow", "refuse", "safe_complete"]},
            "confidence": confidence,
            "rewrite": {"type": ["string", "null"]},
        },
        "required": required,
        "additionalProperties": False,
    }


def request_args(mechanism: str, ids: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The litellm arguments that ask for the answer in this mechanism."""
    if mechanism == "json_schema":
        return {"response_format": {"type": "json_schema", "json_schema": {
            "name": "verdict", "strict": True, "schema": answer_schema(ids, strict=True)}}}
    if mechanism == "json_object_schema":
        return {"response_format": {"type": "json_object", "schema": answer_schema(ids, strict=False)}}
    if mechanism == "guided_json":
        return {"extra_body": {"guided_json": answer_schema(ids, strict=False)}}
    if mechanism == "json_object":
        return {"response_format": {"type": "json_object"}}
    return {}


def rejected_format(error: BaseException, status: int | None) -> bool:
    """Did the server reject the request because of the format parameter (not the prompt or the key)?
    llama-cpp-python answers a json_schema response_format with a validation error under HTTP 500."""
    if status == 422:
        return True
    text = str(error).lower()
    if status == 500:
        return "response_format" in text or "json_schema" in text
    if status != 400:
        return False
    return any(w in text for w in ("response_format", "json_schema", "guided_json", "schema", "format"))
