"""``minigpt gradcheck OP --shape ...``: check any function of ``minigpt.functional`` by name.

The inputs are random float64 tensors of the given shapes (one ``--shape`` per tensor input, in the
function's argument order; the others follow from the first: e.g. ``layer_norm`` takes ``--shape 4,16``
and makes weight and bias (16,)). Integer inputs (token ids, targets) and masks are drawn to fit.
Keyword arguments come as ``--kw name=value`` (Python literals: ``eps=1e-5``, ``axis=0``,
``shape=(8,2)``). Your own op is checked the same way as ``FILE.py:NAME``: a ``Function`` subclass (its
``apply`` is called) or a function of tensors defined in that file, one float64 input per ``--shape``.

Example::

    >>> rep = check_op("layer_norm", [(4, 16)])
    >>> rep["ok"], sorted(rep["inputs"])
    (True, ['bias', 'weight', 'x'])
"""
from __future__ import annotations

import ast
import difflib
import inspect as pyinspect
import runpy
from pathlib import Path

import numpy as np

from .. import functional as F
from ..errors import MiniGPTError
from ..gradcheck import check_tolerances, gradcheck
from ..tensor import Function, Tensor

# How each function's inputs are made. Kinds: "float" (checked), "pos" (float > 0, checked), "ids"
# (integers below the size given by ``hi``), "bool" (a random mask). ``default`` gives the shape of an input
# whose --shape was not passed, from the shapes made so far.
_SAME = lambda s: s[0]  # noqa: E731
_LAST = lambda s: s[0][-1:]  # noqa: E731
_SQUARE = lambda s: (s[0][-1], s[0][-1])  # noqa: E731
_SPECS = {
    "add": [("a", "float", None), ("b", "float", _SAME)],
    "sub": [("a", "float", None), ("b", "float", _SAME)],
    "mul": [("a", "float", None), ("b", "float", _SAME)],
    "div": [("a", "float", None), ("b", "pos", _SAME)],
    "matmul": [("a", "float", None), ("b", "float", _SQUARE)],
    "log": [("x", "pos", None)],
    "sqrt": [("x", "pos", None)],
    "pow": [("a", "pos", None)],
    "layer_norm": [("x", "float", None), ("weight", "float", _LAST), ("bias", "float", _LAST)],
    "linear": [("x", "float", None), ("weight", "float", _SQUARE), ("bias", "float", lambda s: s[1][-1:])],
    "linear_gelu": [("x", "float", None), ("weight", "float", _SQUARE), ("bias", "float", lambda s: s[1][-1:])],
    "linear_t": [("x", "float", None), ("weight", "float", lambda s: (8, s[0][-1]))],
    "cross_entropy": [("logits", "float", None), ("targets", "ids", lambda s: s[0][:-1])],
    "linear_cross_entropy": [("x", "float", None), ("weight", "float", lambda s: (8, s[0][-1])),
                             ("targets", "ids", lambda s: s[0][:-1])],
    "embedding": [("ids", "ids", None), ("weight", "float", lambda s: (10, 8))],
    # the op training runs: x (N, C) -> w1 (C, 2C), b1 (2C,), w2 (2C, C), b2 (C,)
    "feed_forward": [("x", "float", None), ("w1", "float", lambda s: (s[0][-1], 2 * s[0][-1])),
                     ("b1", "float", lambda s: s[1][-1:]), ("w2", "float", lambda s: (s[1][-1], s[0][-1])),
                     ("b2", "float", lambda s: s[0][-1:])],
    # a LoRA update scale * x @ A @ B: x (N, in) -> A (in, 2), B (2, in)
    "lora": [("x", "float", None), ("a", "float", lambda s: (s[0][-1], 2)), ("b", "float", lambda s: (2, s[0][-1]))],
    "where": [("cond", "bool", None), ("a", "float", _SAME), ("b", "float", _SAME)],
    "masked_fill": [("x", "float", None), ("mask", "bool", _SAME)],
    "rms_norm": [("x", "float", None), ("weight", "float", _LAST)],
    "silu_mul": [("a", "float", None), ("b", "float", _SAME)],
    "swiglu": [("x", "float", None), ("w_gate", "float", lambda s: (s[0][-1], 2 * s[0][-1])),
               ("w_up", "float", lambda s: s[1]), ("w_down", "float", lambda s: s[1][::-1])],
}
_LISTS = {"concatenate", "cat", "stack"}  # take a list of tensors: one per --shape (default: two alike)
_DEFAULT_KW = {"dropout": {"rng": 0}, "masked_fill": {"value": 0.0}}
_ID_RANGE = {"cross_entropy": lambda s: s[0][-1], "linear_cross_entropy": lambda s: s[1][0],
             "embedding": lambda s: s[1][0]}


