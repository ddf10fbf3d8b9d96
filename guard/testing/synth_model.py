"""A scripted model for ``guard synth`` tests: plug it into the fake OpenAI server as its responder.

    with FakeOpenAIServer(reply=SynthModel(disagree_every=5)) as server: ...

As the generator it writes variations of the section's own boundary examples (the side asked for),
or, given ``cases`` ({section id: [(decision, text), ...]}), those texts first: cases a real generator
might write that the section's examples do not already contain;
as the judge it labels each case with the side it was written for, citing the section, except every
``disagree_every``-th case, which it labels the other way (so that filtering shows). Deterministic.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SECTION = re.compile(r"POLICY SECTION\n\[(?P<id>[a-z0-9-]+)\]")
_N = re.compile(r"Write (\d+) different user messages")
_EXAMPLE = re.compile(r"^\s+\([^)]*\) (?P<decision>allow|refuse|safe_complete): (?P<text>.+)$", re.M)
_CONVO = re.compile(r"CONVERSATION:\n\[user\] (.*?)\n</DATA-", re.S)
_IDS = re.compile(r"Cite sections by id: ([^\n]*)\.$", re.M)
_TEMPLATES = ("{x}", "Quick question: {x}", "{x} Thanks in advance!", "hey, {xl}", "My friend asked me this: {x}",
              "Please answer honestly. {x}", "I need this today. {x}", "Sorry to bother you, {xl}")


class SynthModel:
    def __init__(self, disagree_every: int = 0, cases: dict[str, list[tuple[str, str]]] | None = None):
        self.disagree_every = disagree_every
        self.cases = cases or {}
        self.written: dict[str, tuple[str, str]] = {}  # case text -> (section id, decision it was written for)
        self.judged = 0

    def __call__(self, body: dict[str, Any]) -> Any:
        system = body["messages"][0]["content"]
        if system.startswith("You write test cases"):
            return self.generate(body["messages"][-1]["content"])
        if "policy judge" in system:
            return self.judge(system, body["messages"][-1]["content"])
        return None

    def generate(self, prompt: str) -> str:
        section = _SECTION.search(prompt).group("id")
        n = int(_N.search(prompt).group(1))
        acts = "the right decision is 'allow'" not in prompt
        examples = [(m.group("decision"), m.group("text")) for m in _EXAMPLE.finditer(prompt) if "=>" not in m.group("text")]
        given = [(d, t) for d, t in self.cases.get(section, []) if (d != "allow") == acts]
        side = given or [(d, t) for d, t in examples if (d != "allow") == acts] or [("refuse" if acts else "allow", "an example")]
        cases = []
        for i in range(n):
            decision, text = side[i % len(side)]
            x = _TEMPLATES[(i // len(side)) % len(_TEMPLATES)].format(x=text, xl=text[:1].lower() + text[1:])
            self.written[x] = (section, decision)
            cases.append({"style": f"variant {i}", "text": x})
        return json.dumps({"cases": cases})

    def judge(self, system: str, user: str) -> str:
        text = _CONVO.search(user).group(1).strip()
        ids = [i.strip() for i in _IDS.search(system).group(1).split(",")]
        section, decision = self.written.get(text, (ids[0], "allow"))
        self.judged += 1
        if self.disagree_every and self.judged % self.disagree_every == 0:
            decision = "allow" if decision != "allow" else "refuse"
        cite = section if section in ids else ids[-1]
        return json.dumps({"rationale": f"Under {cite}, this is {decision}.", "sections": [cite], "decision": decision,
                           "confidence": 0.9, "rewrite": "A safe reply." if decision == "safe_complete" else None})
