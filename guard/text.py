"""Tokenising for retrieval and the offline judge: lowercase words, stop words out, a light stem.

Deterministic and dependency-free, so that the same text always retrieves the same sections.
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_SUFFIXES = ("ational", "ations", "ation", "ising", "izing", "ised", "ized", "ises", "izes", "ise", "ize",
             "ness", "ment", "ings", "ing", "ied", "ies", "ed", "es", "ly", "s")
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both but by
can could did do does doing down during each few for from further had has have having he her here hers herself him
himself his how i if in into is it its itself just let me more most my myself no nor not now of off on once only or
other our ours ourselves out over own same she should so some such than that the their theirs them themselves then
there these they this those through to too under until up very was we were what when where which while who whom why
will with would you your yours yourself yourselves i'm it's don't can't what's please tell give show want need like
""".split())


@lru_cache(maxsize=1 << 16)  # retrieval and the pre-score see the same words again and again
def stem(word: str) -> str:
    """Strip one common English suffix, then keep at most 6 characters (synthesise ~ synthesis)."""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:6]


def tokens(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS]
