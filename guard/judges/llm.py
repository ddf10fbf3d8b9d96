"""The LLM judge: any model litellm can reach (OpenAI, Anthropic, vLLM, Ollama, llama.cpp server,
gpt-oss-safeguard...), asked to reason over the retrieved sections and answer in JSON.

- The prompt fits a token budget that leaves room for the answer in the model's context
  (guard.judges.prompt); the answer's schema is enforced with the strongest mechanism the server
  has (guard.judges.structured), and the mechanism used is recorded in the judgment.
- An answer that is not valid JSON, breaks the schema, or cites sections that were not shown is
  sent back once with the reason; a second bad answer is a judge failure that still reports the
  tokens both calls spent.
- Reasoning models: ``reasoning_effort`` is passed the way each provider takes it, ``max_tokens``
  caps reasoning and answer together, reasoning tokens are counted, and the thinking text is never
  kept (only the short rationale of the JSON answer is).
- At most ``concurrency`` calls are in flight; the rest wait their turn within the same deadline.
  A call that outlives its deadline, or whose caller went away, is cancelled, which closes its
  connection so that the model server stops generating.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import weakref
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guard import providers
from guard.accounting import Price, cost_of
from guard.errors import ConfigError, JudgeError, JudgeTimeout
from guard.judges.base import Case, Judgment, ProbeResult
from guard.judges.prompt import build_prompt, estimate_tokens, static_prefix
from guard.judges.structured import MECHANISMS, RATIONALE_MAX_CHARS, candidates, rejected_format, request_args
from guard.types import Cost, Decision, Usage

PROBE_TIMEOUT_S = 60.0
DEFAULT_CONTEXT_TOKENS = 2048  # llama.cpp's default context: the smallest a judge will meet


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    decision: Decision
    sections: list[str] = Field(default_factory=list)
    rationale: str
    confidence: float = Field(ge=0.0, le=1.0)
    rewrite: str | None = None


_FENCED = re.compile(r"```(?:json)?\s*(\{.*\})\s*```", re.S)
_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)


def parse_answer(text: str, allowed_ids: set[str]) -> _Answer:
    """Validate a judge's raw text; raise ValueError with a reason the judge can act on."""
    text = _THINK.sub("", text or "")  # thinking inlined in the content is never part of the answer
    m = _FENCED.search(text)
    raw = m.group(1) if m else text
    start, end = raw.find("{"), raw.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the answer contains no JSON object")
    try:
        answer = _Answer.model_validate(json.loads(raw[start : end + 1], strict=False))  # raw newlines in strings: small models write them
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


