"""Progress of long jobs: a tqdm bar with an ETA on a terminal, one line per ``step`` % otherwise.

Logs and CI get ``upscale: 30 % (36/120 frame) in 12 s, ETA 28 s`` lines on stdout instead of a
bar's carriage returns; stderr stays for warnings and the one-line error.
"""

from __future__ import annotations

import sys
import time
from typing import Any

#: Without a terminal, one line every this many percent (or every ``UNKNOWN_TOTAL_EVERY_S`` seconds).
STEP_PERCENT = 10
UNKNOWN_TOTAL_EVERY_S = 30.0


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True, initial: int = 0) -> Any:
    """A tqdm bar on stderr when it is a terminal, else :class:`PercentLines`; nothing when not ``enabled``."""
    from tqdm import tqdm

    if enabled and not sys.stderr.isatty():
        return PercentLines(total, desc, unit, initial)
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=not enabled, dynamic_ncols=True)


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


class PercentLines:
    """The subset of tqdm's interface the jobs use, printing one line per ``STEP_PERCENT`` % to stdout."""

    def __init__(self, total: int | None, desc: str, unit: str, initial: int = 0) -> None:
        self.total, self.desc, self.unit = total or None, desc, unit
        self.n = self._start = initial
        self._t0 = self._last = time.monotonic()
        self._next_pct = (100 * initial // self.total // STEP_PERCENT + 1) * STEP_PERCENT if self.total else 0
        self.postfix = ""

    def __enter__(self) -> "PercentLines":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def set_postfix(self, values: dict[str, Any] | None = None, **kw: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in {**(values or {}), **kw}.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.total:
            pct = 100 * self.n // self.total
            if pct >= self._next_pct and self._next_pct <= 100:
                self._next_pct = (pct // STEP_PERCENT + 1) * STEP_PERCENT
                self._print(now, pct)
        elif now - self._last >= UNKNOWN_TOTAL_EVERY_S:
            self._print(now, None)

    def _print(self, now: float, pct: int | None) -> None:
        self._last = now
        spent = now - self._t0
        line = f"{self.desc}: "
        if pct is None:
            line += f"{self.n} {self.unit} in {_duration(spent)}"
        else:
            line += f"{pct} % ({self.n}/{self.total} {self.unit}) in {_duration(spent)}"
            done = self.n - self._start
            if pct < 100 and done > 0:
                line += f", ETA {_duration(spent / done * (self.total - self.n))}"
        print(line + (f" ({self.postfix})" if self.postfix else ""), flush=True)

    def write(self, line: str) -> None:
        print(line, flush=True)

    def refresh(self) -> None:
        """Print the line due now (after ``total`` was corrected)."""
        self.update(0)

    def close(self) -> None:
        pass


def finish(bar: Any, n: int) -> None:
    """A job that ended after ``n`` units (an estimated total can be off): the bar shows 100 %."""
    if bar.total != n:
        bar.total = n
        bar.refresh()
