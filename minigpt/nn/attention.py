"""Attention: the fused causal multi-head attention GPT uses, and the book's teaching versions.

``MultiHeadAttention`` is what the model runs: one (C, 3C) projection makes q, k and v together, the heads
are strided views of its output, and the fused op ``F.causal_attention`` (a Numba kernel, see
``minigpt/ops/attention.py`` and ``minigpt/kernels/attention.py``) does the masked softmax and the
weighted sum without ever forming a (T, T) mask. During generation it also reads and extends a
key/value cache so each new token costs one position of work.

The teaching versions below follow the book's chapter 3 step by step, from plain ops (matmul, softmax,
masked_fill, dropout); the tests check that they compute the same thing as the fused layer.
"""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..errors import MiniGPTError
from ..kernels.attention import attention_forward
from ..ops.attention import alibi_slopes
from ..tensor import Tensor
from .layers import Dropout, Linear
from .module import Module, ModuleList


class KVCache:
    """Keys and values of the positions seen so far, for one attention layer: (B, max_len, H, D) each."""

    def __init__(self, batch: int, max_len: int, n_heads: int, head_dim: int, dtype=np.float32):
        self.k = np.empty((batch, max_len, n_heads, head_dim), dtype=dtype)
        self.v = np.empty((batch, max_len, n_heads, head_dim), dtype=dtype)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[1]


class MultiHeadAttention(Module):
    """Causal multi-head self-attention with a fused q/k/v projection and an output projection.

    ``alibi=True`` adds ALiBi's linear bias to the scores (head h: ``-slope_h * (i - j)``, the slopes of
    :func:`minigpt.ops.attention.alibi_slopes`, fixed, not trained): the model's only position signal then.
    """

    def __init__(self, emb_dim: int, n_heads: int, dropout: float = 0.0, qkv_bias: bool = True,
                 init_std: float = 0.02, proj_std: float | None = None, dtype=np.float32, alibi: bool = False):
        super().__init__()
        if n_heads <= 0 or emb_dim % n_heads:
            raise MiniGPTError(f"emb_dim ({emb_dim}) must be divisible by n_heads ({n_heads})")
        self.emb_dim, self.n_heads, self.head_dim = emb_dim, n_heads, emb_dim // n_heads
        self.dropout = dropout
        self.qkv = Linear(emb_dim, 3 * emb_dim, bias=qkv_bias, init_std=init_std, dtype=dtype)
        self.proj = Linear(emb_dim, emb_dim, init_std=proj_std or init_std, dtype=dtype)
        self.alibi_slopes = alibi_slopes(n_heads).astype(dtype) if alibi else None   # (H,) constants, or None

    def forward(self, x, cache: KVCache | None = None, residual=None):
        """(B, T, C) -> (B, T, C); ``+ residual`` (B, T, C) when given, added inside the output projection
        when it can be (a transformer block's skip connection: the projection's own output is then never
        kept)."""
        qkv = self.qkv(x)  # (B, T, C) -> (B, T, 3C): [q | k | v], each C = H * D wide
        if cache is None:
            # per head h: softmax(q_h k_h^T / sqrt(D), causal) v_h, heads side by side again
            ctx = F.causal_attention(qkv, self.n_heads, dropout_p=self.dropout, training=self.training,
                                     alibi_slopes=self.alibi_slopes)  # -> (B, T, C)
        else:
            ctx = self._attend_with_cache(qkv.data, cache)  # (B, T, 3C) -> (B, T, C)
        if residual is None:
            return self.proj(ctx)  # (B, T, C) -> (B, T, C)
        proj = self.proj
        if type(proj) is Linear and proj.bias is not None and not (proj._forward_hooks or proj._backward_hooks):
            y = F.linear(ctx, proj.weight, proj.bias, residual=residual)  # ctx @ W + b + residual: (B, T, C)
            proj._ran(y)  # the projection's work, done here (its output shape for summary())
            return y
        return self.proj(ctx) + residual

    def _attend_with_cache(self, qkv: np.ndarray, cache: KVCache) -> Tensor:
        """Inference only: store the new keys/values, attend the new queries over all cached positions."""
        B, T, _ = qkv.shape
        H, D = self.n_heads, self.head_dim
        start = cache.length
        if start + T > cache.max_len:
            raise MiniGPTError(f"KV cache holds {cache.max_len} positions; {start} used + {T} new do not fit")
        packed = qkv.reshape(B, T, 3, H, D)  # (B, T, 3C) -> (B, T, 3, H, D)
        cache.k[:, start:start + T] = packed[:, :, 1]  # (B, T, H, D) into (B, max_len, H, D)
        cache.v[:, start:start + T] = packed[:, :, 2]
        cache.length = start + T
        # queries (B, T, H, D) over keys/values (B, start + T, H, D) -> (B, T, H, D); the kernel places
        # the queries at positions start .. start + T - 1, so ALiBi's distances are absolute ones
        out, _ = attention_forward(packed[:, :, 0], cache.k[:, :start + T], cache.v[:, :start + T],
                                   1.0 / math.sqrt(D), slopes=self.alibi_slopes)
        return Tensor._wrap(out.reshape(B, T, H * D))  # (B, T, H, D) -> (B, T, C)

    def extra_repr(self):
        alibi = ", alibi=True" if self.alibi_slopes is not None else ""
        return f"emb_dim={self.emb_dim}, n_heads={self.n_heads}, dropout={self.dropout}{alibi}"


