"""The settings of training and finetuning, each declared once with its default and help text.

``minigpt train``'s options are generated from ``TrainConfig``'s fields, ``minigpt finetune classify`` /
``instruct``'s from ``ClassifyConfig`` / ``InstructConfig`` (minigpt/cli/options.py). This module imports
nothing heavy, so the command line can build its parser (``minigpt --help``) without loading NumPy, Numba or
the training stack; the training modules use and re-export these classes.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

from .errors import MiniGPTError


def _setting(default, help: str):
    """A dataclass field with its help text: the one place a setting is declared (``minigpt train``'s
    options are generated from these fields, see minigpt/cli/options.py)."""
    return field(default=default, metadata={"help": help})


# The names the finetuning settings accept (the data modules use these lists too).
FORMATS = ("auto", "sms", "csv", "tsv", "jsonl")
TEMPLATES = ("alpaca", "phi3")
MAX_LORA_ALPHA = 1e4  # a larger scale makes the adapters' float32 gradients overflow within a few steps


def _fail(cfg, name: str, want: str):
    raise MiniGPTError(f"{name.replace('_', '-')} must be {want}, got {getattr(cfg, name)!r}")


def _check_ints(cfg, rules) -> None:
    """``rules``: (field, lowest allowed value); a field's value must be an integer (not a bool) >= it."""
    for name, lo in rules:
        v = getattr(cfg, name)
        if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < lo:
            _fail(cfg, name, f"an integer >= {lo}")


def _check_reals(cfg, rules) -> None:
    """``rules``: (field, ">0" or ">=0"); a field's value must be a finite number (not a bool) in that range."""
    for name, rule in rules:
        v = getattr(cfg, name)
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) or v < 0 \
                or (rule == ">0" and v == 0):
            _fail(cfg, name, f"a finite number {'> 0' if rule == '>0' else '>= 0'}")


def _check_finetune(cfg) -> None:
    """The settings classification and instruction finetuning share: every value checked before any work.
    Optional lengths are None (the default) or >= 1: 0 is refused, never read as "the default"."""
    _check_ints(cfg, (("lora_rank", 1), ("batch_size", 1), ("warmup", 0), ("seed", 0)))
    _check_reals(cfg, (("epochs", ">0"), ("lr", ">0"), ("weight_decay", ">=0")))
    a = cfg.lora_alpha
    if not isinstance(a, numbers.Real) or isinstance(a, bool) or not math.isfinite(a) or not 0 < a <= MAX_LORA_ALPHA:
        _fail(cfg, "lora_alpha", f"a finite number > 0 and <= {MAX_LORA_ALPHA:g}")
    if cfg.max_length is not None:
        _check_ints(cfg, (("max_length", 1),))
    if not isinstance(cfg.train, str):
        _fail(cfg, "train", "a string (head, last-blocks:K, all or lora)")
    for name in ("merge",) + (("balance",) if hasattr(cfg, "balance") else ("mask_prompt",)):
        if not isinstance(getattr(cfg, name), bool):
            _fail(cfg, name, "true or false")


@dataclass
class TrainConfig:
    # the defaults make the README's quick start: ~2 minutes on 2 cores
    steps: int = _setting(600, "optimizer steps")
    batch_size: int = _setting(8, "windows per micro-batch on each rank")
    grad_accum: int = _setting(1, "micro-batches summed per optimizer step (global batch: batch size x ranks x "
                                  "grad-accum)")
    lr: float = _setting(1e-3, "peak learning rate")
    min_lr: float | None = _setting(None, "floor of the cosine decay (default: lr/10)")
    warmup: int = _setting(30, "linear warmup steps")
    weight_decay: float = _setting(0.1, "AdamW weight decay (on matrices; biases and norms too with --decay-all)")
    decay_all: bool = _setting(False, "decay every parameter, biases and norms too, as the book's "
                                      "AdamW(model.parameters(), weight_decay=...)")
    grad_clip: float = _setting(1.0, "clip the global gradient norm (0: off)")
    eval_every: int = _setting(100, "evaluate on the validation windows and save every N steps")
    eval_batches: int = _setting(10, "validation batches per evaluation")
    sample_every: int = _setting(0, "print a sample every N steps (0: only at the end)")
    sample_prompt: str = _setting("The", "prompt of the printed samples")
    sample_tokens: int = _setting(80, "tokens per printed sample")
    checkpoint_every: int = _setting(0, "save every N steps (0: at every evaluation and at the end)")
    keep_checkpoints: int = _setting(2, "checkpoints kept in the output folder (older ones are deleted)")
    seed: int = _setting(123, "random seed (initialisation, batch order, dropout, samples)")
    log_every: int = _setting(1, "write a line to log.jsonl every N steps (and at every evaluation)")

    def __post_init__(self):
        _check_ints(self, (("steps", 1), ("batch_size", 1), ("grad_accum", 1), ("warmup", 0), ("eval_every", 0),
                           ("eval_batches", 1), ("sample_every", 0), ("sample_tokens", 0), ("checkpoint_every", 0),
                           ("keep_checkpoints", 1), ("log_every", 0), ("seed", 0)))
        _check_reals(self, (("lr", ">0"), ("weight_decay", ">=0"), ("grad_clip", ">=0")))
        if self.min_lr is not None:
            _check_reals(self, (("min_lr", ">=0"),))
        if not isinstance(self.sample_prompt, str):
            _fail(self, "sample_prompt", "a string")
        if not isinstance(self.decay_all, bool):
            _fail(self, "decay_all", "true or false")
        if self.warmup > self.steps:
            self.warmup = self.steps


