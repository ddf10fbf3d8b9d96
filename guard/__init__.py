"""An inference-time guard for LLM applications.

Finds the sections of a written safety spec that matter for a conversation, has a judge
deliberate over exactly those sections, and allows, refuses or rewrites, citing them, while
recording what every decision cost. Heavy parts (litellm, bm25s, the server) load lazily so
that ``import guard`` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from guard.errors import ConfigError, GuardError, GuardRefused, JudgeError, PolicyError, UpstreamError
from guard.types import ChatRequest, Decision, GuardResult, Message, PolicySection, Verdict

if TYPE_CHECKING:
    from guard.decorator import guarded
    from guard.pipeline import Guard
    from guard.settings import GuardSettings

__all__ = ["Guard", "GuardSettings", "guarded", "GuardResult", "Verdict", "Decision", "ChatRequest", "Message",
           "PolicySection", "GuardError", "GuardRefused", "PolicyError", "ConfigError", "JudgeError", "UpstreamError"]
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "Guard":
        from guard.pipeline import Guard
        return Guard
    if name == "guarded":
        from guard.decorator import guarded
        return guarded
    if name == "GuardSettings":
        from guard.settings import GuardSettings
        return GuardSettings
    raise AttributeError(name)
