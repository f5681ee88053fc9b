"""Finite-difference gradient checking, for minigpt's own tests and for users' ops.

``gradcheck(fn, *inputs)`` evaluates ``fn`` on the inputs (cast to float64), reduces its output to a scalar
with fixed random weights ``sum(out * w)``, back-propagates once, and compares every element of every
input's gradient with the central difference ``(f(x + eps) - f(x - eps)) / (2 eps)``
(:func:`numeric_gradient`, which also serves array-level code such as the kernels' tests).
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .errors import MiniGPTError
from .ops import mul, sum as tsum
from .tensor import Function, Tensor, no_grad


def numeric_gradient(f, arrays, eps: float = 1e-6) -> list:
    """Central differences ``(f(x + eps) - f(x - eps)) / (2 eps)`` of the scalar ``f()`` with respect to
    every element of each NumPy array in ``arrays`` (arrays that ``f`` reads: each element is perturbed in
    place, then restored). Returns one float64 array of the input's shape per array.

        >>> x = np.array([1.0, 2.0])
        >>> numeric_gradient(lambda: float((x ** 2).sum()), [x])[0].round(6)
        array([2., 4.])
    """
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not math.isfinite(eps) or eps <= 0:
        raise MiniGPTError(f"numeric_gradient: eps must be a finite number > 0, got {eps!r}")
    grads = []
    for a in arrays:
        g = np.zeros(a.shape, dtype=np.float64)
        for idx in np.ndindex(a.shape):
            old = a[idx]
            a[idx] = old + eps
            fp = f()
            a[idx] = old - eps
            fm = f()
            a[idx] = old
            g[idx] = (fp - fm) / (2 * eps)
        grads.append(g)
    return grads


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree; the message names the worst element."""


