"""Layers: Linear, Embedding, LayerNorm, Dropout, GELU, FeedForward (TransformerBlock is in block.py).

Each layer holds its Parameters and calls one fused op from ``minigpt.functional``; the ops' backward
passes are in ``minigpt/ops/``.
"""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..errors import MiniGPTError
from ..random import get_rng
from .module import Module, Parameter

_SKIP_INIT = [False]


class uninitialized:
    """``with uninitialized(): model = GPT(cfg)`` builds layers whose weights are allocated but not
    initialised (``np.empty``: no random draws, and the pages of a large array are not touched until
    written). For models whose weights are about to be loaded from a file."""

    def __enter__(self):
        self.old, _SKIP_INIT[0] = _SKIP_INIT[0], True
        return self

    def __exit__(self, *exc):
        _SKIP_INIT[0] = self.old
        return False


def skip_init() -> bool:
    """True inside ``uninitialized()``."""
    return _SKIP_INIT[0]


class Linear(Module):
    """y = x @ weight + bias, with ``weight`` stored (in_features, out_features) as GPT-2's Conv1D.

    Initialised like PyTorch's nn.Linear (uniform in +-1/sqrt(in_features)) unless ``init_std`` is given
    (normal with that standard deviation, bias zero: GPT-2's scheme).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, init_std: float | None = None,
                 dtype=np.float32):
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise MiniGPTError(f"Linear needs positive sizes, got ({in_features}, {out_features})")
        rng = get_rng()
        self.in_features, self.out_features = in_features, out_features
        if skip_init():
            self.weight = Parameter(np.empty((in_features, out_features), dtype=dtype))
            self.bias = Parameter(np.empty(out_features, dtype=dtype)) if bias else None
            return
        if init_std is None:
            bound = 1.0 / math.sqrt(in_features)
            w = rng.uniform(-bound, bound, (in_features, out_features))
            b = rng.uniform(-bound, bound, out_features) if bias else None
        else:
            w = rng.normal(0.0, init_std, (in_features, out_features))
            b = np.zeros(out_features) if bias else None
        self.weight = Parameter(w.astype(dtype))
        self.bias = Parameter(b.astype(dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)  # (..., in) @ (in, out) + (out,) -> (..., out)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``dim``, looked up by integer ids."""

    def __init__(self, num_embeddings: int, dim: int, init_std: float = 1.0, dtype=np.float32):
        super().__init__()
        if num_embeddings <= 0 or dim <= 0:
            raise MiniGPTError(f"Embedding needs positive sizes, got ({num_embeddings}, {dim})")
        self.num_embeddings, self.dim = num_embeddings, dim
        if skip_init():
            self.weight = Parameter(np.empty((num_embeddings, dim), dtype=dtype))
            return
        self.weight = Parameter(get_rng().normal(0.0, init_std, (num_embeddings, dim)).astype(dtype))

    def forward(self, ids):
        return F.embedding(ids, self.weight)  # ids (...) -> (..., dim): row ids[i] of the (num, dim) table

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.dim}"


class LayerNorm(Module):
    """Normalise the last axis to zero mean and unit variance, then scale and shift (GPT-2: eps 1e-5)."""

    def __init__(self, dim: int, eps: float = 1e-5, dtype=np.float32):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, dtype=dtype))
        self.bias = Parameter(np.zeros(dim, dtype=dtype))

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)  # (..., dim) -> (..., dim)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class Dropout(Module):
    """Inverted dropout in training mode; the identity in eval mode or when p is 0."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise MiniGPTError(f"Dropout p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, training=self.training)  # any shape, unchanged

    def extra_repr(self):
        return f"p={self.p}"


class GELU(Module):
    def forward(self, x):
        return F.gelu(x)  # elementwise: any shape, unchanged


class FeedForward(Module):
    """The transformer's MLP: Linear(d, 4d) -> GELU -> Linear(4d, d)."""

    def __init__(self, emb_dim: int, hidden_dim: int | None = None, init_std: float = 0.02,
                 proj_std: float | None = None, dtype=np.float32):
        super().__init__()
        hidden_dim = hidden_dim or 4 * emb_dim
        self.fc = Linear(emb_dim, hidden_dim, init_std=init_std, dtype=dtype)
        self.proj = Linear(hidden_dim, emb_dim, init_std=proj_std or init_std, dtype=dtype)

    def forward(self, x, residual=None):
        """(B, T, C) -> (B, T, C); ``+ residual`` (B, T, C) when given, added inside the last op when it can
        be (a transformer block's skip connection: the layer's own output is then never kept)."""
        proj = self.proj
        if (type(self.fc) is Linear and type(proj) is Linear and self.fc.bias is not None and proj.bias is not None
                and not (proj._forward_hooks or proj._backward_hooks)):
            # the whole layer as one op, which keeps only the (N, 4C) pre-activation for backward
            y = F.feed_forward(x, self.fc.weight, self.fc.bias, proj.weight, proj.bias, residual=residual)
            hidden = self.fc.weight.shape[1]
            self.fc._ran(np.broadcast_to(np.zeros((), x.dtype), (*x.shape[:-1], hidden)))  # output shapes
            proj._ran(y)                                                                     # for summary()
            return y
        if type(self.fc) is not Linear:  # a wrapped or quantized layer (LoRA, int8): its own product, then GELU
            h = F.gelu(self.fc(x))  # (B, T, C) -> (B, T, 4C)
        else:
            # gelu(fc(x)) as one fused op: bias and GELU in one pass over the (N, 4C) activations
            h = F.linear_gelu(x, self.fc.weight, self.fc.bias)  # (B, T, C) -> (B, T, 4C)
            self.fc._ran(h)  # fc's work, done inside the fused op (its output shape for summary())
        y = self.proj(h)  # (B, T, 4C) -> (B, T, C)
        return y if residual is None else y + residual
