"""Reading a client's request body: every way it can be wrong is a 400 (or 413) with an OpenAI-style
error, never a 500 (docs/security.md, "Bad input").

- size: ``max_body_bytes``, by Content-Length (in the middleware) and while reading (chunked bodies);
- time: a body not complete within ``body_read_timeout_s`` (a truncated upload) is answered 400;
- depth: JSON nested deeper than ``max_json_depth`` is refused (the parser's own limit would be a
  RecursionError at about 1,000);
- lone UTF-16 surrogates (``"\\ud800"``) are refused: they cannot be encoded, so no judge could read them.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from pydantic import ValidationError
from starlette.requests import ClientDisconnect, Request

from guard.server.http import HTTPError

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # in the raw bytes: a surrogate escape, paired or not
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # after decoding, pairs have become one character


async def read_json(request: Request, *, limit: int, timeout_s: float, max_depth: int) -> tuple[bytes, Any]:
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():  # chunked bodies have no Content-Length: count as we read
                size += len(chunk)
                if size > limit:
                    raise HTTPError(413, f"Request body exceeds {limit} bytes.", code="request_too_large")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPError(400, f"The request body was not complete after {timeout_s:g}s (truncated?).",
                        code="body_timeout") from None
    except ClientDisconnect:
        raise HTTPError(400, "The client disconnected before sending the whole body.") from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise HTTPError(400, "The request body is empty; expected a JSON object.")
    return raw, parse_json(raw, max_depth)


def parse_json(raw: bytes, max_depth: int) -> Any:
    try:
        value = json.loads(raw)
    except RecursionError:
        raise HTTPError(400, f"The JSON body is nested deeper than {max_depth} levels.", code="too_deep") from None
    except ValueError as e:
        raise HTTPError(400, f"We could not parse the JSON body of your request: {e}.") from None
    if raw.count(b"[") + raw.count(b"{") > max_depth and depth(value, max_depth) > max_depth:
        raise HTTPError(400, f"The JSON body is nested deeper than {max_depth} levels.", code="too_deep")
    if _SURROGATE_ESCAPE.search(raw) and (where := lone_surrogate(value)) is not None:
        raise HTTPError(400, "The request contains a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape); "
                             "it is not valid Unicode text.", param=where or None, code="invalid_unicode")
    return value


def depth(value: Any, stop: int) -> int:
    """How deep ``value`` nests (iteratively; stops counting past ``stop``)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if deepest > stop:
                return deepest
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def lone_surrogate(value: Any) -> str | None:
    """The path of the first string (or key) holding a lone surrogate, "" at the top; None if none."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        v, path = stack.pop()
        if isinstance(v, str):
            if _LONE_SURROGATE.search(v):
                return path
        elif isinstance(v, dict):
            for k, x in v.items():
                if _LONE_SURROGATE.search(k):
                    return path
                stack.append((x, f"{path}.{k}" if path else k))
        elif isinstance(v, list):
            stack.extend((x, f"{path}[{i}]") for i, x in enumerate(v))
    return None


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none"})


def parse(model, body: Any):
    """``body`` validated as ``model``; a 400 that names the field (as clients know it) otherwise."""
    if not isinstance(body, dict):
        raise HTTPError(400, "The request body must be a JSON object.")
    try:
        return model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        # pydantic names the union member it tried ('str', 'list[dict[str,any]]'); clients know fields only
        loc = [str(p) for p in err["loc"] if not (isinstance(p, str) and (p in _TYPE_TAGS or "[" in p))]
        param = loc[0] + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:]) if loc else None
        msg = err["msg"]
        if err["type"] == "missing":
            msg = f"Missing required parameter: '{param}'."
        elif param:
            msg = f"Invalid value for '{param}': {msg}."
        raise HTTPError(400, msg, param=param, code="missing_required_parameter" if err["type"] == "missing" else
                        "invalid_value") from None
