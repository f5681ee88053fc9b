"""Every differentiable op, forward and backward side by side, grouped by family:

- ``arithmetic``: add, sub, mul, div, neg, pow, matmul
- ``elementwise``: exp, log, sqrt, tanh, relu, gelu, cast
- ``reduce``: sum, mean, max
- ``shape``: reshape, transpose/permute, getitem (indexing), concatenate, stack, split
- ``select``: where, masked_fill, embedding
- ``softmax``: softmax, log_softmax, cross_entropy, linear_cross_entropy (LM head + loss, fused)
- ``nn``: linear, linear_gelu (linear + GELU, fused), feed_forward (linear + GELU + linear, fused), layer_norm,
  dropout; rms_norm, swiglu (Llama's feed-forward layer, fused), silu, silu_mul
- ``rope``: rope (rotary position embedding)
- ``attention``: causal_attention (fused multi-head causal self-attention); grouped_attention (Llama 3 /
  Qwen 3: grouped keys and values, QK-norm, RoPE, fused)
- ``quantized``: int8_linear, int8_embedding (int8 weights, inference only: no backward)
- ``lora``: lora (the low-rank update ``scale * x @ A @ B`` of a LoRA layer)

Each op is a ``Function`` subclass followed by its public function (``LayerNormOp`` then ``layer_norm`` in
``nn.py``). The fused ops and every op whose name a layer also has are called ``<Name>Op``, so that
``minigpt.nn.LayerNorm`` (the layer) and ``minigpt.ops.nn.LayerNormOp`` (its op) are never confused. A
fused op calls the kernels of ``minigpt.kernels`` and names, in its docstring, the plain NumPy reference
it runs (``math: kernels/layernorm.py::layer_norm_backward_numpy``).
"""
from .arithmetic import add, div, matmul, mul, neg, pow, sub
from .attention import causal_attention, grouped_attention
from .lora import lora
from .elementwise import cast, exp, gelu, log, relu, sqrt, tanh
from .nn import dropout, feed_forward, layer_norm, linear, linear_gelu, linear_t, rms_norm, silu, silu_mul, swiglu
from .quantized import int8_embedding, int8_linear
from .reduce import max, mean, sum
from .rope import rope
from .select import embedding, masked_fill, where
from .shape import cat, concatenate, getitem, permute, reshape, split, stack, transpose
from .softmax import cross_entropy, linear_cross_entropy, log_softmax, softmax

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "matmul",
    "exp", "log", "sqrt", "tanh", "relu", "gelu", "cast",
    "sum", "mean", "max",
    "reshape", "transpose", "permute", "getitem", "concatenate", "cat", "stack", "split",
    "where", "masked_fill", "embedding",
    "softmax", "log_softmax", "cross_entropy", "linear_cross_entropy",
    "linear", "linear_t", "linear_gelu", "feed_forward", "layer_norm", "dropout",
    "rms_norm", "swiglu", "silu", "silu_mul", "rope",
    "causal_attention", "grouped_attention",
    "int8_linear", "int8_embedding",
    "lora",
]
