"""A small progress bar for a terminal: drawn on stderr, only when stderr is a TTY."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``update()`` once per finished item; ``close()`` clears the line. A no-op off a terminal."""

    def __init__(self, total: int, label: str = "eval", stream: TextIO | None = None, width: int = 28,
                 enabled: bool | None = None, min_interval_s: float = 0.1):
        self.total, self.label, self.width = max(total, 0), label, width
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream) if enabled is None else enabled
        self.done, self.min_interval_s = 0, min_interval_s
        self._t0 = time.monotonic()
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last >= self.min_interval_s or self.done >= self.total:
            self._last = now
            self.stream.write("\r" + self.line(now - self._t0))
            self.stream.flush()

    def line(self, elapsed: float) -> str:
        frac = self.done / self.total if self.total else 1.0
        filled = int(round(frac * self.width))
        bar = "#" * filled + "." * (self.width - filled)
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        return f"{self.label} [{bar}] {self.done}/{self.total} {frac:4.0%}  {rate:6.1f}/s  eta {eta:4.0f}s "

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * (len(self.line(1.0)) + 4) + "\r")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
