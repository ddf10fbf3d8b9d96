"""A cheap lexical harm score for ranking segments before any model runs (microseconds a segment).

The offline judge embeds at most ``cap`` segments per check (one model run each), so a long
message must be ranked cheaply first: which of its 150 sentences is the one worth a model run?
This scorer is a logistic regression over hashed word unigrams, word bigrams and character
4-grams (typo and leetspeak tolerant), fitted by ``python -m guard.judges.fit_prescore`` on the
fit folds of the public sets and our own everyday requests (guard/judges/data/README.md). It
only ranks: it never decides.
"""

from __future__ import annotations

import re
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).resolve().parent / "judges" / "data" / "prescore.npz"
DIM = 1 << 17
_WORD = re.compile(r"[a-z0-9']+")


def features(text: str) -> list[int]:
    """Hashed feature indices of a text (a multiset: repeated n-grams repeat)."""
    words = _WORD.findall(text.lower())
    out = [zlib.crc32(b"w" + w.encode()) for w in words]
    out += [zlib.crc32(f"b{a} {b}".encode()) for a, b in zip(words, words[1:])]
    for w in words:
        p = f"<{w}>"
        out += [zlib.crc32(b"c" + p[i:i + 4].encode()) for i in range(max(len(p) - 3, 1))]
    return [h & (DIM - 1) for h in out]


class LexicalScorer:
    def __init__(self, path: Path | str = WEIGHTS):
        d = np.load(path)
        self.w = d["w"].astype(np.float32)
        self.b = float(d["b"])

    def logit(self, text: str) -> float:
        idx = features(text)
        if not idx:
            return self.b
        # sum of weights scaled by 1/sqrt(n): a long window does not win by length alone
        return self.b + float(self.w[idx].sum()) / np.sqrt(len(idx))


@lru_cache(maxsize=1)
def scorer() -> LexicalScorer | None:
    """The shipped scorer, or None when its weights are missing (ranking falls back to novelty)."""
    try:
        return LexicalScorer()
    except (OSError, KeyError, ValueError):
        return None
