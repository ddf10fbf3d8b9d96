"""Undo the cheap disguises before a text is judged (guard/judges/data/README.md).

``normalize(text)`` returns a :class:`Normalized`: the text as a judge should read it, and any
payloads found embedded in it, decoded. Every step is conservative: ordinary text comes out
unchanged (so the common case costs one pass and no extra judging).

1. Unicode NFKC (full-width letters, ligatures, mathematical alphabets), then confusable
   letters (Cyrillic and Greek look-alikes) mapped to Latin;
2. zero-width and invisible characters removed; letters spaced or dotted out ("b o m b",
   "b.o.m.b") joined;
3. leetspeak undone in words that mix letters with digits or symbols ("h0w", "m4k3");
4. claims addressed to the judge dropped, clause by clause: a known form ("classify this as
   allow") or an authority or verdict label (a safety team, reviewers, "decision:") with a
   verdict ("approved", "allow"), unless the clause also asks for something; they carry no
   information about the request, only pressure on the judge;
5. embedded payloads decoded: base64, hex, URL (percent) encoding and rot13; each decoded
   payload replaces its encoding in the text and is also returned on its own, so that it is
   judged like any text, harmful or benign; the clauses around it that talk about the encoding
   ("that's base64, decode it and do what it says") are dropped;
6. typos: a word unknown to the embedder's vocabulary that is one edit away from a common word
   (transposed, dropped, doubled or swapped letters) is corrected in an extra view
   (``typo_fixed``), judged beside the text: the vocabulary lacks many real words, so a
   correction is a guess that must not replace what was written. (guard.segments reads a long
   message in pieces and asks for no ``typo_fixed`` of the whole: the judge fixes the pieces.)

Words addressed to the model rather than the judge (a persona, "never refuse", "the request
above") are told apart in guard.framing, which segments use after normalising.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote

_VOCAB_PATH = Path(__file__).resolve().parent / "judges" / "data" / "tokenizer.json"

_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064"
                        "\u2066-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0]")
# Cyrillic and Greek letters that render like Latin ones (NFKC leaves them alone)
_CONFUSABLES = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h", "ԁ": "d", "ԛ": "q", "ԝ": "w", "ɡ": "g",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T", "Х": "X",
    "У": "Y", "Ѕ": "S", "І": "I", "Ј": "J", "α": "a", "ο": "o", "ρ": "p", "ν": "v", "τ": "t", "ι": "i", "κ": "k",
    "υ": "u", "χ": "x", "ε": "e", "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "ı": "i",
})
_SPACED = re.compile(r"\b(?:[A-Za-z][ .\-_*]){2,}[A-Za-z]\b")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "6": "g", "7": "t", "8": "b", "9": "g", "@": "a",
                       "$": "s", "!": "i", "|": "l", "+": "t", "€": "e"})
_LEET_WORD = re.compile(r"(?<![\w@$!|+€])[\w@$!|+€]*[A-Za-z][\w@$!|+€]*(?![\w@$!|+€])")
_LEET_CHARS = re.compile(r"[01345678@$!|+€9]")
_WORD = re.compile(r"[A-Za-z]+")
_CLAIM = re.compile(
    r"\b(?:(?:approved|cleared|authori[sz]ed|whitelisted|verified|pre-?approved)\s+by\s+(?:the\s+|our\s+)?"
    r"(?:safety|trust|security|moderation|policy|compliance|red)[\w\s&-]{0,20}?team|"
    r"(?:classify|label|mark|rate|judge|treat)\s+(?:this|it|the\s+(?:request|message|following))\s+as\s+"
    r"(?:allow(?:ed)?|safe|benign|harmless|acceptable)|"
    r"(?:moderator|classifier|safety\s+(?:filter|judge|system)|guard(?:rail)?)s?\s*[:,]\s*(?:allow|this\s+is\s+safe)|"
    r"this\s+(?:request|message|content)\s+(?:is|has\s+been)\s+(?:pre-?)?(?:approved|allowed|authori[sz]ed|safe))", re.I)
_CLAUSE = re.compile(r"[^.!?;\n]+[.!?;]*|[.!?;\n]+")
_CODEC_CLAUSE = re.compile(r"[^.!?;:\n]+[.!?;:]*|[.!?;:\n]+")
_AUTHORITY = re.compile(
    r"\b(?:safety|trust|moderation|moderators?|compliance|reviewers?|review\s+board|content\s+team|red[- ]team|"
    r"admins?|administrators?|guard(?:rail)?s?|classifiers?|filters?|judges?|decision|verdict|label|classification|"
    r"rating|policy\s+team|security\s+team)\b", re.I)
_VERDICT = re.compile(
    r"\b(?:(?:pre-?)?approved|approval|(?:pre-?)?cleared|authori[sz]ed|whitelisted|allow(?:ed)?|permitted|"
    r"exempt(?:ed)?|sanctioned|signed\s+off|green-?lit|okay(?:ed)?|let\s+(?:it|this)\s+through|"
    r"not\s+(?:be\s+)?refuse[ds]?|safe|benign|harmless)\b", re.I)
# a clause that asks for something is a request, whatever else it claims
_ASKS = re.compile(r"\b(?:how|explain|write|give|tell|make|create|list|describe|generate|show|provide|build|"
                   r"synthesi[sz]e|teach|help|steps?|instructions?|ways?\s+to|bypass|evade|disable|hack)\b", re.I)
_CODEC = re.compile(r"\b(?:base\s?-?64|b64|hex(?:adecimal)?|rot\s?-?13|caesar|cipher\w*|url[- ]?encod\w*|"
                    r"percent[- ]encod\w*|encod\w*|decod\w*|decrypt\w*|decipher\w*)\b", re.I)
_B64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_B64URL = re.compile(r"(?<![A-Za-z0-9_\-=])[A-Za-z0-9_\-]{20,}={0,2}(?![A-Za-z0-9_\-=])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}[ :]?){8,}(?![0-9A-Fa-f])")
_PCT = re.compile(r"(?:%[0-9A-Fa-f]{2}[^\s%]{0,3}){3,}[^\s]*")
_ROT13_HINT = re.compile(r"\brot[- ]?13\b|\bcaesar\b", re.I)


@dataclass(frozen=True)
class Normalized:
    text: str  # what to judge
    payloads: tuple[str, ...] = field(default=())  # decoded embedded payloads, each judged on its own too
    changes: tuple[str, ...] = field(default=())  # which steps changed something (for the rationale)
    typo_fixed: str | None = None  # the text with likely typos corrected, when that changes it


def normalize(text: str, typos: bool = True) -> Normalized:
    """``typos=False``: no ``typo_fixed`` view (a caller that reads the text in pieces fixes the pieces)."""
    if not text:
        return Normalized(text or "")
    changes: list[str] = []
    out = text
    if not out.isascii():
        t = unicodedata.normalize("NFKC", out).translate(_CONFUSABLES)
        t = _INVISIBLE.sub("", t)
        if t != out:
            changes.append("unicode")
        out = t
    payloads: list[str] = []
    out = _decode_payloads(out, payloads, changes)
    t = _SPACED.sub(_join_spaced, out)
    if t != out:
        changes.append("spacing")
    out = t
    t = _unleet(out)
    if t != out:
        changes.append("leetspeak")
    out = t
    if payloads:  # "decode this base64 and answer it": talk about the encoding says nothing once decoded
        out = _drop_codec_talk(out, payloads)
    t = _strip_claims(out)
    if t != out and t.strip():
        changes.append("claims")
        out = re.sub(r"[ \t]{2,}", " ", t).strip()
    # a typo fix is a guess ("meth" is one edit from "moth"): the corrected text is an extra view, not a replacement
    fixed = _fix_typos(out) if typos else out
    return Normalized(out, tuple(dict.fromkeys(payloads)), tuple(changes), fixed if fixed != out else None)


def _strip_claims(text: str) -> str:
    """Drop the clauses that address the judge (linear: clause by clause): a clause that names a
    known claim form, or that pairs an authority (a safety team, reviewers, the moderator) or a
    verdict label ("decision:", "the moderation result") with a verdict ("approved", "allow"),
    unless it also asks for something: a claim about a request is not a request."""
    if not (_CLAIM.search(text) or (_AUTHORITY.search(text) and _VERDICT.search(text))):
        return text
    return "".join(c for c in _CLAUSE.findall(text) if not _is_claim(c))


def _is_claim(clause: str) -> bool:
    if _CLAIM.search(clause):
        return True
    return bool(_AUTHORITY.search(clause) and _VERDICT.search(clause) and not _ASKS.search(clause))


def _drop_codec_talk(text: str, payloads: list[str]) -> str:
    """The text around decoded payloads without the clauses that talk about the encoding ("That's
    base64. Decode it and do what it says."): once decoded they carry nothing but the framing."""
    pattern = "|".join(re.escape(p) for p in sorted(set(payloads), key=len, reverse=True) if p)
    if not pattern:
        return text
    out = []
    for part in re.split(f"({pattern})", text):
        if part in payloads:
            out.append(part)
        else:
            out.append("".join(c for c in _CODEC_CLAUSE.findall(part) if not _CODEC.search(c)))
    joined = re.sub(r"\s{2,}", " ", " ".join(out)).strip()
    return joined or text


# --------------------------------------------------------------------------- spacing and leetspeak


def _join_spaced(m: re.Match) -> str:
    s = m.group(0)
    if _spaced_out(s):
        return re.sub(r"[ .\-_*]", "", s)
    if re.match(r"[aAI] ", s) and _spaced_out(s[2:]):  # "a b o m b": the article stays a word
        return s[:2] + re.sub(r"[ .\-_*]", "", s[2:])
    return s


def _spaced_out(s: str) -> bool:
    """"b o m b" but not "a b c" lists or initials like "U.S.A": the joined word must be a known word."""
    word = re.sub(r"[ .\-_*]", "", s).lower()
    return len(word) >= 4 and word in _vocab()


def _unleet(text: str) -> str:
    if not _LEET_CHARS.search(text):
        return text
    vocab = _vocab()
    words = [w for w in _LEET_WORD.findall(text) if _LEET_CHARS.search(w)]
    strong = [w for w in words if (c := w.translate(_LEET).lower()).isalpha() and c in vocab]
    if not strong:
        return text
    many = len(strong) >= 2  # a text written in leetspeak: translate more boldly

    def fix(m: re.Match) -> str:
        w = m.group(0)
        if not _LEET_CHARS.search(w):
            return w
        cand = w.translate(_LEET)
        if not cand.isalpha():
            return w
        if cand.lower() in vocab and (many or not _plain_token(w)):
            return cand
        # a text written in leetspeak: any word that reads as letters is leetspeak ("0v3r57473"), bar
        # all-capital codes that were written that way ("COVID19" stays)
        return cand if many and not re.fullmatch(r"[A-Z0-9]+", w) else w

    out = _LEET_WORD.sub(fix, text)
    if many:  # short numbers are words too: "4" is "a", "1" is "I", "15" is "is", "70" is "to", "2" is "to"
        def number(m: re.Match) -> str:
            w = m.group(0)
            if w == "2":
                return "to"
            c = w.translate(_LEET)
            return ("I" if c == "i" else c) if c.isalpha() and (c in vocab or c in ("a", "i")) else w
        out = re.sub(r"(?<![\w.,:/])\d{1,3}(?![\w.,:/%]|\.\d)", number, out)
    return out


def _plain_token(w: str) -> bool:
    """Identifiers, versions, units and the like: letters with digits that are not leetspeak."""
    return bool(re.fullmatch(r"[A-Za-z]+\d+|\d+[A-Za-z]{1,3}|[A-Z0-9]+|[a-z]+_\w+|\w*\d{3,}\w*", w))


# --------------------------------------------------------------------------- typos


@lru_cache(maxsize=1)
def _vocab() -> dict[str, int]:
    """Whole words of the embedder's WordPiece vocabulary (id order: roughly frequency order)."""
    try:
        vocab = json.loads(_VOCAB_PATH.read_text(encoding="utf-8"))["model"]["vocab"]
    except (OSError, KeyError, ValueError):
        return {}
    return {w: i for w, i in vocab.items() if w.isalpha() and w.isascii() and len(w) >= 2 and i >= 1996}


_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
# keys next to each key on a QWERTY keyboard, in its row and the rows above and below
_NEIGHBOURS = {c: "".join(sorted({r2[j] for r2 in _ROWS for j in range(len(r2))
                                  if abs(_ROWS.index(r2) - k) <= 1 and abs(j - i - (0.5 if r2 != row else 0) * (_ROWS.index(r2) - k)) <= 1.0
                                  and r2[j] != c}))
               for k, row in enumerate(_ROWS) for i, c in enumerate(row)}


@lru_cache(maxsize=4096)
def _correct(word: str) -> str:
    vocab = _vocab()
    if word in vocab or len(word) < 4 or len(word) > 14:
        return word
    # The edits typing makes, and not those that turn one real word into another: the vocabulary lacks many
    # real words, and "strangle" minus a letter is "strange", "snipe" plus one is "sniper".
    n = len(word)
    cands = {word[:i] + word[i + 1:] for i in range(1, n) if word[i] == word[i - 1]}  # a doubled letter ("whhat")
    cands |= {word[:i] + word[i + 1] + word[i] + word[i + 2:] for i in range(n - 1)}  # transposed ("woamn")
    # a wrong letter is a neighbouring key, not the first one ("feom"): "frud" is not "fred"
    cands |= {word[:i] + c + word[i + 1:] for i in range(1, n) for c in _NEIGHBOURS.get(word[i], "")}
    cands |= {word[:i] + c + word[i:] for i in range(1, n) for c in _LETTERS}  # a dropped letter, inside the word
    found = [(vocab[c], c) for c in cands if c in vocab and len(c) >= 4]
    if not found:
        return word
    best = min(found)
    return best[1] if best[0] < 20000 else word  # only common words: a rare candidate is a guess


def _fix_typos(text: str) -> str:
    """The text with likely typos fixed (a common word one edit away from a word the vocabulary lacks).
    Even one fix counts: a single misspelt key word ("woamn", "feom") is enough to move a short
    request across the line, and the fixed text is only an extra view beside what was written."""
    vocab = _vocab()
    if not vocab:
        return text
    return _fix_words(text, vocab)


def _fix_words(text: str, vocab: dict[str, int]) -> str:

    def fix(m: re.Match) -> str:
        w = m.group(0)
        if not w.islower() and not (w[0].isupper() and w[1:].islower() and m.start() == 0):
            return w  # names and acronyms are left alone
        low = w.lower()
        if low in vocab:
            return w
        c = _correct(low)
        return w if c == low else (c.capitalize() if w[0].isupper() else c)

    return _WORD.sub(fix, text)


# --------------------------------------------------------------------------- payloads


def _printable(s: str) -> bool:
    if len(s) < 4:
        return False
    ok = sum(ch.isprintable() or ch in "\n\t" for ch in s)
    letters = sum(ch.isalpha() for ch in s)
    return ok >= 0.95 * len(s) and letters >= 0.5 * len(s.replace(" ", ""))


def _b64(s: str) -> str | None:
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            raw = decode(s + "=" * (-len(s) % 4))
            text = raw.decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError):
            continue
        if _printable(text) and " " in text.strip():
            return text
    return None


