"""GPTConfig, the model's hyperparameters, and PRESETS, the named sizes (GPT-2's and small CPU ones)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import MiniGPTError


@dataclass
class GPTConfig:
    vocab_size: int = 50257
    context_length: int = 1024
    emb_dim: int = 768
    n_heads: int = 12
    n_layers: int = 12
    drop_rate: float = 0.1
    qkv_bias: bool = False
    tie_weights: bool = True
    layer_norm_eps: float = 1e-5
    # How new weights are drawn (weights read from a file ignore it):
    #   "gpt2":  GPT-2's scheme: N(0, 0.02) matrices, N(0, 0.01) positions, zero biases, residual projections
    #            N(0, 0.02 / sqrt(2 * n_layers)).
    #   "torch": PyTorch's defaults, as the book's GPTModel gets them: embeddings N(0, 1), every Linear weight
    #            and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a=sqrt(5)), LayerNorm 1 / 0.
    init: str = "gpt2"

    def __post_init__(self):
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
                raise MiniGPTError(f"GPTConfig.{name} must be a positive integer, got {v!r}")
        if self.emb_dim % self.n_heads:
            raise MiniGPTError(
                f"GPTConfig: emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads})"
            )
        if not 0.0 <= self.drop_rate < 1.0:
            raise MiniGPTError(f"GPTConfig.drop_rate must be in [0, 1), got {self.drop_rate}")
        if self.init not in INITS:
            raise MiniGPTError(f"GPTConfig.init must be one of {', '.join(INITS)}, got {self.init!r}")

    @classmethod
    def preset(cls, name: str, **overrides) -> "GPTConfig":
        """A named configuration (see ``PRESETS``), with fields overridden by keyword."""
        if name not in PRESETS:
            raise MiniGPTError(f"unknown config preset {name!r}; known: {', '.join(PRESETS)}")
        fields = {**PRESETS[name], **overrides}
        unknown = set(fields) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise MiniGPTError(f"unknown GPTConfig field(s): {', '.join(sorted(unknown))}")
        return cls(**fields)


INITS = ("gpt2", "torch")

_GPT2 = dict(vocab_size=50257, context_length=1024, drop_rate=0.1, qkv_bias=True)
PRESETS = {
    # GPT-2's published sizes
    "gpt2-small": dict(_GPT2, emb_dim=768, n_heads=12, n_layers=12),     # 124M
    "gpt2-medium": dict(_GPT2, emb_dim=1024, n_heads=16, n_layers=24),   # 355M
    "gpt2-large": dict(_GPT2, emb_dim=1280, n_heads=20, n_layers=36),    # 774M
    "gpt2-xl": dict(_GPT2, emb_dim=1600, n_heads=25, n_layers=48),       # 1558M
    # small models that train on a CPU (vocab_size is usually set from the tokenizer)
    "nano": dict(vocab_size=512, context_length=64, emb_dim=64, n_heads=4, n_layers=2, drop_rate=0.0),
    "tiny": dict(vocab_size=512, context_length=128, emb_dim=128, n_heads=4, n_layers=4, drop_rate=0.0),
    "mini": dict(vocab_size=4096, context_length=128, emb_dim=192, n_heads=6, n_layers=4, drop_rate=0.0),
    "small": dict(vocab_size=50257, context_length=256, emb_dim=384, n_heads=6, n_layers=6, drop_rate=0.0),
    # the book's GPT_CONFIG_124M (chapter 4) as its GPTModel builds it: no q/k/v bias, an output head of its
    # own (not tied to the token embedding) and PyTorch's default initialisation: 163,009,536 parameters
    "book-124m": dict(vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12, n_layers=12, drop_rate=0.1,
                      qkv_bias=False, tie_weights=False, init="torch"),
}
