"""GELU, tanh approximation (as GPT-2): ``gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

``gelu_forward(x) -> y`` and ``gelu_backward(dy, x) -> dx`` work on arrays of any shape (float32 or
float64) and return C-contiguous arrays of that shape. The Numba kernel runs over the flat array in
parallel, with the vectorisable ``tanh`` of :mod:`minigpt.kernels.fastmath` (this Numba has no SVML, so
``np.tanh`` in a kernel would be one scalar libm call per element).

The derivative, with ``u = c (x + a x^3)`` and ``t = tanh(u)``:
``gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)``.
"""
import math

import minigpt._threads  # noqa: F401  (before numba: selects the workqueue threading layer)
import numba
import numpy as np

from . import backend
from ..errors import MiniGPTError
from .fastmath import LazyKernel, array_type, fast_tanh

_C = math.sqrt(2.0 / math.pi)
_A = 0.044715


# ---- NumPy reference ----------------------------------------------------------------------------

def gelu_forward_numpy(x, out=None):
    x = np.asarray(x)
    y = 0.5 * x * (1.0 + np.tanh(_C * (x + _A * x**3)))
    return _store(y, out, x)


def gelu_backward_numpy(dy, x, out=None):
    x = np.asarray(x)
    t = np.tanh(_C * (x + _A * x**3))
    dgelu = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _C * (1.0 + 3.0 * _A * x * x)
    return _store(np.asarray(dy) * dgelu, out, x)


def _store(value, out, x):
    out = _out(out, x)
    out[...] = value
    return out


# ---- Numba ------------------------------------------------------------------------------------------

def _fwd(x, y, c, a, half, one):
    for i in numba.prange(x.size):
        xi = x[i]
        y[i] = half * xi * (one + fast_tanh(c * (xi + a * xi * xi * xi)))


def _bwd(dy, x, dx, c, a, half, one, three):
    for i in numba.prange(x.size):
        xi = x[i]
        t = fast_tanh(c * (xi + a * xi * xi * xi))
        g = half * (one + t) + half * xi * (one - t * t) * c * (one + three * a * xi * xi)
        dx[i] = dy[i] * g


_fwd_k = LazyKernel(_fwd, lambda f: (array_type(f, 1, readonly=True), array_type(f, 1), f, f, f, f))
_bwd_k = LazyKernel(_bwd, lambda f: (array_type(f, 1, readonly=True), array_type(f, 1, readonly=True), array_type(f, 1),
                                     f, f, f, f, f))


def _flat(a, dtype):
    """A flat C-contiguous view of ``a`` (a copy only if ``a`` is strided or of another dtype)."""
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


def _out(out, x):
    if out is None:
        return np.empty(x.shape, dtype=x.dtype)
    if out.shape != x.shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise MiniGPTError(f"out must be a C-contiguous {x.dtype} array of shape {x.shape}, "
                           f"got {out.dtype} {out.shape}")
    return out


def gelu_forward_numba(x, out=None):
    x = np.asarray(x)
    dt = x.dtype.type
    y = _out(out, x)
    _fwd_k[x.dtype](_flat(x, x.dtype), y.reshape(-1), dt(_C), dt(_A), dt(0.5), dt(1.0))
    return y


def gelu_backward_numba(dy, x, out=None):
    x = np.asarray(x)
    dt = x.dtype.type
    dx = _out(out, x)
    _bwd_k[x.dtype](_flat(dy, x.dtype), _flat(x, x.dtype), dx.reshape(-1),
                    dt(_C), dt(_A), dt(0.5), dt(1.0), dt(3.0))
    return dx


# ---- public, dispatching on the backend -------------------------------------------------------------

def gelu_forward(x, out=None):
    """GELU (tanh approximation) of ``x``, any shape, float32/float64.

    Returns a new C-contiguous array, or writes into ``out`` (C-contiguous, same shape and dtype; may be
    ``x`` itself) and returns it.
    """
    if backend() == "numpy":
        return gelu_forward_numpy(x, out)
    return gelu_forward_numba(x, out)


def gelu_backward(dy, x, out=None):
    """Gradient of :func:`gelu_forward`: ``dy * gelu'(x)`` (same shape as ``x``); ``out`` as above (may be
    ``dy``)."""
    if backend() == "numpy":
        return gelu_backward_numpy(dy, x, out)
    return gelu_backward_numba(dy, x, out)
