"""Judges: the offline judge, the LLM judge (litellm), the cascade between them, and plugins.

A judge setting names one of:

    offline                 the embedded offline judge (no model server)
    cascade:JUDGE           offline first, JUDGE (any setting below) for the uncertain band
    NAME or NAME:ARG        a judge registered under the ``guard.judges`` entry point group
    PROVIDER/MODEL          an LLM judge through litellm (openai/gpt-4o-mini, ollama/gpt-oss:20b, ...)

A plugin is a callable ``factory(arg: str | None, **settings) -> Judge`` registered in the plugin's
package metadata (``[project.entry-points."guard.judges"] name = "module:factory"``); it receives
the judge settings (``api_base``, ``timeout_s``, ...) and ignores what it does not use. See
docs/judges.md for an example.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from guard.errors import ConfigError
from guard.judges.base import Case, Deliberator, Judge, Judgment, ProbeResult

__all__ = ["Case", "Deliberator", "Judge", "Judgment", "ProbeResult", "judge_settings", "make_judge"]

ENTRY_POINT_GROUP = "guard.judges"


def judge_settings(s) -> dict[str, Any]:
    """The judge's keyword settings from GuardSettings (what make_judge and plugin factories receive)."""
    return dict(api_base=s.judge_api_base, api_key=s.judge_api_key.get_secret_value() if s.judge_api_key else None,
                timeout_s=s.judge_timeout_s, max_tokens=s.judge_max_tokens, context_tokens=s.judge_context_tokens,
                reasoning_effort=s.reasoning_effort, price=s.judge_price, structured_output=s.judge_structured_output,
                concurrency=s.judge_concurrency, stream=s.judge_stream, escalate_below=s.escalate_below,
                on_escalation_failure=s.on_escalation_failure)


def make_judge(spec: str, **settings):
    """Map a judge setting to a judge (see the module docstring): ``offline``, ``offline:PATH`` (a spec fitted
    by guard.judges.fit_sections.fit_policy), ``cascade:MODEL``, a plugin or a litellm model string; a name that
    maps to none is a ConfigError."""
    spec = (spec or "").strip()
    if not spec:
        raise ConfigError("judge must be 'offline', 'cascade:JUDGE', a plugin name or a litellm model string")
    if spec == "offline":
        from guard.judges.offline import OfflineJudge

        return OfflineJudge()
    if spec.startswith("offline:"):  # a spec fitted by guard.judges.fit_sections.fit_policy
        from pathlib import Path

        from guard.judges.offline import OfflineJudge

        path = Path(spec.removeprefix("offline:")).expanduser()
        if not path.is_file():
            raise ConfigError(f"offline judge: no fitted policy file at {path}")
        return OfflineJudge(policy_fit=path)
    if spec.startswith("cascade:"):
        from guard.judges.cascade import CascadeJudge

        inner = spec.removeprefix("cascade:")
        if not inner:
            raise ConfigError("cascade needs a judge to escalate to: 'cascade:MODEL'")
        band = settings.pop("escalate_below", 0.8)
        on_failure = settings.pop("on_escalation_failure", "offline")
        return CascadeJudge(make_judge("offline"), make_judge(inner, **settings), escalate_below=band,
                            on_escalation_failure=on_failure)
    plugin = _plugin(spec)
    if plugin is not None:
        factory, arg = plugin
        return factory(arg, **settings)
    return _llm_judge(spec, settings)


def _plugin(spec: str):
    name, _, arg = spec.partition(":")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            try:
                return ep.load(), (arg or None)
            except Exception as e:  # a broken plugin is a configuration problem, said in one line
                raise ConfigError(f"judge plugin {name!r} ({ep.value}) failed to load: {type(e).__name__}: {e}") from None
    return None


def _llm_judge(model: str, settings: dict[str, Any]):
    from guard.judges.llm import LLMJudge
    from guard.providers import litellm

    for key in ("escalate_below", "on_escalation_failure"):
        settings.pop(key, None)
    settings = {k: v for k, v in settings.items() if v is not None}
    try:
        litellm().get_llm_provider(model, api_base=settings.get("api_base"))
    except Exception:
        raise ConfigError(f"unknown judge {model!r}: use 'offline', 'cascade:MODEL', an installed plugin, or a "
                          "litellm model string with its provider (openai/gpt-4o-mini, ollama/gpt-oss:20b, "
                          "openai/NAME with --judge-api-base for a local server)") from None
    return LLMJudge(model, **settings)
