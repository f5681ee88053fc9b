"""Layer normalisation over the rows of a 2-D array ``x`` of shape (N, C).

``y = (x - mean) * rstd * gamma + beta`` with ``mean`` and the *biased* variance of each row (as GPT-2 and
PyTorch), ``rstd = 1 / sqrt(var + eps)``.

- ``layer_norm_forward(x, gamma, beta, eps=1e-5) -> (y, mean, rstd)``; ``mean`` and ``rstd`` (shape (N,))
  are what the backward needs.
- ``layer_norm_backward(dy, x, gamma, mean, rstd) -> (dx, dgamma, dbeta)``, with ``xhat = (x-mean)*rstd``
  and ``g = dy * gamma``: ``dx = rstd * (g - mean(g) - xhat * mean(g * xhat))``,
  ``dgamma = sum_rows(dy * xhat)``, ``dbeta = sum_rows(dy)``.

The Numba kernels run in parallel over rows. In the backward, the column sums ``dgamma``/``dbeta`` are
accumulated per block of rows into a private row of a partial-sum buffer (no two threads write the same
memory), then the partial sums are added in a fixed order: the result does not depend on the number of
threads.
"""
import numba
import numpy as np

from .fastmath import SUM_BLOCKS, LazyKernel, array_type
from .registry import kernel


# ---- NumPy reference ----------------------------------------------------------------------------

def layer_norm_forward_numpy(x, gamma, beta, eps=1e-5):
    x = np.asarray(x)                                                            # (N, C)
    mean = x.mean(axis=1)                                                        # (N,)
    xc = x - mean[:, None]                                                       # x - mean: (N, C)
    var = (xc * xc).mean(axis=1)                                                 # biased variance: (N,)
    rstd = 1.0 / np.sqrt(var + eps)                                              # 1 / sigma: (N,)
    y = xc * rstd[:, None] * gamma + beta                                        # xhat * gamma + beta: (N, C)
    return y.astype(x.dtype, copy=False), mean.astype(x.dtype, copy=False), rstd.astype(x.dtype, copy=False)


def layer_norm_backward_numpy(dy, x, gamma, mean, rstd):
    x = np.asarray(x)                                                            # (N, C)
    dy = np.asarray(dy)                                                          # (N, C)
    xhat = (x - mean[:, None]) * rstd[:, None]                                   # (N, C)
    g = dy * gamma                                                               # d loss / d xhat: (N, C)
    # dx = rstd * (term 1 - term 2 - term 3), per row: term 1 = g, the direct path through xhat;
    # term 2 = mean(g), through the mean; term 3 = xhat * mean(g * xhat), through the variance
    # (N, 1) * ((N, C) - (N, 1) - (N, C) * (N, 1)) -> (N, C); derivation: docs/course/layernorm.md
    dx = rstd[:, None] * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    dgamma = (dy * xhat).sum(axis=0)                                             # (N, C) -> (C,)
    dbeta = dy.sum(axis=0)                                                       # (N, C) -> (C,)
    return dx.astype(x.dtype, copy=False), dgamma.astype(x.dtype, copy=False), dbeta.astype(x.dtype, copy=False)


# ---- Numba ------------------------------------------------------------------------------------------

# Scalars come in as arguments of the array's dtype (``one``, ``inv_c`` = 1/C): a Python literal would
# be float64 in Numba and silently promote float32 arithmetic.
def _fwd(x, gamma, beta, eps, one, inv_c, y, mean, rstd):
    n, c = x.shape
    zero = one - one
    for i in numba.prange(n):
        row = x[i]
        s = zero
        for j in range(c):
            s += row[j]
        mu = s * inv_c
        v = zero
        for j in range(c):
            d = row[j] - mu
            v += d * d
        r = one / np.sqrt(v * inv_c + eps)
        out = y[i]
        for j in range(c):
            out[j] = (row[j] - mu) * r * gamma[j] + beta[j]
        mean[i] = mu
        rstd[i] = r


def _bwd(dy, x, gamma, mean, rstd, inv_c, dx, partial):
    n, c = x.shape
    nblocks = partial.shape[0]
    zero = inv_c - inv_c
    for blk in numba.prange(nblocks):
        pg = partial[blk, 0]   # this block's private sums of dy * xhat
        pb = partial[blk, 1]   # and of dy
        for j in range(c):
            pg[j] = zero
            pb[j] = zero
        for i in range(blk * n // nblocks, (blk + 1) * n // nblocks):
            mu = mean[i]
            r = rstd[i]
            xr = x[i]
            dyr = dy[i]
            sg = zero
            sgx = zero
            for j in range(c):
                g = dyr[j] * gamma[j]
                sg += g
                sgx += g * (xr[j] - mu)
            sg *= inv_c
            sgx *= inv_c * r
            dxr = dx[i]
            for j in range(c):
                xh = (xr[j] - mu) * r
                dxr[j] = r * (dyr[j] * gamma[j] - sg - xh * sgx)
                pg[j] += dyr[j] * xh
                pb[j] += dyr[j]


def _fwd_types(f):
    return (array_type(f, 2, readonly=True), array_type(f, 1, readonly=True), array_type(f, 1, readonly=True),
            f, f, f, array_type(f, 2), array_type(f, 1), array_type(f, 1))


def _bwd_types(f):
    ro = dict(readonly=True)
    return (array_type(f, 2, **ro), array_type(f, 2, **ro), array_type(f, 1, **ro), array_type(f, 1, **ro),
            array_type(f, 1, **ro), f, array_type(f, 2), array_type(f, 3))


_fwd_k = LazyKernel(_fwd, _fwd_types)
_bwd_k = LazyKernel(_bwd, _bwd_types)


def _c(a, dtype):
    return np.ascontiguousarray(a, dtype=dtype)


def layer_norm_forward_numba(x, gamma, beta, eps=1e-5):
    x = np.asarray(x)
    dt = x.dtype
    n, c = x.shape
    y = np.empty((n, c), dtype=dt)
    mean = np.empty(n, dtype=dt)
    rstd = np.empty(n, dtype=dt)
    _fwd_k.pick(dt, x.size)(_c(x, dt), _c(gamma, dt), _c(beta, dt), dt.type(eps), dt.type(1.0), dt.type(1.0 / max(c, 1)),
               y, mean, rstd)
    return y, mean, rstd


def layer_norm_backward_numba(dy, x, gamma, mean, rstd):
    x = np.asarray(x)
    dt = x.dtype
    n, c = x.shape
    dx = np.empty((n, c), dtype=dt)
    if n == 0:
        return dx, np.zeros(c, dtype=dt), np.zeros(c, dtype=dt)
    partial = np.empty((min(n, SUM_BLOCKS), 2, c), dtype=dt)
    _bwd_k.pick(dt, x.size)(_c(dy, dt), _c(x, dt), _c(gamma, dt), _c(mean, dt), _c(rstd, dt), dt.type(1.0 / max(c, 1)),
               dx, partial)
    sums = partial.sum(axis=0)
    return dx, sums[0], sums[1]


# ---- the kernels, declared once: NumPy reference, Numba version (registry.py picks one) ----------

layer_norm_forward = kernel(
    layer_norm_forward_numpy, layer_norm_forward_numba,
    """Normalise each row of ``x`` (N, C); returns ``(y, mean, rstd)``, ``mean``/``rstd`` of shape (N,).""")

layer_norm_backward = kernel(
    layer_norm_backward_numpy, layer_norm_backward_numba,
    """Gradients of :func:`layer_norm_forward`: ``(dx, dgamma, dbeta)``.""")
