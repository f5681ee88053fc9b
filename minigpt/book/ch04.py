"""Chapter 4, *Implementing a GPT model from scratch*: GPT_CONFIG_124M, GPTModel and generate_text_simple.

``GPTModel(cfg)`` is minigpt's ``GPT`` built the way the book's class builds its model: its own output
head (``out_head``, not tied to the token embedding), ``qkv_bias`` as the dict says, and PyTorch's default
initialisation (embeddings N(0, 1); every Linear weight and bias uniform in +-1/sqrt(fan_in); LayerNorm
scale 1, shift 0). That is ``GPTConfig(..., tie_weights=False, init="torch")``, the ``book-124m`` preset
for ``GPT_CONFIG_124M``: 163,009,536 parameters, 124,412,160 without the output head.

Names a reader meets (the book's -> minigpt's): ``trf_blocks`` -> ``blocks`` (both work here), a block's
``att`` / ``ff`` / ``norm1`` / ``norm2`` -> ``attn`` / ``ff`` / ``norm1`` / ``norm2``, ``att.W_query`` /
``W_key`` / ``W_value`` -> the column blocks of one fused ``attn.qkv`` layer, ``att.out_proj`` ->
``attn.proj``, ``ff.layers[0]`` / ``ff.layers[2]`` -> ``ff.fc`` / ``ff.proj``, LayerNorm's ``scale`` /
``shift`` -> ``weight`` / ``bias``, ``out_head.weight`` (vocab, emb) -> ``out_head`` (the same (vocab,
emb) table, a bare parameter that also answers ``out_head.weight`` and ``out_head.parameters()``). Why minigpt differs: the fused layers run as single Numba kernels, and
GPT-2's own checkpoint uses the fused layout, so its files load without reshuffling.

minigpt's native default (``GPTConfig()``, the ``gpt2-*`` presets) ties the head to the token embedding
and initialises GPT-2's way (N(0, 0.02)): GPT-2's own model, 124M parameters, the layout GPT-2's
checkpoints load into. ``GPTModel`` builds the book's model instead, so that chapter 5's run trains the
model the book trains (docs/book.md has its table).

The chapter's other listings are here too: section 4.1's skeleton ``DummyGPTModel`` (the same model with
pass-through blocks and norm), section 4.4's ``ExampleDeepNeuralNetwork`` and ``print_gradients``, and
``rand`` / ``randn`` for the book's ``torch.rand`` / ``torch.randn`` inputs (float32, minigpt's generator).
"""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..model import GPT, GPTConfig
from ..model.generation import generate as _generate
from ..nn import GELU, Linear, Module, ModuleList, Parameter
from ..nn import LayerNorm as _LayerNorm
from ..nn.block import TransformerBlock as _Block
from ..nn.layers import FeedForward as _FeedForward
from ..random import get_rng
from ..tensor import Tensor

__all__ = ["GPT_CONFIG_124M", "GPTModel", "generate_text_simple", "book_config", "LayerNorm", "GELU",
           "FeedForward", "TransformerBlock", "OutputHead", "rand", "randn", "DummyGPTModel", "DummyTransformerBlock",
           "DummyLayerNorm", "ExampleDeepNeuralNetwork", "print_gradients"]

GPT_CONFIG_124M = {
    "vocab_size": 50257,     # vocabulary size
    "context_length": 1024,  # context length
    "emb_dim": 768,          # embedding dimension
    "n_heads": 12,           # number of attention heads
    "n_layers": 12,          # number of layers
    "drop_rate": 0.1,        # dropout rate
    "qkv_bias": False,       # query-key-value bias
}

_BOOK_KEYS = ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers", "drop_rate", "qkv_bias")


def book_config(cfg) -> GPTConfig:
    """The GPTConfig of the book's config dict (its seven keys, all required): an untied output head and
    PyTorch's initialisation, as the book's GPTModel. A GPTConfig passes through unchanged."""
    if isinstance(cfg, GPTConfig):
        return cfg
    if not isinstance(cfg, dict):
        raise MiniGPTError(f"GPTModel expects the book's config dict (like GPT_CONFIG_124M), got {type(cfg).__name__}")
    missing = [k for k in _BOOK_KEYS if k not in cfg]
    unknown = [k for k in cfg if k not in _BOOK_KEYS]
    if missing or unknown:
        raise MiniGPTError("GPTModel config: " + "; ".join(
            ([f"missing key(s) {', '.join(missing)}"] if missing else [])
            + ([f"unknown key(s) {', '.join(map(str, unknown))}"] if unknown else [])) + f" (expected {', '.join(_BOOK_KEYS)})")
    return GPTConfig(**{k: cfg[k] for k in _BOOK_KEYS}, tie_weights=False, init="torch")


