"""A cheap lexical harm score for ranking segments before any model runs (microseconds a segment).

The offline judge embeds at most ``cap`` segments per check (one model run each), so a long
message must be ranked cheaply first: which of its 150 sentences is the one worth a model run?
This scorer is a logistic regression over hashed word unigrams, word bigrams and character
4-grams (typo and leetspeak tolerant), fitted by ``python -m guard.judges.fit_prescore`` on the
fit folds of the public sets and our own everyday requests (guard/judges/data/README.md). It
only ranks: it never decides.
"""

from __future__ import annotations

import math
import re
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).resolve().parent / "judges" / "data" / "prescore.npz"
DIM = 1 << 17
_WORD = re.compile(r"[a-z0-9']+")


def _word_hashes(w: str) -> list[int]:
    """A word's own hash and its character 4-grams' (with the word's boundaries marked)."""
    p = f"<{w}>"
    return [zlib.crc32(b"w" + w.encode())] + [zlib.crc32(b"c" + p[i:i + 4].encode()) for i in range(max(len(p) - 3, 1))]


def _pair_hash(a: str, b: str) -> int:
    return zlib.crc32(f"b{a} {b}".encode())


def features(text: str) -> list[int]:
    """Hashed feature indices of a text (a multiset: repeated n-grams repeat)."""
    words = _WORD.findall(text.lower())
    out = [h for w in words for h in _word_hashes(w)] + [_pair_hash(a, b) for a, b in zip(words, words[1:])]
    return [h & (DIM - 1) for h in out]


class LexicalScorer:
    def __init__(self, path: Path | str = WEIGHTS):
        d = np.load(path)
        self.w = d["w"].astype(np.float32)
        self.b = float(d["b"])
        # a long text has a hundred pieces whose words repeat: each word's and each pair's weights are summed once
        self._word = lru_cache(maxsize=1 << 16)(self._word_weight)
        self._pair = lru_cache(maxsize=1 << 16)(self._pair_weight)

    def _word_weight(self, w: str) -> tuple[float, int]:
        idx = [h & (DIM - 1) for h in _word_hashes(w)]
        return float(self.w[idx].sum()), len(idx)

    def _pair_weight(self, a: str, b: str) -> float:
        return float(self.w[_pair_hash(a, b) & (DIM - 1)])

    def logit(self, text: str) -> float:
        """The sum of the text's feature weights scaled by 1/sqrt(n): a long window does not win by length alone."""
        words = _WORD.findall(text.lower())
        if not words:
            return self.b
        total, n = 0.0, 0
        for w in words:
            s, k = self._word(w)
            total, n = total + s, n + k
        for a, b in zip(words, words[1:]):
            total, n = total + self._pair(a, b), n + 1
        return self.b + total / math.sqrt(n)


@lru_cache(maxsize=1)
def scorer() -> LexicalScorer | None:
    """The shipped scorer, or None when its weights are missing (ranking falls back to novelty)."""
    try:
        return LexicalScorer()
    except (OSError, KeyError, ValueError):
        return None