def parse_shape(text: str) -> tuple:
    """'4,16' -> (4, 16); '' or '()' -> () (a scalar)."""
    t = text.strip().strip("()[] ")
    if not t:
        return ()
    try:
        shape = tuple(int(p) for p in t.split(",") if p.strip())
    except ValueError:
        raise MiniGPTError(f"--shape {text!r}: expected comma-separated sizes such as 4,16") from None
    if any(n < 1 for n in shape):
        raise MiniGPTError(f"--shape {text!r}: sizes must be >= 1")
    return shape


def parse_kw(items) -> dict:
    """['eps=1e-5', 'axis=0'] -> {'eps': 1e-05, 'axis': 0} (values are Python literals, else strings)."""
    out = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise MiniGPTError(f"--kw {item!r}: expected NAME=VALUE, e.g. eps=1e-5")
        try:
            val = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            val = value.strip()
        out[name.strip()] = val
    return out


def _user_function(name: str):
    """``FILE.py:NAME``: a Function subclass (its ``apply``) or a function defined in a Python file of yours."""
    file, _, attr = name.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise MiniGPTError(f"{file}: no such file (a user op is named FILE.py:NAME)")
    try:
        ns = runpy.run_path(str(path), run_name="minigpt_user_ops")
    except SyntaxError as e:
        raise MiniGPTError(f"{file}:{e.lineno}: syntax error: {e.msg}") from None
    except Exception as e:  # noqa: BLE001 - the user's file: one line, not a traceback
        raise MiniGPTError(f"{file}: running it raised {type(e).__name__}: {(str(e).splitlines() or [''])[0]}") from None
    obj = ns.get(attr)
    if isinstance(obj, type) and issubclass(obj, Function):
        return obj.apply
    if obj is None or not callable(obj) or isinstance(obj, type):
        ops = sorted(k for k, v in ns.items() if isinstance(v, type) and issubclass(v, Function) and v is not Function)
        raise MiniGPTError(f"{file} defines no Function subclass or function named {attr!r}"
                           + (f" (its Functions: {', '.join(ops)})" if ops else ""))
    return obj


