"""Progress reporting that suits where the output goes.

On a terminal, ``progress_bar(...)`` is a tqdm bar redrawn in place. When the stream is not a terminal (a
CI log, ``nohup``, a pipe) a redrawn bar would become one line per redraw, so ``LineProgress`` writes a
plain line instead, every 10% of the total (at most one a second) and at least every 30 seconds while work
goes on, and a last one at the end::

    train: 60/600 (10%), 0:12 elapsed, ~1:48 left, 5.0 step/s; loss=5.123, tok/s=1,234

Both have the part of tqdm's interface minigpt uses: ``update``, ``set_postfix``, ``write``, ``close``
and use as a context manager.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

LINE_FRACTION = 0.1    # a line every 10% of the total ...
LINE_SECONDS = 30.0    # ... or every 30 s, whichever comes first
MIN_GAP_SECONDS = 1.0  # but not two 10% lines within a second (work done in bursts)


def is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _amount(n: float, unit_scale: bool) -> str:
    if not unit_scale:
        return f"{n:,.0f}" if float(n).is_integer() else f"{n:,.1f}"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{suffix}"
    return f"{n:.0f}"


class LineProgress:
    """A progress report of whole lines, for output that is not a terminal (see the module docstring).

    ``initial`` counts work done before this report started (a resumed run): rates and the time left
    are computed from the work done since, so time spent before the first ``update`` window (e.g.
    compiling kernels) is not averaged in when the report is created after it.
    """

    def __init__(self, total=None, desc: str = "", unit: str = "it", initial: int = 0, file=None,
                 unit_scale: bool = False, every_fraction: float = LINE_FRACTION,
                 every_seconds: float = LINE_SECONDS, clock=time.monotonic):
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.n = self.initial = initial
        self.file = file if file is not None else sys.stderr
        self.every_n = max(1, round(total * every_fraction)) if total else None
        self.every_seconds = every_seconds
        self._clock = clock
        self.start = self._last_t = clock()
        self._last_n = initial
        self.postfix = ""
        self.closed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def update(self, n: float = 1) -> None:
        self.n += n
        now = self._clock()
        due_n = (self.every_n is not None and self.n // self.every_n > self._last_n // self.every_n
                 and now - self._last_t >= MIN_GAP_SECONDS)  # several tenths in one burst: one line
        if due_n or now - self._last_t >= self.every_seconds or (self.total and self.n >= self.total):
            self._line(now)

    def _line(self, now: float) -> None:
        if self.n == self._last_n:
            return
        done = self.n - self.initial
        elapsed = now - self.start
        parts = [f"{_amount(self.n, self.unit_scale)}/{_amount(self.total, self.unit_scale)} "
                 f"({100 * self.n / self.total:.0f}%)" if self.total else f"{_amount(self.n, self.unit_scale)} "
                 f"{self.unit}", f"{_clock(elapsed)} elapsed"]
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            if self.total:
                parts.append(f"~{_clock(max(0.0, self.total - self.n) / rate)} left")
            if rate < 1:
                parts.append(f"{1 / rate:.2f} s/{self.unit}")
            else:
                shown = _amount(rate, True) if self.unit_scale else f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}"
                parts.append(f"{shown} {self.unit}/s")
        line = (f"{self.desc}: " if self.desc else "") + ", ".join(parts) + (f"; {self.postfix}" if self.postfix
                                                                              else "")
        print(line, file=self.file, flush=True)
        self._last_t, self._last_n = now, self.n

    def write(self, msg: str, file=None) -> None:
        print(msg, file=file if file is not None else self.file, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n != self._last_n:  # the final state, once
                self._line(self._clock())


def progress_bar(total=None, *, desc: str = "", unit: str = "it", initial: int = 0, file=None,
                 unit_scale: bool = False, leave: bool = True, disable: bool = False):
    """A tqdm bar when ``file`` (default: standard error) is a terminal, else a :class:`LineProgress`.
    ``disable=True`` gives a bar that prints nothing."""
    file = file if file is not None else sys.stderr
    if disable:
        return tqdm(total=total, disable=True)
    if is_terminal(file):
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, file=file, unit_scale=unit_scale,
                    leave=leave, dynamic_ncols=True, mininterval=0.5)
    return LineProgress(total, desc=desc, unit=unit, initial=initial, file=file, unit_scale=unit_scale)
