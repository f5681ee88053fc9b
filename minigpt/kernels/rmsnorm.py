"""RMS normalisation over the rows of a 2-D array ``x`` of shape (N, C) (Llama, Qwen).

``y = x * rstd * gamma`` with ``rstd = 1 / sqrt(mean(x^2) + eps)`` per row: layer norm without the
centring and without the shift ``beta``.

- ``rms_norm_forward(x, gamma, eps=1e-6) -> (y, rstd)``; ``rstd`` (shape (N,)) is what the backward needs.
- ``rms_norm_backward(dy, x, gamma, rstd) -> (dx, dgamma)``, with ``xhat = x * rstd`` and
  ``g = dy * gamma``: ``dx = rstd * (g - xhat * mean(g * xhat))``, ``dgamma = sum_rows(dy * xhat)``.

Derivation of ``dx`` (one row, C entries): ``y_j = gamma_j x_j r`` with ``r = (mean(x^2) + eps)^(-1/2)``, so
``dr/dx_i = -r^3 x_i / C`` and ``dL/dx_i = g_i r + sum_j g_j x_j dr/dx_i = r (g_i - xhat_i mean_j(g_j xhat_j))``
-- layer norm's formula with the term that came from the mean gone.

As in :mod:`minigpt.kernels.layernorm`, the Numba kernels run in parallel over rows, and ``dgamma`` is
summed per block of rows into private partial sums added in a fixed order (independent of the thread count).
"""
import numba
import numpy as np

from .fastmath import SUM_BLOCKS, LazyKernel, array_type
from .registry import kernel


# ---- NumPy reference ----------------------------------------------------------------------------

def rms_norm_forward_numpy(x, gamma, eps=1e-6):
    x = np.asarray(x)
    ms = (x * x).mean(axis=1)                                    # mean of squares per row: (N,)
    rstd = 1.0 / np.sqrt(ms + eps)                               # (N,)
    y = x * rstd[:, None] * gamma                                # (N, C) * (N, 1) * (C,) -> (N, C)
    return y.astype(x.dtype, copy=False), rstd.astype(x.dtype, copy=False)


def rms_norm_backward_numpy(dy, x, gamma, rstd):
    x = np.asarray(x)
    dy = np.asarray(dy)
    xhat = x * rstd[:, None]                                     # (N, C)
    g = dy * gamma                                               # dL/dxhat: (N, C)
    # dx = rstd * (g - xhat * mean(g * xhat)): the direct path, minus the path through rstd
    dx = rstd[:, None] * (g - xhat * (g * xhat).mean(axis=1, keepdims=True))   # (N, C)
    dgamma = (dy * xhat).sum(axis=0)                             # (N, C) -> (C,)
    return dx.astype(x.dtype, copy=False), dgamma.astype(x.dtype, copy=False)


# ---- Numba ------------------------------------------------------------------------------------------

def _fwd(x, gamma, eps, one, inv_c, y, rstd):
    n, c = x.shape
    zero = one - one
    for i in numba.prange(n):
        row = x[i]
        s = zero
        for j in range(c):
            s += row[j] * row[j]
        r = one / np.sqrt(s * inv_c + eps)
        out = y[i]
        for j in range(c):
            out[j] = row[j] * r * gamma[j]
        rstd[i] = r


def _bwd(dy, x, gamma, rstd, inv_c, dx, partial):
    n, c = x.shape
    nblocks = partial.shape[0]
    zero = inv_c - inv_c
    for blk in numba.prange(nblocks):
        pg = partial[blk]      # this block's private sums of dy * xhat
        for j in range(c):
            pg[j] = zero
        for i in range(blk * n // nblocks, (blk + 1) * n // nblocks):
            r = rstd[i]
            xr = x[i]
            dyr = dy[i]
            sgx = zero
            for j in range(c):
                sgx += dyr[j] * gamma[j] * xr[j]
            sgx *= inv_c * r * r                 # xhat * mean(g * xhat) == x * sgx
            dxr = dx[i]
            for j in range(c):
                dxr[j] = r * (dyr[j] * gamma[j] - xr[j] * sgx)
                pg[j] += dyr[j] * xr[j] * r


def _fwd_types(f):
    return (array_type(f, 2, readonly=True), array_type(f, 1, readonly=True), f, f, f,
            array_type(f, 2), array_type(f, 1))


def _bwd_types(f):
    ro = dict(readonly=True)
    return (array_type(f, 2, **ro), array_type(f, 2, **ro), array_type(f, 1, **ro), array_type(f, 1, **ro), f,
            array_type(f, 2), array_type(f, 2))


_fwd_k = LazyKernel(_fwd, _fwd_types)
_bwd_k = LazyKernel(_bwd, _bwd_types)


def _c(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


def rms_norm_forward_numba(x, gamma, eps=1e-6):
    x = np.asarray(x)
    dt = x.dtype
    n, c = x.shape
    y = np.empty((n, c), dtype=dt)
    rstd = np.empty(n, dtype=dt)
    _fwd_k.pick(dt, x.size)(_c(x, dt), _c(gamma, dt), dt.type(eps), dt.type(1.0), dt.type(1.0 / max(c, 1)), y, rstd)
    return y, rstd


def rms_norm_backward_numba(dy, x, gamma, rstd):
    x = np.asarray(x)
    dt = x.dtype
    n, c = x.shape
    dx = np.empty((n, c), dtype=dt)
    if n == 0:
        return dx, np.zeros(c, dtype=dt)
    partial = np.empty((min(n, SUM_BLOCKS), c), dtype=dt)
    _bwd_k.pick(dt, x.size)(_c(dy, dt), _c(x, dt), _c(gamma, dt), _c(rstd, dt), dt.type(1.0 / max(c, 1)), dx, partial)
    return dx, partial.sum(axis=0)


# ---- the kernels, declared once: NumPy reference, Numba version (registry.py picks one) ----------

rms_norm_forward = kernel(
    rms_norm_forward_numpy, rms_norm_forward_numba,
    """RMS-normalise each row of ``x`` (N, C) and scale by ``gamma``; returns ``(y, rstd)``, ``rstd`` (N,).""")

rms_norm_backward = kernel(
    rms_norm_backward_numpy, rms_norm_backward_numba,
    """Gradients of :func:`rms_norm_forward`: ``(dx, dgamma)``.""")