class GPTModel(GPT):
    """The book's GPT: ``GPTModel(cfg)``, ``model(in_idx)`` -> logits (batch, tokens, vocab_size).

    ``in_idx`` is an integer array (batch, tokens) (or a Tensor holding one). The output head can be
    replaced as chapter 6 does (``model.out_head = Linear(emb_dim, 2)``): the model then returns that
    layer's outputs for every position. ``model.to(device)`` is accepted and returns the model (minigpt
    runs on the CPU). See the module docstring for how the names map to minigpt's.
    """

    def __init__(self, cfg, dtype=np.float32):
        super().__init__(book_config(cfg), dtype=dtype)
        if isinstance(self.out_head, Parameter):
            self.out_head = OutputHead(self.out_head)

    @property
    def trf_blocks(self):
        """The transformer blocks (minigpt's ``blocks``)."""
        return self.blocks

    def forward(self, in_idx, caches: list | None = None, last_only: bool = False):
        if isinstance(self.out_head, Module):  # a head the reader put there (chapter 6's classifier)
            h = self.hidden(in_idx)  # (B, T, emb_dim)
            return self.out_head(h[:, -1:] if last_only else h)  # (B, T, n_out)
        return super().forward(in_idx, caches=caches, last_only=last_only)

    def to(self, device=None):
        """Accepted for the book's ``model.to(device)``: minigpt runs on the CPU; returns the model."""
        return self


class OutputHead(Parameter):
    """The untied output head: one (vocab_size, emb_dim) matrix (GPT-2's layout, the shape of PyTorch's
    ``nn.Linear(emb_dim, vocab_size, bias=False).weight``), a Parameter as minigpt's model keeps it, that
    also answers the book's two questions to its Linear layer: ``model.out_head.weight.shape`` and
    ``sum(p.numel() for p in model.out_head.parameters())`` (the matrix itself, its only parameter)."""

    __slots__ = ()

    @property
    def weight(self) -> "OutputHead":
        return self

    def parameters(self):
        yield self


def generate_text_simple(model, idx, max_new_tokens: int, context_size: int) -> np.ndarray:
    """Greedy decoding, the book's loop: append the most likely next token ``max_new_tokens`` times, each
    time looking at the last ``context_size`` tokens. Returns the ids (batch, tokens + max_new_tokens).

    It runs minigpt's ``generate`` with ``temperature=0`` (greedy), which keeps a key/value cache so each
    new token costs one position instead of re-running the whole window; the ids are the same as the
    book's loop gives. minigpt's native ``generate`` samples at temperature 1.0 unless told otherwise.
    A ``context_size`` below the model's context length is honoured by the plain loop without the cache.
    """
    ids = _ids(idx)
    if context_size >= model.config.context_length:
        return _generate(model, ids, max_new_tokens, temperature=0.0)
    for _ in range(max_new_tokens):
        logits = model(ids[:, -context_size:], last_only=True).data[:, -1]  # (B, vocab)
        ids = np.concatenate([ids, np.argmax(logits, axis=-1)[:, None]], axis=1)
    return ids


def _ids(idx) -> np.ndarray:
    """A (batch, tokens) int64 array from an array, a Tensor or nested lists of ids."""
    a = idx.data if isinstance(idx, Tensor) else np.asarray(idx)
    if a.dtype.kind not in "iu":
        raise MiniGPTError(f"token ids must be integers, got dtype {a.dtype}")
    if a.ndim == 1:
        a = a[None, :]
    return a.astype(np.int64, copy=False)


class LayerNorm(_LayerNorm):
    """The book's ``LayerNorm(emb_dim)``: eps 1e-5, biased variance; its ``scale`` / ``shift`` are minigpt's
    ``weight`` / ``bias``."""

    def __init__(self, emb_dim: int):
        super().__init__(emb_dim, eps=1e-5)


class FeedForward(_FeedForward):
    """The book's ``FeedForward(cfg)``: Linear(emb, 4 emb) -> GELU -> Linear(4 emb, emb), PyTorch's
    initialisation (minigpt's ``ff.fc`` / ``ff.proj`` are the book's ``layers[0]`` / ``layers[2]``)."""

    def __init__(self, cfg):
        super().__init__(book_config(_full(cfg)).emb_dim, init_std=None)


