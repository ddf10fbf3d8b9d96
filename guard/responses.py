"""The OpenAI Responses API, translated to and from the chat pipeline.

The guard judges Responses traffic with the same pipeline as chat: a Responses request becomes a
chat request (``to_chat``: instructions and every input item become messages, so all of them are
judged), the upstream is called with chat completions, and the answer becomes a Response object
(``to_response``) or a stream of Responses events (``ResponsesStream``, fed the chunks that
guard.streaming released: the hold-back contract holds unchanged). Translating for the upstream,
rather than forwarding to its /v1/responses, keeps one judged path and works with every
chat-completions server (llama.cpp, vLLM, Ollama, litellm providers).

Refusals take the Responses shape: a message whose content is a ``refusal`` part, ``status:
"incomplete"`` with ``incomplete_details.reason: "content_filter"``, and a ``guard`` object. A
safe completion is ``output_text`` with ``status: "completed"`` and a ``guard`` object. Output
items carry only text the output stage judged: a reasoning text the pipeline did not judge is
left out rather than passed on unchecked.

Not translated (HTTP 400 naming the field): ``previous_response_id`` and ``item_reference`` (the
guard stores no responses), built-in tools (web search, file search, ...), file and audio inputs.
Fields without a chat equivalent (``store``, ``metadata``, ``truncation``, ``include``, ...) are
echoed in the Response but not sent upstream.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from guard.errors import GuardError
from guard.types import response_text


class ResponsesInputError(GuardError):
    """A Responses request the guard cannot translate; ``param`` names the field."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class ResponsesRequest(BaseModel):
    """A ``POST /v1/responses`` body; unknown fields are kept (echoed, not sent upstream)."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    stream: bool | None = False
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    reasoning: dict[str, Any] | None = None
    user: str | None = None
    previous_response_id: str | None = None


# ---------------------------------------------------------------------- request: Responses -> chat


def to_chat(req: ResponsesRequest) -> dict[str, Any]:
    """The chat-completions body for the upstream; every message in it is judged."""
    if req.previous_response_id:
        raise ResponsesInputError("previous_response_id is not supported: the guard stores no responses; "
                                  "send the whole conversation as input.", "previous_response_id")
    messages = [{"role": "system", "content": req.instructions}] if req.instructions else []
    messages += [{"role": "user", "content": req.input}] if isinstance(req.input, str) else _messages(req.input)
    body: dict[str, Any] = {"model": req.model, "messages": messages}
    for name in ("temperature", "top_p", "parallel_tool_calls", "user"):
        if getattr(req, name) is not None:
            body[name] = getattr(req, name)
    if req.max_output_tokens is not None:
        body["max_tokens"] = req.max_output_tokens
    if req.tools:
        body["tools"] = [_tool(t, i) for i, t in enumerate(req.tools)]
    if req.tool_choice is not None:
        body["tool_choice"] = _tool_choice(req.tool_choice)
    fmt = (req.text or {}).get("format") or {}
    if fmt.get("type") == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
    elif fmt.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    if (req.reasoning or {}).get("effort"):
        body["reasoning_effort"] = req.reasoning["effort"]
    if req.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return {k: v for k, v in body.items() if v is not None}


def _messages(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        kind = item.get("type", "message")
        where = f"input[{i}]"
        if kind == "message" or (kind not in _ITEM_TYPES and "role" in item):
            out.append(_message(item, where))
        elif kind == "function_call":
            call = {"id": item.get("call_id") or item.get("id"), "type": "function",
                    "function": {"name": item.get("name", ""), "arguments": item.get("arguments", "")}}
            if out and out[-1]["role"] == "assistant" and out[-1].get("tool_calls") is not None:
                out[-1]["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            out.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": _text(item.get("output"), where)})
        elif kind == "reasoning":  # an earlier turn's reasoning: judged, and passed on as context
            text = "\n".join(s.get("text", "") for s in item.get("summary") or [] if isinstance(s, dict))
            if text.strip():
                out.append({"role": "assistant", "content": text})
        else:
            raise ResponsesInputError(f"Input items of type '{kind}' are not supported by this guard.", f"{where}.type")
    return out


_ITEM_TYPES = frozenset({"function_call", "function_call_output", "reasoning", "item_reference"})
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _message(item: dict[str, Any], where: str) -> dict[str, Any]:
    role = _ROLES.get(item.get("role", ""))
    if role is None:
        raise ResponsesInputError(f"Unknown role {item.get('role')!r}.", f"{where}.role")
    content = item.get("content")
    if isinstance(content, list) and role == "user":
        return {"role": role, "content": [_part(p, f"{where}.content[{j}]") for j, p in enumerate(content)]}
    return {"role": role, "content": _text(content, f"{where}.content")}


def _part(part: dict[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image" and part.get("image_url"):
        return {"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail", "auto")}}
    raise ResponsesInputError(f"Content parts of type '{kind}' are not supported by this guard.", f"{where}.type")


def _text(content: Any, where: str) -> str:
    """Text content, from a string or a list of text parts."""
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        return "".join(p.get("text") or p.get("refusal") or "" if isinstance(p, dict) and p.get("type") in (
            "input_text", "output_text", "text", "refusal") else _unsupported(p, where) for p in content)
    raise ResponsesInputError("Content must be a string or a list of content parts.", where)


def _unsupported(part: Any, where: str) -> str:
    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
    raise ResponsesInputError(f"Content parts of type '{kind}' are not supported here.", where)


def _tool(tool: dict[str, Any], i: int) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise ResponsesInputError(f"Tools of type '{tool.get('type')}' are not supported by this guard; "
                                  "only function tools are.", f"tools[{i}].type")
    fn = {k: tool[k] for k in ("name", "description", "parameters", "strict") if tool.get(k) is not None}
    return {"type": "function", "function": fn}


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


# ---------------------------------------------------------------------- answer: chat -> Response


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def shell(req: ResponsesRequest, rid: str, model: str | None, status: str, output: list[dict[str, Any]],
          usage: dict[str, Any] | None = None, guard: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Response object around ``output``, echoing the request's settings."""
    extra = {k: v for k, v in (req.model_extra or {}).items() if k in _ECHOED}
    r: dict[str, Any] = {
        "id": rid, "object": "response", "created_at": int(time.time()), "status": status, "model": model or req.model,
        "output": output, "error": None,
        "incomplete_details": {"reason": "content_filter"} if status == "incomplete" and guard else
        ({"reason": "max_output_tokens"} if status == "incomplete" else None),
        "instructions": req.instructions, "tools": req.tools or [], "tool_choice": req.tool_choice or "auto",
        "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        "temperature": req.temperature, "top_p": req.top_p, "max_output_tokens": req.max_output_tokens,
        "text": req.text or {"format": {"type": "text"}}, "reasoning": req.reasoning, "user": req.user,
        "previous_response_id": None, "store": False, "metadata": {}, "truncation": "disabled",
        "usage": _usage(usage) if usage else None, **extra}
    if guard is not None:
        r["guard"] = guard
    return r


