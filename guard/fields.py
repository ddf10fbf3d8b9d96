"""Which parts of an OpenAI chat message, answer or stream chunk carry text, and which of them
leave the guard (docs/security.md, "What is judged").

Judged, in every message, choice and stream delta: ``content`` (a string, or the ``text`` and
``refusal`` of its parts), ``tool_calls`` and the legacy ``function_call`` (name and arguments),
``refusal``, ``reasoning_content`` and ``reasoning``. A field the guard does not know is judged
when it holds text (``unknown_fields="judge"``, the default) or removed before the answer goes
out (``"drop"``); it is never passed on unjudged. Reasoning is judged and, unless the operator
sets ``forward_reasoning``, removed from what the client receives.

Images, audio and files in content parts are not judged (the guard reads text only).
"""

from __future__ import annotations

import json
from typing import Any, Literal

UnknownFields = Literal["judge", "drop"]

REASONING = ("reasoning_content", "reasoning")
_TEXT = ("content", "refusal", "function_call", "tool_calls") + REASONING
# message and delta keys that hold no text a user reads
_META = frozenset({"role", "name", "tool_call_id", "id", "type", "index"})
# choice and response keys the guard understands (not text, or handled above)
_CHOICE_KEYS = frozenset({"index", "message", "delta", "finish_reason", "logprobs"})
_RESPONSE_KEYS = frozenset({"id", "object", "created", "model", "choices", "usage", "system_fingerprint",
                            "service_tier", "guard"})
_MAX_DEPTH = 32  # an upstream's unknown field is walked this deep at most; deeper text is judged as JSON


def strings(value: Any) -> list[str]:
    """Every string inside a JSON value (keys excluded), iteratively: an upstream controls the depth."""
    out: list[str] = []
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            out.append(v)
        elif depth >= _MAX_DEPTH:
            out.append(_dumps(v))
        elif isinstance(v, dict):
            stack.extend((x, depth + 1) for x in reversed(list(v.values())))
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in reversed(v))
    return out


