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

import numba
import numpy as np

from ..errors import MiniGPTError
from .fastmath import SUM_BLOCKS, LazyKernel, array_type, fast_exp
from .registry import kernel

_C = math.sqrt(2.0 / math.pi)
_A = 0.044715
_ZMAX = 80.0   # clamp of -2u: exp(80) ~ 5.5e34 is finite in float32


# ---- NumPy reference ----------------------------------------------------------------------------

def gelu_forward_numpy(x, out=None):
    x = np.asarray(x)
    y = 0.5 * x * (1.0 + np.tanh(_C * (x + _A * x**3)))   # y = 0.5 x (1 + tanh(u)), u = c (x + a x^3): x.shape
    return _store(y, out, x)


def gelu_backward_numpy(dy, x, out=None):
    x = np.asarray(x)
    with np.errstate(over="ignore", invalid="ignore"):  # huge or infinite x: the formula gives NaN (inf * 0)
        t = np.tanh(_C * (x + _A * x**3))                  # tanh(u): x.shape
        # gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) c (1 + 3 a x^2), the product rule: x.shape
        dgelu = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _C * (1.0 + 3.0 * _A * x * x)
        return _store(np.asarray(dy) * dgelu, out, x)      # dx = dy * gelu'(x): x.shape


def bias_gelu_forward_numpy(h, b):
    h += b                                                 # (N, 4C) += (4C,): the pre-activation, kept
    return gelu_forward_numpy(h)                           # gelu(h): (N, 4C)


def bias_gelu_backward_numpy(dy, h, out=None):
    dh = gelu_backward_numpy(dy, h, out)                   # dh = dy * gelu'(h): (N, 4C)
    return dh, dh.sum(axis=0)                              # db = sum over rows of dh: (4C,)


def _store(value, out, x):
    out = _out(out, x)
    out[...] = value
    return out


# ---- Numba ------------------------------------------------------------------------------------------

@numba.njit(inline="always")
def _gelu(xi, c, a, two, one, zmax):
    z = -two * c * (xi + a * xi * xi * xi)              # -2u
    z = z if z < zmax else zmax
    return xi / (one + fast_exp(z))                      # x * sigmoid(2u)


@numba.njit(inline="always")
def _dgelu(xi, c, a, two, one, three, zmax):
    z = -two * c * (xi + a * xi * xi * xi)
    z = z if z < zmax else zmax
    e = fast_exp(z)
    s = one / (one + e)                                   # 0.5 (1 + tanh u)
    return s + two * xi * s * (e * s) * c * (one + three * a * xi * xi)


def _fwd(x, y, c, a, two, one, zmax):
    for i in numba.prange(x.size):
        y[i] = _gelu(x[i], c, a, two, one, zmax)


def _bwd(dy, x, dx, c, a, two, one, three, zmax):
    for i in numba.prange(x.size):
        dx[i] = dy[i] * _dgelu(x[i], c, a, two, one, three, zmax)


# The feed-forward layer's first linear + its bias + GELU, fused (``minigpt.ops.nn.LinearGELU``): the
# forward adds the bias to the GEMM's output ``h`` in place (h becomes the pre-activation, kept for the
# backward) while computing ``y = gelu(h)``; the backward computes ``dh = dy * gelu'(h)`` and the bias
# gradient (column sums of ``dh``, per block of rows into a private partial-sum row, added in a fixed
# order) in the same pass. One pass over the (N, 4C) activations each way instead of two.
def _bias_fwd(h, b, y, c, a, two, one, zmax):
    n, m = h.shape
    for i in numba.prange(n):
        hr = h[i]
        yr = y[i]
        for j in range(m):
            v = hr[j] + b[j]
            hr[j] = v
            yr[j] = _gelu(v, c, a, two, one, zmax)


