"""Rotary position embedding (RoPE): queries and keys turned by an angle proportional to their position.

``rope(x)`` rotates the pairs ``(x[..., j], x[..., j + D/2])`` of every (T, D) slice of ``x`` (e.g. the
(B, H, T, D) queries of one layer) by ``position * inv_freq[j]``, with positions ``start, start + 1, ...``
along the T axis. The dot product of a rotated query and a rotated key then depends only on how far apart
their positions are, which is what makes RoPE a *relative* position encoding. The backward is the rotation
by the opposite angle (a rotation's inverse is its transpose).
math: kernels/rope.py::rope_apply_numpy
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from ..errors import MiniGPTError
from ..kernels import rope as rope_kernels
from ..tensor import Function, Tensor
from ._util import as_tensor, check_float

_TABLES: OrderedDict = OrderedDict()   # (T, D, theta, start, scaling, dtype) -> (cos, sin), a few kept
_TABLES_KEPT = 16


def _scaling_key(scaling):
    if not scaling:
        return None
    try:
        return tuple(float(scaling[k]) for k in ("factor", "low_freq_factor", "high_freq_factor",
                                                 "original_max_position_embeddings"))
    except (KeyError, TypeError, ValueError) as e:
        raise MiniGPTError("rope: scaling must be a dict with numbers factor, low_freq_factor, high_freq_factor "
                           f"and original_max_position_embeddings, got {scaling!r}") from e


def rope_tables(n: int, d: int, theta: float, start: int, scaling, dtype):
    """The (n, D/2) cos and sin tables of positions ``start .. start + n - 1`` (cached: a model's layers and
    its training steps share them)."""
    key = (n, d, float(theta), int(start), _scaling_key(scaling), np.dtype(dtype).str)
    hit = _TABLES.get(key)
    if hit is None:
        hit = rope_kernels.rope_tables(n, d, theta, start, scaling, dtype)
        for a in hit:
            a.flags.writeable = False
        _TABLES[key] = hit
        while len(_TABLES) > _TABLES_KEPT:
            _TABLES.popitem(last=False)
    else:
        _TABLES.move_to_end(key)
    return hit


class RoPEOp(Function):
    """y = x rotated pair-wise by the angles of its positions (see the module docstring).
    math: kernels/rope.py::rope_apply_numpy"""

    def forward(self, x, cos, sin):
        self.cos, self.sin = cos, sin
        return rope_kernels.rope_apply(x, cos, sin)                  # (..., T, D)

    def backward(self, g):
        return (rope_kernels.rope_apply(g, self.cos, self.sin, inverse=True), None, None)  # turn back: (..., T, D)


def rope(x, theta: float = 10000.0, start: int = 0, scaling: dict | None = None) -> Tensor:
    """Rotary position embedding of ``x`` (..., T, D), D even, positions ``start .. start + T - 1`` along
    the second-to-last axis. ``theta`` is the base of the frequencies ``theta ** (-2j / D)`` (10,000 in the
    RoPE paper, 500,000 in Llama 3, 1,000,000 in Qwen 3); ``scaling`` is Llama 3's frequency scaling
    (``{"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}``)."""
    x = as_tensor(x)
    check_float(x, "rope")
    if x.ndim < 2:
        raise MiniGPTError(f"rope: expected a (..., T, D) tensor, got shape {x.shape}")
    T, D = x.shape[-2:]
    if D % 2:
        raise MiniGPTError(f"rope: the last axis (the head size) must be even, got {D}")
    if not (isinstance(theta, (int, float)) and math.isfinite(theta) and theta > 1):
        raise MiniGPTError(f"rope: theta must be a finite number > 1, got {theta!r}")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or start < 0:
        raise MiniGPTError(f"rope: start must be a position >= 0, got {start!r}")
    cos, sin = rope_tables(T, D, theta, int(start), scaling, x.dtype)
    return RoPEOp.apply(x, Tensor._wrap(cos), Tensor._wrap(sin))
