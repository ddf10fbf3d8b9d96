"""A scripted judge that ships with the package, for tests of what surrounds the judge (the
pipeline, the server, the streaming contract): it decides by substring, deterministically, and
answers in the same Judgment shape as the real judges.

    ScriptedJudge({"BOOM": ("refuse", "weapons")})   # any judged text containing BOOM is refused, citing weapons

Rules are checked in order against the text of the stage being judged (the draft at the output
stage, the conversation at the input stage); no rule matching means allow. ``delay_s`` makes
each check take that long (for hold-back timing), ``fail`` makes every check raise JudgeError.
"""

from __future__ import annotations

import asyncio

from guard.errors import JudgeError
from guard.judges.base import Case, Judgment
from guard.types import Decision


class ScriptedJudge:
    def __init__(self, rules: dict[str, tuple[str, str]] | None = None, *, delay_s: float = 0.0,
                 fail: str | None = None, name: str = "scripted"):
        self.rules = {k: (Decision(d), s) for k, (d, s) in (rules or {}).items()}
        self.delay_s, self.fail, self.name = delay_s, fail, name
        self.seen: list[tuple[str, str]] = []  # (stage, judged text), in order

    async def deliberate(self, case: Case) -> Judgment:
        text = case.draft if case.stage == "output" and case.draft is not None else "\n".join(m.text() for m in case.messages)
        self.seen.append((case.stage, text))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise JudgeError(self.fail)
        for needle, (decision, section) in self.rules.items():
            if needle in text:
                return Judgment(decision=decision, sections=(section,), rationale=f"the text contains {needle!r}",
                                confidence=1.0, judge=self.name)
        return Judgment(decision=Decision.allow, rationale="no rule matched", confidence=1.0, judge=self.name)
