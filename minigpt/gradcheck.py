"""Finite-difference gradient checking, for minigpt's own tests and for users' ops.

``gradcheck(fn, *inputs)`` evaluates ``fn`` on the inputs (cast to float64), reduces its output to a scalar
with fixed random weights ``sum(out * w)``, back-propagates once, and compares every element of every
input's gradient with the central difference ``(f(x + eps) - f(x - eps)) / (2 eps)``.
"""
from __future__ import annotations

import numpy as np

from .errors import MiniGPTError
from .tensor import Tensor, no_grad


class GradcheckError(AssertionError):
    """The analytic and numeric gradients disagree; the message names the worst element."""


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

    Returns a report ``{"ok", "max_abs_err", "max_rel_err", "worst": {...}, "grads": {i: (analytic,
    numeric)}}`` (the two gradient arrays of every checked input ``i``); raises
    ``GradcheckError`` naming the worst element (input, index, analytic and numeric values) when an
    element fails and ``raise_on_failure`` is true.
    """
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

    from .ops import mul, sum as tsum

    tsum(mul(out, Tensor(w))).backward()

    report = {"ok": True, "max_abs_err": 0.0, "max_rel_err": 0.0, "worst": None, "grads": {}}
    worst_score = -1.0
    for i in checked:
        x = inputs[i]
        analytic = x.grad if x.grad is not None else np.zeros_like(x.data)
        numeric = np.zeros_like(x.data)
        flat = x.data.reshape(-1) if x.data.flags.c_contiguous else None
        if flat is None:  # non-contiguous input: perturb through an index view
            it = np.ndindex(x.data.shape)
        else:
            it = range(flat.size)
        for idx in it:
            arr = flat if flat is not None else x.data
            orig = arr[idx]
            arr[idx] = orig + eps
            fp = scalar(inputs)
            arr[idx] = orig - eps
            fm = scalar(inputs)
            arr[idx] = orig
            num = (fp - fm) / (2 * eps)
            if flat is not None:
                numeric.reshape(-1)[idx] = num
            else:
                numeric[idx] = num
        report["grads"][i] = (analytic, numeric)
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
        raise GradcheckError(
            f"gradcheck failed for input {wst['input']} at index {wst['index']}: analytic {wst['analytic']:.10g}"
            f" vs numeric {wst['numeric']:.10g} (max abs err {report['max_abs_err']:.3g}, "
            f"atol={atol}, rtol={rtol})"
        )
    return report
