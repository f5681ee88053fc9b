"""Chapter 3, *Coding attention mechanisms*: the five attention classes under the book's names.

``SelfAttention_v2``, ``CausalAttention`` and ``MultiHeadAttentionWrapper`` are minigpt's own teaching
classes (``minigpt.nn.attention``), which follow the chapter step by step from plain ops. ``SelfAttention_v1``
is ``SelfAttention_v2`` with the book's ``torch.rand`` weights (uniform in [0, 1)) and no bias.
``MultiHeadAttention`` is the book's efficient class on minigpt's fused attention op: one (d_in, 3 d_out)
projection makes q, k and v, and ``F.causal_attention`` (a Numba kernel) does the masked softmax and the
weighted sum per head without forming a (T, T) mask.

Differences a reader meets: weights are stored (in, out) and a layer computes ``x @ W + b`` (GPT-2's
layout; PyTorch stores ``nn.Linear`` weights (out, in)), so the book's ``W_query.weight.T`` is
``W_query.weight`` here; ``MultiHeadAttention``'s q/k/v weights are the column blocks of ``qkv.weight``
(``[:, :d_out]``, ``[:, d_out:2*d_out]``, ``[:, 2*d_out:]``) instead of three layers. Random draws come from
minigpt's generator (``manual_seed``), so the weights, and the figures that depend on them, differ from the
book's; the figures of chapter 3.3, which use no trained weights, are the book's to the printed digit.
``Dropout`` (section 3.5.2's ``torch.nn.Dropout(0.5)``) is minigpt's layer: it zeroes each entry with
probability p and scales the rest by 1 / (1 - p) in training mode, as torch's (its mask differs).
"""
from __future__ import annotations

from .. import functional as F
from ..errors import MiniGPTError
from ..nn import Dropout, Linear, Module
from ..nn.attention import CausalAttention, MultiHeadAttentionWrapper, SelfAttention
from ..random import get_rng

__all__ = ["SelfAttention_v1", "SelfAttention_v2", "CausalAttention", "MultiHeadAttentionWrapper",
           "MultiHeadAttention", "Dropout"]


class SelfAttention_v2(SelfAttention):
    """Self-attention with query/key/value Linear layers (no mask): (..., T, d_in) -> (..., T, d_out)."""

    def __init__(self, d_in: int, d_out: int, qkv_bias: bool = False):
        super().__init__(d_in, d_out, qkv_bias)


class SelfAttention_v1(SelfAttention_v2):
    """The book's first trainable self-attention: weight matrices drawn uniform in [0, 1) as
    ``torch.rand``, no bias. The book keeps each matrix as a bare Parameter (``W_query``); here it is the
    weight of a bias-free Linear (``W_query.weight``, (d_in, d_out)), which computes the same ``x @ W``."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__(d_in, d_out, qkv_bias=False)
        for lin in (self.W_query, self.W_key, self.W_value):
            lin.weight.data[...] = get_rng().random(lin.weight.shape)


class MultiHeadAttention(Module):
    """Causal multi-head attention, the book's ``MultiHeadAttention(d_in, d_out, context_length, dropout,
    num_heads, qkv_bias=False)``: (B, T, d_in) -> (B, T, d_out), with ``num_heads`` heads of
    ``d_out // num_heads`` dimensions, dropout on the attention weights and the ``out_proj`` layer.

    One fused (d_in, 3 * d_out) projection ``qkv`` replaces the book's three (same numbers, one matrix
    product), and ``F.causal_attention`` replaces the mask/softmax/dropout/matmul steps (forward and
    backward in ``minigpt/ops/attention.py``). ``context_length`` bounds the input length as the book's mask
    buffer does. minigpt's model uses ``minigpt.nn.MultiHeadAttention`` (d_in = d_out, a KV cache for
    generation); this class takes any d_in, as the book's chapter 3 examples need.
    """

    def __init__(self, d_in: int, d_out: int, context_length: int, dropout: float, num_heads: int,
                 qkv_bias: bool = False):
        super().__init__()
        if num_heads < 1 or d_out % num_heads:
            raise MiniGPTError(f"MultiHeadAttention: d_out ({d_out}) must be divisible by num_heads ({num_heads})")
        self.d_out, self.num_heads, self.head_dim = d_out, num_heads, d_out // num_heads
        self.context_length, self.dropout = context_length, float(dropout)
        self.qkv = Linear(d_in, 3 * d_out, bias=qkv_bias)  # [W_query | W_key | W_value]
        self.out_proj = Linear(d_out, d_out)

    def forward(self, x):
        if x.ndim != 3:
            raise MiniGPTError(f"MultiHeadAttention expects (batch, tokens, d_in), got shape {tuple(x.shape)}")
        if x.shape[1] > self.context_length:
            raise MiniGPTError(f"{x.shape[1]} tokens exceed context_length {self.context_length}")
        qkv = self.qkv(x)  # (B, T, d_in) -> (B, T, 3 d_out)
        ctx = F.causal_attention(qkv, self.num_heads, dropout_p=self.dropout, training=self.training)  # (B, T, d_out)
        return self.out_proj(ctx)  # (B, T, d_out)

    def extra_repr(self):
        return f"d_out={self.d_out}, num_heads={self.num_heads}, dropout={self.dropout}"

