"""The layers of Llama 3- and Qwen 3-style blocks: RMSNorm, the SwiGLU feed-forward layer, and grouped-query
attention with rotary positions (and Qwen 3's QK-norm). ``TransformerBlock`` builds them when the model's
configuration asks for them (``GPTConfig(norm="rmsnorm", ffn="swiglu", n_kv_groups=..., qk_norm=True,
pos_encoding="rope")``); each fused path has a plain one for wrapped layers (LoRA, int8)."""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..errors import MiniGPTError
from ..ops.attention import alibi_slopes, expand_groups, norm_and_rotate, split_heads
from ..ops.rope import rope_tables
from ..kernels.attention import attention_forward
from ..tensor import Tensor
from .layers import Linear
from .module import Module, Parameter


class RMSNorm(Module):
    """Scale the last axis to unit root-mean-square, then by ``weight`` (Llama: eps 1e-5, Qwen 3: 1e-6)."""

    def __init__(self, dim: int, eps: float = 1e-6, dtype=np.float32):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = Parameter(np.ones(dim, dtype=dtype))

    def forward(self, x):
        return F.rms_norm(x, self.weight, self.eps)  # (..., dim) -> (..., dim)

    def extra_repr(self):
        return f"{self.dim}, eps={self.eps}"


class SwiGLUFeedForward(Module):
    """Llama's MLP: ``down(silu(gate(x)) * up(x))``, three bias-free linear layers (C -> H, C -> H, H -> C)."""

    def __init__(self, emb_dim: int, hidden_dim: int, init_std: float = 0.02, proj_std: float | None = None,
                 bias: bool = False, dtype=np.float32):
        super().__init__()
        self.gate = Linear(emb_dim, hidden_dim, bias=bias, init_std=init_std, dtype=dtype)
        self.up = Linear(emb_dim, hidden_dim, bias=bias, init_std=init_std, dtype=dtype)
        self.down = Linear(hidden_dim, emb_dim, bias=bias, init_std=proj_std or init_std, dtype=dtype)

    def forward(self, x, residual=None):
        """(B, T, C) -> (B, T, C); ``+ residual`` added inside the fused op when it can be."""
        lins = (self.gate, self.up, self.down)
        if (all(type(m) is Linear and m.bias is None for m in lins)
                and not any(m._forward_hooks or m._backward_hooks for m in lins)):
            # the whole layer as one op, which keeps only the two (N, H) pre-activations for backward
            y = F.swiglu(x, self.gate.weight, self.up.weight, self.down.weight, residual=residual)
            hidden = np.broadcast_to(np.zeros((), x.dtype), (*x.shape[:-1], self.gate.weight.shape[1]))
            self.gate._ran(hidden)
            self.up._ran(hidden)
            self.down._ran(y)
            return y
        y = self.down(F.silu_mul(self.gate(x), self.up(x)))  # wrapped layers: (B, T, C) -> (B, T, H) -> (B, T, C)
        return y if residual is None else y + residual


