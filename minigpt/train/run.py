"""Assembling a pretraining run: text -> tokenizer -> token ids -> datasets -> model -> Trainer.

``pretrain(...)`` is what ``minigpt train`` calls; it is usable from Python too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import numpy as np

from .. import random as mrandom
from ..data import DataLoader, SlidingWindowDataset, default_corpus, load_texts, shared_file, train_val_split
from ..loading import load_model_and_tokenizer, shrink_context
from ..errors import MiniGPTError
from ..io import cache_dir
from ..model import GPT, GPTConfig
from ..tokenizer import BPETokenizer
from ..tokenizer.special import ENDOFTEXT
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


def pretrain(out_dir, text_files=None, config: str = "mini", config_overrides: dict | None = None,
             tokenizer: str = "bpe", vocab_size: int = 2048, train_cfg: TrainConfig | None = None,
             epochs: float | None = None, val_fraction: float = 0.1, resume: bool = False,
             progress: bool = True, log=print, init=None) -> dict:
    """Train a GPT from scratch (or resume a run) and return a summary with a final text sample."""
    # ``init``: a model folder (run, checkpoint or GPT-2 folder) whose weights and tokenizer start the run
    # instead of a fresh model ("keep pretraining"); ``config`` is then ignored and only a lower
    # ``context_length`` may be given in ``config_overrides``.
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
        if init is not None:
            init_model, tok = load_model_and_tokenizer(init, None if tokenizer == "bpe" else tokenizer, kind="lm",
                                                       strict_vocab=True)
            extra = set(config_overrides or {}) - {"context_length"}
            if extra:
                raise MiniGPTError(f"--init keeps the initial model's architecture; {', '.join(sorted(extra))} "
                                   "cannot be changed")
            init_model = shrink_context(init_model, (config_overrides or {}).get(
                "context_length", init_model.config.context_length))
            log(f"initial weights: {init}")
        else:
            tok = make_tokenizer(tokenizer, text, vocab_size, progress=progress)
    ids = np.asarray(tok.encode(text, allowed_special="all"), dtype=np.int64)
    if resume:
        if fingerprint(ids) != state.get("data_fingerprint"):
            raise MiniGPTError("--resume: the training text differs from the one this run started with; pass the "
                               "same --text files")
        ctx = model.config.context_length
    elif init is not None:
        mcfg = init_model.config
        ctx = mcfg.context_length
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
        model = init_model if init is not None else GPT(mcfg)
        log(f"tokens: {ids.size:,} ({len(train_loader.dataset)} training windows of {ctx}); vocab {tok.vocab_size}; "
            f"model {config if init is None else init}: {model.num_parameters():,} parameters; {cfg.steps} steps of batch {train_loader.batch_size}")
    trainer = Trainer(model, tok, train_loader, val_loader, cfg, out_dir, log=log, progress=progress,
                      extra_state={"data_fingerprint": fingerprint(ids), "val_fraction": val_fraction})
    if resume:
        try:
            trainer.restore(opt_state, state)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            if isinstance(e, MiniGPTError):
                raise MiniGPTError(f"--resume: {latest_checkpoint(out_dir)}: {e}") from None
            raise MiniGPTError(f"--resume: {latest_checkpoint(out_dir)}/trainer_state.json is damaged "
                               f"({type(e).__name__}: {e})") from None
        log(f"resuming {out_dir} at step {trainer.step} of {cfg.steps}")
    if trainer.step >= cfg.steps:
        log(f"{out_dir} has already run all {cfg.steps} steps; pass a larger --steps to continue")
        summary = {"step": trainer.step}
    else:
        summary = trainer.run()
    summary["sample"] = trainer.sample()
    summary["out_dir"] = str(out_dir)
    return summary
