"""The guard as a LiteLLM proxy guardrail: the same pipeline, in-process, on LiteLLM's hooks.

    pre_call      the input stage, before the model is called (a refusal: the model never is)
    during_call   the input stage, in parallel with the model (LiteLLM drops the answer on refusal)
    post_call     the output stage over the answer; for streams, guard.streaming's hold-back
                  contract: no text reaches the client before a check allowed it

A refusal is shown the LiteLLM way, chosen by ``guard_on_refuse``:
  block   (default) HTTP 400 whose error names the sections and carries the refusal text; a stream
          refused after some allowed text was sent ends with an error event instead
  answer  a normal answer whose text is the refusal, ``finish_reason: "content_filter"``
A safe completion is always answered (it is a rewrite, not a block).

Registered in the proxy's config (see config.yaml beside this file), which passes everything under
``litellm_params`` to the constructor: ``guard_settings`` (any GuardSettings field: policies,
judge, fail_mode, mode, ...), ``guard_on_refuse``, ``guard_stream_first_window_chars``,
``guard_stream_window_chars``. This module only translates; the guard decides.
"""

from __future__ import annotations

import secrets
from typing import Any, Literal

from cachetools import TTLCache
from fastapi import HTTPException
from pydantic import ValidationError
from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.types.utils import Delta, ModelResponseStream, StreamingChoices

from guard import enforce
from guard.decorator import IteratorUpstream
from guard.pipeline import Guard
from guard.settings import GuardSettings
from guard.streaming import GuardedStream, chunk_text
from guard.types import ChatRequest, Decision, StageTiming, Verdict, response_text