class GroupedQueryAttention(Module):
    """Causal attention with ``n_kv_groups`` key/value heads shared by groups of query heads, rotary
    positions (``rope_theta``; None: none) or ALiBi's linear bias (``alibi=True``, with ``rope_theta``
    None) and optional QK-norm, through one fused (C, (H + 2G) D) projection ``qkv`` and an output
    projection ``proj`` (H D -> C)."""

    def __init__(self, emb_dim: int, n_heads: int, n_kv_groups: int | None = None, head_dim: int | None = None,
                 dropout: float = 0.0, qkv_bias: bool = False, out_bias: bool = False, qk_norm: bool = False,
                 rope_theta: float | None = 10000.0, rope_scaling: dict | None = None, norm_eps: float = 1e-6,
                 init_std: float = 0.02, proj_std: float | None = None, dtype=np.float32, alibi: bool = False):
        super().__init__()
        G = n_heads if n_kv_groups is None else n_kv_groups
        if alibi and rope_theta is not None:
            raise MiniGPTError("GroupedQueryAttention: ALiBi and RoPE are two position encodings; give "
                               "rope_theta=None with alibi=True")
        if n_heads <= 0 or G <= 0 or n_heads % G:
            raise MiniGPTError(f"n_heads ({n_heads}) must be a positive multiple of n_kv_groups ({G})")
        D = head_dim or emb_dim // n_heads
        if head_dim is None and emb_dim % n_heads:
            raise MiniGPTError(f"emb_dim ({emb_dim}) must be divisible by n_heads ({n_heads}), or give head_dim")
        self.emb_dim, self.n_heads, self.n_kv_groups, self.head_dim = emb_dim, n_heads, G, D
        self.dropout, self.rope_theta, self.rope_scaling, self.norm_eps = dropout, rope_theta, rope_scaling, norm_eps
        self.qkv = Linear(emb_dim, (n_heads + 2 * G) * D, bias=qkv_bias, init_std=init_std, dtype=dtype)
        self.proj = Linear(n_heads * D, emb_dim, bias=out_bias, init_std=proj_std or init_std, dtype=dtype)
        self.q_norm = RMSNorm(D, norm_eps, dtype=dtype) if qk_norm else None
        self.k_norm = RMSNorm(D, norm_eps, dtype=dtype) if qk_norm else None
        self.alibi_slopes = alibi_slopes(n_heads).astype(dtype) if alibi else None   # (H,) per query head

    def forward(self, x, cache=None, residual=None):
        qkv = self.qkv(x)  # (B, T, C) -> (B, T, (H + 2G) D): [q | k | v]
        if cache is None:
            norms = {} if self.q_norm is None else dict(q_norm=self.q_norm.weight, k_norm=self.k_norm.weight)
            ctx = F.grouped_attention(qkv, self.n_heads, self.n_kv_groups, self.head_dim, rope_theta=self.rope_theta,
                                      rope_scaling=self.rope_scaling, eps=self.norm_eps, dropout_p=self.dropout,
                                      training=self.training, alibi_slopes=self.alibi_slopes, **norms)  # -> (B, T, H D)
        else:
            ctx = self._attend_with_cache(qkv.data, cache)
        if residual is None:
            return self.proj(ctx)
        proj = self.proj
        if type(proj) is Linear and not (proj._forward_hooks or proj._backward_hooks):
            y = F.linear(ctx, proj.weight, proj.bias, residual=residual)  # ctx @ W (+ b) + residual
            proj._ran(y)
            return y
        return self.proj(ctx) + residual

    def _attend_with_cache(self, qkv: np.ndarray, cache) -> Tensor:
        """Inference only: the new keys/values (normed, turned to their positions) into the cache, then
        the new queries over every cached position. The cache keeps G heads, not H."""
        B, T, _ = qkv.shape
        H, G, D = self.n_heads, self.n_kv_groups, self.head_dim
        start = cache.length
        if start + T > cache.max_len:
            raise MiniGPTError(f"KV cache holds {cache.max_len} positions; {start} used + {T} new do not fit")
        cos = sin = None
        if self.rope_theta is not None:
            cos, sin = rope_tables(T, D, self.rope_theta, start, self.rope_scaling, qkv.dtype)
        q, k, v = split_heads(qkv, H, G, D)
        qn = None if self.q_norm is None else self.q_norm.weight.data
        kn = None if self.k_norm is None else self.k_norm.weight.data
        q, _ = norm_and_rotate(q, qn, self.norm_eps, cos, sin)   # (B, T, H, D)
        k, _ = norm_and_rotate(k, kn, self.norm_eps, cos, sin)   # (B, T, G, D)
        cache.k[:, start:start + T] = k
        cache.v[:, start:start + T] = v
        cache.length = start + T
        ke = expand_groups(cache.k[:, :start + T], H)            # (B, start + T, H, D)
        ve = expand_groups(cache.v[:, :start + T], H)
        out, _ = attention_forward(q, ke, ve, 1.0 / math.sqrt(D), slopes=self.alibi_slopes)  # absolute positions
        return Tensor._wrap(out.reshape(B, T, H * D))

    def extra_repr(self):
        return (f"emb_dim={self.emb_dim}, n_heads={self.n_heads}, n_kv_groups={self.n_kv_groups}, "
                f"head_dim={self.head_dim}, rope_theta={self.rope_theta}, qk_norm={self.q_norm is not None}"
                + (", alibi=True" if self.alibi_slopes is not None else ""))
