"""Assembling a pretraining run: text -> tokenizer -> token ids -> datasets -> model -> Trainer.

``pretrain(...)`` is what ``minigpt train`` calls; it is usable from Python too.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil
import time
from pathlib import Path

import numpy as np

from .. import random as mrandom
from ..data import DataLoader, SlidingWindowDataset, dataset_path, default_corpus, load_texts, train_val_split
from ..distributed import Single
from ..loading import gpt2_vocab_dir, load_model_and_tokenizer, shrink_context, tokenizer_from_spec
from ..errors import MiniGPTError
from ..model import GPT, GPTConfig
from ..tokenizer import BPETokenizer
from ..tokenizer.special import ENDOFTEXT
from . import kernel_cache
from .loop import Trainer, TrainConfig, check_run_folder, latest_checkpoint, load_checkpoint


def load_corpus(text_files=None) -> tuple[str, str]:
    """(text, description): the given files (or data set names, such as "the-verdict") joined with
    <|endoftext|>, or the built-in default corpus."""
    if text_files:
        text_files = [dataset_path(p) for p in text_files]
        return load_texts(text_files), ", ".join(str(p) for p in text_files)
    return default_corpus(), "built-in corpus (Python standard library docstrings)"


def make_tokenizer(spec: str, text: str, vocab_size: int, progress: bool = False):
    """``spec``: "bpe" (train a byte-level BPE of ``vocab_size`` on ``text``), "gpt2" (GPT-2's files from
    the download cache or the shared data folder), a saved tokenizer .json, or a folder with GPT-2's
    encoder.json + vocab.bpe."""
    if spec == "bpe":
        return BPETokenizer.train(text, vocab_size, special_tokens=(ENDOFTEXT,), pattern="gpt2", progress=progress)
    if spec != "gpt2" and not Path(spec).exists():
        raise MiniGPTError(f"--tokenizer {spec!r}: expected 'bpe', 'gpt2', a tokenizer .json file or a folder with "
                           "GPT-2's encoder.json and vocab.bpe")
    return tokenizer_from_spec(spec)  # the same rules as every command that loads a model folder's tokenizer


def fingerprint(ids: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()[:16]


def build_loaders(ids: np.ndarray, context_length: int, batch_size: int, val_fraction: float, seed: int,
                  global_batch: int | None = None):
    """Training loader over windows of ``context_length`` (shuffled by ``seed``) yielding global batches of
    ``global_batch`` windows (default ``batch_size``), and a validation loader of ``batch_size`` windows.

    A single process without gradient accumulation gets a batch clamped to the number of windows; a
    global batch that the ranks and micro-batches share must fit whole."""
    train_ids, val_ids = train_val_split(ids, val_fraction, min_val_tokens=context_length + 1)
    if train_ids.size < context_length + 1:
        raise MiniGPTError(
            f"the training text has {train_ids.size} tokens, fewer than one window of context_length + 1 = "
            f"{context_length + 1}; add text or lower --context-length"
        )
    train_ds = SlidingWindowDataset(train_ids, context_length, stride=context_length)
    if global_batch is None or global_batch == batch_size:
        bs = min(batch_size, len(train_ds))
    elif global_batch > len(train_ds):
        raise MiniGPTError(f"the global batch of {global_batch} windows (batch size x ranks x grad-accum) is "
                           f"larger than the {len(train_ds)} training windows; lower --batch-size or "
                           "--grad-accum, or add text")
    else:
        bs = global_batch
    train_loader = DataLoader(train_ds, bs, shuffle=True, seed=seed, drop_last=True)
    val_loader = None
    if val_ids.size:
        val_ds = SlidingWindowDataset(val_ids, context_length, stride=context_length)
        val_loader = DataLoader(val_ds, min(batch_size, len(val_ds)), shuffle=False, drop_last=True)
    return train_loader, val_loader


def saved_text_files(state: dict, where) -> list[Path] | None:
    """The training text files a run's checkpoint names (``trainer_state.json``'s ``text_files``), for a
    ``--resume`` without ``--text``; None for a run on the built-in corpus (or one saved before runs named
    their files). A file that is gone is an error that says what to pass."""
    files = state.get("text_files")
    if files is None:
        return None
    if not (isinstance(files, list) and files and all(isinstance(f, str) and f for f in files)):
        raise MiniGPTError(f"{where}: trainer_state.json is damaged: 'text_files' must be a list of paths")
    for f in files:
        if not Path(f).is_file():
            raise MiniGPTError(f"--resume: the run's training text {f} is gone; pass --text with the same text")
    return [Path(f) for f in files]


def available_memory() -> int | None:
    """Bytes of memory available to new work (Linux ``MemAvailable``); None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def warn_if_too_big(model, batch_size: int, context_length: int, log=print, available: int | None = None) -> bool:
    """Warn (through ``log``) when the model's estimated training memory exceeds the available memory;
    returns whether it did."""
    est = model.memory_estimate(batch_size, context_length)["total"]
    avail = available_memory() if available is None else available
    if avail is None or est <= avail:
        return False
    log(f"warning: this run needs about {est / 2**30:.1f} GiB of memory (GPT.memory_estimate for batch "
        f"{batch_size} x {context_length}) but only {avail / 2**30:.1f} GiB is available: it may be killed "
        "or swap; lower --batch-size or --context-length, or pick a smaller --config")
    return True


