"""Progress of long work, one meter for every stage: items done, items/s, tokens/s, ETA and drops so far.

A meter writes a log line every few seconds (the stage's log file keeps them) and feeds the live line that
:mod:`humpback.core.console` draws on the terminal in a quiet run. Work replayed from a checkpoint counts as done
but not towards the rate, so a resumed stage's ETA is not flattered by the chunks it skipped.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Mapping, Optional

log = logging.getLogger("humpback.progress")


def format_eta(seconds: float) -> str:
    if seconds is None or math.isnan(seconds) or math.isinf(seconds):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Meter:
    def __init__(self, label: str, total: Optional[int] = None, *, unit: str = "", every_s: Optional[float] = 10.0,
                 logger: Optional[logging.Logger] = None, level: int = logging.INFO, prefix: str = "") -> None:
        self.label, self.total, self.unit, self.every_s = label, total, unit, every_s
        self.logger, self.level, self.prefix = logger or log, level, prefix
        self.start = self.last = time.perf_counter()
        self.done = self.replayed = self.tokens = 0
        self.dropped: Counter = Counter()
        self.extra = ""

    def update(self, n: int = 1, tokens: int = 0, *, replayed: bool = False,
               dropped: Optional[Mapping[str, int]] = None, extra: Optional[str] = None, force: bool = False) -> None:
        self.done += n
        if replayed:
            self.replayed += n
        self.tokens += tokens
        if dropped:
            self.dropped.update(dropped)
        if extra is not None:
            self.extra = extra
        from . import console

        console.progress(self)
        now = time.perf_counter()
        finished = self.total is not None and self.done >= self.total
        if self.every_s is None:  # a meter for the live line only
            return
        if force or now - self.last >= self.every_s or (finished and not replayed):
            self.last = now
            self.logger.log(self.level, "%s%s", self.prefix, self.line())

    @property
    def rate(self) -> float:
        """Items per second over the work actually computed here."""
        return (self.done - self.replayed) / max(time.perf_counter() - self.start, 1e-9)

    def eta(self) -> float:
        if self.total is None:
            return float("nan")
        left = max(self.total - self.done, 0)
        return left / self.rate if self.rate > 0 else (0.0 if left == 0 else float("nan"))

    def line(self) -> str:
        el = max(time.perf_counter() - self.start, 1e-9)
        total = f"/{self.total}" if self.total is not None else ""
        unit = f" {self.unit}" if self.unit else ""
        parts = [f"{self.rate:.2f}{unit}/s"]
        if self.tokens:
            parts.append(f"{self.tokens / el:.1f} tok/s")
        if self.total is not None:
            parts.append(f"ETA {format_eta(self.eta())}")
        if self.dropped:
            parts.append("dropped " + ", ".join(f"{k} {v}" for k, v in self.dropped.most_common(3)))
        if self.extra:
            parts.append(self.extra)
        return f"{self.label} {self.done}{total} ({', '.join(parts)})"