class DeliberativeGuard(CustomGuardrail):
    def __init__(self, guard_settings: dict[str, Any] | None = None,
                 guard_on_refuse: Literal["block", "answer"] = "block",
                 guard_stream_first_window_chars: int = 40, guard_stream_window_chars: int = 160, **kwargs: Any):
        if guard_on_refuse not in ("block", "answer"):
            raise ValueError(f"guard_on_refuse must be 'block' or 'answer', not {guard_on_refuse!r}")
        super().__init__(**kwargs)
        settings = GuardSettings(**(guard_settings or {}))
        self.guard = Guard.create(settings)
        # streams: the input stage already ran on pre_call / during_call
        self.stream_guard = Guard(self.guard.spec, self.guard.judge, self.guard.retriever,
                                  settings=settings.model_copy(update={"stages": ["output"]}),
                                  cache=self.guard.cache, metrics=self.guard.metrics)
        self.on_refuse = guard_on_refuse
        self.windows = {"first_window_chars": guard_stream_first_window_chars,
                        "window_chars": guard_stream_window_chars}
        self._inputs: TTLCache = TTLCache(maxsize=10_000, ttl=600)  # call id -> input verdict, for the record
        warm = getattr(self.guard.judge, "warm_up", None)
        if warm is not None:  # load the judge's model at proxy start, not on the first request
            warm(self.guard.spec)

    @property
    def enforcing(self) -> bool:
        return self.guard.settings.mode == "enforce"

    # ------------------------------------------------------------------ input: pre_call and during_call

    async def async_pre_call_hook(self, user_api_key_dict, cache, data: dict, call_type) -> dict:
        await self._check_input(data)
        return data

    async def async_moderation_hook(self, data: dict, user_api_key_dict, call_type) -> None:
        await self._check_input(data)

    async def _check_input(self, data: dict) -> None:
        messages = data.get("messages")
        if not isinstance(messages, list) or not messages:
            return  # not a chat request (embeddings, images): nothing for this guard
        t0 = self.guard.clock()
        v = await self.guard.check_stage("input", _request(messages).messages)
        self._inputs[_call_id(data)] = v
        if v.decision is Decision.allow or not self.enforcing:
            return
        text = enforce.replacement_text(self.guard.spec, v)
        self.guard.record(_call_id(data), t0, [v], v, response=None, text=text, upstream_called=False,
                          timings=_timings([v]), note="upstream not called: the input stage decided")
        self._refuse(v, text, data)

    # ------------------------------------------------------------------ output: post_call

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict, response: Any) -> Any:
        messages = data.get("messages")
        if not isinstance(messages, list) or not hasattr(response, "choices"):
            return response
        t0 = self.guard.clock()
        completion = response.model_dump()
        v = await self.guard.check_stage("output", _request(messages).messages, response_text(completion))
        verdicts = [x for x in (self._inputs.pop(_call_id(data), None), v) if x is not None]
        if v.decision is Decision.allow or not self.enforcing:
            self.guard.record(_call_id(data), t0, verdicts, v, response=completion, upstream_called=True,
                              upstream_response=completion, model=completion.get("model"), timings=_timings(verdicts))
            return response
        text = enforce.replacement_text(self.guard.spec, v)
        self.guard.record(_call_id(data), t0, verdicts, v, response=None, text=text, upstream_called=True,
                          upstream_response=completion, model=completion.get("model"), timings=_timings(verdicts))
        self._refuse(v, text, data, original=response)

    async def async_post_call_streaming_iterator_hook(self, user_api_key_dict, response: Any, request_data: dict):
        messages = request_data.get("messages")
        if not isinstance(messages, list) or not messages:
            async for chunk in response:
                yield chunk
            return
        req = _request(messages, request_data.get("model"))
        gs = GuardedStream(self.stream_guard, req, IteratorUpstream(response, "litellm"),
                           request_id=_call_id(request_data), **self.windows)
        await gs.start()
        if (v_in := self._inputs.pop(_call_id(request_data), None)) is not None:
            gs.verdicts.insert(0, v_in)  # the stream's record (and its cost) includes the input check
        released = False
        head: list[Any] = []  # chunks without text, held until a check has allowed some text: a stream
        # refused at its first check then gets a plain HTTP 400 (the proxy waits for the first chunk)
        async for batch in gs:
            replacement = next((c for c in batch if "guard" in c), None)
            if replacement is not None:
                v = next(x for x in reversed(gs.verdicts) if x.decision is not Decision.allow)
                text = enforce.replacement_text(self.guard.spec, v)
                if v.decision is Decision.refuse and self.on_refuse == "block":
                    raise self._block(v, text)
                for chunk in head + [_stream_chunk(c) for c in batch if "guard" not in c]:
                    yield chunk
                yield _stream_chunk(replacement)
                return
            originals = [getattr(c, "original", None) or _stream_chunk(c) for c in batch]
            if not released and not any(chunk_text(c) for c in batch):
                head.extend(originals)
                continue
            released = True
            for chunk in head + originals:
                yield chunk
            head = []
        for chunk in head:
            yield chunk

    # ------------------------------------------------------------------ refusals, the LiteLLM way

    def _refuse(self, v: Verdict, text: str, data: dict, original: Any = None) -> None:
        if v.decision is Decision.refuse and self.on_refuse == "block":
            raise self._block(v, text)
        # answer mode, and every safe completion: a normal answer carrying the replacement text
        self.raise_passthrough_exception(violation_message=text, request_data=data,
                                         detection_info=self.guard.guard_info(v), original_response=original)

    def _block(self, v: Verdict, text: str) -> HTTPException:
        sections = ", ".join(v.sections) or "the guard's fail mode"
        return HTTPException(status_code=400, detail={
            "error": f"Refused by the guard at the {v.stage} stage (sections: {sections}): {text}",
            "guard": self.guard.guard_info(v)})


def _request(messages: list, model: str | None = None) -> ChatRequest:
    try:
        return ChatRequest.model_validate({"messages": messages, "model": model})
    except ValidationError as e:  # the guard cannot read what it must judge: refuse to pass it on
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise HTTPException(status_code=400, detail={"error": f"The guard could not read {where}: {err['msg']}"}) \
            from None


def _timings(verdicts: list[Verdict]) -> list[StageTiming]:
    return [StageTiming(stage=v.stage, ms=v.latency_ms) for v in verdicts]


def _call_id(data: dict) -> str:
    cid = data.get("litellm_call_id")
    if not cid:
        cid = data["litellm_call_id"] = secrets.token_hex(8)
    return str(cid)


def _stream_chunk(c: dict[str, Any]) -> ModelResponseStream:
    """One of the guard's own chunks (a safe completion or the refusal) as LiteLLM's chunk type."""
    choice = (c.get("choices") or [{}])[0]
    delta = choice.get("delta") or {}
    return ModelResponseStream(id=c.get("id"), model=c.get("model"), created=c.get("created"), choices=[
        StreamingChoices(index=0, delta=Delta(content=delta.get("content"), role=delta.get("role")),
                         finish_reason=choice.get("finish_reason"))])
