"""GPTConfig, the model's hyperparameters, and PRESETS, the named sizes (GPT-2's and small CPU ones)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from ..errors import MiniGPTError
from ..ops.rope import _scaling_key


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
    # Beyond GPT-2 (Llama 3, Qwen 3): the defaults are GPT-2's
    norm: str = "layernorm"            # "layernorm" or "rmsnorm" (eps: layer_norm_eps)
    ffn: str = "gelu"                  # "gelu" (Linear-GELU-Linear) or "swiglu" (gate, up, down)
    hidden_dim: int | None = None      # the feed-forward layer's width; None: 4 * emb_dim
    n_kv_groups: int | None = None     # key/value heads (grouped-query attention); None: n_heads
    head_dim: int | None = None        # None: emb_dim // n_heads
    qk_norm: bool = False              # RMSNorm of each query and key head vector (Qwen 3)
    pos_encoding: str = "learned"      # "learned" (GPT-2), "sinusoidal" (fixed, added), "rope" (rotary),
                                       # "alibi" (a linear bias on the attention scores)
    rope_theta: float = 10000.0        # RoPE's frequency base
    rope_scaling: dict | None = None   # Llama 3's: factor, low_freq_factor, high_freq_factor,
                                       # original_max_position_embeddings
    bias: bool = True                  # biases of the output projection and the feed-forward layer
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
        for name in ("hidden_dim", "n_kv_groups", "head_dim"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0):
                raise MiniGPTError(f"GPTConfig.{name} must be a positive integer or None, got {v!r}")
        for name, known in (("norm", NORMS), ("ffn", FFNS), ("pos_encoding", POS_ENCODINGS)):
            if getattr(self, name) not in known:
                raise MiniGPTError(f"GPTConfig.{name} must be one of {', '.join(known)}, got {getattr(self, name)!r}")
        for name in ("qkv_bias", "tie_weights", "qk_norm", "bias"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise MiniGPTError(f"GPTConfig.{name} must be true or false, got {getattr(self, name)!r}")
        if self.head_dim is None and self.emb_dim % self.n_heads:
            raise MiniGPTError(
                f"GPTConfig: emb_dim ({self.emb_dim}) must be divisible by n_heads ({self.n_heads})"
            )
        if self.n_heads % self.kv_heads:
            raise MiniGPTError(f"GPTConfig: n_heads ({self.n_heads}) must be a multiple of n_kv_groups "
                               f"({self.n_kv_groups})")
        if self.pos_encoding == "rope":
            if isinstance(self.rope_theta, bool) or not isinstance(self.rope_theta, (int, float)) \
                    or not 1 < self.rope_theta < float("inf"):
                raise MiniGPTError(f"GPTConfig.rope_theta must be a finite number > 1, got {self.rope_theta!r}")
            if self.attn_head_dim % 2:
                raise MiniGPTError(f"GPTConfig: RoPE needs an even head size, got {self.attn_head_dim}")
            if self.rope_scaling is not None:
                _scaling_key(self.rope_scaling)
        if not 0.0 <= self.drop_rate < 1.0:
            raise MiniGPTError(f"GPTConfig.drop_rate must be in [0, 1), got {self.drop_rate}")
        if self.pos_encoding == "sinusoidal" and self.emb_dim % 2:
            raise MiniGPTError(f"GPTConfig: sinusoidal positions need an even emb_dim, got {self.emb_dim}")
        if self.init not in INITS:
            raise MiniGPTError(f"GPTConfig.init must be one of {', '.join(INITS)}, got {self.init!r}")

    @property
    def kv_heads(self) -> int:
        """The number of key/value heads (n_kv_groups, or n_heads)."""
        return self.n_kv_groups or self.n_heads

    @property
    def attn_head_dim(self) -> int:
        return self.head_dim or self.emb_dim // self.n_heads

    @property
    def ffn_dim(self) -> int:
        return self.hidden_dim or 4 * self.emb_dim

    @property
    def is_gpt2_block(self) -> bool:
        """Whether the blocks are GPT-2's (LayerNorm, GELU MLP, plain multi-head attention)."""
        return (self.norm == "layernorm" and self.ffn == "gelu" and self.kv_heads == self.n_heads
                and self.head_dim in (None, self.emb_dim // self.n_heads) and not self.qk_norm
                and self.pos_encoding != "rope" and self.bias)

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


def checked_field(d: dict, key: str, kind: str, default=None, where: str = "config.json"):
    """``d[key]`` (or ``default``) of a parsed config file, checked for its kind: "int" (a positive integer,
    not a bool or a float), "bool", "float" (a finite number), "positive" (a positive finite number); a
    MiniGPTError naming the file and the key otherwise."""
    v = d.get(key, default)
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    ok, want = {
        "int": (isinstance(v, int) and not isinstance(v, bool) and v > 0, "a positive integer"),
        "bool": (isinstance(v, bool), "true or false"),
        "float": (number and math.isfinite(v), "a finite number"),
        "positive": (number and math.isfinite(v) and v > 0, "a positive finite number"),
    }[kind]
    if not ok:
        raise MiniGPTError(f"{where}: {key} must be {want}, got {v!r}")
    return v


NORMS = ("layernorm", "rmsnorm")
FFNS = ("gelu", "swiglu")
POS_ENCODINGS = ("learned", "sinusoidal", "rope", "alibi")
INITS = ("gpt2", "torch")

_GPT2 = dict(vocab_size=50257, context_length=1024, drop_rate=0.1, qkv_bias=True)
# Llama / Qwen blocks: RMSNorm, SwiGLU, rotary positions, no biases, tied head (as the small Llama 3.2 / Qwen 3)
_LLAMA = dict(norm="rmsnorm", ffn="swiglu", pos_encoding="rope", qkv_bias=False, bias=False, drop_rate=0.0,
              tie_weights=True)
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
    # Llama 3.2 1B and Qwen 3 0.6B (context lengths cut to what a CPU can hold; the checkpoints' own
    # config.json says more), and small models of the same make for CPU training
    "llama3.2-1b": dict(_LLAMA, vocab_size=128256, context_length=8192, emb_dim=2048, n_heads=32, n_layers=16,
                        hidden_dim=8192, n_kv_groups=8, rope_theta=500000.0, layer_norm_eps=1e-5,
                        rope_scaling=dict(factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                          original_max_position_embeddings=8192)),
    "qwen3-0.6b": dict(_LLAMA, vocab_size=151936, context_length=8192, emb_dim=1024, n_heads=16, n_layers=28,
                       hidden_dim=3072, n_kv_groups=8, head_dim=128, qk_norm=True, rope_theta=1000000.0,
                       layer_norm_eps=1e-6),
    "llama-nano": dict(_LLAMA, vocab_size=512, context_length=64, emb_dim=64, n_heads=4, n_layers=2, hidden_dim=176,
                       n_kv_groups=2),
    "llama-tiny": dict(_LLAMA, vocab_size=512, context_length=128, emb_dim=128, n_heads=4, n_layers=4,
                       hidden_dim=352, n_kv_groups=2),
    "qwen-tiny": dict(_LLAMA, vocab_size=512, context_length=128, emb_dim=128, n_heads=4, n_layers=4,
                      hidden_dim=352, n_kv_groups=2, qk_norm=True, rope_theta=1000000.0, layer_norm_eps=1e-6),
    # the book's GPT_CONFIG_124M (chapter 4) as its GPTModel builds it: no q/k/v bias, an output head of its
    # own (not tied to the token embedding) and PyTorch's default initialisation: 163,009,536 parameters
    "book-124m": dict(vocab_size=50257, context_length=1024, emb_dim=768, n_heads=12, n_layers=12, drop_rate=0.1,
                      qkv_bias=False, tie_weights=False, init="torch"),
}