def _dumps(v: Any) -> str:
    try:
        return json.dumps(v, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        return str(v)[:10_000]


def _call_text(call: Any, label: str) -> str:
    fn = call.get("function", call) if isinstance(call, dict) else call
    if not isinstance(fn, dict):  # a malformed call is still content: judge it as it came
        return f"[{label}] {fn}"
    args = fn.get("arguments")
    args = args if isinstance(args, str) or args is None else _dumps(args)
    name = fn.get("name")
    return (f"[{label} {name}] " if name else "") + (args or "")


def message_parts(msg: dict[str, Any], unknown: UnknownFields = "judge") -> list[str]:
    """The judged text of one message or stream delta, in a stable order."""
    parts: list[str] = []
    content = msg.get("content")
    if isinstance(content, str):
        parts.append(content)
    elif isinstance(content, list):
        for p in content:
            if isinstance(p, dict):
                parts.extend(v for k in ("text", "refusal") if isinstance(v := p.get(k), str))
            elif p is not None:
                parts.append(str(p))
    elif content is not None:
        parts.append(_dumps(content))
    calls = msg.get("tool_calls")
    if calls:
        parts.extend(_call_text(c, "tool call") for c in (calls if isinstance(calls, list) else [calls]))
    if msg.get("function_call"):
        parts.append(_call_text(msg["function_call"], "function call"))
    for key in ("refusal",) + REASONING:
        v = msg.get(key)
        if v:
            parts.append(v if isinstance(v, str) else _dumps(v))
    if unknown == "judge":
        for key, v in msg.items():
            if key not in _TEXT and key not in _META and v is not None:
                parts.extend(strings(v))
    return [p for p in parts if p]


def message_text(msg: dict[str, Any], unknown: UnknownFields = "judge") -> str:
    return "\n".join(message_parts(msg, unknown))


def choice_texts(response: dict[str, Any], unknown: UnknownFields = "judge") -> list[str]:
    """The judged text of each choice of a chat.completion (``n > 1`` is judged choice by choice).
    Unknown text at the choice or response level is judged with every choice."""
    extra = _extra_strings(response, _RESPONSE_KEYS) if unknown == "judge" else []
    texts = []
    choices = response.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        if not isinstance(choice, dict):
            texts.append(_dumps(choice))
            continue
        msg = choice.get("message")
        parts = message_parts(msg, unknown) if isinstance(msg, dict) else ([_dumps(msg)] if msg is not None else [])
        if unknown == "judge":
            parts += _extra_strings(choice, _CHOICE_KEYS)
        texts.append("\n".join(parts + extra))
    return texts or (["\n".join(extra)] if extra else [""])


def chunk_texts(chunk: dict[str, Any], unknown: UnknownFields = "judge") -> dict[int, str]:
    """The judged text a stream chunk adds, by choice index."""
    out: dict[int, str] = {}
    choices = chunk.get("choices")
    extra = _extra_strings(chunk, _RESPONSE_KEYS) if unknown == "judge" else []
    for pos, choice in enumerate(choices if isinstance(choices, list) else []):
        if not isinstance(choice, dict):
            out[pos] = out.get(pos, "") + _dumps(choice)
            continue
        index = choice.get("index") if isinstance(choice.get("index"), int) else pos
        delta = choice.get("delta")
        parts = _delta_parts(delta, unknown) if isinstance(delta, dict) else ([_dumps(delta)] if delta is not None else [])
        if unknown == "judge":
            parts += _extra_strings(choice, _CHOICE_KEYS)
        if parts:
            out[index] = out.get(index, "") + "".join(parts)
    if extra:
        out[0] = out.get(0, "") + "".join(extra)
    return out


def _delta_parts(delta: dict[str, Any], unknown: UnknownFields) -> list[str]:
    """Like message_parts, but deltas concatenate: no separators inside a piece of text."""
    parts = []
    for call in delta.get("tool_calls") or []:
        fn = call.get("function") if isinstance(call, dict) else call
        if not isinstance(fn, dict):
            parts.append(str(fn))
            continue
        if fn.get("name"):
            parts.append(f"[tool call {fn['name']}] ")
        if isinstance(fn.get("arguments"), str):
            parts.append(fn["arguments"])
    rest = {k: v for k, v in delta.items() if k != "tool_calls"}
    fc = rest.pop("function_call", None)
    if isinstance(fc, dict):
        parts.extend(x for x in (f"[function call {fc['name']}] " if fc.get("name") else "", fc.get("arguments"))
                     if isinstance(x, str) and x)
    elif fc is not None:
        parts.append(str(fc))
    if isinstance(rest.get("content"), str):
        parts.append(rest.pop("content"))
    return parts + message_parts(rest, unknown)


def _extra_strings(obj: dict[str, Any], known: frozenset[str]) -> list[str]:
    return [s for k, v in obj.items() if k not in known and v is not None for s in strings(v)]


# ---------------------------------------------------------------------- what leaves the guard


def outgoing(obj: dict[str, Any], key: str, *, forward_reasoning: bool, unknown: UnknownFields) -> dict[str, Any] | None:
    """``obj`` (a chat.completion with ``key="message"``, or a chunk with ``key="delta"``) without the
    fields the client must not receive; None when nothing needs removing (send the original bytes)."""
    choices = obj.get("choices")
    if unknown == "judge":  # the common case: only reasoning can need removing (checked without copying)
        if forward_reasoning or not any(isinstance(c, dict) and isinstance(m := c.get(key), dict) and
                                        (REASONING[0] in m or REASONING[1] in m)
                                        for c in (choices if isinstance(choices, list) else ())):
            return None
    drop = set() if forward_reasoning else set(REASONING)
    changed = False
    new_choices = []
    for choice in choices if isinstance(choices, list) else []:
        msg = choice.get(key) if isinstance(choice, dict) else None
        if isinstance(msg, dict):
            remove = {k for k in msg if k in drop or (unknown == "drop" and k not in _TEXT and k not in _META)}
            if remove:
                changed = True
                choice = {**choice, key: {k: v for k, v in msg.items() if k not in remove}}
        if isinstance(choice, dict) and unknown == "drop" and set(choice) - _CHOICE_KEYS:
            changed = True
            choice = {k: v for k, v in choice.items() if k in _CHOICE_KEYS}
        new_choices.append(choice)
    top = obj
    if unknown == "drop" and set(obj) - _RESPONSE_KEYS:
        changed = True
        top = {k: v for k, v in obj.items() if k in _RESPONSE_KEYS}
    if not changed:
        return None
    return {**top, "choices": new_choices} if isinstance(choices, list) else top