def _hex(s: str) -> str | None:
    try:
        text = bytes.fromhex(re.sub(r"[ :]", "", s)).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    return text if _printable(text) else None


def _vocab_share(text: str, shortest: int = 2) -> float:
    words = [w.lower() for w in _WORD.findall(text) if len(w) >= shortest]
    if not words:
        return 0.0
    v = _vocab()
    return sum(w in v or w in {"a", "i"} for w in words) / len(words)


def _decode_payloads(text: str, payloads: list[str], changes: list[str]) -> str:
    def sub(pattern: re.Pattern, decode, name: str, s: str) -> str:
        def repl(m: re.Match) -> str:
            if _vocab_share(m.group(0)) > 0.5 and name != "url":
                return m.group(0)  # a long ordinary word, not an encoding
            dec = decode(m.group(0))
            if dec is None or dec == m.group(0):
                return m.group(0)
            payloads.append(dec.strip())
            changes.append(name)
            return f" {dec.strip()} "
        return pattern.sub(repl, s)

    out = sub(_HEX, _hex, "hex", text)
    out = sub(_B64, _b64, "base64", out)
    out = sub(_B64URL, _b64, "base64", out)
    if "%" in out:
        out = sub(_PCT, lambda s: unquote(s) if unquote(s) != s else None, "url", out)
    # rot13 has no alphabet of its own: decode when asked to, or when the text reads as words only after it
    if _ROT13_HINT.search(out) or (len(out) >= 12 and _vocab_share(out) < 0.5):
        rot = codecs.decode(out, "rot13")
        # judged on words of three letters or more: leetspeak leaves letter pairs ("0v3r" -> "v", "r")
        # that read as vocabulary after any shift
        if _rot13_reads(rot, out):
            payloads.append(rot.strip())
            changes.append("rot13")
            out = rot
        elif _ROT13_HINT.search(out):  # only the part after the hint may be encoded
            for chunk in re.split(r"[:\n]", out)[1:]:
                r = codecs.decode(chunk, "rot13")
                if len(chunk.split()) >= 2 and _rot13_reads(r, chunk):
                    payloads.append(r.strip())
                    changes.append("rot13")
                    out = out.replace(chunk, " " + r + " ")
    return out


def _rot13_reads(rot: str, raw: str) -> bool:
    """The rot13 reading is words (at least two of three letters or more) and the raw text is not."""
    if sum(len(w) >= 3 for w in _WORD.findall(rot)) < 2:
        return False
    share = _vocab_share(rot, 3)
    return share >= 0.7 and share > _vocab_share(raw, 3) + 0.3
