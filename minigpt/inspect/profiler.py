"""An op profiler: ``with minigpt.profile() as prof: ...`` then ``print(prof.table())``.

While the block runs, every op class's ``forward`` and ``backward`` (the ``Function`` subclasses of
``minigpt/ops``) is wrapped by a timer that counts calls, adds up wall time and the bytes of what it
returns (the output in forward, the input gradients in backward). On exit the classes get their own
methods back: outside a ``profile()`` block nothing is wrapped and nothing is checked, so the profiler
costs nothing when it is not in use.

Times are inclusive wall-clock times; "share" is the fraction of the whole block's time, and the row
``(outside ops)`` is the rest: the engine's graph walk and gradient accumulation, the optimizer, Python.

The block runs with the runtime users get: entering it applies minigpt's tuned runtime if no kernel has
yet (``minigpt.runtime.ensure``), so the first op does not pay for it. The table's last line says which
runtime was in force (``runtime: tuned ...``, or ``runtime: untuned`` under ``MINIGPT_RUNTIME=0`` /
``minigpt.runtime.disable()``, whose times are slower than minigpt's default); ``prof.runtime`` holds
``minigpt.runtime.describe()`` as it was at the block's end.

Example::

    >>> with minigpt.profile() as prof:
    ...     loss = model.loss(x, y); loss.backward()
    >>> print(prof.table(limit=3))
    op                     phase       calls   total ms   mean ms   share   out MB
    LinearCrossEntropyOp   forward         1      41.20     41.20   21.5%     0.00
    ...
"""
from __future__ import annotations

import functools
import time

import numpy as np

from .. import ops  # noqa: F401  (every op class is defined on import)
from .. import runtime
from ..errors import MiniGPTError
from ..tensor import Function

_active = None


def _op_classes() -> list:
    out, todo = [], list(Function.__subclasses__())
    while todo:
        c = todo.pop()
        out.append(c)
        todo.extend(c.__subclasses__())
    return out


def _nbytes(x) -> int:
    if isinstance(x, np.ndarray):
        return x.nbytes
    if isinstance(x, (tuple, list)):
        return sum(_nbytes(v) for v in x)
    rows = getattr(x, "rows", None)  # a sparse row gradient (embedding backward)
    return rows.nbytes if isinstance(rows, np.ndarray) else 0


class Profile:
    """Per-op statistics of the code run inside ``with profile() as prof:`` (see the module docstring)."""

    def __init__(self):
        self.records = {}          # (op name, phase) -> [calls, seconds, bytes]
        self.total_seconds = 0.0
        self.runtime = None        # minigpt.runtime.describe() at the end of the block
        self._saved = []

    def _wrap(self, cls, phase, orig):
        rec = self.records.setdefault((cls.__name__, phase), [0, 0.0, 0])
        clock = time.perf_counter

        @functools.wraps(orig)
        def timed(op, *args, **kwargs):
            t0 = clock()
            out = orig(op, *args, **kwargs)
            rec[1] += clock() - t0
            rec[0] += 1
            rec[2] += _nbytes(out)
            return out

        timed.__minigpt_profiled__ = True
        return timed

    def __enter__(self):
        global _active
        if _active is not None:
            raise MiniGPTError("profile() blocks cannot be nested")
        _active = self
        runtime.ensure()  # the tuned runtime users get (unless opted out), applied before the clock starts
        for cls in _op_classes():
            for phase in ("forward", "backward"):
                orig = cls.__dict__.get(phase)
                if orig is not None:
                    self._saved.append((cls, phase, orig))
                    setattr(cls, phase, self._wrap(cls, phase, orig))
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        global _active
        self.total_seconds += time.perf_counter() - self._t0
        for cls, phase, orig in reversed(self._saved):
            setattr(cls, phase, orig)
        self._saved = []
        _active = None
        self.runtime = runtime.describe()
        return False

    def rows(self) -> list:
        """One dict per (op, phase) that ran, the most time first, plus ``(outside ops)``."""
        total = self.total_seconds or 1e-12
        rows = [{"op": op, "phase": ph, "calls": n, "seconds": s, "mean_seconds": s / n, "share": s / total,
                 "bytes": b} for (op, ph), (n, s, b) in self.records.items() if n]
        rows.sort(key=lambda r: -r["seconds"])
        inside = sum(r["seconds"] for r in rows)
        rows.append({"op": "(outside ops)", "phase": "", "calls": 0, "seconds": max(0.0, self.total_seconds - inside),
                     "mean_seconds": 0.0, "share": max(0.0, self.total_seconds - inside) / total, "bytes": 0})
        return rows

    def table(self, limit: int | None = None) -> str:
        """The rows as a text table (sorted by total time, like torch.profiler's key averages)."""
        rows = self.rows()
        outside = rows.pop()
        if limit is not None:
            rows = rows[:limit]
        lines = [f"{'op':<24}{'phase':<10}{'calls':>7}{'total ms':>11}{'mean ms':>10}{'share':>8}{'out MB':>9}"]
        for r in rows + [outside]:
            calls = str(r["calls"]) if r["calls"] else ""
            mean = f"{r['mean_seconds'] * 1e3:.3f}" if r["calls"] else ""
            lines.append(f"{r['op']:<24}{r['phase']:<10}{calls:>7}{r['seconds'] * 1e3:>11.2f}{mean:>10}"
                         f"{r['share']:>8.1%}{r['bytes'] / 1e6:>9.2f}")
        lines.append(f"{'total':<24}{'':<10}{'':>7}{self.total_seconds * 1e3:>11.2f}")
        lines.append(runtime.summary(self.runtime))
        return "\n".join(lines)


def profile() -> Profile:
    """``with minigpt.profile() as prof:`` records every op's forward and backward in the block."""
    return Profile()
