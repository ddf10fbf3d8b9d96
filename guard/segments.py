"""Split a conversation into the pieces a judge scores (docs/architecture.md, "offline judge").

Every message of every role (system, developer, user, assistant, tool) is read, after
normalisation (guard.normalize). A message longer than one segment is cut into overlapping
windows of words, so that benign padding around a request cannot dilute it: the judge scores
each segment and the worst one decides. Decoded payloads (base64 and the like) are segments
of their own. One more segment views the last user turns together, so that a request split
across turns is judged as one.

Cost is bounded: at most ``cap`` segments are scored. When there are more, the ones kept are
(1) each payload and the joined-turns view, (2) the first and last window of the latest user
turn and every short message among the last few, then (3) the windows with the highest cheap
pre-score (a lexical score against the spec's action sections, computed in microseconds), in
conversation order. Text beyond ``max_words`` words per message is read only at its two ends
(the hardening settings bound what a check reads in total).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from guard.normalize import normalize

_WORDS = re.compile(r"\S+")


@dataclass(frozen=True)
class Segment:
    text: str
    role: str  # the message's role, "turns" for the joined view, or the role a payload was found in
    turn: int  # index of the message (-1: the joined view)
    kind: str = "window"  # "message" (a whole short message) | "window" | "turns" | "payload"
    first: bool = True  # the first window of its message
    last: bool = True  # the last window of its message


def windows(text: str, words: int = 60, stride: int = 40, max_words: int = 4000) -> list[str]:
    """Overlapping windows of ``words`` words, ``stride`` apart; the last one ends at the text's end."""
    spans = [m.span() for m in _WORDS.finditer(text)]
    if len(spans) <= words + stride // 2:
        return [text.strip()] if text.strip() else []
    if len(spans) > max_words:  # read both ends of an enormous message
        spans = spans[: max_words // 2] + spans[-max_words // 2:]
    starts = list(range(0, len(spans) - words + 1, stride))
    if starts[-1] + words < len(spans):
        starts.append(len(spans) - words)
    return [text[spans[s][0]: spans[min(s + words, len(spans)) - 1][1]] for s in starts]


def message_segments(role: str, turn: int, text: str, words: int = 60, stride: int = 40) -> list[Segment]:
    norm = normalize(text)
    parts = windows(norm.text, words, stride)
    out = [Segment(p, role, turn, "message" if len(parts) == 1 else "window", i == 0, i == len(parts) - 1)
           for i, p in enumerate(parts)]
    for payload in norm.payloads:
        out += [Segment(p, role, turn, "payload") for p in windows(payload, words, stride)]
    return out


def conversation_segments(messages: Sequence[tuple[str, str]], words: int = 60, stride: int = 40, cap: int = 12,
                          prescore: Callable[[str], float] | None = None, recent: int = 4) -> list[Segment]:
    """Segments of a conversation given as (role, text) pairs, at most ``cap`` of them."""
    segs: list[Segment] = []
    for i, (role, text) in enumerate(messages):
        if text and text.strip():
            segs += message_segments(role, i, text, words, stride)
    users = [(i, t) for i, (r, t) in enumerate(messages) if r == "user" and t and t.strip()]
    if len(users) >= 2:
        joined = normalize(" ".join(t for _, t in users[-3:])).text
        tail = _WORDS.findall(joined)
        if len(tail) <= 2 * words:
            segs.append(Segment(joined, "turns", -1, "turns"))
    return cap_segments(segs, cap, prescore, last_user=users[-1][0] if users else None,
                        recent_from=len(messages) - recent)


def cap_segments(segs: list[Segment], cap: int, prescore: Callable[[str], float] | None, last_user: int | None,
                 recent_from: int) -> list[Segment]:
    if len(segs) <= cap:
        return segs
    must = [i for i, s in enumerate(segs) if s.kind in ("payload", "turns")
            or (s.turn == last_user and (s.first or s.last))
            or (s.kind == "message" and s.turn >= recent_from)]
    must = must[:cap]
    rest = [i for i in range(len(segs)) if i not in set(must)]
    score = prescore or (lambda _t: 0.0)
    rest.sort(key=lambda i: (-score(segs[i].text), -segs[i].turn, i))
    keep = sorted(set(must) | set(rest[: max(cap - len(must), 0)]))
    return [segs[i] for i in keep]