# --- the book's teaching versions (chapter 3) ---------------------------------------------------------
def simplified_self_attention(x):
    """Attention without trainable weights: each row's context is softmax(x x^T) @ x (x: (T, d))."""
    x = x if isinstance(x, Tensor) else Tensor(np.asarray(x))
    scores = x @ x.T  # (T, d) @ (d, T) -> (T, T)
    weights = F.softmax(scores, axis=-1)  # (T, T), each row sums to 1
    return weights @ x  # (T, T) @ (T, d) -> (T, d)


class SelfAttention(Module):
    """Single-head self-attention with trainable query/key/value projections (no causal mask)."""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__()
        self.W_query = Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias)
        self.d_out = d_out

    def forward(self, x):
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)  # (..., T, d_in) -> (..., T, d_out) each
        scores = q @ k.transpose(-1, -2)  # (..., T, d_out) @ (..., d_out, T) -> (..., T, T)
        weights = F.softmax(scores / math.sqrt(self.d_out), axis=-1)  # (..., T, T)
        return weights @ v  # (..., T, T) @ (..., T, d_out) -> (..., T, d_out)


class CausalAttention(Module):
    """One causal head: scores above the diagonal are masked with -inf before the softmax; dropout
    applies to the attention weights. Input (B, T, d_in) -> (B, T, d_out)."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float = 0.0, qkv_bias: bool = False):
        super().__init__()
        self.W_query = Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = Linear(d_in, d_out, bias=qkv_bias)
        self.dropout = Dropout(dropout)
        self.d_out, self.context_length = d_out, context_length
        self.mask = np.triu(np.ones((context_length, context_length), dtype=bool), k=1)

    def forward(self, x):
        T = x.shape[1]
        if T > self.context_length:
            raise MiniGPTError(f"sequence length {T} exceeds context_length {self.context_length}")
        q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)  # (B, T, d_in) -> (B, T, d_out) each
        scores = q @ k.transpose(-1, -2)  # (B, T, d_out) @ (B, d_out, T) -> (B, T, T)
        scores = F.masked_fill(scores, self.mask[:T, :T], -np.inf)  # future positions -> -inf
        weights = self.dropout(F.softmax(scores / math.sqrt(self.d_out), axis=-1))  # (B, T, T)
        return weights @ v  # (B, T, T) @ (B, T, d_out) -> (B, T, d_out)


class MultiHeadAttentionWrapper(Module):
    """Several CausalAttention heads run one after another, their outputs concatenated."""

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        self.heads = ModuleList(CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)
                                for _ in range(num_heads))

    def forward(self, x):
        return F.concatenate([h(x) for h in self.heads], axis=-1)  # num_heads x (B, T, d_out) -> (B, T, num_heads * d_out)