def _function(name: str):
    if ":" in name:
        return _user_function(name)
    if name not in F.__all__:
        close = difflib.get_close_matches(name, F.__all__, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise MiniGPTError(f"unknown op {name!r}: not a function of minigpt.functional{hint} "
                           f"(known: {', '.join(sorted(F.__all__))})")
    if name == "split":
        raise MiniGPTError("split returns a list of tensors; check its gradient through concatenate or getitem")
    return getattr(F, name)


def _spec(name: str, fn, n_shapes: int):
    if ":" in name:   # a user's op: one float input per --shape
        return [(f"input{i}", "float", None) for i in range(max(n_shapes, 1))]
    if name in _SPECS:
        return _SPECS[name]
    if name in _LISTS:
        return [(f"tensors[{i}]", "float", None if i == 0 else _SAME) for i in range(max(n_shapes, 2))]
    return [("x", "float", None)]  # unary ops and the rest: one tensor input


def check_op(name: str, shapes: list, kwargs: dict | None = None, seed: int = 0, eps: float = 1e-6,
             atol: float = 1e-8, rtol: float = 1e-6) -> dict:
    """Gradcheck ``minigpt.functional.<name>`` on random float64 inputs of ``shapes``.

    Returns ``{"ok", "op", "kwargs", "inputs": {input name: {"shape", "analytic", "numeric"}},
    "max_abs_err", "max_rel_err"}``.
    """
    check_tolerances(eps, atol, rtol, seed)
    fn = _function(name)
    kwargs = {**_DEFAULT_KW.get(name, {}), **(kwargs or {})}
    shapes = [tuple(s) for s in shapes]
    if not shapes:
        raise MiniGPTError(f"gradcheck {name}: give the shape of its first input, e.g. --shape 4,16")
    spec = _spec(name, fn, len(shapes))
    if len(shapes) > len(spec):
        raise MiniGPTError(f"gradcheck {name}: {len(shapes)} --shape given but it takes {len(spec)} tensor "
                           f"input(s): {', '.join(s[0] for s in spec)}")
    made = list(shapes)
    try:
        for i in range(len(shapes), len(spec)):
            made.append(tuple(spec[i][2](made)))
    except IndexError:  # the other inputs' shapes follow from the first's last axes: it has too few
        raise MiniGPTError(f"gradcheck {name}: --shape {','.join(map(str, shapes[0]))!r} has too few dimensions "
                           f"for {name}'s inputs ({', '.join(s[0] for s in spec)})") from None
    rng = np.random.default_rng(seed)
    args, checked, names = [], [], []
    for (iname, kind, _), shape in zip(spec, made):
        if kind == "ids":
            try:
                hi = _ID_RANGE[name](made)
            except IndexError:
                raise MiniGPTError(f"gradcheck {name}: --shape {','.join(map(str, shapes[0]))!r} has too few "
                                   f"dimensions for {name}'s inputs ({', '.join(s[0] for s in spec)})") from None
            args.append(rng.integers(0, hi, size=shape))
        elif kind == "bool":
            args.append(rng.random(shape) < 0.3)
        else:
            data = rng.standard_normal(shape)
            if kind == "pos":
                data = np.abs(data) + 0.5
            t = Tensor(data, requires_grad=True)
            args.append(t)
            checked.append(len(args) - 1)
            names.append(iname)

    def run(*ts):
        full = list(args)
        for j, t in zip(checked, ts):
            full[j] = t
        if name in _LISTS:
            return fn(full, **kwargs)
        return fn(*full, **kwargs)

    desc = ", ".join(f"{n} {s}" for (n, _, _), s in zip(spec, made))
    try:
        sig = pyinspect.signature(fn)
        sig.bind(*([None] if name in _LISTS else [None] * len(spec)), **kwargs)
    except ValueError:   # no signature to read (a builtin): let the call itself say what is wrong
        pass
    except TypeError as e:
        hint = " (pass it with --kw NAME=VALUE)" if "missing" in str(e) else ""
        raise MiniGPTError(f"gradcheck {name}({desc}): {e}{hint}; its signature is {name}{sig}") from None
    try:
        rep = gradcheck(run, *[args[j] for j in checked], eps=eps, atol=atol, rtol=rtol, seed=seed,
                        raise_on_failure=False)
    except (MiniGPTError, ValueError, TypeError, IndexError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MiniGPTError(f"gradcheck {name}({desc}): {msg}") from None
    inputs = {}
    for k, j in enumerate(checked):
        if k not in rep["grads"]:  # gradcheck stopped at a NaN/inf in an earlier input
            continue
        analytic, numeric = rep["grads"][k]  # gradcheck numbers the tensors it was given: the checked ones
        inputs[names[k]] = {"shape": tuple(args[j].shape), "analytic": analytic, "numeric": numeric}
    worst = rep["worst"] or {}
    return {"ok": rep["ok"], "op": name, "error": rep.get("error"), "non_finite": bool(worst.get("non_finite")), "kwargs": kwargs, "inputs": inputs, "shapes": made,
            "max_abs_err": rep["max_abs_err"], "max_rel_err": rep["max_rel_err"],
            "atol": atol, "rtol": rtol, "eps": eps}


def format_report(rep: dict, worst: int = 5) -> str:
    """The analytic and numeric gradients side by side for the ``worst`` elements of every input."""
    kw = ", ".join(f"{k}={v!r}" for k, v in rep["kwargs"].items())
    lines = [f"gradcheck {rep['op']}" + (f" ({kw})" if kw else "") + f": float64, central differences "
             f"with eps={rep['eps']:g}; an element passes when |analytic - numeric| <= {rep['atol']:g} + "
             f"{rep['rtol']:g} * |numeric|"]
    if rep.get("error"):   # the op's backward broke its contract (e.g. too few gradients): that is the finding
        return "\n".join(lines + ["", f"FAIL: {rep['op']}: backward failed: {rep['error']}"])
    total = 0
    for iname, d in rep["inputs"].items():
        a, n = d["analytic"], d["numeric"]
        err = np.abs(a - n)
        total += err.size
        lines.append("")
        lines.append(f"input {iname} {d['shape']}: max abs err {err.max() if err.size else 0:.3g}")
        lines.append(f"  {'index':<16}{'analytic':>22}{'numeric':>22}{'abs err':>12}")
        flat = np.argsort(-err, axis=None, kind="stable")[:worst]
        for j in flat:
            idx = np.unravel_index(j, err.shape)
            lines.append(f"  {str(tuple(int(v) for v in idx)):<16}{a[idx]:>22.12g}{n[idx]:>22.12g}"
                         f"{err[idx]:>12.3g}")
        with np.errstate(invalid="ignore"):
            fail = ~(err <= rep["atol"] + rep["rtol"] * np.abs(n))   # NaN counts as failing
        if fail.any() and fail.ndim <= 2 and fail.size <= 400:
            lines.append(f"  failing elements (x), {int(fail.sum())} of {fail.size}:")
            lines += ["    " + "".join("x" if v else "." for v in row) for row in fail.reshape(-1, fail.shape[-1])
                      if fail.ndim] or ["    x"]
    lines.append("")
    verdict = "PASS" if rep["ok"] else "FAIL"
    rel = max((float(np.max(np.abs(d["analytic"] - d["numeric"])
                            / np.maximum(np.maximum(np.abs(d["analytic"]), np.abs(d["numeric"])), 1e-8)))
               for d in rep["inputs"].values() if d["numeric"].size), default=0.0)
    if rep.get("non_finite"):
        verdict += " (a gradient is NaN or infinite: pick inputs where the function is differentiable)"
    lines.append(f"{verdict}: {rep['op']}, {total} gradient elements; max abs err {rep['max_abs_err']:.3g}, "
                 f"max rel err {rel:.3g}")
    return "\n".join(lines)
