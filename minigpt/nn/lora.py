"""LoRA (low-rank adaptation): finetune a frozen linear layer through a small trainable update.

``LoRALinear(base, rank, alpha)`` computes ``base(x) + (alpha / rank) * x @ A @ B`` with the base weight
and bias frozen, ``A`` (in, rank) random and ``B`` (rank, out) zero, so a freshly wrapped model computes
exactly what it did before. Only ``A`` and ``B`` train: ``rank * (in + out)`` numbers per layer instead of
``in * out``. The product is one op, ``F.lora`` (forward and backward in ``minigpt/ops/lora.py``).

``apply_lora(model, rank, alpha, targets=...)`` wraps the chosen layers of a GPT (by default the fused
q/k/v projection, the attention output projection and both feed-forward layers of every block), freezes
everything else, and returns the number of trainable parameters (targets ``q``, ``k``, ``v`` instead of
``qkv`` give each part of the fused projection its own adapter, as the book's separate ``W_query``,
``W_key``, ``W_value`` layers get; a rank above a layer's width is allowed with a warning); ``merge_lora(model)`` folds each update
into its base weight and unwraps the layers again, giving a plain model.

Example::

    >>> from minigpt.model import GPT, GPTConfig
    >>> m = GPT(GPTConfig.preset("nano"))
    >>> apply_lora(m, rank=4, alpha=8)        # 2 blocks x (4*(64+192) + 4*(64+64) + 4*(64+256) + 4*(256+64))
    8192
"""
from __future__ import annotations

import math
import warnings

import numpy as np

from .. import functional as F
from ..errors import MiniGPTError
from ..random import get_rng
from .layers import Dropout, Linear
from .module import Module, Parameter

# target name -> attribute path inside a transformer block (or the model, for "head")
TARGETS = {
    "qkv": "attn.qkv",
    "q": "attn.qkv",  # q, k, v: a separate adapter per part of the fused projection (LoRAQKV)
    "k": "attn.qkv",
    "v": "attn.qkv",
    "attn_proj": "attn.proj",
    "ff_fc": "ff.fc",
    "ff_proj": "ff.proj",
    "head": "score",
}
# In a SwiGLU block (Llama, Qwen) the feed-forward layer's first half is two layers, gate and up, and its
# second is down: the feed-forward targets wrap those.
_SWIGLU_PATHS = {"ff.fc": ("ff.gate", "ff.up"), "ff.proj": ("ff.down",)}
DEFAULT_TARGETS = ("qkv", "attn_proj", "ff_fc", "ff_proj")
MAX_ALPHA = 1e4  # alpha / rank scales the update: far beyond this the update swamps the frozen weights


def check_alpha(alpha, what: str = "LoRA alpha") -> float:
    """``alpha`` as a float if it is a number in (0, MAX_ALPHA], else a one-line error naming ``what``."""
    ok = isinstance(alpha, (int, float, np.integer, np.floating)) and not isinstance(alpha, bool) \
        and math.isfinite(alpha) and 0 < alpha <= MAX_ALPHA
    if not ok:
        raise MiniGPTError(f"{what} must be a number in (0, {MAX_ALPHA:g}], got {alpha!r}")
    return float(alpha)


