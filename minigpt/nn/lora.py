"""LoRA (low-rank adaptation): finetune a frozen linear layer through a small trainable update.

``LoRALinear(base, rank, alpha)`` computes ``base(x) + (alpha / rank) * x @ A @ B`` with the base weight
and bias frozen, ``A`` (in, rank) random and ``B`` (rank, out) zero, so a freshly wrapped model computes
exactly what it did before. Only ``A`` and ``B`` train: ``rank * (in + out)`` numbers per layer instead of
``in * out``. The product is one op, ``F.lora`` (forward and backward in ``minigpt/ops/lora.py``).

``apply_lora(model, rank, alpha, targets=...)`` wraps the chosen layers of a GPT (by default the fused
q/k/v projection, the attention output projection and both feed-forward layers of every block), freezes
everything else, and returns the number of trainable parameters; ``merge_lora(model)`` folds each update
into its base weight and unwraps the layers again, giving a plain model.

Example::

    >>> from minigpt.model import GPT, GPTConfig
    >>> m = GPT(GPTConfig.preset("nano"))
    >>> apply_lora(m, rank=4, alpha=8)        # 2 blocks x (4*(64+192) + 4*(64+64) + 4*(64+256) + 4*(256+64))
    8192
"""
from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..errors import MiniGPTError
from ..random import get_rng
from .layers import Dropout, Linear
from .module import Module, Parameter

# target name -> attribute path inside a transformer block (or the model, for "head")
TARGETS = {
    "qkv": "attn.qkv",
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
        if rank > min(n_in, n_out):
            raise MiniGPTError(f"LoRA rank {rank} is larger than the layer's width ({n_in} -> {n_out}); a rank "
                               f"above {min(n_in, n_out)} adds parameters without adding capacity")
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
                if parent is not None and isinstance(getattr(parent, attr, None), (Linear, LoRALinear)):
                    sites.append((f"blocks.{i}.{path}", parent, attr))
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
    for _, parent, attr in sites:  # validate every rank before changing anything
        lin = getattr(parent, attr)
        if isinstance(lin, LoRALinear):
            raise MiniGPTError("apply_lora: the model already has LoRA layers")
        check_rank(rank)
        if rank > min(lin.in_features, lin.out_features):
            raise MiniGPTError(f"LoRA rank {rank} is larger than the width of {_site_name(sites, parent, attr)} "
                               f"({lin.in_features} -> {lin.out_features})")
    model.requires_grad_(False)
    for _, parent, attr in sites:
        setattr(parent, attr, LoRALinear(getattr(parent, attr), rank, alpha, dropout))
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
