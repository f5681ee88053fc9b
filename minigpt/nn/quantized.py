"""Layers over int8 weights, for inference: ``Int8Linear`` (a quantized ``Linear`` or LM head) and
``Int8Embedding`` (a quantized token table, which a tied LM head shares).

The int8 weight is held as two plain arrays, ``q`` (out, in) int8 and ``scales`` (out, G) float32 (see
``minigpt.kernels.int8``): they are not Parameters, nothing trains them. A bias stays a float32 Parameter,
frozen.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..errors import MiniGPTError
from ..kernels.int8 import quantize_int8
from .module import Module, Parameter


class Int8Linear(Module):
    """y = x @ W.T + bias with W (out, in) stored as int8 ``q`` and float32 ``scales``."""

    def __init__(self, q: np.ndarray, scales: np.ndarray, bias=None, group_size: int = 0):
        super().__init__()
        q, scales = np.asarray(q), np.asarray(scales)
        if q.ndim != 2 or q.dtype != np.int8:
            raise MiniGPTError(f"Int8Linear: weight must be 2-D int8, got {q.dtype} {q.shape}")
        if scales.dtype != np.float32 or scales.ndim != 2 or scales.shape[0] != q.shape[0] \
                or q.shape[1] % scales.shape[1]:
            raise MiniGPTError(f"Int8Linear: scales {scales.dtype} {scales.shape} do not fit weight {q.shape}")
        self.q, self.scales = q, scales
        self.out_features, self.in_features = q.shape
        self.group_size = int(group_size)
        self.bias = None if bias is None else Parameter(np.asarray(bias, dtype=np.float32), requires_grad=False)

    @classmethod
    def from_weight(cls, w_out_in, bias=None, group_size: int = 0) -> "Int8Linear":
        """Quantize a float weight given as (out, in)."""
        q, s = quantize_int8(w_out_in, group_size)
        return cls(q, s, bias, group_size)

    @classmethod
    def from_linear(cls, lin, group_size: int = 0) -> "Int8Linear":
        """Quantize a ``Linear`` (whose weight is stored (in, out))."""
        return cls.from_weight(lin.weight.data.T, None if lin.bias is None else lin.bias.data, group_size)

    def forward(self, x):
        return F.int8_linear(x, self.q, self.scales, self.bias)

    def nbytes(self) -> int:
        return self.q.nbytes + self.scales.nbytes + (0 if self.bias is None else self.bias.data.nbytes)

    def extra_repr(self):
        g = f"groups of {self.group_size}" if self.group_size else "per output channel"
        return f"{self.in_features}, {self.out_features}, int8 {g}, bias={self.bias is not None}"


class Int8Embedding(Module):
    """A table (num_embeddings, dim) stored as int8 rows with float32 scales; lookups dequantise rows."""

    def __init__(self, q: np.ndarray, scales: np.ndarray, group_size: int = 0):
        super().__init__()
        self.q, self.scales, self.group_size = q, scales, int(group_size)
        self.num_embeddings, self.dim = q.shape

    def forward(self, ids):
        return F.int8_embedding(ids, self.q, self.scales)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.dim}, int8"
