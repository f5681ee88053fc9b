"""Assembling a pretraining run: text -> tokenizer -> token ids -> datasets -> model -> Trainer.

``pretrain(...)`` is what ``minigpt train`` calls; it is usable from Python too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from pathlib import Path

import numpy as np

from .. import random as mrandom
from ..data import DataLoader, SlidingWindowDataset, default_corpus, load_texts, shared_file, train_val_split
from ..errors import MiniGPTError
from ..io import cache_dir
from ..model import GPT, GPTConfig
from ..tokenizer import BPETokenizer
from ..tokenizer.special import ENDOFTEXT
from . import kernel_cache
from .loop import RUN_MARKERS, Trainer, TrainConfig, latest_checkpoint, load_checkpoint


def load_corpus(text_files=None) -> tuple[str, str]:
    """(text, description): the given files joined with <|endoftext|>, or the built-in default corpus."""
    if text_files:
        return load_texts(text_files), ", ".join(str(p) for p in text_files)
    return default_corpus(), "built-in corpus (Python standard library docstrings)"


def make_tokenizer(spec: str, text: str, vocab_size: int, progress: bool = False):
    """``spec``: "bpe" (train a byte-level BPE of ``vocab_size`` on ``text``), "gpt2" (GPT-2's files from
    the download cache or the shared data folder), a saved tokenizer .json, or a folder with GPT-2's
    encoder.json + vocab.bpe."""
    if spec == "bpe":
        return BPETokenizer.train(text, vocab_size, special_tokens=(ENDOFTEXT,), pattern="gpt2", progress=progress)
    if spec == "gpt2":
        return BPETokenizer.from_gpt2(_gpt2_vocab_dir())
    p = Path(spec)
    if p.is_dir():
        if (p / "tokenizer.json").exists():
            return BPETokenizer.load(p / "tokenizer.json")
        return BPETokenizer.from_gpt2(p)
    if p.is_file():
        return BPETokenizer.load(p)
    raise MiniGPTError(f"--tokenizer {spec!r}: expected 'bpe', 'gpt2', a tokenizer .json file or a folder with "
                       "GPT-2's encoder.json and vocab.bpe")


def _gpt2_vocab_dir() -> Path:
    for cand in (cache_dir() / "gpt2-vocab", cache_dir() / "gpt2" / "124M"):
        if (cand / "encoder.json").exists() and (cand / "vocab.bpe").exists():
            return cand
    f = shared_file("gpt2/encoder.json")
    if f is not None:
        return f.parent
    raise MiniGPTError("GPT-2's vocabulary files are not installed: run `minigpt download gpt2-vocab` "
                       "(or `--from DIR` with a local copy), or pass --tokenizer DIR")


def fingerprint(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def build_loaders(ids: np.ndarray, context_length: int, batch_size: int, val_fraction: float, seed: int):
    train_ids, val_ids = train_val_split(ids, val_fraction, min_val_tokens=context_length + 1)
    if train_ids.size < context_length + 1:
        raise MiniGPTError(
            f"the training text has {train_ids.size} tokens, fewer than one window of context_length + 1 = "
            f"{context_length + 1}; add text or lower --context-length"
        )
    train_ds = SlidingWindowDataset(train_ids, context_length, stride=context_length)
    bs = min(batch_size, len(train_ds))
    train_loader = DataLoader(train_ds, bs, shuffle=True, seed=seed, drop_last=True)
    val_loader = None
    if val_ids.size:
        val_ds = SlidingWindowDataset(val_ids, context_length, stride=context_length)
        val_loader = DataLoader(val_ds, min(batch_size, len(val_ds)), shuffle=False, drop_last=True)
    return train_loader, val_loader


def check_settings(config: str, config_overrides: dict | None, tokenizer: str, vocab_size: int,
                   epochs: float | None, val_fraction: float) -> None:
    """Reject bad settings up front, each with a message naming it: the preset and its overrides, the
    tokenizer (a trained BPE's size; GPT-2's files or the tokenizer file being there), epochs and the
    validation fraction. ``pretrain`` calls it before reading the corpus."""
    # the vocabulary size is known only once the tokenizer exists: any valid value checks the rest
    GPTConfig.preset(config, **{**(config_overrides or {}), "vocab_size": max(int(vocab_size or 0), 1)})
    if tokenizer == "bpe":
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 257:
            raise MiniGPTError(f"--vocab-size must be an integer of at least 257 (256 byte tokens + "
                               f"<|endoftext|>), got {vocab_size!r}")
    elif tokenizer == "gpt2":
        _gpt2_vocab_dir()
    elif not Path(tokenizer).exists():
        raise MiniGPTError(f"--tokenizer {tokenizer!r}: expected 'bpe', 'gpt2', a tokenizer .json file or a "
                           "folder with GPT-2's encoder.json and vocab.bpe (no such file or folder)")
    if epochs is not None and not (isinstance(epochs, (int, float)) and epochs > 0 and math.isfinite(epochs)):
        raise MiniGPTError(f"--epochs must be a positive number, got {epochs}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise MiniGPTError(f"--val-fraction must be a number in [0, 1), got {val_fraction!r}")


def pretrain(out_dir, text_files=None, config: str = "mini", config_overrides: dict | None = None,
             tokenizer: str = "bpe", vocab_size: int = 2048, train_cfg: TrainConfig | None = None,
             epochs: float | None = None, val_fraction: float = 0.1, resume: bool = False,
             progress: bool = True, log=print, callbacks=()) -> dict:
    """Train a GPT from scratch (or resume a run) and return a summary with a final text sample.

    ``callbacks``: observers of the loop (see ``Trainer``), e.g. ``minigpt.inspect.stats.StatsRecorder``."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MiniGPTError(f"--out {out_dir} is a file; it must be a folder (new or holding a run to --resume)")
    found = [m for m in RUN_MARKERS if (out_dir / m).exists()]
    if found and not resume:  # any trace of a run, not only latest.json: nothing of it may be overwritten
        raise MiniGPTError(f"{out_dir} already holds a training run ({', '.join(found)}); pass --resume to continue "
                           "it, or choose another --out")
    if resume and latest_checkpoint(out_dir) is None:
        what = (f"only {', '.join(found)} of a run that stopped before its first checkpoint; remove them to start "
                "afresh" if found else "no training run")
        raise MiniGPTError(f"--resume: {out_dir} holds no checkpoint to resume from ({what})")

    if not resume:  # every setting checked before minutes go into the corpus and the tokenizer
        check_settings(config, config_overrides, tokenizer, vocab_size, epochs, val_fraction)
    compile_started = None
    if kernel_cache.numba_in_use() and not kernel_cache.is_warm():  # the BPE's kernels compile too
        log(kernel_cache.compile_note())
        compile_started = time.perf_counter()
    text, source = load_corpus(text_files)
    if resume:
        model, opt_state, tok, state = load_checkpoint(out_dir)
        if tok is None:
            raise MiniGPTError(f"--resume: the checkpoint {latest_checkpoint(out_dir)} lacks tokenizer.json")
        saved = state["train_config"]
        cfg = TrainConfig(**{**saved, **({"steps": train_cfg.steps} if train_cfg and train_cfg.steps != saved["steps"]
                                         and train_cfg.steps > state["step"] else {})})
        val_fraction = state.get("val_fraction", val_fraction)
        mrandom.manual_seed(cfg.seed)
    else:
        cfg = train_cfg or TrainConfig()
        mrandom.manual_seed(cfg.seed)
        log(f"corpus: {source}, {len(text):,} characters")
        tok = make_tokenizer(tokenizer, text, vocab_size, progress=progress)
    ids = np.asarray(tok.encode(text, allowed_special="all"), dtype=np.int64)
    if resume:
        if fingerprint(ids) != state.get("data_fingerprint"):
            raise MiniGPTError("--resume: the training text differs from the one this run started with; pass the "
                               "same --text files")
        ctx = model.config.context_length
    else:
        overrides = dict(config_overrides or {})
        overrides["vocab_size"] = tok.vocab_size
        mcfg = GPTConfig.preset(config, **overrides)
        ctx = mcfg.context_length
    train_loader, val_loader = build_loaders(ids, ctx, cfg.batch_size, val_fraction, cfg.seed)
    if not resume:
        if epochs is not None:
            if epochs <= 0:
                raise MiniGPTError(f"--epochs must be positive, got {epochs}")
            cfg = dataclasses.replace(cfg, steps=max(1, math.ceil(epochs * len(train_loader))))
        model = GPT(mcfg)
        log(f"tokens: {ids.size:,} ({len(train_loader.dataset)} training windows of {ctx}); vocab {tok.vocab_size}; "
            f"model {config}: {model.num_parameters():,} parameters; {cfg.steps} steps of batch {train_loader.batch_size}")
    trainer = Trainer(model, tok, train_loader, val_loader, cfg, out_dir, log=log, progress=progress,
                      extra_state={"data_fingerprint": fingerprint(ids), "val_fraction": val_fraction},
                      callbacks=callbacks)
    trainer.compile_started = compile_started
    if resume:
        try:
            trainer.restore(opt_state, state)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, MiniGPTError):
                raise MiniGPTError(f"--resume: {latest_checkpoint(out_dir)}: {e}") from None
            raise MiniGPTError(f"--resume: {latest_checkpoint(out_dir)}/trainer_state.json is damaged "
                               f"({type(e).__name__}: {e})") from None
        log(f"resuming {out_dir} at step {trainer.step} of {cfg.steps}")
    first_step = trainer.step
    if trainer.step >= cfg.steps:
        log(f"{out_dir} has already run all {cfg.steps} steps; pass a larger --steps to continue")
        summary = trainer.summary()
    else:
        summary = trainer.run()
    summary["steps_run"] = trainer.step - first_step
    summary["sample"] = trainer.sample()
    summary["out_dir"] = str(out_dir)
    return summary
