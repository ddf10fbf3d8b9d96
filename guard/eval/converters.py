"""Converters from the public safety sets in ../shared/evaldata to evaluation rows.

The sets are read where they lie, at run time, and never copied into the project: converted
rows go to a git-ignored cache (``.cache/evaldata/``) or straight into an evaluation.

| name | stage | rows | label | category |
|---|---|---|---|---|
| ``xstest`` | input | 450 | ``unsafe`` → harmful, ``safe`` → benign | XSTest ``type`` |
| ``xstest-completions`` | output | 2,250 | harmful: an unsafe (``contrast_*``) prompt answered with ``1_full_compliance`` | XSTest ``type`` |
| ``moderation`` | input | 1,680 | harmful: flagged (1) in any category | the flagged codes (S, H, V, HR, SH, S3, H2, V2) |
| ``harmbench`` | input | 400 | all harmful (val 80 + test 320) | ``SemanticCategory`` |
| ``jbb`` | input | 1,637 | all harmful (jailbreak-wrapped goals; null prompts skipped) | attack method folder |
| ``sst`` | input | 100 | all harmful (SimpleSafetyTests) | ``harm_area`` |
| ``vicuna`` | input | 80 | all benign (Vicuna bench questions) | ``category`` |

``sst`` and ``vicuna`` are **external checks**: no part of the offline judge is fitted on them
(guard/judges/extdata.py keeps them out of every fit), so they measure how the judge does on
sets it was never developed against. They are optional: ``all`` skips them when their folder is
missing.

Decisions worth knowing:

- **XSTest partial refusals** (``3_partial_refusal``) are *benign* responses, by default. In
  XSTest a partial refusal is any mix of refusal and compliance; reading the 53 that answer an
  unsafe prompt, nearly all refuse and then offer a safe alternative ("ask them directly",
  "run a background check"), and only a few leak anything. Counting them harmful would
  punish the guard for allowing refusals. ``xstest_completions(partial_refusal="harmful")``
  gives the strict reading. Rows whose completion is empty keep an empty response.
- **HarmBench contextual behaviours** put their ``ContextString`` before the behaviour
  (separated by a blank line), as the request a user would send. Ids carry the split
  (``val/…``, ``test/…``) so that a judge fitted on one split can be scored on the other.
- **JailbreakBench**: every artifact under ``attack-artifacts/<method>/<attack type>/<model>.json``
  except the ``test-artifact`` placeholder; DSN's summary files repeat its artifacts and are
  skipped. Ids are ``<method>/<attack type>/<model>:<goal index>``.
- **Moderation** ids are the 0-based line numbers of the file; a missing key means unknown
  and counts as not flagged.

The data folder is ``../shared/evaldata`` beside the repository, or ``$GUARD_EVALDATA``.
"""

from __future__ import annotations

import csv
import glob
import gzip
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from guard.eval.data import EvalDataError, EvalRow

REPO_ROOT = Path(__file__).resolve().parents[2]
MODERATION_CODES = ("S", "H", "V", "HR", "SH", "S3", "H2", "V2")


def evaldata_dir() -> Path:
    """Where the public sets are: ``$GUARD_EVALDATA``, else ``../shared/evaldata`` from the repository root."""
    env = os.environ.get("GUARD_EVALDATA")
    return Path(env).expanduser() if env else (REPO_ROOT.parent / "shared" / "evaldata").resolve()


def _need(path: Path) -> Path:
    if not path.exists():
        raise EvalDataError(f"data set file not found: {path} (set GUARD_EVALDATA to the evaldata folder)")
    return path


def _csv(path: Path) -> Iterator[dict[str, str]]:
    with _need(path).open(newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f)


# --------------------------------------------------------------------------- the sets


def xstest_prompts(data: Path | None = None) -> Iterator[EvalRow]:
    data = data or evaldata_dir()
    for r in _csv(data / "xstest" / "xstest_prompts.csv"):
        yield EvalRow(id=r["id"], prompt=r["prompt"], label="harmful" if r["label"] == "unsafe" else "benign",
                      category=r["type"])


def xstest_completions(data: Path | None = None, partial_refusal: str = "benign") -> Iterator[EvalRow]:
    """Output stage: the label is about the completion. Unsafe prompts are XSTest's ``contrast_*`` types."""
    if partial_refusal not in ("benign", "harmful"):
        raise ValueError("partial_refusal must be 'benign' or 'harmful'")
    data = data or evaldata_dir()
    paths = sorted(glob.glob(str(_need(data / "xstest" / "completions") / "*.csv")))
    if not paths:
        raise EvalDataError(f"no completion files in {data / 'xstest' / 'completions'}")
    complies = ("1_full_compliance",) + (("3_partial_refusal",) if partial_refusal == "harmful" else ())
    for path in paths:
        model = Path(path).stem.removeprefix("xstest_v2_completions_")
        for r in _csv(Path(path)):
            unsafe = r["type"].startswith("contrast_")
            harmful = unsafe and r["final_label"].strip() in complies
            yield EvalRow(id=f"{model}:{r['id'].removeprefix('v2-')}", prompt=r["prompt"], response=r["completion"] or "",
                          label="harmful" if harmful else "benign", category=r["type"])


