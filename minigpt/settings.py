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
    weight_decay: float = _setting(0.1, "AdamW weight decay (matrices only; not biases, norms)")
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
        def fail(name, want):
            raise MiniGPTError(f"{name.replace('_', '-')} must be {want}, got {getattr(self, name)!r}")

        for name, lo in (("steps", 1), ("batch_size", 1), ("grad_accum", 1), ("warmup", 0), ("eval_every", 0), ("eval_batches", 1),
                         ("sample_every", 0), ("sample_tokens", 0), ("checkpoint_every", 0),
                         ("keep_checkpoints", 1), ("log_every", 0), ("seed", None)):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or (lo is not None and v < lo):
                fail(name, "an integer" + (f" >= {lo}" if lo is not None else ""))
        for name, positive in (("lr", True), ("min_lr", False), ("weight_decay", False), ("grad_clip", False)):
            v = getattr(self, name)
            if v is None and name == "min_lr":
                continue
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) \
                    or v < 0 or (positive and v == 0):
                fail(name, "a finite number " + ("> 0" if positive else ">= 0" + (" (0: off)" if name == "grad_clip"
                                                                                else "")))
        if not isinstance(self.sample_prompt, str):
            fail("sample_prompt", "a string")
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
        self.split = tuple(float(f) for f in self.split)
        if len(self.split) != 3:
            raise MiniGPTError(f"split needs 3 fractions (train, validation, test), got {self.split}")
        if not self.epochs > 0:
            raise MiniGPTError(f"epochs must be positive, got {self.epochs}")


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
