"""SwiGLU's gate: ``y = silu(a) * b`` for two arrays of one shape (Llama's and Qwen's feed-forward layer,
where ``a = x @ W_gate`` and ``b = x @ W_up``).

``silu(a) = a * s`` with the logistic sigmoid ``s = 1 / (1 + exp(-a))``, and

    dy/da = b * silu'(a) = b * (s + a * s * (1 - s)),    1 - s = exp(-a) * s
    dy/db = silu(a)

- ``silu_mul_forward(a, b) -> y`` and ``silu_mul_backward(dy, a, b) -> (da, db)``: any shape, float32 or
  float64, C-contiguous results.

The Numba kernels are one parallel pass over the flat arrays with the vectorisable ``exp`` of
:mod:`minigpt.kernels.fastmath`; ``exp(-a)`` is clamped at ``exp(80)`` so that ``s`` and ``1 - s`` stay
finite (for ``a`` below -80, ``silu(a)`` is 0 to float32 precision anyway).
"""
import numba
import numpy as np

from .fastmath import LazyKernel, array_type, fast_exp
from .registry import kernel

_ZMAX = 80.0


# ---- NumPy reference ----------------------------------------------------------------------------

def _c(v, dtype):
    """``v`` as a C-contiguous array of ``dtype``, 0-d kept 0-d (np.ascontiguousarray would make it 1-d)."""
    return np.require(np.asarray(v, dtype=dtype), requirements="C")


def silu_mul_forward_numpy(a, b):
    a, b = np.asarray(a), np.asarray(b)
    with np.errstate(over="ignore"):
        s = 1.0 / (1.0 + np.exp(-a))                 # sigmoid(a): a.shape
    return _c(a * s * b, a.dtype)                   # silu(a) * b: a.shape


def silu_mul_backward_numpy(dy, a, b):
    a, b, dy = np.asarray(a), np.asarray(b), np.asarray(dy)
    with np.errstate(over="ignore"):
        s = 1.0 / (1.0 + np.exp(-a))                 # sigmoid(a): a.shape
    silu = a * s                                     # silu(a): a.shape
    da = dy * b * (s + a * s * (1.0 - s))            # dy * b * silu'(a): a.shape
    db = dy * silu                                   # dy * silu(a): b.shape
    return _c(da, a.dtype), _c(db, a.dtype)


# ---- Numba ------------------------------------------------------------------------------------------

def _fwd(a, b, y, one, zmax):
    for i in numba.prange(a.size):
        ai = a[i]
        z = -ai
        z = z if z < zmax else zmax
        y[i] = ai / (one + fast_exp(z)) * b[i]


def _bwd(dy, a, b, da, db, one, zmax):
    for i in numba.prange(a.size):
        ai = a[i]
        z = -ai
        z = z if z < zmax else zmax
        e = fast_exp(z)
        s = one / (one + e)
        g = dy[i]
        da[i] = g * b[i] * (s + ai * s * (e * s))
        db[i] = g * ai * s


_FLAGS = {"contract", "nsz", "arcp"}
_fwd_k = LazyKernel(_fwd, lambda f: (array_type(f, 1, readonly=True), array_type(f, 1, readonly=True),
                                     array_type(f, 1), f, f), fastmath=_FLAGS)
_bwd_k = LazyKernel(_bwd, lambda f: (array_type(f, 1, readonly=True), array_type(f, 1, readonly=True),
                                     array_type(f, 1, readonly=True), array_type(f, 1), array_type(f, 1), f, f),
                    fastmath=_FLAGS)


def _flat(x, dtype):
    return np.ascontiguousarray(x, dtype=dtype).reshape(-1)


def silu_mul_forward_numba(a, b):
    a = np.asarray(a)
    dt = a.dtype
    y = np.empty(a.shape, dtype=dt)
    _fwd_k.pick(dt, a.size)(_flat(a, dt), _flat(b, dt), y.reshape(-1), dt.type(1.0), dt.type(_ZMAX))
    return y


def silu_mul_backward_numba(dy, a, b):
    a = np.asarray(a)
    dt = a.dtype
    da = np.empty(a.shape, dtype=dt)
    db = np.empty(a.shape, dtype=dt)
    _bwd_k.pick(dt, a.size)(_flat(dy, dt), _flat(a, dt), _flat(b, dt), da.reshape(-1), db.reshape(-1),
                            dt.type(1.0), dt.type(_ZMAX))
    return da, db


# ---- the kernels, declared once: NumPy reference, Numba version (registry.py picks one) ----------

silu_mul_forward = kernel(
    silu_mul_forward_numpy, silu_mul_forward_numba,
    """``silu(a) * b`` element-wise (a new C-contiguous array of ``a``'s shape).""")

silu_mul_backward = kernel(
    silu_mul_backward_numpy, silu_mul_backward_numba,
    """Gradients of :func:`silu_mul_forward`: ``(da, db)``.""")