def _bias_bwd(dy, h, dh, partial, c, a, two, one, three, zmax):
    n, m = h.shape
    nblocks = partial.shape[0]
    for blk in numba.prange(nblocks):
        p = partial[blk]
        for j in range(m):
            p[j] = one - one
        for i in range(blk * n // nblocks, (blk + 1) * n // nblocks):
            hr = h[i]
            dyr = dy[i]
            dhr = dh[i]
            for j in range(m):
                v = dyr[j] * _dgelu(hr[j], c, a, two, one, three, zmax)
                dhr[j] = v
                p[j] += v


# Inputs are typed read-only (so read-only arrays are accepted); ``out`` may still be the same memory.
# An element-wise map needs no ``reassoc`` to vectorise, and must not have it: reordering the product in
# ``_bwd`` could form s * s (underflow) or e * x**3 (overflow) first.
_FLAGS = {"contract", "nsz", "arcp"}
_fwd_k = LazyKernel(_fwd, lambda f: (array_type(f, 1, readonly=True), array_type(f, 1), f, f, f, f, f),
                    fastmath=_FLAGS)
_bwd_k = LazyKernel(_bwd, lambda f: (array_type(f, 1, readonly=True), array_type(f, 1, readonly=True),
                                     array_type(f, 1), f, f, f, f, f, f), fastmath=_FLAGS)


_bias_fwd_k = LazyKernel(_bias_fwd, lambda f: (array_type(f, 2), array_type(f, 1, readonly=True), array_type(f, 2),
                                               f, f, f, f, f), fastmath=_FLAGS)
_bias_bwd_k = LazyKernel(_bias_bwd, lambda f: (array_type(f, 2, readonly=True), array_type(f, 2, readonly=True),
                                               array_type(f, 2), array_type(f, 2), f, f, f, f, f, f),
                         fastmath=_FLAGS)


def _flat(a, dtype):
    """A flat C-contiguous view of ``a`` (a copy only if ``a`` is strided or of another dtype)."""
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


def _out(out, x):
    if out is None:
        return np.empty(x.shape, dtype=x.dtype)
    if not isinstance(out, np.ndarray) or out.shape != x.shape or out.dtype != x.dtype \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise MiniGPTError(f"out must be a writeable C-contiguous {x.dtype} array of shape {x.shape}, "
                           f"got {type(out).__name__} {getattr(out, 'dtype', '')} {getattr(out, 'shape', '')}")
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


def _check_bias(h, b, name):
    if h.ndim != 2 or b.shape != (h.shape[1],) or h.dtype not in (np.float32, np.float64):
        raise MiniGPTError(f"{name}: expected a float32/float64 (N, C) array and a (C,) bias, got "
                           f"{h.dtype} {h.shape} and {b.shape}")


def bias_gelu_forward_numba(h, b):
    b = np.asarray(b)
    _check_bias(h, b, "bias_gelu_forward")
    if not h.flags.c_contiguous or not h.flags.writeable:
        raise MiniGPTError("bias_gelu_forward: h must be a writeable C-contiguous array (it is updated in place)")
    dt = h.dtype.type
    y = np.empty_like(h)
    _bias_fwd_k.pick(h.dtype, h.size)(h, np.ascontiguousarray(b, dtype=h.dtype), y, dt(_C), dt(_A), dt(2.0),
                                      dt(1.0), dt(_ZMAX))
    return y


def bias_gelu_backward_numba(dy, h, out=None):
    h = np.asarray(h)
    dy = np.ascontiguousarray(dy, dtype=h.dtype)
    if h.ndim != 2 or dy.shape != h.shape:
        raise MiniGPTError(f"bias_gelu_backward: dy of shape {dy.shape} does not match h of shape {h.shape}")
    dt = h.dtype.type
    dh = _out(out, h)
    partial = np.empty((SUM_BLOCKS, h.shape[1]), dtype=h.dtype)
    _bias_bwd_k.pick(h.dtype, h.size)(dy, np.ascontiguousarray(h), dh, partial, dt(_C), dt(_A), dt(2.0), dt(1.0),
                                      dt(3.0), dt(_ZMAX))
    return dh, partial.sum(axis=0)


# ---- the kernels, declared once: NumPy reference, Numba version (registry.py picks one) ----------

gelu_forward = kernel(
    gelu_forward_numpy, gelu_forward_numba,
    """GELU (tanh approximation) of ``x``, any shape, float32/float64.

    Returns a new C-contiguous array, or writes into ``out`` (C-contiguous, same shape and dtype; may be
    ``x`` itself) and returns it.
    """)

gelu_backward = kernel(
    gelu_backward_numpy, gelu_backward_numba,
    """Gradient of :func:`gelu_forward`: ``dy * gelu'(x)`` (same shape as ``x``); ``out`` as above (may be
    ``dy``).""")

bias_gelu_forward = kernel(
    bias_gelu_forward_numpy, bias_gelu_forward_numba,
    """``h += b`` in place (``h`` (N, C) C-contiguous: a linear layer's GEMM output), then return
    ``gelu(h)`` (a new array). ``h`` is left holding the pre-activation the backward needs.""")

bias_gelu_backward = kernel(
    bias_gelu_backward_numpy, bias_gelu_backward_numba,
    """``(dh, db)``: ``dh = dy * gelu'(h)`` (written into ``out`` if given; may be ``dy``) and the bias
    gradient ``db = dh.sum(axis=0)``.""")
