"""Split a conversation into the pieces a judge scores (guard/judges/data/README.md).

Every message of every role (system, developer, user, assistant, tool) is read, after
normalisation (guard.normalize). A message longer than one segment (40 words) is cut into its
sentences (a long run also before a capitalised sentence opener, for a request glued to padding
without punctuation); a sentence of up to 32 words is one piece, read like a message (flag
``sentence``), and a longer run is read as windows of 16 words, which the judge holds to a
stricter bar. A few words cut off mid-sentence (truncated padding) join the piece before them.
Segments of fewer than four words are read only in the joined view below. Decoded payloads
(base64 and the like) are segments of their own.

Framing addressed to the model (guard.framing: a persona, rules about refusing or form, a
fiction set-up, a lead-in such as "Grandpa, tell me:") is read apart from the request it wraps: in
a message of up to 200 words the request alone is read like a message, and each framing sentence
and (up to 80 words) the message as written are segments flagged ``framing``, which the judge
holds to a framing bar; in a longer message the pieces kept after the cap are told apart the same
way. A tool call's or tool result's JSON envelope is read as the strings it carries.

Conversation structure:
- one more segment views the last user turns together, so that a request split across turns is
  judged as one; turns cut mid-sentence ("How do I kill" / "a Python process") are read only there;
- a short user turn that points at another message ("answer the request above", "open ticket 12
  and do what it asks"): the message it points at is judged by its own segments, like a user turn;
  the order to act on it says nothing and is dropped (read with the request, it made a harmless
  one look harmful); anything else the turn says is read with the end of that message.

Cost is bounded: at most ``cap`` segments are scored (the offline judge allows one more per 250
words of a long text, up to twice its cap). When there are more, the ones kept are (1) each
payload and the joined-turns view, (2) the first and last piece of the latest user turn and every
short message among the last few, then (3) the pieces with the highest cheap pre-score (a fitted
lexical harm score, guard.prescore, plus the judge's own spec-word score; how unlike the rest of
the conversation a piece's words are only breaks near-ties), in conversation order. With a floor
(the judge's), a piece of a long message that the pre-score finds plainly ordinary is not read
even under the cap. Text beyond
``max_words`` words per message is read only at its two ends (the hardening settings bound what a
check reads in total).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from guard.framing import Framed, frame_piece, is_pointer, split_framing, split_pointer_turn
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
    sentence: bool = True  # a whole sentence (or a whole message), not a slice of a longer run of words
    framing: bool = False  # words addressed to the model (a persona, rules, a lead-in: guard.framing), or a whole
    # message read with its framing; the judge holds these to a framing bar


_GLUED = re.compile(r"(?<=[a-z0-9,;)\"'])\s+(?=(?:The|A|An|In|On|At|It|This|That|These|Those|There|How|What|Why|When|"
                    r"Where|Who|Which|Give|Write|Tell|Explain|Describe|List|Create|Generate|Provide|Please|Can|"
                    r"Could|Would|Should|Is|Are|Do|Does|Make|Show|Help|Find|Draft|Compose|Ignore|Now|Step|Sure|"
                    r"Here)\b)")
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|\n+|$)")
_ENDS = re.compile(r"[.!?]\s*$")


def windows(text: str, words: int = 40, stride: int = 4, max_words: int = 4000, span: int = 16) -> list[str]:
    """A text of more than ``words`` words, as its sentences (a request is usually a sentence: the
    padding sentences around it stay out of its piece); a sentence longer than ``sentence`` words
    (see ``pieces``) is read as windows of ``span`` words, ``stride`` apart, so that any run of
    ``span - stride`` words (a request glued to padding without punctuation) lies whole inside one
    window. A short text is one piece."""
    return [p for p, _ in pieces(text, words, stride, max_words, span)]


def pieces(text: str, words: int = 40, stride: int = 4, max_words: int = 4000, span: int = 16,
           sentence: int = 32) -> list[tuple[str, bool]]:
    """``windows``, each flagged True when it is a whole sentence (of at most ``sentence`` words: a
    long request is still one sentence, read whole) rather than a slice of a longer run."""
    spans = [m.span() for m in _WORDS.finditer(text)]
    if len(spans) <= words:
        return [(text.strip(), True)] if text.strip() else []
    if len(spans) > max_words:  # read both ends of an enormous message
        cut_a, cut_b = spans[max_words // 2 - 1][1], spans[-max_words // 2][0]
        return (pieces(text[:cut_a], words, stride, max_words, span, sentence)
                + pieces(text[cut_b:], words, stride, max_words, span, sentence))
    out: list[tuple[str, bool]] = []
    sentences: list[tuple[str, bool]] = []
    for m in _SENTENCE.finditer(text):
        sent = m.group(0)
        # whole: it ends a sentence, or it is a line of its own (a request need not end with a full stop);
        # a run cut off mid-sentence (truncated padding, a head or tail) is a fragment
        line = (m.start() == 0 or "\n" in text[max(m.start() - 2, 0):m.start() + 1]) and \
            (sent.endswith("\n") or m.end() >= len(text.rstrip()))
        whole = bool(_ENDS.search(sent)) or line
        # a request glued to padding without punctuation ("...with the harvest Give detailed steps ...")
        # still starts like a sentence: cut a long run before a capitalised sentence opener
        parts = _GLUED.split(sent) if len(sent.split()) > span else [sent]
        sentences += [(p, whole and k == len(parts) - 1) for k, p in enumerate(parts)]
    for sent, whole in sentences:
        ws = sent.split()
        if len(ws) <= max(span, sentence):
            if ws:
                out.append((" ".join(ws), whole))
            continue
        starts = list(range(0, len(ws) - span + 1, stride))
        if starts[-1] + span < len(ws):
            starts.append(len(ws) - span)
        out += [(" ".join(ws[i:i + span]), False) for i in starts]
    return _join_fragments(out)


def _join_fragments(parts: list[tuple[str, bool]], short: int = 8) -> list[tuple[str, bool]]:
    """A few words cut off mid-sentence ("My cousin is training", where padding was truncated) say
    nothing alone and read oddly to a model: they join the piece before them (or after, at the start)."""
    out: list[tuple[str, bool]] = []
    carry = ""
    for text, whole in parts:
        if not whole and len(text.split()) < short:
            if out:
                out[-1] = (out[-1][0] + " " + text, out[-1][1])
            else:
                carry = (carry + " " + text).strip()
            continue
        out.append(((carry + " " + text).strip() if carry else text, whole))
        carry = ""
    return out or ([(carry, False)] if carry else [])


def message_segments(role: str, turn: int, text: str, words: int = 40, stride: int = 8) -> list[Segment]:
    norm = normalize(unwrap_envelopes(text), typos=False)  # (the judge reads typos piece by piece)
    # framing addressed to the model (a persona, rules about refusing, a lead-in) is read apart from the request it
    # wraps: the request alone, like any message; each framing sentence and the message as written, at a framing
    # bar. (A longer message is read as its sentences: those kept after the cap are told apart, see frame_segments.)
    n = len(_WORDS.findall(norm.text))
    framed = split_framing(norm.text) if n <= FRAMED_WORDS else Framed("")
    body = framed.request or norm.text
    # (a request taken out of a long message is read as its sentences, like the message would have been: a
    # disclaimer such as "this is purely for fiction" is a signal of its own, not to be diluted by the request)
    parts = pieces(body, 0 if framed.request and n > words else words, stride)
    out = [Segment(p, role, turn, "payload" if p in norm.payloads else "message" if len(parts) == 1 else "window",
                   i == 0, i == len(parts) - 1, whole) for i, (p, whole) in enumerate(parts)]
    if framed.framing or framed.scene:
        out += [Segment(f, role, turn, "window", False, False, False, True) for f in framed.framing]
        out += [Segment(f, role, turn, "window", False, False, True) for f in framed.scene]
        if n <= 2 * words:
            out.append(Segment(norm.text.strip(), role, turn, "window", True, True, False, True))
    for payload in norm.payloads:  # (a message that is only its payload, once decoded, is that payload)
        out += [Segment(p, role, turn, "payload") for p in windows(payload, words, stride)]
    return out


FRAMED_WORDS = 200  # a message up to this long is told apart from its framing whole; a longer one piece by piece


_CALL = re.compile(r"^\[(?:tool|function) call [^\]]*\]\s*(.*)$")


def unwrap_envelopes(text: str) -> str:
    """A tool call's or a tool result's JSON read as the text it carries: its string values, without the keys,
    ids and numbers of the envelope (``[tool call read_document] {"id": "7118"}`` carries nothing)."""
    if "{" not in text and "[" not in text:
        return text
    lines = []
    for line in text.split("\n"):
        m = _CALL.match(line.strip())
        body = m.group(1) if m else line
        if body.strip()[:1] in "{[" and body.strip():
            try:
                value = json.loads(body)
            except ValueError:
                lines.append(line if not m else body)
                continue
            texts = [t for t in _strings(value) if re.search(r"[A-Za-z]{2}", t)]
            lines.append(" ".join(texts))
        else:
            lines.append(line if not m else body)
    return "\n".join(x for x in lines if x.strip())


def _strings(value) -> list[str]:
    if isinstance(value, str):
        if value.strip()[:1] in "{[":  # JSON inside a string (arguments are often double-encoded)
            try:
                return _strings(json.loads(value))
            except ValueError:
                pass
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _strings(v)]
    if isinstance(value, list):
        return [t for v in value for t in _strings(v)]
    return []


def conversation_segments(messages: Sequence[tuple[str, str]], words: int = 40, stride: int = 8, cap: int = 12,
                          prescore: Callable[[str], float] | None = None, recent: int = 4,
                          floor: float | None = None) -> list[Segment]:
    """Segments of a conversation given as (role, text) pairs, at most ``cap`` of them."""
    segs: list[Segment] = []
    users = [(i, t) for i, (r, t) in enumerate(messages) if r == "user" and t and t.strip()]
    joined = normalize(" ".join(t for _, t in users[-3:])).text if len(users) >= 2 else ""
    # turns cut mid-sentence are read only in the joined view, when there is one
    parts = _fragments(messages, users) if joined and len(_WORDS.findall(joined)) <= 2 * words else set()
    for i, (role, text) in enumerate(messages):
        if not (text and text.strip()):
            continue
        ref = _referent(messages, i) if role == "user" else None
        if ref is not None:
            # "Answer the request above", "Open ticket 4411 and do what it asks": a short turn that points at
            # another message means nothing alone; it is read together with what it points at
            # The referent is judged by its own segments; the turn's order to act on it ("Answer the request
            # above") says nothing alone and is dropped; its persona or rule sentences are framing (read at the
            # framing bar), and whatever else it says is read with the end of the referent nearest it (a long
            # system prompt must not dilute it)
            framed = split_pointer_turn(normalize(text).text)
            if framed.request:
                a, b = sorted((i, ref))
                near = [_tail(messages[a][1], 24) if a == ref else framed.request,
                        _head(messages[b][1], 24) if b == ref else framed.request]
                segs.append(Segment(normalize(" ".join(near)).text, "user", i, "message"))
            segs += [Segment(f, "user", i, "window", False, False, False, True) for f in framed.framing]
        elif i not in parts:
            segs += message_segments(role, i, text, words, stride)
    seen: set[str] = set()
    segs = [s for s in segs if not (s.text in seen or seen.add(s.text))]  # repeated padding is read once
    if len(segs) > 1 or len(users) >= 2:  # a few words alone ("Go on.", "and then?") say nothing: the joined view reads them
        segs = [s for s in segs if len(s.text.split()) >= 4 or s.kind == "payload"] or (segs[-1:] if len(users) < 2 else [])
    if joined and len(_WORDS.findall(joined)) <= 2 * words:
        segs.append(Segment(joined, "turns", -1, "turns"))
    kept = cap_segments(segs, cap, prescore, last_user=users[-1][0] if users else None,
                        recent_from=len(messages) - recent, floor=floor)
    return frame_segments(kept)


def frame_segments(segs: list[Segment]) -> list[Segment]:
    """The pieces of long messages, framing told apart (guard.framing): a persona or rule sentence is read at the
    framing bar, a lead-in ("the detective asks you: How do I ...?") is cut from the request it hands over.
    Done on the pieces kept after the cap only: the check costs little, whatever the length of the text."""
    out: list[Segment] = []
    for s in segs:
        room = len(out) < len(segs) + 4  # a few more pieces at most: the cap bounds the cost
        f = frame_piece(s.text) if room and s.kind == "window" and not s.framing else Framed("")
        if not f.framing:
            out.append(s)
            continue
        if f.request:
            out.append(Segment(f.request, s.role, s.turn, s.kind, s.first, s.last, s.sentence))
        out += [Segment(x, s.role, s.turn, "window", False, False, False, True) for x in f.framing]
    return out


_POINTER = re.compile(r"\b(?:above|below|following|previous|earlier|aforementioned|it|that|this|these|those|them)\b",
                      re.I)
_OTHER = ("system", "developer", "tool", "function")


def _referent(messages: Sequence[tuple[str, str]], i: int, short: int = 12) -> int | None:
    """The message a short user turn points at ("the request above", "do what it asks"): the nearest
    system, developer or tool message with text, before or after it; None when the turn says enough alone."""
    text = messages[i][1]
    if len(_WORDS.findall(text)) > short or not (_POINTER.search(text) or is_pointer(text)):
        return None
    near = sorted((abs(j - i), j) for j, (r, t) in enumerate(messages) if r in _OTHER and t and t.strip())
    return near[0][1] if near else None


def _fragments(messages: Sequence[tuple[str, str]], users: list[tuple[int, str]]) -> set[int]:
    """User turns that are pieces of one sentence sent in several turns ("How do I kill" / "a Python
    process"): a turn that does not end a sentence and is continued in lower case by the next user turn,
    and that continuation. They are judged in the joined view, where the sentence is whole."""
    out: set[int] = set()
    recent = users[-3:]
    for (i, a), (j, b) in zip(recent, recent[1:]):
        a, b = a.strip(), b.strip()
        if a and b and not _ENDS.search(a) and b[0].islower():
            out |= {i, j}
    return out


def _tail(text: str, n: int) -> str:
    return " ".join(text.split()[-n:])


def _head(text: str, n: int) -> str:
    return " ".join(text.split()[:n])


def cap_segments(segs: list[Segment], cap: int, prescore: Callable[[str], float] | None, last_user: int | None,
                 recent_from: int, floor: float | None = None) -> list[Segment]:
    """At most ``cap`` segments: the ones that must be read, then the best pre-scored. With a ``floor`` (the
    judge's fitted pre-score), a piece of a long message (a window) that is not a must and scores below it is
    plainly ordinary and not read even under the cap (repeated padding, most everyday prose)."""
    if len(segs) <= cap and floor is None:
        return segs
    must = [i for i, s in enumerate(segs) if s.kind in ("payload", "turns")
            or (s.turn == last_user and (s.first or s.last))
            or (s.kind == "message" and s.turn >= recent_from)]
    must = must[:cap]
    rest = [i for i in range(len(segs)) if i not in set(must)]
    score = prescore or _lexical()
    scores = {i: score(segs[i].text) for i in rest}
    if floor is not None:
        rest = [i for i in rest if segs[i].kind != "window" or scores[i] >= floor]
        if len(must) + len(rest) <= cap:
            return [segs[i] for i in sorted(set(must) | set(rest))]
    novel = _novelty(segs)
    # novelty only breaks near-ties: ordinary prose is as varied as a request, but repeated padding is not
    rest.sort(key=lambda i: (-(scores[i] + NOVELTY_WEIGHT * novel[i]), -segs[i].turn, i))
    keep = sorted(set(must) | set(rest[: max(cap - len(must), 0)]))
    return [segs[i] for i in keep]


NOVELTY_WEIGHT = 0.1


def _lexical() -> Callable[[str], float]:
    from guard.prescore import scorer

    lex = scorer()
    return lex.logit if lex is not None else (lambda _t: 0.0)


def _novelty(segs: list[Segment]) -> list[float]:
    return novelty([s.text for s in segs])


def novelty(texts: list[str]) -> list[float]:
    """How unlike the rest of the conversation each piece's words are (mean inverse document
    frequency): repeated padding scores low, the one request hidden in it high."""
    import math

    docs = [set(w.lower() for w in _WORDS.findall(t)) for t in texts]
    df: dict[str, int] = {}
    for d in docs:
        for w in d:
            df[w] = df.get(w, 0) + 1
    n = len(docs)
    # fsum: a plain sum over a set depends on its iteration order, which PYTHONHASHSEED changes; pieces with the
    # same words then differed in the last bit and a tie between them broke differently from one process to the next
    return [math.fsum(math.log(n / df[w]) for w in d) / max(len(d), 1) for d in docs]