def moderation(data: Path | None = None) -> Iterator[EvalRow]:
    data = data or evaldata_dir()
    with gzip.open(_need(data / "openai_moderation" / "samples-1680.jsonl.gz"), "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            codes = [c for c in MODERATION_CODES if r.get(c) == 1]
            yield EvalRow(id=str(i), prompt=r["prompt"], label="harmful" if codes else "benign", category=codes or None)


def harmbench(data: Path | None = None) -> Iterator[EvalRow]:
    data = data or evaldata_dir()
    for split in ("val", "test"):
        for r in _csv(data / "harmbench" / f"harmbench_behaviors_text_{split}.csv"):
            context = (r.get("ContextString") or "").strip()
            prompt = f"{context}\n\n{r['Behavior']}" if context else r["Behavior"]
            yield EvalRow(id=f"{split}/{r['BehaviorID']}", prompt=prompt, label="harmful", category=r["SemanticCategory"])


def jailbreakbench(data: Path | None = None) -> Iterator[EvalRow]:
    data = data or evaldata_dir()
    root = _need(data / "jbb_artifacts" / "attack-artifacts")
    for path in sorted(glob.glob(str(root / "*" / "*" / "*.json"))):
        p = Path(path)
        method, attack_type, model = p.parts[-3], p.parts[-2], p.stem
        if method == "test-artifact":
            continue
        for j in json.loads(p.read_text(encoding="utf-8")).get("jailbreaks", []):
            if not j.get("prompt"):
                continue  # the attack found no prompt for this goal
            yield EvalRow(id=f"{method}/{attack_type}/{model}:{j['index']}", prompt=j["prompt"], label="harmful",
                          category=method)


def simple_safety_tests(data: Path | None = None) -> Iterator[EvalRow]:
    data = data or evaldata_dir()
    for r in _csv(data / "simple_safety_tests" / "sst_test_cases.csv"):
        yield EvalRow(id=r["id"], prompt=r["prompts_final"].strip(), label="harmful", category=r["harm_area"])


def vicuna_bench(data: Path | None = None) -> Iterator[EvalRow]:
    data = data or evaldata_dir()
    with open(_need(data / "vicuna_bench" / "question.jsonl"), encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                yield EvalRow(id=str(r["question_id"]), prompt=r["turns"][0], label="benign", category=r.get("category"))


@dataclass(frozen=True)
class DataSet:
    name: str
    stage: str  # the stage its labels are about
    convert: Callable[[Path | None], Iterator[EvalRow]]
    about: str
    folder: str | None = None  # set for an optional external check: its folder under the data folder

    def present(self, data: Path | None = None) -> bool:
        return self.folder is None or ((data or evaldata_dir()) / self.folder).is_dir()


SETS: dict[str, DataSet] = {s.name: s for s in [
    DataSet("xstest", "input", xstest_prompts, "XSTest v2 prompts: 250 safe that sound dangerous, 200 unsafe contrasts"),
    DataSet("xstest-completions", "output", xstest_completions,
            "XSTest completions by 5 models; harmful = full compliance with an unsafe prompt"),
    DataSet("moderation", "input", moderation, "OpenAI moderation sample; harmful = flagged in any category"),
    DataSet("harmbench", "input", harmbench, "HarmBench text behaviours, val + test (all harmful)"),
    DataSet("jbb", "input", jailbreakbench, "JailbreakBench attack artifacts: jailbreak-wrapped goals (all harmful)"),
    DataSet("sst", "input", simple_safety_tests, "SimpleSafetyTests: clearly harmful prompts (external check, never fitted)",
            "simple_safety_tests"),
    DataSet("vicuna", "input", vicuna_bench, "Vicuna bench questions: benign (external check, never fitted)", "vicuna_bench"),
]}


def get_set(name: str) -> DataSet:
    try:
        return SETS[name]
    except KeyError:
        raise EvalDataError(f"unknown data set {name!r} (known: {', '.join(SETS)})") from None


def convert(name: str, data: Path | None = None) -> list[EvalRow]:
    return list(get_set(name).convert(data))


def default_out(name: str) -> Path:
    """Converted rows go to ``.cache/evaldata/`` under the working directory (git-ignored in this repository)."""
    return Path(".cache") / "evaldata" / f"{name}.jsonl"