class TransformerBlock(_Block):
    """The book's ``TransformerBlock(cfg)``: pre-LayerNorm attention and feed-forward with shortcuts."""

    def __init__(self, cfg):
        c = book_config(_full(cfg))
        super().__init__(c.emb_dim, c.n_heads, c.drop_rate, c.qkv_bias, init="torch")


# --- section 4.1's placeholder model ---------------------------------------------------------------
class DummyTransformerBlock(Module):
    """Section 4.1's placeholder block: returns its input unchanged."""

    def __init__(self, cfg):
        super().__init__()

    def forward(self, x, cache=None):
        return x


class DummyLayerNorm(Module):
    """Section 4.1's placeholder normalisation: returns its input unchanged."""

    def __init__(self, normalized_shape, eps=1e-5):
        super().__init__()

    def forward(self, x):
        return x


class DummyGPTModel(GPTModel):
    """Section 4.1's skeleton, ``DummyGPTModel(cfg)``: the book's model with ``DummyTransformerBlock`` and
    ``DummyLayerNorm`` in place of the real blocks and final norm, so ``model(batch)`` already gives logits
    (batch, tokens, vocab_size) from token + position embeddings and the output head alone."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.blocks = ModuleList(DummyTransformerBlock(cfg) for _ in range(self.config.n_layers))
        self.final_norm = DummyLayerNorm(self.config.emb_dim)


# --- section 4.4's shortcut demonstration ---------------------------------------------------------
class _Sequential(ModuleList):
    """``torch.nn.Sequential``'s call for section 4.4: the modules applied in order (names "0", "1", ...)."""

    def forward(self, x):
        for m in self:
            x = m(x)
        return x


class ExampleDeepNeuralNetwork(Module):
    """Section 4.4's five-layer network: ``layers[i]`` is Linear(layer_sizes[i], layer_sizes[i + 1]) then
    GELU (PyTorch's initialisation); with ``use_shortcut`` each layer's input is added to its output
    wherever the shapes agree. Parameter names are the book's (``layers.0.0.weight``)."""

    def __init__(self, layer_sizes, use_shortcut):
        super().__init__()
        if len(layer_sizes) != 6:
            raise MiniGPTError(f"ExampleDeepNeuralNetwork takes 6 layer sizes (5 layers), got {len(layer_sizes)}")
        self.use_shortcut = use_shortcut
        self.layers = ModuleList(_Sequential([Linear(layer_sizes[i], layer_sizes[i + 1]), GELU()]) for i in range(5))

    def forward(self, x):
        for layer in self.layers:
            layer_output = layer(x)
            x = x + layer_output if self.use_shortcut and x.shape == layer_output.shape else layer_output
        return x


def print_gradients(model, x):
    """Section 4.4: one backward pass of the mean squared error between ``model(x)`` and 0, then print the
    mean absolute gradient of every weight (``param.grad`` is a NumPy array here)."""
    output = model(x)
    loss = (output * output).mean()  # MSE against a target of zeros, the book's nn.MSELoss()(output, [[0.]])
    loss.backward()
    for name, param in model.named_parameters():
        if "weight" in name:
            print(f"{name} has gradient mean of {np.abs(param.grad).mean().item()}")


def rand(*size) -> Tensor:
    """The book's ``torch.rand(2, 4, 768)``: float32 uniform in [0, 1), from minigpt's generator
    (``manual_seed`` repeats it; the numbers differ from torch's). NumPy's ``np.random.rand`` gives
    float64, which minigpt's float32 layers refuse by name."""
    return Tensor(get_rng().random(_size(size), dtype=np.float32))


def randn(*size) -> Tensor:
    """The book's ``torch.randn(2, 5)``: float32 standard normal, from minigpt's generator."""
    return Tensor(get_rng().standard_normal(_size(size), dtype=np.float32))


def _size(size) -> tuple:
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 0 for n in size):
        raise MiniGPTError(f"rand/randn: sizes must be integers >= 0, got {size}")
    return tuple(int(n) for n in size)


def _full(cfg):
    """A block needs only some keys: fill the rest from GPT_CONFIG_124M so the config checks pass."""
    return {**GPT_CONFIG_124M, **cfg} if isinstance(cfg, dict) else cfg

