"""What a judge was fitted on, and which rows of a public set it never saw.

A judge with fitted parts may say so itself:

- ``fitted_on``: a description (text or a JSON-able dict) of the data it was fitted on;
- ``is_heldout(set_name, row_id) -> bool``: whether a converted row (ids as in
  guard.eval.converters) was kept out of fitting.

A cascade is asked through its first judge. For the embedding judge of this repository, which
records its split in the weights' metadata (``meta["fit_rule"]`` naming
``guard.judges.train.fold``) instead, the same rule is applied here to the converters' ids.
A judge that exposes nothing is reported as "nothing fitted", and every row counts as held out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guard.errors import ConfigError

NOTHING_FITTED = "nothing fitted"


def _judges(judge) -> list[Any]:
    out = [judge]
    for attr in ("first", "second"):  # CascadeJudge
        if getattr(judge, attr, None) is not None:
            out.append(getattr(judge, attr))
    return out


def _meta(judge) -> dict | None:
    try:
        model = getattr(judge, "model", None)
        meta = getattr(model, "meta", None)
    except Exception:  # loading weights failed: nothing to report from them
        return None
    return meta if isinstance(meta, dict) else None


def fitted_on(judge) -> Any:
    """A description of the data the judge's fitted parts saw, or ``"nothing fitted"``."""
    for j in _judges(judge):
        desc = getattr(j, "fitted_on", None)
        if desc:
            return desc
        meta = _meta(j)
        if meta and meta.get("fitted_on"):
            return {"rows_per_set": meta["fitted_on"], "split": meta.get("fit_rule", "not recorded")}
    return NOTHING_FITTED


def heldout_filter(judge, set_name: str) -> Callable[[str], bool] | None:
    """A predicate on converted row ids: True for rows the judge was not fitted on.
    None when the judge has nothing fitted (every row is held out)."""
    for j in _judges(judge):
        hook = getattr(j, "is_heldout", None)
        if callable(hook):
            return lambda row_id, _h=hook: bool(_h(set_name, row_id))
        meta = _meta(j)
        if meta and str(meta.get("fit_rule", "")).startswith("guard.judges.train.fold"):
            return _train_fold_rule(set_name)
    if fitted_on(judge) != NOTHING_FITTED:
        raise ConfigError(f"the judge is fitted ({fitted_on(judge)}) but says nothing about which rows it was fitted on")
    return None


def _train_fold_rule(set_name: str) -> Callable[[str], bool]:
    """guard.judges.train's split, on the converters' ids (see that module's table)."""
    from guard.judges.train import fold

    if set_name == "xstest":
        return lambda rid: fold("xstest", rid) == "heldout"
    if set_name == "xstest-completions":  # split by prompt: every completion of a held-out prompt
        return lambda rid: fold("xstest", rid.split(":", 1)[1]) == "heldout"
    if set_name == "moderation":
        return lambda rid: fold("moderation", rid) == "heldout"
    if set_name == "harmbench":  # val was fitted, test held out
        return lambda rid: rid.startswith("test/")
    if set_name == "jbb":  # split by goal; JBC's fit-half goals are neither fitted nor scored
        return lambda rid: fold("jbb", rid.rsplit(":", 1)[1]) == "heldout"
    return lambda rid: True


# --------------------------------------------------------------------------- policies a judge was fitted on


def fitted_policies(judge) -> list[str]:
    """Policy files (or folders) whose sections the judge's fitted parts were trained on, when it says
    (an attribute ``fitted_policies``; a cascade answers through its first judge). Empty when it says nothing."""
    for j in _judges(judge):
        paths = getattr(j, "fitted_policies", None)
        if paths:
            return [str(p) for p in paths]
    return []


def _words(text: str) -> set[str]:
    import re

    return set(re.findall(r"[a-z0-9']+", text.lower()))


def overlap(text: str, others: list[str]) -> tuple[float, str]:
    """The highest word-set Jaccard similarity between ``text`` and any of ``others``, and that other text."""
    w = _words(text)
    best, which = 0.0, ""
    for o in others:
        v = _words(o)
        score = len(w & v) / len(w | v) if w | v else 0.0
        if score > best:
            best, which = score, o
    return best, which


def near_copies(texts: dict[str, str], others: list[str], threshold: float = 0.5) -> list[tuple[str, float, str]]:
    """(id, similarity, closest other text) for each text at least ``threshold`` similar to one of ``others``."""
    out = []
    for key, text in texts.items():
        score, which = overlap(text, others)
        if score >= threshold:
            out.append((key, round(score, 2), which))
    return out
