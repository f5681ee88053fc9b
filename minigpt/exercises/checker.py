"""The checker: the true gradients come from minigpt's autograd (every intermediate of the exercise's
reference forward marked with ``retain_grad()``), the student's from their ``backward(p, c)``; each pair
is compared, and a wrong one is located (the index of the largest error), measured, and, where a typical
mistake explains it, named.
"""
from __future__ import annotations

import linecache
import re
import sys
import traceback
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..errors import MiniGPTError
from ..tensor import Tensor
from .catalog import EXERCISES

SEED = 1234
RTOL, ATOL = 1e-7, 1e-9   # float64 on both sides: a right answer agrees to ~1e-15

_TODO = re.compile(r"^(?P<ind>\s*)# (?P<kind>TODO|CHECK)(?P<body>-BODY)? (?P<name>\w+)(?: (?P<shape>\([^)]*\)))?: (?P<hint>.*)$")
_END = re.compile(r"^\s*# END\s*$")


def exercise(name: str):
    if name not in EXERCISES:
        raise MiniGPTError(f"unknown exercise {name!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[name]


def source(name: str) -> str:
    exercise(name)
    return resources.files(__package__).joinpath("sources", f"{name}.py").read_text(encoding="utf-8")


def blanks(name: str) -> list:
    """[(gradient name, shape text, hint)] of the exercise's answers, in the order the file asks for them
    (a ``-BODY`` answer, a whole helper function, is listed with shape None; a ``# CHECK`` line names a
    gradient that a given line computes from the student's helpers: checked, but not blanked)."""
    out = []
    for line in source(name).splitlines():
        m = _TODO.match(line)
        if m:
            out.append((m["name"], None if m["body"] else m["shape"], m["hint"]))
    return out


def template(name: str) -> str:
    """The student's file: every answer between ``# TODO`` and ``# END`` replaced by a blank (None, or a
    helper function's body by ``raise NotImplementedError``)."""
    lines, skipping = [], False
    for line in source(name).splitlines():
        m = _TODO.match(line)
        if m and m["kind"] == "CHECK":
            lines.append(line)
        elif m:
            lines.append(line)
            if m["body"]:
                lines.append(f'{m["ind"]}raise NotImplementedError("TODO: write {m["name"]}")')
            else:
                lines.append(f'{m["ind"]}{m["name"]} = None')
            skipping = True
        elif _END.match(line):
            skipping = False
        elif not skipping:
            lines.append(line)
    return "\n".join(lines) + "\n"


def solution(name: str) -> str:
    """The exercise's file with every answer filled in (the markers become plain comments)."""
    lines = []
    for line in source(name).splitlines():
        m = _TODO.match(line)
        if m:
            shape = f' {m["shape"]}' if m["shape"] else ""
            lines.append(f'{m["ind"]}# {m["name"]}{shape}: {m["hint"]}')
        elif not _END.match(line):
            lines.append(line)
    return "\n".join(lines) + "\n"


def answer(name: str, gname: str) -> str:
    """The solution's lines for one answer (``answer("mlp", "dW2")``): its comment and code, dedented."""
    lines, inside = [], False
    for line in source(name).splitlines():
        m = _TODO.match(line)
        if m and m["name"] == gname and m["kind"] == "TODO":
            shape = f' {m["shape"]}' if m["shape"] else ""
            lines.append(f'# {m["name"]}{shape}: {m["hint"]}')
            inside, indent = True, len(m["ind"])
        elif inside and _END.match(line):
            return "\n".join(lines) + "\n"
        elif inside:
            lines.append(line[indent:])
    known = [b[0] for b in blanks(name) if _has_todo(name, b[0])]
    raise MiniGPTError(f"exercise {name} has no answer {gname!r}; its answers: {', '.join(known)}")


def _has_todo(name, gname) -> bool:
    return any((m := _TODO.match(line)) and m["name"] == gname and m["kind"] == "TODO"
               for line in source(name).splitlines())


def setup(name: str):
    """``(p, c, g)`` of an exercise: its inputs, every intermediate of the forward (NumPy arrays; ``loss``
    a float) and the true gradients by name (``g["dh"]``), from minigpt's autograd."""
    ex = exercise(name)
    p = ex.inputs(np.random.default_rng(SEED))
    t = {k: Tensor(v, requires_grad=v.dtype.kind == "f") for k, v in p.items()}
    inter = ex.reference(t)
    for k, v in inter.items():
        if k != "loss" and v.requires_grad:
            v.retain_grad()
    inter["loss"].backward()
    c = {k: (float(v.data) if k == "loss" else v.data.copy()) for k, v in inter.items()}
    g = {}
    for gname, _, _ in blanks(name):
        var = ex.aliases.get(gname, gname[1:])
        node = inter.get(var, t.get(var))
        if node is None:
            continue  # a helper function, not a gradient
        g[gname] = node.grad.copy() if node.grad is not None else np.zeros_like(node.data)
    return p, c, g


# --- the report -----------------------------------------------------------------------------------------
@dataclass
class GradResult:
    """One gradient's verdict: ``status`` is "ok", "wrong" or "todo" (not filled in)."""
    name: str
    status: str
    shape: tuple
    message: str = ""
    max_err: float = 0.0
    index: tuple | None = None
    mistake: str | None = None
    hint: str = ""
    mask: np.ndarray | None = None   # True where an element is wrong (same shape as the gradient)


class CheckReport:
    """What ``check`` found: ``ok`` (every gradient right), ``results`` (one ``GradResult`` per gradient,
    in the order the exercise asks for them), ``problems`` (lines about the file as a whole: a forward
    that was changed, a backward that stopped with an exception). ``str(report)`` is the printout."""

    def __init__(self, name, where, results, problems):
        self.exercise, self.where, self.results, self.problems = name, where, results, problems
        self.ok = not problems and all(r.status == "ok" for r in results)

    def __getitem__(self, gname) -> GradResult:
        for r in self.results:
            if r.name == gname:
                return r
        raise KeyError(f"{gname!r}: exercise {self.exercise} checks {', '.join(r.name for r in self.results)}")

    @property
    def first_wrong(self) -> GradResult | None:
        return next((r for r in self.results if r.status != "ok"), None)

    def __str__(self) -> str:
        right = sum(r.status == "ok" for r in self.results)
        lines = [f"exercise {self.exercise} ({self.where}): {right} of {len(self.results)} gradients right"]
        lines += [f"  {p}" for p in self.problems]
        w = max((len(r.name) for r in self.results), default=4)
        first = self.first_wrong
        for r in self.results:
            tag = {"ok": "ok", "wrong": "WRONG", "todo": "TODO"}[r.status]
            lines.append(f"  {tag:<6}{r.name:<{w}}  {r.message}")
            if r.status == "wrong":
                m = r.mask
                if m is not None and 0 < m.ndim <= 2 and m.size <= 100 and not m.all():
                    rows = [m] if m.ndim == 1 else m
                    lines.append(f"  {'':<6}{'':<{w}}  wrong elements (x): " + " | ".join(
                        "".join("x" if v else "." for v in row) for row in rows))
                if r.mistake:
                    lines.append(f"  {'':<6}{'':<{w}}  looks like you {r.mistake}")
                if r is not first and first is not None and first.status == "wrong":
                    lines.append(f"  {'':<6}{'':<{w}}  (may only follow from {first.name}, wrong above: fix that first)")
                elif r.hint:
                    lines.append(f"  {'':<6}{'':<{w}}  hint: {r.hint}")
        if self.ok:
            lines.append(f"PASS: all {len(self.results)} gradients of {self.exercise} equal autograd's")
        elif self.problems and (first is None or first.status != "wrong"):
            lines.append(f"FAIL: {self.problems[0]}")
        elif first is not None and first.status == "wrong":
            lines.append(f"FAIL: {first.name} is the first wrong gradient; the ones below it are computed from it")
        elif first is not None:
            lines.append(f"FAIL: {first.name} is not filled in yet (it is the next one to write)")
        else:
            lines.append("FAIL: see above")
        return "\n".join(lines)

    def __repr__(self):
        return str(self)


def _fmt_index(idx) -> str:
    return "[" + ", ".join(str(i) for i in idx) + "]"


def _scale_mistake(k: float, means: dict) -> str | None:
    if abs(k + 1) < 1e-6:
        return "flipped the sign"
    n = round(k)
    if n >= 2 and abs(k - n) < 1e-6 * n:
        if n in means:
            return f"forgot the 1/N of the mean (N = {n}: {means[n]}); yours is {n} times the true gradient"
        return f"are off by a factor of {n} (a forgotten 1/{n}?)"
    if k > 0:
        n = round(1 / k)
        if n >= 2 and abs(1 / k - n) < 1e-6 * n:
            if n in means:
                return f"divided by N = {n} once too often ({means[n]}); yours is 1/{n} of the true gradient"
            if n == 2:
                return "forgot a factor 2 (the derivative of u ** 2 is 2 * u); yours is half the true gradient"
            return f"are off by a factor of 1/{n}"
    return f"are off by a constant factor {k:.6g}"


def _close(a, b) -> bool:
    if a.shape != b.shape:
        return False
    with np.errstate(invalid="ignore"):   # -inf against -inf (a causal mask) is equal, not NaN
        return bool(np.all((a == b) | (np.abs(a - b) <= ATOL + RTOL * np.abs(b))))


def _prop(a, b) -> bool:
    """a == k * b for some k != 0 (a gradient wrong only by a factor inherited from above keeps its shape)."""
    if a.shape != b.shape:
        return False
    b2 = float(np.sum(b * b))
    if b2 == 0:
        return False
    k = float(np.sum(a * b)) / b2
    return abs(k) > 1e-12 and _close(a, k * b)


def _diagnose(gname, yours, true, candidates, means, shape_text, hint) -> GradResult:
    """Compare one gradient; name the mistake when one explains it."""
    shape = tuple(true.shape)
    if yours is None:
        return GradResult(gname, "todo", shape, f"not filled in yet: {gname} should have shape {shape}", hint=hint)
    try:
        y = np.asarray(yours, dtype=np.float64)
    except (TypeError, ValueError):
        return GradResult(gname, "wrong", shape, f"is a {type(yours).__name__}, not an array of numbers",
                          hint=hint)
    if y.shape != shape:
        mistake = None
        if true.ndim == 2 and y.shape == true.T.shape and _prop(y, true.T):
            mistake = "transposed it: yours is the transpose of the true gradient"
        elif y.size == true.size and _prop(y.reshape(shape), true):
            mistake = "have the right numbers in the wrong shape (keepdims? reshape it)"
        else:
            try:
                extra = y.ndim - true.ndim
                padded = (1,) * extra + shape
                axes = tuple(i for i in range(y.ndim) if padded[i] == 1 and y.shape[i] != 1)
                if np.broadcast_shapes(shape, y.shape) == y.shape and _prop(
                        y.sum(axis=axes, keepdims=True).reshape(shape), true):
                    mistake = (f"forgot to sum over axis {', '.join(map(str, axes))}: the variable was broadcast "
                               "along it in the forward, so its gradient sums along it")
            except ValueError:
                pass
            if mistake is None:
                mistake = "summed over the wrong axis (or kept a broadcast axis): a gradient has its variable's shape"
        return GradResult(gname, "wrong", shape, f"has shape {y.shape}, but it must have {shape}", mistake=mistake,
                          hint=hint)
    if not np.all(np.isfinite(y)):
        idx = tuple(int(i) for i in np.argwhere(~np.isfinite(y))[0])
        return GradResult(gname, "wrong", shape, f"has a NaN or infinity at {_fmt_index(idx)}", index=idx, hint=hint,
                          mask=~np.isfinite(y))
    err = np.abs(y - true)
    bad = err > ATOL + RTOL * np.abs(true)
    if not bad.any():
        e = float(err.max()) if err.size else 0.0
        # rounding differences (~1e-16: a kernel summing in another order) are not worth a number on the page
        return GradResult(gname, "ok", shape, "equals autograd's" + (f" (max err {e:.1e})" if e >= 1e-12 else ""),
                          max_err=e)
    idx = tuple(int(i) for i in np.unravel_index(int(np.argmax(err)), err.shape))
    msg = (f"max err {float(err[idx]):.3g} at {_fmt_index(idx)}: yours {float(y[idx]):.6g}, autograd "
           f"{float(true[idx]):.6g} ({int(bad.sum())} of {bad.size} elements wrong)")
    mistake = None
    for label, arr in candidates:
        if arr is not None and _close(y, np.asarray(arr, dtype=np.float64)):
            mistake = label
            break
    if mistake is None and true.ndim == 2 and true.shape[0] == true.shape[1] and _close(y, true.T):
        mistake = "transposed it: yours is the transpose of the true gradient"
    if mistake is None:
        t2 = float(np.sum(true * true))
        if t2 > 0:
            k = float(np.sum(y * true)) / t2
            if abs(k) > 1e-12 and _close(y, k * true):
                mistake = _scale_mistake(k, means)
    return GradResult(gname, "wrong", shape, msg, max_err=float(err[idx]), index=idx, mistake=mistake, hint=hint,
                      mask=bad)


# --- running the student's file --------------------------------------------------------------------------
def load(path) -> dict:
    """Run a student's exercise file and return its namespace; a file that cannot be read or run is a
    MiniGPTError naming it (one line)."""
    path = Path(path)
    if not path.exists():
        raise MiniGPTError(f"{path}: no such file (start one with `minigpt exercises start NAME`)")
    if not path.is_file():
        raise MiniGPTError(f"{path}: not a file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise MiniGPTError(f"{path}: cannot be read ({e})") from None
    try:
        code = compile(text, str(path), "exec")
    except SyntaxError as e:
        raise MiniGPTError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    ns = {"__name__": "minigpt_exercise", "__file__": str(path)}
    try:
        exec(code, ns)  # noqa: S102 - the student's own file, run like `python FILE`
    except Exception as e:  # noqa: BLE001
        raise MiniGPTError(f"{path}:{_line_in(e, str(path))}: running the file raised "
                           f"{type(e).__name__}: {_first_line(e)}") from None
    if not callable(ns.get("backward")):
        raise MiniGPTError(f"{path}: defines no function backward(p, c); start from a fresh template with "
                           "`minigpt exercises start NAME`")
    return ns


def _first_line(e) -> str:
    return (str(e).splitlines() or [""])[0]


def _line_in(e, filename) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == filename]
    return str(frames[-1].lineno) if frames else "?"


def _locals_at(e, fn) -> dict:
    """The variables of ``fn``'s frame where exception ``e`` stopped it: the gradients written so far can
    still be checked."""
    code = getattr(fn, "__code__", None)
    tb = e.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            return {k: v for k, v in tb.tb_frame.f_locals.items() if k.startswith("d")}
        tb = tb.tb_next
    return {}


def _copy(d):
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def check(name: str, student, forward=None) -> CheckReport:
    """Check a student's gradients for exercise ``name``.

    ``student``: the path of their file (which defines ``backward(p, c)`` and, as given, ``forward(p)``),
    or the ``backward`` function itself (a notebook's; pass ``forward`` too to check it is unchanged).
    Returns a ``CheckReport``; ``report.ok`` is True only when every gradient is right.
    """
    ex = exercise(name)
    if isinstance(student, (str, Path)):
        where = str(student)
        ns = load(student)
        other = re.match(r"\s*Exercise `(\w+)`", ns.get("__doc__") or "")   # the template's first line
        if other and other[1] != name and other[1] in EXERCISES:
            raise MiniGPTError(f"{where} is the exercise {other[1]}, not {name}: check it with "
                               f"`minigpt exercises check {other[1]} {where}`")
        backward, forward = ns["backward"], ns.get("forward")
    elif callable(student):
        where, backward = getattr(student, "__name__", "backward"), student
    else:
        raise MiniGPTError(f"check({name!r}, ...): pass the path of your file or your backward function, "
                           f"not a {type(student).__name__}")
    p, c, g = setup(name)
    problems = []
    if forward is not None:
        try:
            fc = forward(_copy(p))
            changed = [k for k in c if k in fc and not _close(np.asarray(fc[k], dtype=np.float64), np.asarray(c[k]))]
        except Exception as e:  # noqa: BLE001
            changed = [f"(it raised {type(e).__name__}: {_first_line(e)})"]
        if changed:
            problems.append(f"your forward differs from the reference at {', '.join(changed)}: the forward is "
                            f"given, restore it (`minigpt exercises start {name} --force` writes a fresh file)")
    answers = {}
    try:
        answers = backward(_copy(p), _copy(c))
    except NotImplementedError as e:
        problems.append(f"not filled in yet: {_first_line(e)}")
        answers = _locals_at(e, backward)
    except Exception as e:  # noqa: BLE001 - the student's code: report, do not crash
        answers = _locals_at(e, backward)
        fname = getattr(getattr(backward, "__code__", None), "co_filename", "")
        line = _line_in(e, fname)
        code = linecache.getline(fname, int(line)).strip() if line != "?" else ""
        unset = [n for n in re.findall(r"[A-Za-z_]\w*", code) if n in answers and answers[n] is None]
        problems.append(f"backward stopped at line {line}{f' ({code})' if code else ''} with {type(e).__name__}: "
                        f"{_first_line(e)}" + (f" - {unset[0]} is still None: fill the gradients in from the top"
                                               if unset else ""))
    if answers is None or not isinstance(answers, dict):
        if not problems:
            problems.append(f"backward returned {type(answers).__name__}, not a dict of gradients "
                            "(end it with `return dict(...)` as in the template)")
        answers = {}
    try:
        mistakes = ex.mistakes(p, c, g) if ex.mistakes else {}
    except Exception:  # noqa: BLE001 - a candidate that cannot be computed names nothing
        mistakes = {}
    results = []
    for gname, shape_text, hint in blanks(name):
        if gname not in g:
            continue
        results.append(_diagnose(gname, answers.get(gname), g[gname], mistakes.get(gname, ()), ex.means,
                                 shape_text, hint))
    return CheckReport(name, where, results, problems)
