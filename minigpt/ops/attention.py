"""Fused causal self-attention over a packed q/k/v tensor.

The input is the output of the fused q/k/v projection, (B, T, 3*C); heads are strided views of it,
(B, T, H, D), never copied. The kernel (``minigpt.kernels.attention``) computes each query row's softmax
inside the causal limit and saves only the row's log-sum-exp; backward recomputes the probabilities
from it and writes dq, dk, dv straight into one (B, T, 3, H, D) buffer, which is the gradient of the
packed input. Attention dropout draws its mask from a counter-based hash of (seed, b, h, i, j), so
backward regenerates it without storing a (T, T) mask.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import MiniGPTError
from ..kernels import attention
from ..random import as_generator
from ..tensor import Function, Tensor
from ._util import as_tensor, check_float


class CausalAttentionOp(Function):
    """out = softmax(q k^T * scale + causal mask) v per head, heads read from the packed q/k/v input.

    math: kernels/attention.py::attention_forward_numpy, attention_backward_numpy
    """

    def forward(self, qkv, n_heads, dropout_p, seed):
        B, T, C3 = qkv.shape
        C = C3 // 3
        H, D = n_heads, C // n_heads
        packed = qkv.reshape(B, T, 3, H, D)                          # (B, T, 3C) -> (B, T, 3, H, D)
        q, k, v = packed[:, :, 0], packed[:, :, 1], packed[:, :, 2]  # each (B, T, H, D), strided views
        scale = 1.0 / math.sqrt(D)
        # S = scale q k^T (B, H, T, T), causal; P = softmax(S); out = P v: (B, T, H, D); lse: log-sum-exp
        # of each row of S, (B, H, T), from which backward rebuilds P
        out, lse = attention.attention_forward(q, k, v, scale, dropout_p, seed)
        self.saved = (q, k, v, out, lse, scale, dropout_p, seed)
        return out.reshape(B, T, C)                                  # (B, T, H, D) -> (B, T, C)

    def backward(self, g):
        q, k, v, out, lse, scale, dropout_p, seed = self.saved
        B, T, H, D = q.shape
        dqkv = np.empty((B, T, 3, H, D), dtype=g.dtype)              # dq, dk, dv side by side
        # With P = exp(S - lse) (and the dropout mask M applied: P' = P * M / (1 - p)):
        #   dv = P'^T dout                      (B, T, H, D)
        #   dP' = dout v^T; dP = dP' * M / (1 - p)
        #   dS = P * (dP - rowsum(dout * out))  softmax's backward, rowsum(dP * P) = rowsum(dout * out)
        #   dq = scale dS k,  dk = scale dS^T q (B, T, H, D) each
        attention.attention_backward(np.ascontiguousarray(g).reshape(B, T, H, D), q, k, v, out, lse, scale,
                                     dropout_p, seed, dq=dqkv[:, :, 0], dk=dqkv[:, :, 1], dv=dqkv[:, :, 2])
        return (dqkv.reshape(B, T, 3 * H * D),)                      # (B, T, 3, H, D) -> (B, T, 3C)


def causal_attention(qkv, n_heads: int, dropout_p: float = 0.0, training: bool = True, rng=None) -> Tensor:
    """Multi-head causal self-attention of a packed (B, T, 3*C) tensor [q | k | v] -> (B, T, C).

    Scores are scaled by 1/sqrt(head_dim); ``dropout_p`` applies to the attention probabilities when
    ``training``.
    """
    qkv = as_tensor(qkv)
    check_float(qkv, "causal_attention")
    if qkv.ndim != 3 or qkv.shape[-1] % 3:
        raise MiniGPTError(f"causal_attention: expected a packed (B, T, 3*C) tensor, got shape {qkv.shape}")
    C = qkv.shape[-1] // 3
    if n_heads <= 0 or C % n_heads:
        raise MiniGPTError(f"causal_attention: embedding size {C} is not divisible by n_heads={n_heads}")
    if not 0.0 <= dropout_p < 1.0:
        raise MiniGPTError(f"causal_attention: dropout_p must be in [0, 1), got {dropout_p}")
    p = float(dropout_p) if training else 0.0
    seed = 0
    if p > 0:
        seed = int(as_generator(rng).integers(0, 2**62))
    return CausalAttentionOp.apply(qkv, n_heads=int(n_heads), dropout_p=p, seed=seed)

