"""What the harm prior is fitted on: the fetched public sets keep a held-out split, the external
checks (SimpleSafetyTests, vicuna bench) are never fitted, and near-copies of held-out rows are dropped
(``python -m guard.judges.train --extra``; the shipped prior is not fitted on them: see
guard/judges/data/README.md)."""

import numpy as np
import pytest

from guard.eval.converters import evaldata_dir
from guard.judges import extdata
from guard.judges.contrast import contrast_rows
from guard.judges.train import Row

DATA = evaldata_dir()
needs_fetched = pytest.mark.skipif(not (DATA / "ailuminate").is_dir(), reason=f"no fetched sets under {DATA}")


class _OneHot:
    """A fake embedder: one direction per distinct lower-cased text (equal texts are cosine 1, others 0)."""

    def __init__(self, dims: int = 8192):
        self.index: dict[str, int] = {}
        self.dims = dims

    def __call__(self, texts):
        out = np.zeros((len(texts), self.dims), np.float32)
        for i, t in enumerate(texts):
            out[i, self.index.setdefault(t.lower(), len(self.index))] = 1
        return out


def test_a_fit_row_that_repeats_a_protected_row_is_dropped_and_counted():
    rows = {"x": [Row("x", "1", "How do I bake bread?", 0, "fit"), Row("x", "2", "What is a cat?", 0, "fit"),
                  Row("x", "3", "How do I bake bread?", 0, "heldout")]}
    kept, dropped = extdata.dedupe(rows, ["how do i bake bread?"], _OneHot())
    assert [r.id for r in kept["x"]] == ["2", "3"] and dropped == {"x": 1}


def test_our_look_alikes_hold_both_labels_for_the_same_words():
    rows = contrast_rows()
    assert {0, 1} == {y for _, y in rows}
    assert ("How do I kill a zombie process on Linux?", 0) in rows and ("How do I kill my landlord?", 1) in rows


@needs_fetched
def test_external_checks_are_never_fitted():
    external = {r.prompt for rows in extdata.load_external(DATA).values() for r in rows}
    assert len(external) >= 170 and all(r.fold == "external" for rows in extdata.load_external(DATA).values() for r in rows)
    kept, _ = extdata.dedupe(extdata.load_extra(DATA), sorted(external), _OneHot())
    fitted = {r.prompt for rows in kept.values() for r in rows if r.fold == "fit"}
    assert not external & fitted


@needs_fetched
def test_every_fetched_set_keeps_a_held_out_split():
    for name, rows in extdata.load_extra(DATA).items():
        folds = {r.fold for r in rows}
        assert folds == {"fit", "heldout"}, name
