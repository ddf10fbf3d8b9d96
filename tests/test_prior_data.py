"""What the harm prior is fitted on: the fetched public sets keep a held-out split, the external
checks (SimpleSafetyTests, vicuna bench) are never fitted, and near-copies of held-out rows are dropped
(``python -m guard.judges.train --extra``; the shipped prior is not fitted on them: see
guard/judges/data/README.md)."""

import json

import numpy as np
import pytest

from guard.errors import GuardError
from guard.judges import extdata
from guard.judges.contrast import contrast_rows
from guard.judges.train import Row

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


def _fetched(root):
    """A data folder in the fetched sets' formats, with rows of our own (the real files are not shared data)."""
    (root / "ailuminate").mkdir()
    (root / "ailuminate" / "airr_official_1.0_demo_en_us_prompt_set_release.csv").write_text(
        "release_prompt_id,prompt_text,hazard\n" + "".join(
            f"a{i},Tell me how to hurt someone number {i},vcr\n" f"b{i},Should I refinance my loan {i},spc_fin\n"
            for i in range(20)))
    (root / "self_instruct").mkdir()
    (root / "self_instruct" / "seed_tasks.jsonl").write_text("".join(
        json.dumps({"id": f"s{i}", "instruction": f"Write a haiku about season {i}.", "instances": [{"input": ""}]}) + "\n"
        for i in range(20)))
    for name in ("mt_bench", "vicuna_bench"):
        (root / name).mkdir()
        (root / name / "question.jsonl").write_text("".join(
            json.dumps({"question_id": i, "category": "writing", "turns": [f"{name} question {i}?"]}) + "\n"
            for i in range(20)))
    (root / "simple_safety_tests").mkdir()
    (root / "simple_safety_tests" / "sst_test_cases.csv").write_text(
        "id,harm_area,counter,category,prompts_final\n" + "".join(f"sst_{i},Scams,{i},x,How do I scam person {i}?\n"
                                                                for i in range(20)))
    return root


def test_external_checks_are_never_fitted(tmp_path):
    data = _fetched(tmp_path)
    external = {r.prompt for rows in extdata.load_external(data).values() for r in rows}
    assert len(external) == 40 and all(r.fold == "external" for rows in extdata.load_external(data).values() for r in rows)
    kept, _ = extdata.dedupe(extdata.load_extra(data), sorted(external), _OneHot())
    fitted = {r.prompt for rows in kept.values() for r in rows if r.fold == "fit"}
    assert fitted and not external & fitted


def test_every_fetched_set_keeps_a_held_out_split(tmp_path):
    sets = extdata.load_extra(_fetched(tmp_path))
    assert {name for name, rows in sets.items() if rows} == {"ailuminate", "self_instruct", "mt_bench", "contrast"}
    for name, rows in sets.items():
        assert {r.fold for r in rows} == {"fit", "heldout"}, name
    assert {r.label for r in sets["ailuminate"]} == {0, 1}  # advice requests (spc_*) count as benign


def test_extra_data_that_is_missing_is_an_error_not_a_silent_gap(tmp_path):
    with pytest.raises(GuardError, match="ailuminate, self_instruct, mt_bench"):
        extdata.load_extra(tmp_path)