def _short(text: str, limit: int = RATIONALE_MAX_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def reasoning_args(model: str, api_base: str | None, effort: str | None) -> dict[str, Any]:
    """``reasoning_effort`` as each provider takes it (litellm maps the hosted ones itself)."""
    if not effort:
        return {}
    provider = providers.provider_of(model)  # litellm maps it for hosted providers and Ollama (`think`)
    if api_base and provider in ("openai", "hosted_vllm"):
        # an OpenAI-compatible server (vLLM, llama.cpp) serving an open reasoning model: sent as is
        return {"reasoning_effort": effort, "allowed_openai_params": ["reasoning_effort"]}
    return {"reasoning_effort": effort}


class LLMJudge:
    def __init__(self, model: str, *, api_base: str | None = None, api_key: str | None = None,
                 timeout_s: float = 20.0, max_tokens: int | None = None, context_tokens: int | None = None,
                 prompt_tokens: int | None = None, dynamic_tokens: int | None = None,
                 reasoning_effort: str | None = None, price: Price | None = None,
                 structured_output: str = "auto", concurrency: int = 4, stream: bool | None = None,
                 json_mode: bool = True):
        self.model, self.api_base, self.api_key = model, api_base, api_key
        self.timeout_s, self.reasoning_effort, self.price = timeout_s, reasoning_effort, price
        self.context_tokens = context_tokens or providers.known_context_tokens(model) or DEFAULT_CONTEXT_TOKENS
        # the answer's cap: a grammar-bound verdict is about 50 tokens; a reasoning model needs room to think
        self.max_tokens = max_tokens or (256 if self.context_tokens <= 4096 else 512 if self.context_tokens < 16_000 else 4096)
        room = self.context_tokens - self.max_tokens - max(64, self.context_tokens // 20)
        self.prompt_tokens = prompt_tokens or min(room, 6000)
        # a small context means a small local model, where every prompt token not in the server's prompt
        # cache costs time: this check's sections and conversation get a smaller budget of their own
        self.dynamic_tokens = dynamic_tokens or (max(250, self.prompt_tokens // 6) if self.context_tokens <= 4096 else None)
        if self.prompt_tokens < 400 or self.prompt_tokens > room:
            raise ConfigError(
                f"judge {model}: a context of {self.context_tokens} tokens leaves {room} for the prompt after "
                f"{self.max_tokens} for the answer (at least 400 needed): raise judge_context_tokens to the "
                f"server's context, or lower judge_max_tokens")
        if structured_output == "auto":
            self.mechanisms = candidates(model, api_base) if json_mode else ["prompt"]
        elif structured_output in MECHANISMS:
            self.mechanisms = [structured_output]
        else:
            raise ConfigError(f"judge_structured_output must be auto or one of {', '.join(MECHANISMS)}")
        self.concurrency = concurrency
        # streamed calls can be abandoned: closing the stream stops a server (llama-cpp-python among them)
        # that would finish a non-streamed generation nobody waits for. Auto: on for a local server.
        self.stream = stream if stream is not None else bool(api_base) and providers.provider_of(model) == "openai"
        self._slots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # one semaphore per event loop
        self.name = f"llm:{model}"

    def __repr__(self) -> str:  # never show the key
        return f"LLMJudge(model={self.model!r}, api_base={self.api_base!r})"

    def warm_up(self, spec=None) -> None:
        """Import litellm now (seconds), not during the first check; remember the spec, so that ``probe()``
        can put the prompt's shared beginning in the server's prompt cache."""
        providers.litellm()
        if spec is not None:
            self._spec = spec

    @property
    def mechanism(self) -> str:
        return self.mechanisms[0]

    # ------------------------------------------------------------------ judging

    async def deliberate(self, case: Case) -> Judgment:
        prompt = build_prompt(case, self.prompt_tokens, self.dynamic_tokens)
        allowed = set(prompt.ids)
        messages = prompt.messages
        usage, cost = Usage(), Cost(usd=0.0)
        for attempt in (1, 2):
            try:
                text, u, c = await self._call(messages, prompt.ids)
            except JudgeError as e:
                # what this call spent (a timed-out call's count) and what the earlier attempt of this check spent
                e.usage, e.cost = usage + (e.usage or Usage()), Cost.add(cost, e.cost or Cost(usd=0.0))
                raise
            usage, cost = usage + u, Cost.add(cost, c)
            try:
                answer = parse_answer(text, allowed)
            except ValueError as e:
                if attempt == 2:
                    raise JudgeError(f"judge answer invalid after one repair: {e}", usage=usage, cost=cost) from None
                messages = messages + [
                    {"role": "assistant", "content": _THINK.sub("", text or "")[:2000]},
                    {"role": "user", "content": f"Your answer was invalid: {e}. Reply with only the corrected JSON object."},
                ]
                continue
            rewrite = answer.rewrite if answer.decision is Decision.safe_complete else None
            return Judgment(decision=answer.decision, sections=tuple(answer.sections), rationale=_short(answer.rationale),
                            confidence=answer.confidence, rewrite=rewrite or None, usage=usage, cost=cost,
                            judge=self.name, structured_output=self.mechanism)
        raise AssertionError("unreachable")

    def _slot(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        sem = self._slots.get(loop)
        if sem is None:
            sem = self._slots[loop] = asyncio.Semaphore(self.concurrency)
        return sem

    async def _call(self, messages: list[dict[str, str]], ids: tuple[str, ...], *,
                    max_tokens: int | None = None, timeout_s: float | None = None,
                    stream: bool | None = None) -> tuple[str, Usage, Cost]:
        """One answer, within the deadline (queueing included); cancelled, its connection closes."""
        if "litellm" not in sys.modules:  # the first import takes seconds: not on the loop, not on the deadline
            await asyncio.to_thread(providers.litellm)
        deadline = timeout_s or self.timeout_s
        progress = _Progress()
        try:
            async with asyncio.timeout(deadline):
                async with self._slot():
                    progress.sent = True
                    return await self._complete(messages, ids, max_tokens or self.max_tokens, deadline,
                                                self.stream if stream is None else stream, progress)
        except TimeoutError:
            raise self._timed_out(deadline, messages, progress) from None

    def _timed_out(self, deadline: float, messages: list[dict[str, str]], progress: _Progress) -> JudgeTimeout:
        """A timeout that still reports what the abandoned call spent: the prompt's tokens by litellm's
        tokenizer (the server evaluated it, or was evaluating it) and the completion tokens streamed so far
        (one chunk each), marked in the reason as counted by the guard, not reported by the server."""
        if not progress.sent:  # still queued for a slot: nothing reached the server
            return JudgeTimeout(f"judge {self.model} timed out after {deadline:g}s (queued; no tokens spent)",
                                usage=Usage(), cost=Cost(usd=0.0))
        usage = Usage(prompt_tokens=_count_tokens(self.model, messages), completion_tokens=progress.chunks)
        cost = self.price.cost(usage) if self.price else cost_of(self.model, usage)
        return JudgeTimeout(f"judge {self.model} timed out after {deadline:g}s (tokens counted by the guard: "
                            f"{usage.prompt_tokens} prompt by tokenizer, {usage.completion_tokens} completion "
                            f"streamed before the deadline)", usage=usage, cost=cost)

    async def _complete(self, messages, ids, max_tokens: int, deadline: float, stream: bool,
                        progress: _Progress | None = None) -> tuple[str, Usage, Cost]:
        litellm = providers.litellm()
        while True:
            kwargs = providers.call_args(
                self.model, api_base=self.api_base, api_key=self.api_key, timeout_s=deadline,
                messages=messages, max_tokens=max_tokens, temperature=0, drop_params=True,
                **request_args(self.mechanism, ids), **reasoning_args(self.model, self.api_base, self.reasoning_effort))
            try:
                resp = await (self._streamed(litellm, kwargs, progress) if stream else litellm.acompletion(**kwargs))
            except litellm.exceptions.Timeout:
                raise self._timed_out(deadline, messages, progress or _Progress(sent=True)) from None
            except litellm.exceptions.ContextWindowExceededError:
                raise JudgeError(self._context_message()) from None
            except Exception as e:  # litellm's provider errors share no narrower base; keep the type, drop the body
                status = providers.status_of(e)
                if len(self.mechanisms) > 1 and rejected_format(e, status):
                    self.mechanisms = self.mechanisms[1:]  # the server does not take this format: step down
                    continue
                if _is_context_error(e):
                    raise JudgeError(self._context_message()) from None
                raise JudgeError(f"judge {self.model} failed: {_describe(e, status)}") from None
            return self._read(resp)

    @staticmethod
    async def _streamed(litellm, kwargs: dict[str, Any], progress: _Progress | None = None):
        """A streamed call assembled into one response; on cancellation the stream is closed, and with it
        the connection. Usage comes from the server when it reports it in the stream, else from
        litellm's count (completion tokens by chunk, prompt tokens by its tokenizer)."""
        stream = await litellm.acompletion(**kwargs, stream=True, stream_options={"include_usage": True})
        chunks = []
        try:
            async for chunk in stream:
                chunks.append(chunk)
                if progress is not None and chunk.choices and getattr(chunk.choices[0].delta, "content", None):
                    progress.chunks += 1
        finally:
            await stream.aclose()
        resp = litellm.stream_chunk_builder(chunks, messages=kwargs["messages"])
        if resp is None:
            raise JudgeError("the judge's stream ended without an answer")
        return resp

    def _read(self, resp) -> tuple[str, Usage, Cost]:
        msg = resp.choices[0].message
        text = msg.content or ""
        u = getattr(resp, "usage", None)
        details = getattr(u, "completion_tokens_details", None)
        reasoning = getattr(details, "reasoning_tokens", None)
        thinking = getattr(msg, "reasoning_content", None) or ""
        if reasoning is None and (thinking or _THINK.search(text)):  # not reported: estimated from the text
            reasoning = estimate_tokens(thinking + "".join(m.group(0) for m in _THINK.finditer(text)))
        usage = Usage(prompt_tokens=getattr(u, "prompt_tokens", 0) or 0,
                      completion_tokens=getattr(u, "completion_tokens", 0) or 0, reasoning_tokens=reasoning)
        return text, usage, (self.price.cost(usage) if self.price else cost_of(self.model, usage))

    def _context_message(self) -> str:
        return (f"judge {self.model}: the model's context is smaller than the prompt budget ({self.prompt_tokens} "
                f"tokens) plus the answer ({self.max_tokens}): set judge_context_tokens to the server's context "
                f"(llama.cpp: --n_ctx), or lower judge_max_tokens")

    # ------------------------------------------------------------------ at start

    async def probe(self) -> ProbeResult:
        """Check at start that the judge answers: reachable, the model served, which structured-output
        mechanism the server takes, and a context large enough for the prompt budget plus the answer.

        Three calls asking for 1 token each: two short ones (reachable, model served, format accepted; they also
        measure how the model's tokenizer counts plain English), then one as long as the budget plus the answer
        in the model's own tokens."""
        t0 = time.perf_counter()
        try:
            short = _filler(120)
            wait = max(self.timeout_s, PROBE_TIMEOUT_S)  # a cold server loads and fills its cache first

            async def one(filler: str) -> Usage:
                # not streamed: 1 token is nothing to abandon, and servers report their own token counts only then
                return (await self._call(_probe_messages(filler), ("overview",), max_tokens=1, timeout_s=wait,
                                         stream=False))[1]

            u0, u1 = await one(""), await one(short)
            checked = "not checked (the server reports no token usage)"
            usage = u0 + u1
            if u1.prompt_tokens > u0.prompt_tokens:
                chars_per_token = len(short) / (u1.prompt_tokens - u0.prompt_tokens)
                target = self.prompt_tokens + self.max_tokens - u0.prompt_tokens - 16
                u2 = await one(_filler(int(target * chars_per_token / 3.5)))
                usage = usage + u2
                checked = f"a {u2.prompt_tokens}-token prompt fits (budget {self.prompt_tokens} + answer {self.max_tokens})"
            spec = getattr(self, "_spec", None)
            if spec is not None:  # last, so that the server's prompt cache holds every check's beginning
                always = list(spec.always)  # as retrieval gives them, in its order
                usage = usage + (await self._call([{"role": "system", "content": static_prefix(always)}], ("overview",),
                                                  max_tokens=1, timeout_s=wait, stream=False))[1]
        except JudgeError as e:
            return ProbeResult(ok=False, judge=self.name, detail=self._unready(str(e)),
                               latency_ms=(time.perf_counter() - t0) * 1000)
        where = f" at {self.api_base}" if self.api_base else ""
        return ProbeResult(ok=True, judge=self.name, structured_output=self.mechanism, usage=usage,
                           latency_ms=(time.perf_counter() - t0) * 1000,
                           detail=f"{self.model} answers{where}; structured output: {self.mechanism}; context: {checked}")

    def _unready(self, error: str) -> str:
        where = f" at {self.api_base}" if self.api_base else ""
        low = error.lower()
        if "context" in low:
            return error
        if any(w in low for w in ("connect", "unreachable", "refused", "name or service")):
            return f"judge {self.model} unreachable{where}: {error}"
        if "notfound" in low or "not found" in low or "404" in low:
            return f"judge model {self.model} not found{where}: {error}"
        return f"judge {self.model} not ready{where}: {error}"


class _Progress:
    """How far one call got: sent to the server (not just queued), content chunks streamed."""

    def __init__(self, sent: bool = False):
        self.sent, self.chunks = sent, 0


def _count_tokens(model: str, messages: list[dict[str, str]]) -> int:
    """The prompt's tokens by litellm's tokenizer for the model (its default one for a model it does not know)."""
    try:
        return int(providers.litellm().token_counter(model=model, messages=messages))
    except Exception:  # a tokenizer that cannot load: the prompt's own estimate
        return sum(estimate_tokens(m.get("content") or "") + 4 for m in messages)


def _is_context_error(e: Exception) -> bool:
    text = str(e).lower()
    return ("context" in text and ("exceed" in text or "window" in text or "length" in text)) or \
        "requested tokens" in text


def _describe(e: Exception, status: int | None) -> str:
    detail = " ".join(str(e).split())[:200]
    return f"{type(e).__name__}{f' (HTTP {status})' if status else ''}: {detail}"


def _probe_messages(filler: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Reply with a JSON object. " + filler},
            {"role": "user", "content": "Return the JSON verdict."}]


_FILLER = ("The assistant reads the policy and the conversation, then decides whether the request may be "
           "answered, refused or answered with care. ")


def _filler(tokens: int) -> str:
    """Plain English of about ``tokens`` tokens by the prompt's own estimate."""
    n = int(tokens * 3.5)  # the estimate's characters per token
    return (_FILLER * (n // len(_FILLER) + 1))[:n]