@dataclass
class ClassifyConfig:
    format: str = _setting("auto", "data format: auto (by extension), sms (label<TAB>text), csv, tsv or jsonl")
    text_column: str = _setting("text", "the text column of a CSV / TSV / JSONL file")
    label_column: str = _setting("label", "the label column of a CSV / TSV / JSONL file")
    balance: bool = _setting(True, "undersample every class to the smallest (747 / 747 on SMS spam); "
                                   "--no-balance keeps every example")
    split: tuple = (0.7, 0.1, 0.2)       # stratified train / validation / test fractions (--split, by hand)
    max_length: int | None = _setting(None, "truncate longer texts (default: the longest training text, capped "
                                            "at the model's context length)")
    train: str = _setting("last-blocks:1", "what to train: head, last-blocks:K, all or lora")
    lora_rank: int = _setting(16, "LoRA rank r (with --train lora)")
    lora_alpha: float = _setting(16.0, "LoRA scale alpha: the update is (alpha / r) x A B")
    epochs: float = _setting(5.0, "passes over the training split")
    batch_size: int = _setting(8, "texts per step")
    lr: float = _setting(5e-4, "peak learning rate")
    weight_decay: float = _setting(0.1, "AdamW weight decay")
    warmup: int = _setting(0, "linear warmup steps")
    grad_clip: float = _setting(1.0, "clip the global gradient norm (0: off)")
    seed: int = _setting(123, "the split, the head's initialisation, shuffling and dropout follow it")
    merge: bool = _setting(False, "with --train lora: save a plain model folder with the adapters folded in, "
                                  "instead of the adapters only")

    def __post_init__(self):
        try:
            split = tuple(float(f) for f in self.split)
        except (TypeError, ValueError):
            raise MiniGPTError(f"split must be three fractions (train, validation, test), got {self.split!r}") from None
        if len(split) != 3 or not all(math.isfinite(f) and f > 0 for f in split) or abs(sum(split) - 1) > 1e-6:
            raise MiniGPTError(f"split must be three fractions > 0 (train, validation, test) that sum to 1, got "
                               f"{','.join(f'{f:g}' for f in split)}")
        self.split = split
        if self.format not in FORMATS:
            raise MiniGPTError(f"unknown data format {self.format!r}; known: {', '.join(FORMATS)}")
        for name in ("text_column", "label_column"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                _fail(self, name, "a non-empty name")
        _check_finetune(self)
        _check_reals(self, (("grad_clip", ">=0"),))


@dataclass
class InstructConfig:
    template: str = _setting("alpaca", "prompt template: alpaca or phi3")
    mask_prompt: bool = _setting(False, "no loss on the prompt's tokens (their targets set to -100)")
    max_length: int | None = _setting(None, "truncate collated batches (default: the model's context length)")
    max_new_tokens: int = _setting(100, "length cap of the test split's answers")
    eval_limit: int | None = _setting(None, "answer only the first N test entries (default: all)")
    train: str = _setting("all", "what to train: head, last-blocks:K, all or lora")
    lora_rank: int = _setting(16, "LoRA rank r (with --train lora)")
    lora_alpha: float = _setting(16.0, "LoRA scale alpha: the update is (alpha / r) x A B")
    epochs: float = _setting(2.0, "passes over the training split")
    batch_size: int = _setting(8, "entries per step")
    lr: float = _setting(5e-4, "peak learning rate")
    weight_decay: float = _setting(0.1, "AdamW weight decay")
    warmup: int = _setting(0, "linear warmup steps")
    seed: int = _setting(123, "the split, shuffling and dropout follow it")
    merge: bool = _setting(False, "with --train lora: save a plain model folder with the adapters folded in, "
                                  "instead of the adapters only")

    def __post_init__(self):
        if self.template not in TEMPLATES:
            raise MiniGPTError(f"unknown template {self.template!r}; known: {', '.join(TEMPLATES)}")
        _check_ints(self, (("max_new_tokens", 1),))
        if self.eval_limit is not None:
            _check_ints(self, (("eval_limit", 1),))
        _check_finetune(self)
