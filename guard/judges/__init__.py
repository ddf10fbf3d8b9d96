"""Judges: the offline judge, the LLM judge (litellm), and the cascade between them."""

from guard.judges.base import Case, Deliberator, Judgment

__all__ = ["Case", "Deliberator", "Judgment", "make_judge"]


def make_judge(spec: str, **settings):
    """Map a judge setting to a judge: ``offline``, ``offline:PATH`` (fitted by fit_policy), ``cascade:MODEL``
    or a litellm MODEL string."""
    from guard.errors import ConfigError

    spec = (spec or "").strip()
    if not spec:
        raise ConfigError("judge must be 'offline', 'cascade:MODEL' or a model string")
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
        from guard.judges.llm import LLMJudge
        from guard.judges.offline import OfflineJudge

        model = spec.removeprefix("cascade:")
        if not model:
            raise ConfigError("cascade needs a model: 'cascade:MODEL'")
        band = settings.pop("escalate_below", 0.8)
        return CascadeJudge(OfflineJudge(), LLMJudge(model, **settings), escalate_below=band)
    from guard.judges.llm import LLMJudge

    settings.pop("escalate_below", None)
    return LLMJudge(spec, **settings)