def check_rank(rank, what: str = "LoRA rank") -> int:
    """``rank`` as an int if it is an integer >= 1, else a one-line error naming ``what``."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
        raise MiniGPTError(f"{what} must be an integer >= 1, got {rank!r}")
    return int(rank)


def check_targets(targets, what: str = "LoRA targets") -> tuple:
    """``targets`` as a tuple if it is a non-empty list of known target names, else a one-line error."""
    if isinstance(targets, str) or not isinstance(targets, (list, tuple)) or not targets \
            or not all(isinstance(t, str) for t in targets):
        raise MiniGPTError(f"{what} must be a non-empty list of names from {', '.join(TARGETS)}, got {targets!r}")
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise MiniGPTError(f"{what}: unknown LoRA target(s) {unknown}; known: {', '.join(TARGETS)}")
    return tuple(targets)


class LoRALinear(Module):
    """A frozen ``Linear`` plus the trainable low-rank update ``(alpha / rank) * x @ A @ B``.

    The base layer's own Parameters are kept under the same names (``weight``, ``bias``), so a wrapped
    model's parameter names are the plain model's plus ``lora_A`` / ``lora_B``.
    """

    def __init__(self, base: Linear, rank: int, alpha: float, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, Linear):
            raise MiniGPTError(f"LoRALinear wraps a Linear layer, got {type(base).__name__}")
        n_in, n_out = base.in_features, base.out_features
        check_rank(rank)
        check_alpha(alpha)
        _note_rank_above_width(rank, n_in, n_out)
        self.in_features, self.out_features = n_in, n_out
        self.rank, self.alpha = int(rank), float(alpha)
        self.scale = self.alpha / self.rank
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad = False
        if self.bias is not None:
            self.bias.requires_grad = False
        dtype = base.weight.dtype
        bound = 1.0 / math.sqrt(n_in)  # PyTorch's kaiming_uniform_(a=sqrt(5)) bound, as LoRA's reference code
        self.lora_A = Parameter(get_rng().uniform(-bound, bound, (n_in, self.rank)).astype(dtype))
        self.lora_B = Parameter(np.zeros((self.rank, n_out), dtype=dtype))
        self.drop = Dropout(dropout)

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)                       # [..., in] -> [..., out]
        return y + F.lora(self.drop(x), self.lora_A, self.lora_B, self.scale)  # + s * x A B

    def merged(self) -> Linear:
        """A plain Linear whose weight is ``W + (alpha / rank) * A @ B`` (shares the bias)."""
        lin = Linear.__new__(Linear)
        Module.__init__(lin)
        lin.in_features, lin.out_features = self.in_features, self.out_features
        w = self.weight.data + self.scale * (self.lora_A.data @ self.lora_B.data)
        lin.weight = Parameter(w.astype(self.weight.dtype), requires_grad=self.weight.requires_grad)
        lin.bias = self.bias
        return lin

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, rank={self.rank}, alpha={self.alpha}"


def _note_rank_above_width(rank: int, n_in: int, n_out: int, where: str = "the layer") -> None:
    """A rank above min(in, out) is allowed (the book's 768 -> 2 head takes rank 16) but adds parameters
    without adding capacity: the update A @ B can never have a rank above min(in, out). Say so, once."""
    if rank > min(n_in, n_out):
        warnings.warn(f"LoRA rank {rank} is larger than the width of {where} ({n_in} -> {n_out}): its update has "
                      f"rank at most {min(n_in, n_out)}, so the extra rows of A and columns of B add parameters "
                      "without adding capacity", UserWarning, stacklevel=3)


class LoRAQKV(LoRALinear):
    """LoRA on a fused q/k/v projection (in -> 3C) with a separate adapter per part, as the book's
    ``W_query``, ``W_key`` and ``W_value`` each get their own: part p of the output gains
    ``(alpha / rank) * x @ A_p @ B_p`` with A_p (in, rank) and B_p (rank, C). ``parts`` chooses which of
    "q", "k", "v" are adapted (the LoRA paper adapts q and v); each lives in a child module named after it
    (``qkv.q.lora_A``, ``qkv.q.lora_B``, ...). rank * (in + C) numbers per part, where one fused adapter on
    the same layer has rank * (in + 3C)."""

    PARTS = ("q", "k", "v")

    def __init__(self, base: Linear, rank: int, alpha: float, dropout: float = 0.0, parts=PARTS):
        Module.__init__(self)
        if not isinstance(base, Linear):
            raise MiniGPTError(f"LoRAQKV wraps a Linear layer, got {type(base).__name__}")
        parts = tuple(parts)
        if not parts or any(p not in self.PARTS for p in parts) or len(set(parts)) != len(parts):
            raise MiniGPTError(f"LoRAQKV parts must be distinct names among q, k, v, got {list(parts)}")
        n_in, n_out = base.in_features, base.out_features
        if n_out % 3:
            raise MiniGPTError(f"LoRAQKV needs a fused q/k/v layer (out = 3 x C), got {n_in} -> {n_out}")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1:
            raise MiniGPTError(f"LoRA rank must be an integer >= 1, got {rank!r}")
        C = n_out // 3
        self.in_features, self.out_features, self.parts = n_in, n_out, parts
        self.rank, self.alpha = int(rank), float(alpha)
        self.scale = self.alpha / self.rank
        self.weight, self.bias = base.weight, base.bias
        self.weight.requires_grad = False
        if self.bias is not None:
            self.bias.requires_grad = False
        for p in parts:  # each part: the adapter of a (in -> C) layer, LoRALinear's initialisation
            setattr(self, p, _LoRAPart(n_in, C, self.rank, base.weight.dtype))
        self.drop = Dropout(dropout)

    def forward(self, x):
        y = F.linear(x, self.weight, self.bias)  # [..., in] -> [..., 3C]
        C = self.out_features // 3
        xd = self.drop(x)
        cols = []
        for i, name in enumerate(self.PARTS):  # [..., C] each, the adapted ones plus their update
            yi = y[..., i * C:(i + 1) * C]
            part = getattr(self, name, None) if name in self.parts else None
            cols.append(yi if part is None else yi + F.lora(xd, part.lora_A, part.lora_B, self.scale))
        return F.concatenate(cols, axis=-1)  # [..., 3C]

    def merged(self) -> Linear:
        lin = Linear.__new__(Linear)
        Module.__init__(lin)
        lin.in_features, lin.out_features = self.in_features, self.out_features
        C = self.out_features // 3
        w = self.weight.data.copy()
        for i, name in enumerate(self.PARTS):
            if name in self.parts:
                part = getattr(self, name)
                w[:, i * C:(i + 1) * C] += self.scale * (part.lora_A.data @ part.lora_B.data)
        lin.weight = Parameter(w.astype(self.weight.dtype), requires_grad=self.weight.requires_grad)
        lin.bias = self.bias
        return lin

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, parts={''.join(self.parts)}, rank={self.rank}, alpha={self.alpha}"


class _LoRAPart(Module):
    """The A (in, rank) / B (rank, out) pair of one part of a LoRAQKV layer."""

    def __init__(self, n_in: int, n_out: int, rank: int, dtype):
        super().__init__()
        _note_rank_above_width(rank, n_in, n_out)
        bound = 1.0 / math.sqrt(n_in)
        self.lora_A = Parameter(get_rng().uniform(-bound, bound, (n_in, rank)).astype(dtype))
        self.lora_B = Parameter(np.zeros((rank, n_out), dtype=dtype))


def _resolve(root: Module, path: str):
    parent = root
    parts = path.split(".")
    for p in parts[:-1]:
        parent = getattr(parent, p, None)
        if parent is None:
            return None, parts[-1]
    return parent, parts[-1]


def lora_sites(model, targets=DEFAULT_TARGETS) -> list[tuple[str, Module, str]]:
    """(full name, parent module, attribute) of every layer the ``targets`` name, in model order."""
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        raise MiniGPTError(f"unknown LoRA target(s) {unknown}; known: {', '.join(TARGETS)}")
    sites = []
    blocks = getattr(model, "blocks", [])
    for i, blk in enumerate(blocks):
        for t in targets:
            if t == "head":
                continue
            swiglu = hasattr(blk.ff, "gate")
            for path in _SWIGLU_PATHS.get(TARGETS[t], (TARGETS[t],)) if swiglu else (TARGETS[t],):
                parent, attr = _resolve(blk, path)
                name = f"blocks.{i}.{path}"
                if (parent is not None and isinstance(getattr(parent, attr, None), (Linear, LoRALinear))
                        and all(n != name for n, _, _ in sites)):  # q, k and v name one site
                    sites.append((name, parent, attr))
    if "head" in targets:
        head = getattr(model, "score", None)
        if not isinstance(head, (Linear, LoRALinear)):
            raise MiniGPTError("LoRA target 'head' needs a model with a classification head (score)")
        sites.append(("score", model, "score"))
    return sites


def apply_lora(model: Module, rank: int, alpha: float, targets=DEFAULT_TARGETS, dropout: float = 0.0,
               train_also=()) -> int:
    """Freeze ``model``, wrap the ``targets`` layers in LoRALinear, unfreeze the modules named in
    ``train_also`` (e.g. ``("score",)``: a new classification head trains fully); returns the number of
    trainable parameters."""
    targets = check_targets(list(targets) if isinstance(targets, tuple) else targets)
    check_alpha(alpha)
    sites = lora_sites(model, targets)
    if not sites:
        raise MiniGPTError(f"apply_lora: the model has no layer matching {targets}")
    parts = tuple(p for p in LoRAQKV.PARTS if p in targets)  # separate q / k / v adapters on attn.qkv
    if parts and "qkv" in targets:
        raise MiniGPTError("apply_lora: target either the fused 'qkv' or its parts 'q', 'k', 'v', not both")
    for _, parent, attr in sites:  # validate every rank before changing anything
        lin = getattr(parent, attr)
        if isinstance(lin, LoRALinear):
            raise MiniGPTError("apply_lora: the model already has LoRA layers")
        check_rank(rank)
        if parts and getattr(parent, "n_kv_groups", None) not in (None, getattr(parent, "n_heads", None)):
            raise MiniGPTError("apply_lora: separate q, k, v adapters need q, k and v of one width; this model's "
                               "attention has grouped keys and values: target the fused 'qkv'")
    narrow = []  # a rank above a layer's width is allowed (the book's 768 -> 2 head, rank 16): one warning
    for name, parent, attr in sites:
        lin = getattr(parent, attr)
        n_out = lin.out_features // 3 if parts and name.endswith(".attn.qkv") else lin.out_features
        if rank > min(lin.in_features, n_out):
            narrow.append(f"{name} ({lin.in_features} -> {n_out})")
    if narrow:
        warnings.warn(f"LoRA rank {rank} is larger than the width of {len(narrow)} layer(s): {', '.join(narrow[:3])}"
                      f"{', ...' if len(narrow) > 3 else ''}; their updates have a lower rank than that, so the extra "
                      "rows of A and columns of B add parameters without adding capacity", UserWarning, stacklevel=2)
    model.requires_grad_(False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # said once above
        for name, parent, attr in sites:
            lin = getattr(parent, attr)
            if parts and name.endswith(".attn.qkv"):
                setattr(parent, attr, LoRAQKV(lin, rank, alpha, dropout, parts))
            else:
                setattr(parent, attr, LoRALinear(lin, rank, alpha, dropout))
    for name in train_also:
        mod = getattr(model, name, None)
        if mod is None:
            raise MiniGPTError(f"apply_lora: the model has no module {name!r}")
        if isinstance(mod, LoRALinear):
            continue
        mod.requires_grad_(True)
    model.lora_config = {"rank": int(rank), "alpha": float(alpha), "targets": list(targets)}
    return model.num_parameters(trainable_only=True)


def _site_name(sites, parent, attr):
    for name, p, a in sites:
        if p is parent and a == attr:
            return name
    return attr


def has_lora(model: Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())


def merge_lora(model: Module) -> Module:
    """Replace every LoRALinear by a plain Linear holding ``W + (alpha / rank) * A @ B``; returns model."""
    for _, parent in list(model.named_modules()):
        for attr, child in list(parent._modules.items()):
            if isinstance(child, LoRALinear):
                setattr(parent, attr, child.merged())
    if hasattr(model, "lora_config"):
        object.__delattr__(model, "lora_config")
    return model


def lora_state_dict(model: Module) -> dict:
    """The adapters only: ``name -> array`` of every ``lora_A`` / ``lora_B``."""
    return {n: p.data for n, p in model.named_parameters() if n.endswith((".lora_A", ".lora_B"))}
