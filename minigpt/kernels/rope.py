"""Rotary position embedding (RoPE) of queries or keys, ``x`` of shape (M, T, D) with D even.

Each position ``p`` turns the pairs ``(x[j], x[j + D/2])`` of a head vector by the angle ``p * inv_freq[j]``
(the "rotate half" pairing of GPT-NeoX, Llama and Qwen):

    y[j]       = x[j] cos - x[j + D/2] sin
    y[j + D/2] = x[j + D/2] cos + x[j] sin            (j < D/2)

A rotation is orthogonal, so the backward is the rotation by the opposite angle (its transpose):

    dx[j]       =  dy[j] cos + dy[j + D/2] sin
    dx[j + D/2] = -dy[j] sin + dy[j + D/2] cos

- ``rope_tables(n, d, theta, start=0, scaling=None, dtype) -> (cos, sin)``, each (n, D/2): the angles of
  positions ``start .. start + n - 1`` (``start`` is the KV cache's length while generating).
- ``rope_apply(x, cos, sin, inverse=False) -> y``: the rotation (``inverse=True``: the backward).

``inv_freq[j] = theta ** (-2 j / D)``; Llama 3's ``scaling`` (a dict with ``factor``, ``low_freq_factor``,
``high_freq_factor``, ``original_max_position_embeddings``) divides the low frequencies (wavelengths longer
than ``original / low_freq_factor``) by ``factor``, keeps the high ones (wavelengths shorter than
``original / high_freq_factor``) and blends linearly in between.
"""
import math

import numba
import numpy as np

from ..errors import MiniGPTError
from .fastmath import LazyKernel, array_type
from .registry import kernel


def inv_frequencies(d: int, theta: float, scaling=None) -> np.ndarray:
    """The D/2 rotation frequencies (float64), with Llama 3's frequency scaling when ``scaling`` is given."""
    inv = 1.0 / theta ** (np.arange(0, d, 2, dtype=np.float64) / d)          # (D/2,)
    if scaling:
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv                                          # (D/2,)
        smooth = (old / wavelen - low) / (high - low)                        # 0 at the low end, 1 at the high
        blended = (1 - smooth) * inv / factor + smooth * inv
        inv = np.where(wavelen > old / low, inv / factor, np.where(wavelen < old / high, inv, blended))
    return inv


def rope_tables(n: int, d: int, theta: float = 10000.0, start: int = 0, scaling=None, dtype=np.float32):
    """``(cos, sin)`` of the angles of positions ``start .. start + n - 1``: two (n, D/2) arrays."""
    if d % 2:
        raise MiniGPTError(f"rope: the head size must be even, got {d}")
    ang = np.arange(start, start + n, dtype=np.float64)[:, None] * inv_frequencies(d, theta, scaling)[None, :]
    return np.cos(ang).astype(dtype), np.sin(ang).astype(dtype)              # (n, D/2) each


# ---- NumPy reference ----------------------------------------------------------------------------

def rope_apply_numpy(x, cos, sin, inverse=False):
    x = np.asarray(x)
    h = x.shape[-1] // 2
    x1, x2 = x[..., :h], x[..., h:]                  # (M, T, D/2) each
    s = -sin if inverse else sin                     # the opposite angle turns back
    y = np.empty(x.shape, dtype=x.dtype)
    y[..., :h] = x1 * cos - x2 * s                   # (M, T, D/2) * (T, D/2)
    y[..., h:] = x2 * cos + x1 * s
    return y


# ---- Numba ------------------------------------------------------------------------------------------

def _apply(x, cos, sin, sign, y):
    m, t, d = x.shape
    h = d // 2
    for k in numba.prange(m * t):
        i = k // t
        p = k - i * t
        xr = x[i, p]
        yr = y[i, p]
        c = cos[p]
        s = sin[p]
        for j in range(h):
            a = xr[j]
            b = xr[j + h]
            sj = sign * s[j]
            yr[j] = a * c[j] - b * sj
            yr[j + h] = b * c[j] + a * sj


_apply_k = LazyKernel(_apply, lambda f: (array_type(f, 3, readonly=True), array_type(f, 2, readonly=True),
                                         array_type(f, 2, readonly=True), f, array_type(f, 3)))


def rope_apply_numba(x, cos, sin, inverse=False):
    x = np.asarray(x)
    dt = x.dtype
    y = np.empty(x.shape, dtype=dt)
    if x.size == 0:
        return y
    x3 = np.ascontiguousarray(x, dtype=dt).reshape(-1, *x.shape[-2:])
    _apply_k.pick(dt, x.size)(x3, np.ascontiguousarray(cos, dtype=dt), np.ascontiguousarray(sin, dtype=dt),
                              dt.type(-1.0 if inverse else 1.0), y.reshape(x3.shape))
    return y


# ---- the kernel, declared once: NumPy reference, Numba version (registry.py picks one) ------------

rope_apply = kernel(
    rope_apply_numpy, rope_apply_numba,
    """Rotate each (T, D) slice of ``x`` (..., T, D) by the angles whose ``cos`` and ``sin`` are (T, D/2);
    ``inverse=True`` rotates back (the backward). Returns a new C-contiguous array.""")