_ECHOED = frozenset({"metadata", "truncation", "store", "service_tier", "prompt_cache_key", "safety_identifier"})


def _usage(u: dict[str, Any]) -> dict[str, Any]:
    reasoning = ((u.get("completion_tokens_details") or {}).get("reasoning_tokens")) or 0
    cached = ((u.get("prompt_tokens_details") or {}).get("cached_tokens")) or 0
    i, o = u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0
    return {"input_tokens": i, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": o,
            "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": u.get("total_tokens") or i + o}


def to_response(req: ResponsesRequest, completion: dict[str, Any], rid: str,
                guard: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Response for a chat completion the pipeline returned (the upstream's, or the guard's own
    replacement when ``guard`` says it refused or rewrote)."""
    choice = (completion.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    refused = guard is not None and guard.get("decision") == "refuse"
    output: list[dict[str, Any]] = []
    thought = reasoning_of(msg)
    if thought and not guard and thought in response_text(completion):  # only text the output stage judged
        output.append(reasoning_item(thought))
    text = msg.get("content") if isinstance(msg.get("content"), str) else _text(msg.get("content"), "content")
    if text or refused or not msg.get("tool_calls"):
        part = {"type": "refusal", "refusal": text} if refused else output_text(text or "")
        output.append(message_item(new_id("msg"), [part], "incomplete" if refused else "completed"))
    for call in [] if guard else msg.get("tool_calls") or []:
        fn = call.get("function") or {}
        output.append(function_item(new_id("fc"), call.get("id") or new_id("call"), fn.get("name", ""),
                                    fn.get("arguments", ""), "completed"))
    status = "incomplete" if refused or choice.get("finish_reason") == "length" else "completed"
    return shell(req, rid, completion.get("model"), status, output, completion.get("usage"), guard)


def reasoning_of(msg: dict[str, Any]) -> str:
    value = msg.get("reasoning_content") or msg.get("reasoning")
    return value if isinstance(value, str) else ""


def output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, content: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def function_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def reasoning_item(text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": new_id("rs"), "summary": [{"type": "summary_text", "text": text}]}


def sse(event: dict[str, Any]) -> bytes:
    """One Responses stream event as SSE (``event:`` names its type; no ``[DONE]`` in this API)."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n".encode()
