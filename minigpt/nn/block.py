"""TransformerBlock: the pre-norm GPT block, built from the layers (layers.py) and attention
(attention.py) below it -- or, when a model's configuration asks, from Llama's and Qwen's (llama.py):
RMSNorm, the SwiGLU feed-forward layer and grouped-query attention with rotary positions."""
from __future__ import annotations

import math

import numpy as np

from .attention import MultiHeadAttention
from .layers import Dropout, FeedForward, LayerNorm
from .llama import GroupedQueryAttention, RMSNorm, SwiGLUFeedForward
from .module import Module


class TransformerBlock(Module):
    """Pre-LayerNorm block: x + drop(attn(ln1(x))), then x + drop(ff(ln2(x)))."""

    def __init__(self, emb_dim: int, n_heads: int, drop_rate: float = 0.0, qkv_bias: bool = True,
                 n_layers_for_init: int = 1, dtype=np.float32, init: str = "gpt2", config=None):
        """``init``: "gpt2" (N(0, 0.02) weights, residual projections N(0, 0.02 / sqrt(2 * n_layers)), zero
        biases) or "torch" (PyTorch's nn.Linear default: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))).
        ``config``: a GPTConfig beyond GPT-2 (norm, ffn, n_kv_groups, ...) builds those sub-layers instead."""
        super().__init__()
        if init == "torch":
            init_std = proj_std = None  # Linear's own default is PyTorch's
        else:
            init_std, proj_std = 0.02, 0.02 / math.sqrt(2 * n_layers_for_init)  # GPT-2's scaled residual init
        if config is not None and not config.is_gpt2_block:
            self._build_modern(config, init_std, proj_std, dtype)
            return
        self.norm1 = LayerNorm(emb_dim, dtype=dtype)
        self.attn = MultiHeadAttention(emb_dim, n_heads, dropout=drop_rate, qkv_bias=qkv_bias,
                                       init_std=init_std, proj_std=proj_std, dtype=dtype,
                                       alibi=config is not None and config.pos_encoding == "alibi")
        self.norm2 = LayerNorm(emb_dim, dtype=dtype)
        self.ff = FeedForward(emb_dim, init_std=init_std, proj_std=proj_std, dtype=dtype)
        self.drop = Dropout(drop_rate)

    def _build_modern(self, c, init_std, proj_std, dtype):
        """The sub-layers a GPTConfig beyond GPT-2 names (norm, ffn, n_kv_groups, qk_norm, pos_encoding)."""
        eps = c.layer_norm_eps
        norm = (lambda: RMSNorm(c.emb_dim, eps, dtype=dtype)) if c.norm == "rmsnorm" else \
            (lambda: LayerNorm(c.emb_dim, eps, dtype=dtype))
        self.norm1 = norm()
        self.attn = GroupedQueryAttention(
            c.emb_dim, c.n_heads, c.kv_heads, c.attn_head_dim, dropout=c.drop_rate, qkv_bias=c.qkv_bias,
            out_bias=c.bias, qk_norm=c.qk_norm, rope_theta=c.rope_theta if c.pos_encoding == "rope" else None,
            rope_scaling=c.rope_scaling, norm_eps=eps, init_std=init_std, proj_std=proj_std, dtype=dtype,
            alibi=c.pos_encoding == "alibi")
        self.norm2 = norm()
        if c.ffn == "swiglu":
            self.ff = SwiGLUFeedForward(c.emb_dim, c.ffn_dim, init_std=init_std, proj_std=proj_std, bias=c.bias,
                                        dtype=dtype)
        else:
            self.ff = FeedForward(c.emb_dim, c.ffn_dim, init_std=init_std, proj_std=proj_std, dtype=dtype)
        self.drop = Dropout(c.drop_rate)

    def forward(self, x, cache=None):
        # x: (B, T, C)
        if self._fused_residuals():
            # the same sums, each added inside the op that makes the sub-layer's output (attention's
            # projection, the feed-forward op), so those outputs are never kept as tensors of their own
            x = self.attn(self.norm1(x), cache=cache, residual=x)  # x + attn(ln1(x)): (B, T, C), residual 1
            return self.ff(self.norm2(x), residual=x)  # x + ff(ln2(x)): (B, T, C), residual 2
        x = x + self.drop(self.attn(self.norm1(x), cache=cache))  # (B, T, C) -> (B, T, C), residual 1
        return x + self.drop(self.ff(self.norm2(x)))  # (B, T, C) -> (B, T, C), residual 2

    def _fused_residuals(self) -> bool:
        """Whether the residual additions can go inside the sub-layers: dropout is the identity (p = 0 or
        eval mode) and no hook watches the sub-layers' own outputs."""
        return ((self.drop.p == 0 or not self.drop.training)
                and not any(m._forward_hooks or m._backward_hooks for m in (self.attn, self.ff, self.drop)))
