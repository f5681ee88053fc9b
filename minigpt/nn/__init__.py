"""Layers and containers: Module, Parameter, Linear, Embedding, LayerNorm, Dropout, FeedForward,
TransformerBlock, MultiHeadAttention (and the book's teaching attention classes)."""
from .attention import (CausalAttention, KVCache, MultiHeadAttention, MultiHeadAttentionWrapper, SelfAttention,
                        simplified_self_attention)
from .block import TransformerBlock
from .layers import GELU, Dropout, Embedding, FeedForward, LayerNorm, Linear, uninitialized
from .lora import LoRALinear, apply_lora, merge_lora
from .module import Module, ModuleList, Parameter
from .quantized import Int8Embedding, Int8Linear

__all__ = ["Module", "ModuleList", "Parameter", "Linear", "Embedding", "LayerNorm", "Dropout", "GELU",
           "FeedForward", "TransformerBlock", "MultiHeadAttention", "KVCache", "SelfAttention", "CausalAttention",
           "MultiHeadAttentionWrapper", "simplified_self_attention", "Int8Linear", "Int8Embedding",
           "uninitialized", "LoRALinear", "apply_lora", "merge_lora"]