def check_tolerances(eps, atol, rtol, seed=0) -> None:
    """Refuse settings that would make every comparison meaningless: ``eps`` must be a finite number > 0,
    ``atol`` and ``rtol`` finite numbers >= 0 (a NaN tolerance would pass any gradient), ``seed`` an
    integer >= 0."""
    for name, v, positive in (("eps", eps, True), ("atol", atol, False), ("rtol", rtol, False)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0 \
                or (positive and v == 0):
            raise MiniGPTError(f"gradcheck: {name} must be a finite number {'> 0' if positive else '>= 0'}, "
                               f"got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise MiniGPTError(f"gradcheck: seed must be an integer >= 0, got {seed!r}")


def _to64(x):
    """A float64 tensor for a float input (sharing memory when it already is float64, so strided
    inputs stay strided); other arguments pass through."""
    if isinstance(x, Tensor) and x.dtype.kind == "f":
        data = x.data if x.dtype == np.float64 else x.data.astype(np.float64)
        return Tensor(data, requires_grad=x.requires_grad)
    return x


def gradcheck(fn, *inputs, eps: float = 1e-6, atol: float = 1e-8, rtol: float = 1e-6, seed: int = 0,
              raise_on_failure: bool = True) -> dict:
    """Check the autograd gradient of ``fn(*inputs)`` against central finite differences in float64.

    ``inputs``: tensors (those with ``requires_grad=True`` are checked; float ones are cast to float64)
    and any other arguments, passed through. An element passes when
    ``|analytic - numeric| <= atol + rtol * |numeric|``.

    A NaN or infinity in either gradient (analytic or numeric) is a failure, naming the first such element
    (check points where the function is differentiable: not ``sqrt`` at 0 or ``log`` at -1).

    ``fn`` may be a ``Function`` subclass (your own op): its ``apply`` is called. If its backward fails
    (e.g. it returns fewer gradients than the op has inputs), that error is the report's cause.

    Returns a report ``{"ok", "max_abs_err", "max_rel_err", "worst": {...}, "grads": {i: (analytic,
    numeric)}, "masks": {i: failing}}`` (``grads``: the two gradient arrays of every checked input ``i``;
    ``masks``: True where an element fails; ``error``: the message, when backward itself failed; print
    the side by side table with :func:`format_report`): ``max_abs_err`` is the
    largest ``|analytic - numeric|``; ``max_rel_err`` the largest ``|analytic - numeric| / |numeric|`` over
    the elements whose absolute error exceeds ``atol`` (others count as 0); ``worst`` the element with the
    largest ``|analytic - numeric| - (atol + rtol * |numeric|)`` as ``{"input", "index", "analytic",
    "numeric"}`` (``input``: the position among ``inputs``; the first non-finite element instead, with
    ``"non_finite": True``, when there is one). Raises
    ``GradcheckError`` naming the worst element (input, index, analytic and numeric values) when an
    element fails and ``raise_on_failure`` is true.
    """
    check_tolerances(eps, atol, rtol, seed)
    if isinstance(fn, type) and issubclass(fn, Function):
        fn = fn.apply
    inputs = [_to64(x) for x in inputs]
    checked = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not checked:
        raise MiniGPTError("gradcheck: no input requires grad; pass tensors with requires_grad=True")

    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise MiniGPTError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    if out.dtype != np.float64:
        raise MiniGPTError(f"gradcheck: fn returned {out.dtype} for float64 inputs; it must stay in float64")
    w = np.random.default_rng(seed).standard_normal(out.shape)

    def scalar(args):
        with no_grad():
            o = fn(*args)
        return float(np.sum(o.data * w))

    report = {"ok": True, "max_abs_err": 0.0, "max_rel_err": 0.0, "worst": None, "grads": {}, "masks": {}}
    try:
        tsum(mul(out, Tensor(w))).backward()
    except RuntimeError as e:   # an op's backward broke its contract (wrong number or shape of gradients)
        report.update(ok=False, max_abs_err=float("nan"), error=str(e))
        if raise_on_failure:
            raise GradcheckError(f"gradcheck: backward failed: {e}") from None
        return report
    worst_score = -1.0
    for i in checked:
        x = inputs[i]
        analytic = x.grad if x.grad is not None else np.zeros_like(x.data)
        (numeric,) = numeric_gradient(lambda: scalar(inputs), [x.data], eps)
        report["grads"][i] = (analytic, numeric)
        # a NaN or infinity on either side is a failure (never a match, even NaN against NaN)
        bad = ~(np.isfinite(analytic) & np.isfinite(numeric))
        with np.errstate(invalid="ignore"):
            report["masks"][i] = bad | (np.abs(analytic - numeric) > atol + rtol * np.abs(numeric))
        if bad.any():
            k = tuple(int(v) for v in np.argwhere(bad)[0])
            report["ok"] = False
            report["max_abs_err"] = float("nan")
            report["worst"] = {"input": i, "index": k, "analytic": float(analytic[k]), "numeric": float(numeric[k]),
                               "non_finite": True}
            break
        err = np.abs(analytic - numeric)
        tol = atol + rtol * np.abs(numeric)
        if err.size:
            score = err - tol
            j = int(np.argmax(score))
            k = np.unravel_index(j, err.shape)
            rel = err / np.maximum(np.abs(numeric), 1e-300)
            report["max_abs_err"] = max(report["max_abs_err"], float(err.max()))
            report["max_rel_err"] = max(report["max_rel_err"], float(np.max(np.where(err > atol, rel, 0.0))))
            if score[k] > worst_score:
                worst_score = float(score[k])
                report["worst"] = {"input": i, "index": tuple(int(v) for v in k),
                                   "analytic": float(analytic[k]), "numeric": float(numeric[k])}
            if score[k] > 0:
                report["ok"] = False
    if not report["ok"] and raise_on_failure:
        wst = report["worst"]
        if wst.get("non_finite"):
            raise GradcheckError(
                f"gradcheck failed for input {wst['input']} at index {wst['index']}: analytic {wst['analytic']!r} vs "
                f"numeric {wst['numeric']!r} (a NaN or infinity is never a match: the function is not differentiable "
                "there, or its backward is wrong)")
        raise GradcheckError(
            f"gradcheck failed for input {wst['input']} at index {wst['index']}: analytic {wst['analytic']:.10g}"
            f" vs numeric {wst['numeric']:.10g} (max abs err {report['max_abs_err']:.3g}, "
            f"atol={atol}, rtol={rtol})\n" + format_report(report)
        )
    return report


def format_report(report: dict, names=None, worst: int = 5) -> str:
    """A ``gradcheck`` report as text: for every checked input, the ``worst`` elements' analytic and numeric
    gradients side by side with their error, and the mask of the failing elements (``x`` fails, ``.``
    passes; for inputs of at most 2 dimensions and 400 elements). ``names``: a name per checked input
    (default ``input 0``, ``input 1``, ... by position among the arguments)."""
    if report.get("error"):
        return f"FAIL: backward failed: {report['error']}"
    lines = []
    for k, (i, (a, n)) in enumerate(report["grads"].items()):
        name = names[k] if names else f"input {i}"
        mask = report["masks"].get(i, np.zeros(a.shape, bool))
        with np.errstate(invalid="ignore"):
            err = np.abs(a - n)
        lines.append(f"{name} {tuple(a.shape)}: {int(mask.sum())} of {mask.size} elements fail")
        lines.append(f"  {'index':<16}{'analytic':>20}{'numeric':>20}{'abs err':>12}")
        order = np.argsort(-np.nan_to_num(err, nan=np.inf), axis=None, kind="stable")[:worst]
        for j in order:
            idx = np.unravel_index(j, a.shape)
            lines.append(f"  {str(tuple(int(v) for v in idx)):<16}{a[idx]:>20.12g}{n[idx]:>20.12g}{err[idx]:>12.3g}")
        if mask.any() and mask.ndim <= 2 and mask.size <= 400:
            rows = mask.reshape(1, -1) if mask.ndim < 2 else mask
            lines.append("  failing elements (x):")
            lines += ["    " + "".join("x" if v else "." for v in row) for row in rows]
    lines.append(("PASS" if report["ok"] else "FAIL") + f": max abs err {report['max_abs_err']:.3g}")
    return "\n".join(lines)