def split_global_batch(global_batch: int, ranks: int, max_batch: int) -> tuple[int, int]:
    """(batch size per rank, grad-accum) with batch x ranks x accum == ``global_batch``, the largest batch
    not above ``max_batch``: how a resumed run keeps its global batch on another number of ranks.

    >>> split_global_batch(16, 4, 4)   # saved on 2 ranks x batch 4 x accum 2, resumed on 4 ranks
    (4, 1)
    >>> split_global_batch(16, 1, 4)   # ... resumed on 1 process
    (4, 4)
    """
    if global_batch % ranks:
        raise MiniGPTError(f"this run's global batch of {global_batch} windows cannot be shared by {ranks} "
                           f"ranks; resume it on a number of ranks that divides {global_batch}")
    per_rank = global_batch // ranks
    for accum in range(1, per_rank + 1):
        if per_rank % accum == 0 and per_rank // accum <= max_batch:
            return per_rank // accum, accum
    return 1, per_rank


def _on_all_ranks(dist, fn, name_ranks: bool = True):
    """Run ``fn`` on every rank; when it fails on any rank, every rank raises (with that rank's message)."""
    if dist.world_size == 1:
        return fn()
    try:
        result, err = fn(), None
    except (MiniGPTError, OSError) as e:
        result, err = None, str(e)
    dist.agree(err, name_ranks)
    return result


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
        gpt2_vocab_dir()
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
             progress: bool = True, log=print, dist=None, callbacks=(), init=None) -> dict:
    """Train a GPT from scratch (or resume a run) and return a summary with a final text sample.

    ``text_files``: text files or data set names (``["the-verdict"]``: :func:`minigpt.data.dataset_path`);
    none: the built-in corpus.
    ``init``: a model folder (run, checkpoint or GPT-2 folder) whose weights and tokenizer start the run
    instead of a fresh model ("keep pretraining"); ``config`` is then ignored and only a lower
    ``context_length`` may be given in ``config_overrides``.

    ``dist``: a context of :mod:`minigpt.distributed` (default: one process). Under MPI every rank calls
    this with the same arguments; rank 0 alone reads the checkpoint to resume from and writes the output.
    ``callbacks``: observers of the loop (see ``Trainer``, e.g. ``minigpt.inspect.stats.StatsRecorder``), run
    on rank 0 only.
    """
    dist = dist if dist is not None else Single()
    main = dist.is_main
    if not main:
        log, progress = (lambda msg: None), False
    out_dir = Path(out_dir)

    def check_out_dir():
        """Rank 0's output folder: a new one, or a run with a checkpoint to resume from (returned)."""
        if not main:
            return None
        return check_run_folder(out_dir, resume)

    if not resume:  # every setting checked before minutes go into the corpus and the tokenizer
        _on_all_ranks(dist, lambda: check_settings(config, config_overrides, tokenizer, vocab_size, epochs,
                                                   val_fraction))
    if text_files:  # data set names ("the-verdict") become their files; a missing one is said now
        text_files = _on_all_ranks(dist, lambda: [dataset_path(p) for p in text_files])
    compile_started = None
    if kernel_cache.numba_in_use() and not kernel_cache.is_warm():  # the BPE's kernels compile too
        log(kernel_cache.compile_note())
        compile_started = time.perf_counter()

    ck_dir = _on_all_ranks(dist, check_out_dir, name_ranks=False)  # rank 0's output folder alone
    if resume:  # rank 0's checkpoint, copied to the other ranks (machines need not share a file system)
        src = dist.broadcast_dir(ck_dir)
        where = ck_dir or src  # the folder named in messages (rank 0's)

        def load():
            loaded = load_checkpoint(src)
            if loaded[2] is None:
                raise MiniGPTError(f"--resume: the checkpoint {where} lacks tokenizer.json")
            return loaded

        try:
            model, opt_state, tok, state = _on_all_ranks(dist, load, name_ranks=False)
        finally:
            if src != ck_dir:
                shutil.rmtree(src, ignore_errors=True)
        saved = state["train_config"]
        # the saved settings, but a --steps given now counts (a larger one extends the run, one that the run
        # has already reached leaves it as it is, never continues it to the saved count)
        cfg = TrainConfig(**{**saved, **({"steps": train_cfg.steps} if train_cfg else {})})
        global_batch = int(state["loader"]["batch_size"])
        if cfg.batch_size * cfg.grad_accum * dist.world_size != global_batch:
            b, k = split_global_batch(global_batch, dist.world_size, cfg.batch_size)
            log(f"resuming on {dist.world_size} rank(s): the global batch of {global_batch} is now batch "
                f"{b} x {dist.world_size} rank(s) x grad-accum {k} (saved: batch {cfg.batch_size}, "
                f"grad-accum {cfg.grad_accum}, {state.get('world_size', 1)} rank(s))")
            cfg = dataclasses.replace(cfg, batch_size=b, grad_accum=k)
        val_fraction = state.get("val_fraction", val_fraction)
        if not text_files:  # the text files the run started with (a run on the built-in corpus saved none)
            text_files = _on_all_ranks(dist, lambda: saved_text_files(state, where))
        mrandom.manual_seed(cfg.seed)
    else:
        cfg = train_cfg or TrainConfig()
        mrandom.manual_seed(cfg.seed)
    if dist.world_size > 1:
        log(f"data parallel: {dist.describe()}")

    def prepare():
        text, source = load_corpus(text_files)
        if resume:
            return None, None, np.asarray(tok.encode(text, allowed_special="all"), dtype=np.int64)
        log(f"corpus: {source}, {len(text):,} characters")
        if init is not None:
            init_model, new_tok = load_model_and_tokenizer(init, None if tokenizer == "bpe" else tokenizer, kind="lm",
                                                           strict_vocab=True)
            extra = set(config_overrides or {}) - {"context_length"}
            if extra:
                raise MiniGPTError(f"--init keeps the initial model's architecture; {', '.join(sorted(extra))} "
                                   "cannot be changed")
            init_model = shrink_context(init_model, (config_overrides or {}).get(
                "context_length", init_model.config.context_length))
            log(f"initial weights: {init}")
        else:
            init_model, new_tok = None, make_tokenizer(tokenizer, text, vocab_size, progress=progress)
        return init_model, new_tok, np.asarray(new_tok.encode(text, allowed_special="all"), dtype=np.int64)

    init_model, new_tok, ids = _on_all_ranks(dist, prepare)
    if resume:
        def same_text():
            if fingerprint(ids) != state.get("data_fingerprint"):
                raise MiniGPTError("--resume: the training text differs from the one this run started with; pass "
                                   "the same --text files")

        _on_all_ranks(dist, same_text)
        ctx = model.config.context_length
    elif init is not None:
        tok = new_tok
        mcfg = init_model.config
        ctx = mcfg.context_length
    else:
        tok = new_tok
        overrides = dict(config_overrides or {})
        overrides["vocab_size"] = tok.vocab_size
        mcfg = GPTConfig.preset(config, **overrides)
        ctx = mcfg.context_length
    global_batch = cfg.batch_size * dist.world_size * cfg.grad_accum
    train_loader, val_loader = _on_all_ranks(
        dist, lambda: build_loaders(ids, ctx, cfg.batch_size, val_fraction, cfg.seed, global_batch))
    if not resume:
        if epochs is not None:
            if epochs <= 0:
                raise MiniGPTError(f"--epochs must be positive, got {epochs}")
            cfg = dataclasses.replace(cfg, steps=max(1, math.ceil(epochs * len(train_loader))))
        model = init_model if init is not None else GPT(mcfg)
        batch = (f"batch {train_loader.batch_size}" if global_batch == cfg.batch_size else
                 f"global batch {global_batch} = {cfg.batch_size} x {dist.world_size} rank(s) x grad-accum "
                 f"{cfg.grad_accum}")
        log(f"tokens: {ids.size:,} ({len(train_loader.dataset)} training windows of {ctx}); vocab {tok.vocab_size}; "
            f"model {config if init is None else init}: {model.num_parameters():,} parameters; {cfg.steps} steps of "
            f"{batch}")
    if dist.rank == 0:
        warn_if_too_big(model, train_loader.batch_size, ctx, log)
    # every rank must run the same model on the same data with the same settings
    dist.check_same({"model": dataclasses.asdict(model.config), "train": dataclasses.asdict(cfg),
                     "data": fingerprint(ids), "vocab": tok.vocab_size, "val_fraction": val_fraction,
                     "resume": bool(resume), "step": state["step"] if resume else 0})
    extra = {"data_fingerprint": fingerprint(ids), "val_fraction": val_fraction,
             "text_files": [str(Path(p).resolve()) for p in text_files] if text_files else None}
    if dist.world_size > 1:
        extra["world_size"] = dist.world_size
    trainer = Trainer(model, tok, train_loader, val_loader, cfg, out_dir, log=log, progress=progress,
                      extra_state=extra, dist=dist,
                      callbacks=callbacks if main else ())
    trainer.compile_started = compile_started
    if resume:
        def restore():
            try:
                trainer.restore(opt_state, state)
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                if isinstance(e, MiniGPTError):
                    raise MiniGPTError(f"--resume: {where}: {e}") from None
                raise MiniGPTError(f"--resume: {where}/trainer_state.json is damaged "
                                   f"({type(e).__name__}: {e})") from None

        _on_all_ranks(dist, restore, name_ranks=False)  # the same state on every rank: rank 0 speaks
        log(f"resuming {out_dir} at step {trainer.step} of {cfg.steps}")
    first_step = trainer.step
    if trainer.step >= cfg.steps:
        log(f"{out_dir} has already run {trainer.step} steps"
            + (f" (all {cfg.steps})" if trainer.step == cfg.steps else f", more than the {cfg.steps} asked for")
            + "; pass a larger --steps to continue")
        summary = trainer.summary()
    else:
        summary = trainer.run()
    summary["steps_run"] = trainer.step - first_step
    summary["sample"] = trainer.sample() if main else ""
    summary["out_dir"] = str(out_dir)
    return summary
