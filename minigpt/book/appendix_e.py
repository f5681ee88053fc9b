"""Appendix E, *Parameter-efficient fine-tuning with LoRA*: LoRALayer, LinearWithLoRA, replace_linear_with_lora.

The book's convention: a LoRA layer adds ``alpha * (x @ A @ B)`` (the printed book's listing; the
book's repository later divided by the rank, as minigpt does), ``A`` (in, rank) drawn as PyTorch's
``kaiming_uniform_(a=sqrt(5))`` draws it for that shape (uniform in +-1/sqrt(rank)), ``B`` zero.

These are minigpt's LoRA layers (``minigpt.nn.lora``: one fused ``F.lora`` op, forward and backward in
``minigpt/ops/lora.py``) with the scale set to ``alpha`` and A drawn the book's way. minigpt's native
``apply_lora(model, rank, alpha)`` scales by ``alpha / rank`` (the LoRA paper's choice: changing the rank
then needs no new learning rate) and draws A uniform in +-1/sqrt(in).

``replace_linear_with_lora`` wraps every Linear layer of the model, as the book's does: the fused q/k/v
projection gets three adapters, one per part (``LoRAQKV``), as the book's three ``W_query`` / ``W_key`` /
``W_value`` layers each get one, so the trainable count is the book's (2,666,528 at rank 16 on the
124M classifier). A rank above a layer's width (rank 16 on the 768 -> 2 head) is allowed with a warning.
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import functional as F
from ..errors import MiniGPTError
from ..nn import Linear, Module, ModuleList, Parameter
from ..nn.attention import MultiHeadAttention as _FusedAttention
from ..nn.lora import LoRALinear, LoRAQKV
from ..random import get_rng

__all__ = ["LoRALayer", "LinearWithLoRA", "replace_linear_with_lora"]


def _book_A(n_in: int, rank: int, dtype) -> np.ndarray:
    bound = 1.0 / math.sqrt(rank)  # kaiming_uniform_(a=sqrt(5)) on an (in, rank) tensor: fan_in = rank
    return get_rng().uniform(-bound, bound, (n_in, rank)).astype(dtype)


class LoRALayer(Module):
    """``x -> alpha * (x @ A @ B)``: (..., in_dim) -> (..., out_dim); A (in_dim, rank), B (rank, out_dim) zero."""

    def __init__(self, in_dim: int, out_dim: int, rank: int, alpha: float):
        super().__init__()
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise MiniGPTError(f"LoRA rank must be an integer >= 1, got {rank!r}")
        self.A = Parameter(_book_A(in_dim, rank, np.float32))
        self.B = Parameter(np.zeros((rank, out_dim), dtype=np.float32))
        self.alpha, self.rank = float(alpha), int(rank)

    def forward(self, x):
        return F.lora(x, self.A, self.B, self.alpha)  # alpha * (x @ A) @ B


class LinearWithLoRA(LoRALinear):
    """``linear(x) + alpha * (x @ A @ B)``: minigpt's ``LoRALinear`` with the book's scale and A.

    The wrapped layer's weight and bias stay under their names (``weight``, ``bias``) and are frozen here
    (the book freezes the whole model first, so the result is the same); the adapter is ``lora_A`` /
    ``lora_B`` (the book's ``lora.A`` / ``lora.B``)."""

    def __init__(self, linear: Linear, rank: int, alpha: float):
        super().__init__(linear, rank, alpha)
        self.scale = float(alpha)
        self.lora_A.data[...] = _book_A(self.in_features, self.rank, self.lora_A.dtype)


def _book_qkv(linear: Linear, rank: int, alpha: float) -> LoRAQKV:
    layer = LoRAQKV(linear, rank, alpha)
    layer.scale = float(alpha)
    for p in layer.parts:
        part = getattr(layer, p)
        part.lora_A.data[...] = _book_A(layer.in_features, layer.rank, part.lora_A.dtype)
    return layer


def replace_linear_with_lora(model: Module, rank: int, alpha: float) -> None:
    """Wrap every Linear layer inside ``model`` (recursively) in a LoRA layer with the book's convention.

    Freeze the model first (``for param in model.parameters(): param.requires_grad = False``, as the book)
    so that only the adapters, and whatever you unfreeze, train."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        _replace(model, rank, alpha)
    notes = sorted({str(w.message) for w in caught})
    for note in notes:  # one warning per distinct layer shape (the 768 -> 2 head at rank 16)
        warnings.warn(note, UserWarning, stacklevel=2)


def _replace(module: Module, rank: int, alpha: float) -> None:
    for name, child in list(module._modules.items()):
        if type(child) is Linear:
            if isinstance(module, _FusedAttention) and name == "qkv":
                new = _book_qkv(child, rank, alpha)  # the book's W_query, W_key, W_value: one adapter each
            else:
                new = LinearWithLoRA(child, rank, alpha)
            setattr(module, name, new)
            if isinstance(module, ModuleList):
                module._list[int(name)] = new
        elif not isinstance(child, LoRALinear):
            _replace(child, rank, alpha)
