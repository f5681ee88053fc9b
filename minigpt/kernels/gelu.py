"""GELU, tanh approximation (as GPT-2): ``gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

``gelu_forward(x) -> y`` and ``gelu_backward(dy, x) -> dx`` work on arrays of any shape (float32 or
float64) and return C-contiguous arrays of that shape (or write into ``out=``). The Numba kernel runs
over the flat array in parallel with the vectorisable ``exp`` of :mod:`minigpt.kernels.fastmath` (this
Numba has no SVML, so ``np.tanh`` in a kernel would be one scalar libm call per element).

With ``u = c (x + a x^3)``, ``c = sqrt(2/pi)``, ``a = 0.044715``, the kernel uses the identity
``0.5 (1 + tanh(u)) = s = 1 / (1 + exp(-2u))`` (the logistic sigmoid of 2u), so

    gelu(x)  = x * s
    gelu'(x) = s + 2 x s (1 - s) c (1 + 3 a x^2),    with 1 - s = exp(-2u) * s

-- the same function, but for negative ``x`` it avoids ``1 + tanh(u)``, where ``tanh(u)`` is close to
-1 and float32 loses most of its digits (the NumPy reference below, written the textbook way, has that
cancellation). ``exp(-2u)`` is clamped at ``exp(80)`` so that ``s`` and ``1 - s`` stay finite.
"""
import math

import minigpt._threads  # noqa: F401  (before numba: selects the threading layer)
import numba
import numpy as np

from . import backend
from ..errors import MiniGPTError
from .fastmath import LazyKernel, array_type, fast_exp

_C = math.sqrt(2.0 / math.pi)
_A = 0.044715
_ZMAX = 80.0   # clamp of -2u: exp(80) ~ 5.5e34 is finite in float32


# ---- NumPy reference ----------------------------------------------------------------------------

def gelu_forward_numpy(x, out=None):
    x = np.asarray(x)
    y = 0.5 * x * (1.0 + np.tanh(_C * (x + _A * x**3)))
    return _store(y, out, x)


def gelu_backward_numpy(dy, x, out=None):
    x = np.asarray(x)
    with np.errstate(over="ignore", invalid="ignore"):  # huge or infinite x: the formula gives NaN (inf * 0)
        t = np.tanh(_C * (x + _A * x**3))
        dgelu = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _C * (1.0 + 3.0 * _A * x * x)
        return _store(np.asarray(dy) * dgelu, out, x)


def _store(value, out, x):
    out = _out(out, x)
    out[...] = value
    return out


# ---- Numba ------------------------------------------------------------------------------------------

def _fwd(x, y, c, a, two, one, zmax):
    for i in numba.prange(x.size):
        xi = x[i]
        z = -two * c * (xi + a * xi * xi * xi)          # -2u
        z = z if z < zmax else zmax
        y[i] = xi / (one + fast_exp(z))                  # x * sigmoid(2u)


def _bwd(dy, x, dx, c, a, two, one, three, zmax):
    for i in numba.prange(x.size):
        xi = x[i]
        z = -two * c * (xi + a * xi * xi * xi)
        z = z if z < zmax else zmax
        e = fast_exp(z)
        s = one / (one + e)                               # 0.5 (1 + tanh u)
        g = s + two * xi * s * (e * s) * c * (one + three * a * xi * xi)
        dx[i] = dy[i] * g


# Inputs are typed read-only (so read-only arrays are accepted); ``out`` may still be the same memory.
# An element-wise map needs no ``reassoc`` to vectorise, and must not have it: reordering the product in
# ``_bwd`` could form s * s (underflow) or e * x**3 (overflow) first.
_FLAGS = {"contract", "nsz", "arcp"}
_fwd_k = LazyKernel(_fwd, lambda f: (array_type(f, 1, readonly=True), array_type(f, 1), f, f, f, f, f),
                    fastmath=_FLAGS)
_bwd_k = LazyKernel(_bwd, lambda f: (array_type(f, 1, readonly=True), array_type(f, 1, readonly=True),
                                     array_type(f, 1), f, f, f, f, f, f), fastmath=_FLAGS)


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
    _fwd_k.pick(x.dtype, x.size)(_flat(x, x.dtype), y.reshape(-1), dt(_C), dt(_A), dt(2.0), dt(1.0), dt(_ZMAX))
    return y


def gelu_backward_numba(dy, x, out=None):
    x = np.asarray(x)
    dt = x.dtype.type
    dx = _out(out, x)
    _bwd_k.pick(x.dtype, x.size)(_flat(dy, x.dtype), _flat(x, x.dtype), dx.reshape(-1),
                    dt(_C), dt(_A), dt(2.0), dt(1.0), dt(3.0), dt(_ZMAX))
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
