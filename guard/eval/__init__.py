"""Measure a guard on labelled rows: the row format, converters from the public safety sets,
the runner and its metrics, and the report (``guard eval``)."""

from guard.eval.data import EvalDataError, EvalRow, read_rows, write_rows
from guard.eval.runner import RowResult, evaluate, run_rows, summarize

__all__ = ["EvalDataError", "EvalRow", "RowResult", "evaluate", "read_rows", "run_rows", "summarize", "write_rows"]
