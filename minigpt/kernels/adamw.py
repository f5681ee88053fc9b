"""Fused AdamW update and a float64 sum of squares, as Numba kernels over flat contiguous arrays.

``adamw_update`` does the whole AdamW step for one parameter in a single pass over memory (read p, g, m, v;
write p, m, v), in the same order of operations as ``torch.optim.AdamW`` so results agree to float32
rounding:

    p  <- p * (1 - lr * weight_decay)                      decoupled weight decay
    m  <- m + (1 - beta1) * (g - m)                        first moment (torch's lerp)
    v  <- v * beta2 + (1 - beta2) * g * g                  second moment
    p  <- p + (-lr / bias_correction1) * m / (sqrt(v) / sqrt(bias_correction2) + eps)

The scalar factors are computed once in float64 and handed to the kernel in the arrays' dtype, as torch
does, so a float32 parameter is updated entirely in float32 arithmetic (and vectorises as such).

Like every kernel module here, the fast kernel (``adamw_update_numba``) sits beside its plain NumPy
reference (``adamw_update_numpy``); the declaration ``adamw_update = kernel(adamw_update_numpy,
adamw_update_numba)`` runs the one the kernel backend selects (``minigpt.kernels.set_backend("numpy")`` or
``MINIGPT_KERNELS=numpy``).

``sum_squares`` accumulates in float64 whatever the array's dtype; gradient clipping uses it for the global
norm. Both kernels know nothing of Tensor or Parameter: they take and modify NumPy arrays.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..errors import MiniGPTError
from .fastmath import renamed_copy
from .registry import kernel

# Below this many elements a parallel launch costs more than it saves (a launch costs 2-150 us, see
# minigpt/runtime.py), and at 0.6M float32 values the serial loop (~0.35 ms, memory-bound) was still
# as fast as the parallel one.
PARALLEL_THRESHOLD = 1 << 20


# error_model="numpy": no zero-division check inside the loop, so LLVM vectorises it (the Python error
# model's branch per division kept this loop scalar: 2.5x slower). No fastmath: results stay bit-faithful.
def _adamw(p, g, m, v, decay, beta1c, beta2, beta2c, neg_step, bc2_sqrt, eps):
    for i in prange(p.size):
        gi = g[i]
        mi = m[i]
        mi = mi + beta1c * (gi - mi)
        vi = v[i] * beta2
        vi = vi + beta2c * gi * gi
        m[i] = mi
        v[i] = vi
        pi = p[i] * decay
        p[i] = pi + neg_step * mi / (np.sqrt(vi) / bc2_sqrt + eps)


# One loop, two builds: serial (prange runs as range) for small tensors, parallel for large ones.
_adamw_serial = njit(cache=True, error_model="numpy")(_adamw)
_adamw_parallel = njit(cache=True, parallel=True, error_model="numpy")(renamed_copy(_adamw, "_parallel"))


# reassoc lets LLVM vectorise the float64 sum (a different summation order, same float64 accuracy class)
@njit(cache=True, fastmath={"reassoc"})
def _sumsq_serial(x):
    s = 0.0
    for i in range(x.size):
        xi = np.float64(x[i])
        s += xi * xi
    return s


@njit(cache=True, parallel=True, fastmath={"reassoc"})
def _sumsq_parallel(x):
    s = 0.0
    for i in prange(x.size):
        xi = np.float64(x[i])
        s += xi * xi
    return s


def _check_flat(name, a, dtype, n):
    if not isinstance(a, np.ndarray):
        raise MiniGPTError(f"adamw_update: {name} must be a NumPy array, got {type(a).__name__}")
    if a.ndim != 1 or not a.flags.c_contiguous:
        raise MiniGPTError(f"adamw_update: {name} must be a flat contiguous array (got shape {a.shape})")
    if a.dtype != dtype:
        raise MiniGPTError(f"adamw_update: {name} has dtype {a.dtype}, expected {dtype} like the parameter")
    if a.size != n:
        raise MiniGPTError(f"adamw_update: {name} has {a.size} elements, the parameter has {n}")


def _prepare(p, g, m, v, lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2):
    if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
        raise MiniGPTError(f"adamw_update: parameter must be a float32 or float64 array, got "
                           f"{getattr(p, 'dtype', type(p).__name__)}")
    n = p.size
    for name, a in (("p", p), ("g", g), ("m", m), ("v", v)):
        _check_flat(name, a, p.dtype, n)
    if not (bias_correction1 > 0.0 and bias_correction2 > 0.0):
        raise MiniGPTError("adamw_update: bias corrections must be > 0 (step counts start at 1)")
    t = p.dtype.type
    # scalar factors in float64 first (as torch computes them in Python), then in the arrays' dtype
    return (t(1.0 - lr * weight_decay), t(1.0 - beta1), t(beta2), t(1.0 - beta2),
            t(-(lr / bias_correction1)), t(math.sqrt(bias_correction2)), t(eps))


def adamw_update_numba(p, g, m, v, lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2):
    """The fused Numba kernel (parallel over elements for large arrays)."""
    args = _prepare(p, g, m, v, lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2)
    fn = _adamw_parallel if p.size >= PARALLEL_THRESHOLD else _adamw_serial
    fn(p, g, m, v, *args)


def adamw_update_numpy(p, g, m, v, lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2):
    """The same update as plain in-place NumPy operations (the readable reference; several passes)."""
    decay, beta1c, beta2, beta2c, neg_step, bc2_sqrt, eps = _prepare(
        p, g, m, v, lr, beta1, beta2, eps, weight_decay, bias_correction1, bias_correction2)
    # every array is flat, (n,); the scalars come from _prepare. Derivation: docs/course/adamw.md
    p *= decay                                          # p *= 1 - lr * weight_decay (decoupled decay)
    m += beta1c * (g - m)                               # m = beta1 m + (1 - beta1) g
    v *= beta2
    v += beta2c * g * g                                 # v = beta2 v + (1 - beta2) g^2
    p += neg_step * m / (np.sqrt(v) / bc2_sqrt + eps)   # p -= lr / bc1 * m / (sqrt(v / bc2) + eps)


def _check_sumsq(x):
    if not isinstance(x, np.ndarray) or x.ndim != 1 or not x.flags.c_contiguous:
        raise MiniGPTError("sum_squares: expected a flat contiguous NumPy array")
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float64)


def sum_squares_numpy(x) -> float:
    """sum(x * x) in float64 (float32 arrays converted 64K values at a time, to bound the extra memory)."""
    x = _check_sumsq(x)
    if x.dtype == np.float64:
        return float(np.dot(x, x))
    return sum(float(np.dot(c, c)) for c in (x[i:i + 65536].astype(np.float64) for i in range(0, x.size, 65536)))


def sum_squares_numba(x) -> float:
    """The Numba loop, accumulating in float64 (parallel for large arrays)."""
    x = _check_sumsq(x)
    if x.size >= PARALLEL_THRESHOLD:
        return float(_sumsq_parallel(x))
    return float(_sumsq_serial(x))


# ---- the kernels, declared once: NumPy reference, Numba version (registry.py picks one) ----------

adamw_update = kernel(
    adamw_update_numpy, adamw_update_numba,
    """One AdamW step on flat contiguous arrays, in place (p, m, v are modified; g is read).

    p, g, m, v: 1-D C-contiguous arrays of one float dtype (float32 or float64) and equal size.
    bias_correction1 = 1 - beta1**step and bias_correction2 = 1 - beta2**step for the step being taken.
    """)

sum_squares = kernel(
    sum_squares_numpy, sum_squares_numba,
    """Sum of x*x over a flat contiguous float array, accumulated in float64.""")
