"""More data for the harm prior, ``python -m guard.judges.train --extra`` (training only; never
imported at run time; measured and not shipped, see guard/judges/data/README.md).

Sets fetched for issue 11 (item 5) into ../shared/evaldata, each folder with a README giving its
source commit and licence; rows are read from there, never copied into the repository:

| folder | rows used | label | fit / held out |
|---|---|---|---|
| ailuminate (MLCommons AILuminate v1.0 demo, en_US, CC-BY-4.0) | 12 hazard categories | 1 | ``fold("ailuminate", id, 0.7)`` |
| ailuminate | ``spc_*`` (financial, health, election, legal advice requests) | 0 | same |
| self_instruct (seed + user-oriented instructions, Apache-2.0) | instruction, with a short input | 0 | ``fold("self_instruct", id, 0.8)`` |
| mt_bench (FastChat, Apache-2.0) | each turn on its own | 0 | ``fold("mt_bench", id, 0.8)`` |
| simple_safety_tests (CC-BY-4.0), vicuna_bench (Apache-2.0) | all | 1 / 0 | never fitted: external checks |
| ours: guard/judges/contrast.py (look-alike requests) | all | 1 / 0 | ``fold("contrast", text, 0.8)`` |

AILuminate's labels are the prompt set's hazard category, not a judgement of each prompt: some
hazard prompts read as a worried question rather than a request for harm. Its mass is set
accordingly in guard/judges/train.py.

``dedupe`` drops fit rows whose embedding is at cosine ≥ 0.9 to a held-out row of XSTest,
HarmBench, JailbreakBench or the moderation sample, or to a row of the external checks, so that
nothing is learnt from a near-copy of a row it is scored on.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from guard.judges.train import Row, fold

AILUMINATE_FIT = 0.7
INSTRUCT_FIT = 0.8
NEAR_DUPLICATE = 0.9


def ailuminate(data: Path) -> list[Row]:
    path = data / "ailuminate" / "airr_official_1.0_demo_en_us_prompt_set_release.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [Row("ailuminate", r["release_prompt_id"], r["prompt_text"].strip(),
                    0 if r["hazard"].startswith("spc_") else 1,
                    fold("ailuminate", r["release_prompt_id"], AILUMINATE_FIT), r["hazard"])
                for r in csv.DictReader(f) if r["prompt_text"].strip()]


def self_instruct(data: Path) -> list[Row]:
    out = []
    for name in ("seed_tasks.jsonl", "user_oriented_instructions.jsonl"):
        path = data / "self_instruct" / name
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            text = d["instruction"].strip()
            inp = (d.get("instances") or [{}])[0].get("input", "").strip()
            if inp and len(inp.split()) <= 60:
                text = f"{text}\n\n{inp}"
            out.append(Row("self_instruct", d["id"], text, 0, fold("self_instruct", d["id"], INSTRUCT_FIT)))
    return out


def _bench(data: Path, name: str, fld: str | None) -> list[Row]:
    path = data / name / "question.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        d = json.loads(line)
        qid = str(d["question_id"])
        f = fld or fold(name, qid, INSTRUCT_FIT)
        out += [Row(name, f"{qid}:{i}", t.strip(), 0, f, d.get("category", "")) for i, t in enumerate(d["turns"])]
    return out


def mt_bench(data: Path) -> list[Row]:
    return _bench(data, "mt_bench", None)


def vicuna_bench(data: Path) -> list[Row]:
    """External benign check: never fitted."""
    return _bench(data, "vicuna_bench", "external")


def simple_safety_tests(data: Path) -> list[Row]:
    """External harmful check: never fitted."""
    path = data / "simple_safety_tests" / "sst_test_cases.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [Row("sst", r["id"], r["prompts_final"].strip(), 1, "external", r["harm_area"]) for r in csv.DictReader(f)]


def contrast() -> list[Row]:
    """Our own look-alike requests (guard.judges.contrast): a fixed fifth held out."""
    from guard.judges.contrast import contrast_rows

    return [Row("contrast", t, t, y, fold("contrast", t, INSTRUCT_FIT)) for t, y in contrast_rows()]


FOLDERS = ("ailuminate", "self_instruct", "mt_bench")  # what ``--extra`` needs under the data folder


def load_extra(data: Path) -> dict[str, list[Row]]:
    """The fetched sets and our look-alikes. A missing folder is an error: a fit that silently left a set
    out would be recorded as fitted on it (how to recreate them: guard/judges/data/README.md)."""
    missing = [f for f in FOLDERS if not (data / f).is_dir()]
    if missing:
        from guard.errors import GuardError

        raise GuardError(f"--extra needs {', '.join(missing)} under {data} (how to fetch them: "
                         "guard/judges/data/README.md, 'More data for the harm prior')")
    return {"ailuminate": ailuminate(data), "self_instruct": self_instruct(data), "mt_bench": mt_bench(data),
            "contrast": contrast()}


def load_external(data: Path) -> dict[str, list[Row]]:
    return {"sst": simple_safety_tests(data), "vicuna_bench": vicuna_bench(data)}


def dedupe(extra: dict[str, list[Row]], protected: list[str], embed) -> tuple[dict[str, list[Row]], dict[str, int]]:
    """Drop fit rows at cosine ≥ ``NEAR_DUPLICATE`` to any ``protected`` text (held-out and external
    rows); returns the kept sets and how many were dropped per set. ``embed`` maps texts to unit vectors."""
    ref = embed(protected)
    kept, dropped = {}, {}
    for name, rows in extra.items():
        fit = [r for r in rows if r.fold == "fit"]
        sims = embed([r.prompt for r in fit]) @ ref.T if fit else np.zeros((0, 1))
        bad = {id(r) for r, s in zip(fit, sims) if s.max() >= NEAR_DUPLICATE}
        kept[name] = [r for r in rows if id(r) not in bad]
        dropped[name] = len(bad)
    return kept, dropped


def write_external(data: Path, out: Path) -> int:
    """The external checks as ``guard eval --data`` rows (SimpleSafetyTests harmful, vicuna bench benign)."""
    rows = [r for rows in load_external(data).values() for r in rows]
    with open(out, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"id": f"{r.set}:{r.id}", "prompt": r.prompt, "label": "harmful" if r.label else "benign",
                                "category": r.category}) + "\n")
    return len(rows)


if __name__ == "__main__":  # python -m guard.judges.extdata OUT.jsonl [DATA]: then guard eval --data OUT.jsonl
    import sys

    from guard.judges.train import DEFAULT_DATA

    print(write_external(Path(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_DATA, Path(sys.argv[1])), "rows")
