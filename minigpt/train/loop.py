"""Pretraining: the loop, evaluation, logging, samples, and crash-safe checkpoints with exact resume.

An output directory looks like this::

    out/
      latest.json                   {"checkpoint": "checkpoints/step-000400", "step": 400}
      checkpoints/step-000400/      config.json + model.safetensors (Hugging Face GPT-2 layout),
                                    tokenizer.json, optimizer.safetensors, trainer_state.json
      log.jsonl                     one JSON object per step (loss, lr, grad norm, tokens/s, val loss)
      loss.png                      train / val loss against tokens seen (when matplotlib is installed)

A checkpoint is written into a temporary folder, every file fsync'd, then renamed into place; only then
does ``latest.json`` (itself replaced atomically) point at it, and only then are older checkpoints
removed. A crash or kill at any moment leaves the previous checkpoint complete and pointed to.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save

from .. import random as mrandom
from .. import runtime
from ..distributed import Single, _alive
from ..errors import MiniGPTError
from ..io import _fsync_dir, atomic_write_bytes, atomic_write_json, atomic_write_text, dumps, read_json
from ..model import GPT, generate
from ..model.checkpoint import (CHECKPOINT_FILES, _read_latest, _read_safetensors, check_finite,  # noqa: F401
                                complete_checkpoints, latest_checkpoint, resolve_model_dir)  # (re-exported)
from ..model.folders import load_model, save_model
from ..optim import AdamW, CosineWithWarmup, clip_grad_norm, split_decay_groups
from ..progress import progress_bar
from ..settings import TrainConfig  # noqa: F401  (re-exported)
from ..tensor import no_grad
from ..tokenizer import BPETokenizer
from . import kernel_cache


class TrainingDiverged(MiniGPTError):
    """The loss or the gradient norm became NaN or infinite."""


def _all_finite(a: np.ndarray) -> bool:
    return bool(np.isfinite(a.sum(dtype=a.dtype))) or bool(np.isfinite(a).all())  # the sum may overflow


def evaluate(model, loader, max_batches: int | None = None, dist=None) -> float:
    """Mean cross-entropy over the first ``max_batches`` batches of ``loader`` (eval mode, no graph).

    With a distributed context ``dist`` the batches are dealt round-robin to the ranks and the sums
    reduced: every rank returns the mean over the same batches a single process would read."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    rank, world = (dist.rank, dist.world_size) if dist is not None else (0, 1)
    try:
        with no_grad():
            for b, batch in enumerate(loader.iter_epoch(0, max_batches)):
                if b % world == rank:
                    total += float(model.loss(*batch).item())
                    n += 1
    finally:
        model.train(was_training)
    if world > 1:
        total, n = dist.sum_scalars([total, n])
    if n == 0:
        raise MiniGPTError("evaluate: the loader yielded no batch")
    return total / n


def perplexity(loss: float) -> float:
    return float(math.exp(min(loss, 700.0)))


# --- checkpoints ---------------------------------------------------------------------------------------
# Where a run's checkpoints are (complete_checkpoints, latest_checkpoint, resolve_model_dir) is in
# model/checkpoint.py, so that GPT.from_pretrained takes a run folder as the command line does.
# what marks a folder as holding (part of) a training run: a fresh run never writes into such a folder
RUN_MARKERS = ("latest.json", "checkpoints", "log.jsonl", "trainer_state.json", "model.safetensors")


def check_run_folder(out_dir, resume: bool) -> Path | None:
    """The guard of every training command's output folder (pretraining and finetuning alike). Without
    ``resume``: a new or empty folder; any trace of a run (checkpoints, log, state, ``latest.json``) refuses
    the run, so nothing of it is overwritten. With ``resume``: the run's newest complete checkpoint (found
    even when ``latest.json`` is missing or stale), returned."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise MiniGPTError(f"--out {out_dir} is a file; it must be a folder (new or holding a run to --resume)")
    found = [m for m in RUN_MARKERS if (out_dir / m).exists()]
    if found and not resume:
        raise MiniGPTError(f"{out_dir} already holds a training run ({', '.join(found)}); pass --resume to "
                           "continue it, or choose another --out")
    ck = None
    if resume:
        clean_run_folder(out_dir)  # temporary files of the killed process being resumed
        ck = latest_checkpoint(out_dir)
    if resume and ck is None:
        what = (f"only {', '.join(found)} of a run that stopped before its first checkpoint; remove them to "
                "start afresh" if found else "no training run")
        raise MiniGPTError(f"--resume: {out_dir} holds no checkpoint to resume from ({what})")
    return ck


_PID_TAGGED = re.compile(r"^\.(tmp|old)-(.+)-(\d+)$")   # .tmp-step-000400-<pid>, .old-model-<pid>
_ATOMIC_TMP = re.compile(r"^\..+\.tmp$")               # .latest.json.k3j2x.tmp (io.atomic_write_*), .loss.png.tmp
QUIET_SECONDS = 5.0  # an unnamed temporary file untouched this long, and open in no process, is left over


def _open_files() -> set | None:
    """The files some process of this user holds open (from /proc), or None where /proc cannot tell."""
    proc = Path("/proc")
    if not (proc / "self" / "fd").is_dir():
        return None
    held = set()
    for fd_dir in proc.glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                try:
                    held.add(os.readlink(fd))
                except OSError:
                    pass
        except OSError:  # another user's process, or one that just ended
            continue
    return held


def clean_stale_temporaries(folder) -> list:
    """Remove the temporary files and folders a killed run left in ``folder`` (a run folder, its
    checkpoints/ or model/ folder); returns what was removed. Only leftovers of processes that are gone:

    - ``.tmp-<name>-<pid>`` / ``.old-<name>-<pid>`` (a checkpoint or final model being written or replaced):
      removed when process ``pid`` no longer runs (or is this process, which writes none at this point);
      an ``.old-<name>`` whose ``<name>`` is missing (killed between the two renames) is renamed back;
    - ``.<file>.<random>.tmp`` (an atomic write of ``latest.json``, ``model.safetensors``, a plot, ...):
      removed when no process holds it open and it has not changed for ``QUIET_SECONDS`` (where the
      system cannot tell which files are open: for an hour).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed, held, now = [], None, time.time()
    for p in sorted(folder.iterdir()):
        m = _PID_TAGGED.match(p.name)
        if m:
            pid = int(m.group(3))
            if pid != os.getpid() and _alive(pid):
                continue
            if m.group(1) == "old" and not (folder / m.group(2)).exists():
                os.replace(p, folder / m.group(2))  # the previous version, never replaced: put it back
                removed.append(p)
                continue
        elif _ATOMIC_TMP.match(p.name) and p.is_file() and not p.is_symlink():
            if held is None:
                held = _open_files()
            try:
                age = now - p.stat().st_mtime
            except OSError:
                continue
            if (held is None and age < 3600) or (held is not None and (age < QUIET_SECONDS or str(p) in held)):
                continue
        else:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            try:
                p.unlink()
            except OSError:
                continue
        removed.append(p)
    return removed


def clean_run_folder(out_dir) -> list:
    """:func:`clean_stale_temporaries` of a run folder, its checkpoints/ and model/ folders."""
    out_dir = Path(out_dir)
    return [p for sub in (out_dir, out_dir / "checkpoints", out_dir / "model") for p in clean_stale_temporaries(sub)]


def save_checkpoint(out_dir, step: int, model, optimizer, tokenizer, state: dict, keep: int = 2) -> Path:
    """Write a complete checkpoint for ``step`` and point ``latest.json`` at it (see module docstring)."""
    out_dir = Path(out_dir)
    ckroot = out_dir / "checkpoints"
    ckroot.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    final = ckroot / name
    tmp = ckroot / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, tmp)  # a classifier's head and LoRA adapters beside the GPT-2 files
    if tokenizer is not None:
        tokenizer.save(tmp / "tokenizer.json")
    opt_sd = optimizer.state_dict()
    atomic_write_bytes(tmp / "optimizer.safetensors",
                       save({k: np.ascontiguousarray(v) for k, v in opt_sd["arrays"].items()}))
    atomic_write_json(tmp / "trainer_state.json", {**state, "optimizer_meta": opt_sd["meta"]})
    _fsync_dir(tmp)
    if final.exists():  # re-saving the same step (e.g. after a resume): move the old one aside first
        old = ckroot / f".old-{name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(ckroot)
    atomic_write_json(out_dir / "latest.json", {"checkpoint": f"checkpoints/{name}", "step": step})
    ckpts = sorted(p for p in ckroot.iterdir() if p.is_dir() and p.name.startswith("step-"))
    for old in ckpts[:-keep]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    clean_stale_temporaries(ckroot)  # left behind by a crash mid-save (never another live process's)
    return final


def load_checkpoint(out_dir):
    """(model, optimizer state dict, tokenizer or None, trainer state) of the latest complete checkpoint.

    Every file is checked as it is read: a damaged, truncated or missing one is a ``MiniGPTError`` naming it.
    """
    ck = resolve_model_dir(out_dir)
    if not (ck / "trainer_state.json").exists():
        raise MiniGPTError(f"{ck} is a model, not a training checkpoint (no trainer_state.json)")
    model = load_model(ck)  # a GPT, or a classifier / LoRA model of a finetuning run
    state_path = ck / "trainer_state.json"
    state = read_json(state_path, "trainer_state.json")
    check_trainer_state(state, state_path)
    opt_path = ck / "optimizer.safetensors"
    if not opt_path.is_file():
        raise MiniGPTError(f"{ck} lacks optimizer.safetensors; the checkpoint is incomplete")
    opt_arrays = _read_safetensors(opt_path)
    for k, a in opt_arrays.items():
        if a.dtype.kind != "f":
            raise MiniGPTError(f"{opt_path}: {k} has dtype {a.dtype}; optimizer moments must be floating point")
    check_finite(opt_arrays, opt_path)
    tok = None
    if (ck / "tokenizer.json").exists():
        tok = BPETokenizer.load(ck / "tokenizer.json")
    return model, {"arrays": opt_arrays, "meta": state.pop("optimizer_meta")}, tok, state


def check_trainer_state(state: dict, path) -> None:
    """Refuse a ``trainer_state.json`` whose fields are missing or of the wrong type, naming the field."""
    kinds = {"step": int, "tokens_seen": int, "train_config": dict, "loader": dict, "schedule": dict,
             "rng": dict, "history": list, "optimizer_meta": dict}
    for key, kind in kinds.items():
        v = state.get(key)
        if not isinstance(v, kind) or isinstance(v, bool) or (kind is int and v < 0):
            raise MiniGPTError(f"{path} is damaged: {key!r} must be {'a JSON object' if kind is dict else 'a list' if kind is list else 'an integer >= 0'}, got {str(v)[:60]!r}")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(state["train_config"]) - known
    if unknown:
        raise MiniGPTError(f"{path} is damaged: unknown train_config field(s) {sorted(unknown)}")
    try:
        TrainConfig(**state["train_config"])
    except (TypeError, ValueError) as e:
        raise MiniGPTError(f"{path} is damaged: train_config: {e}") from None
    for h in state["history"]:
        if not (isinstance(h, list) and len(h) == 4):
            raise MiniGPTError(f"{path} is damaged: 'history' entries must be [step, tokens, loss, val_loss]")


def running_mean(values, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at every position (fewer at the start):
    ``running_mean([1, 2, 3, 4], 2)`` -> ``[1, 1.5, 2.5, 3.5]``."""
    v = np.asarray(values, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(v)])
    k = np.arange(1, v.size + 1)
    lo = np.maximum(0, k - window)
    return (c[k] - c[lo]) / (k - lo)


def loss_figure(plt, history, smoothing: int = 0):
    """The figure of loss.png: train and validation loss against tokens seen. ``history``: the trainer's
    (step, tokens, train loss, validation loss or None) tuples; ``smoothing`` > 1 draws the per-batch loss
    faintly and its running mean over that many batches on top."""
    steps, toks, tr, va = zip(*history)
    fig, ax = plt.subplots(figsize=(6, 4))
    if smoothing > 1:
        ax.plot(toks, tr, lw=0.6, alpha=0.3, color="C0", label="train (one batch)")
        ax.plot(toks, running_mean(tr, smoothing), lw=1.5, color="C0",
                label=f"train (mean of the last {smoothing} batches)")
    else:
        ax.plot(toks, tr, label="train", lw=1)
    vx = [t for t, v in zip(toks, va) if v is not None]
    if vx:
        ax.plot(vx, [v for v in va if v is not None], "o-", color="C1", label="validation")
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("cross-entropy loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --- the loop ----------------------------------------------------------------------------------------
class Trainer:
    """Runs ``steps`` AdamW steps of next-token prediction on ``train_loader``'s batches.

    Every ``eval_every`` steps: validation loss (when a val loader is given) and a checkpoint. Every
    ``sample_every`` steps and at the end: a text sample. NaN/inf stops the run with
    ``TrainingDiverged`` and leaves the last good checkpoint in place.
    """

    def __init__(self, model, tokenizer, train_loader, val_loader, cfg: TrainConfig, out_dir,
                 log=print, progress: bool = True, extra_state: dict | None = None, dist=None,
                 callbacks=(), eval_fn=None):
        runtime.configure(warn=False)  # tuned thread pools and allocator (results are the same without)
        if getattr(model, "quantization", None):
            raise MiniGPTError(model._quantized_msg("cannot be trained"))
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.train_loader, self.val_loader = train_loader, val_loader
        self.out_dir = Path(out_dir)
        self.log, self.progress = log, progress
        self.params = [p for p in model.parameters() if p.requires_grad]
        # data parallelism: rank 0's weights everywhere, gradients in flat buffers reduced every step
        self.dist = dist if dist is not None else Single()
        self.dist.broadcast_params(self.params)
        self.dist.bind_grads(self.params)
        if not self.dist.is_main:
            self.log, self.progress = (lambda msg: None), False
        # weight decay on the matrices only (GPT-2's practice), or on every parameter (the book's)
        groups = ([{"params": self.params, "weight_decay": cfg.weight_decay}] if cfg.decay_all
                  else split_decay_groups(model.named_parameters(), cfg.weight_decay))
        self.optimizer = AdamW(groups, lr=cfg.lr)
        min_lr = cfg.lr / 10 if cfg.min_lr is None else cfg.min_lr
        self.schedule = CosineWithWarmup(self.optimizer, cfg.lr, cfg.warmup, cfg.steps, min_lr=min(min_lr, cfg.lr))
        self.step = 0
        self.tokens_seen = 0
        self.history = []  # (step, tokens, train_loss, val_loss or None)
        self.extra_state = dict(extra_state or {})  # saved in every checkpoint as is (e.g. a data fingerprint)
        # eval_fn(trainer) -> dict of metrics logged at every evaluation instead of the validation loss
        # (its "val_loss" entry, if any, is the validation loss) and reported by the eval_fn itself (the
        # language-model line, a one-batch loss beside the validation perplexity, would not fit it); used by
        # classification finetuning
        self.eval_fn = eval_fn
        # Observers (e.g. minigpt.inspect.stats.StatsRecorder): begin(trainer) once, then around every step
        # before_step(trainer) and after_step(trainer, log record). They watch; they change nothing.
        self.callbacks = list(callbacks)
        self._bar = None  # the progress bar while run() is running (messages go above it)
        self._plot_warned = False
        # loss.png: with N > 1, a running mean over the last N batches is drawn over the per-batch losses (set
        # to one epoch by classification finetuning, whose small batches make the per-batch loss noise)
        self.plot_smoothing = 0
        # set by pretrain() when it announced the compilation itself (before training the tokenizer, whose
        # kernels compile too): when that started, so the first run's whole compile time is measured
        self.compile_started = None
        self.last_checkpoint: Path | None = None  # the newest checkpoint of this run written or resumed from

    # state that makes a resumed run identical to an uninterrupted one
    def trainer_state(self) -> dict:
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "train_config": dataclasses.asdict(self.cfg),
            "loader": self.train_loader.state_dict(),
            "schedule": self.schedule.state_dict(),
            "rng": mrandom.get_state(),
            "history": self.history,
            **self.extra_state,
        }

    def restore(self, opt_state: dict, state: dict) -> None:
        self.optimizer.load_state_dict(opt_state)
        self.train_loader.load_state_dict(state["loader"])
        self.schedule.load_state_dict(state["schedule"])
        mrandom.set_state(state["rng"])
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.history = [tuple(h) for h in state.get("history", [])]
        self.last_checkpoint = latest_checkpoint(self.out_dir)
        self._truncate_log(self.step)

    def _truncate_log(self, step: int) -> None:
        """Drop log lines of steps after ``step`` (written after the checkpoint we resume from)."""
        path = self.out_dir / "log.jsonl"
        if not self.dist.is_main or not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue  # a torn last line from a crash
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
                keep.append(line)
        atomic_write_text(path, "".join(line + "\n" for line in keep))

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0 alone), only when the weights and the optimizer's moments are all finite
        (else the run has diverged: ``TrainingDiverged``, and the previous checkpoint stays the latest)."""
        if not self.dist.is_main:
            return None
        bad = next((n for n, p in self.model.named_parameters() if not _all_finite(p.data)), None)
        if bad is None:
            opt = self.optimizer
            bad = next((f"the optimizer's {key} of parameter {i}" for i, st in enumerate(opt.state)
                        for key in opt._state_arrays if key in st and not _all_finite(st[key])), None)
        if bad is not None:
            raise TrainingDiverged(f"step {self.step}: {bad} holds NaN or infinity; stopping without saving it. "
                                   + self._kept())
        self.last_checkpoint = save_checkpoint(self.out_dir, self.step, self.model, self.optimizer, self.tokenizer,
                                               self.trainer_state(), keep=self.cfg.keep_checkpoints)
        return self.last_checkpoint

    def _kept(self) -> str:
        """What a diverged run leaves behind, truthfully."""
        ck = self.last_checkpoint
        if ck is None or not ck.is_dir():
            return (f"No checkpoint was written before it: {self.out_dir} has nothing to resume from. Try a lower "
                    "--lr or more --warmup")
        return (f"The last good checkpoint, {ck.relative_to(self.out_dir)}, is kept (`--resume` continues from "
                "it); try a lower --lr or more --warmup")

    def sample(self, prompt: str | None = None, max_new_tokens: int | None = None) -> str:
        if self.tokenizer is None:
            return ""
        prompt = self.cfg.sample_prompt if prompt is None else prompt
        ids = self.tokenizer.encode(prompt, allowed_special="all") or [0]
        out = generate(self.model, np.array(ids), max_new_tokens or self.cfg.sample_tokens, temperature=0.8,
                       top_k=40, seed=self.cfg.seed + self.step)
        return self.tokenizer.decode(out.tolist())

    def train_step(self, *batch) -> tuple[float, float]:
        """One optimizer step on the global ``batch`` (the arguments of ``model.loss``: inputs and targets for
        a language model; ids, labels and lengths for a classifier): this rank's shard of it, in ``grad_accum``
        micro-batches, each loss weighted 1 / (ranks x micro-batches) so the summed gradient is the mean over
        the global batch; gradients and loss reduced over the ranks before clipping."""
        dist, k = self.dist, self.cfg.grad_accum
        shards = [dist.shard(a) for a in batch]
        n = shards[0].shape[0]
        if n % k:
            raise MiniGPTError(f"a batch of {n} per rank cannot be split into {k} micro-batches")
        mb = n // k
        weight = 1.0 / (k * dist.world_size)
        dist.seed_dropout(self.cfg.seed, self.step)
        dist.zero_grads()
        lv = 0.0
        for i in range(k):
            loss = self.model.loss(*(a[i * mb:(i + 1) * mb] for a in shards))
            loss.backward(None if weight == 1.0 else np.asarray(weight, dtype=loss.dtype))
            lv += float(loss.item()) * weight
        lv = dist.allreduce_grads(lv)
        # the global gradient norm, logged with or without clipping (an infinite bound scales nothing)
        norm = clip_grad_norm(self.params, self.cfg.grad_clip if self.cfg.grad_clip > 0 else math.inf)
        if not math.isfinite(lv) or not math.isfinite(norm):
            err = TrainingDiverged(f"step {self.step + 1}: the loss became {lv} (gradient norm {norm}); stopping. "
                                   + self._kept())
            err.all_ranks = True  # reduced values: every rank stops at the same step
            raise err
        self.optimizer.step()
        self.schedule.step()
        return lv, norm

    def run(self) -> dict:
        """Train up to ``cfg.steps``. The progress report starts after the first step of this process, so
        the kernels' compilation on a first run (announced beforehand) stays out of its rate."""
        cfg = self.cfg
        main = self.dist.is_main
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            clean_run_folder(self.out_dir)  # temporary files of a killed earlier process
        log_path = self.out_dir / "log.jsonl" if main else os.devnull
        cold = kernel_cache.numba_in_use() and not kernel_cache.is_warm()
        if cold and self.compile_started is None:
            self._say(None, kernel_cache.compile_note())
        batches = self.train_loader.batches()
        last_val = None
        self.model.train()
        for cb in self.callbacks:
            cb.begin(self)
        try:
            # a fresh run starts its log afresh (a resumed one was cut back to its checkpoint's step in restore)
            with open(log_path, "a" if self.step else "w", encoding="utf-8") as logf:
                while self.step < cfg.steps:
                    batch = next(batches)
                    x = batch[0]
                    lr = self.optimizer.param_groups[0]["lr"]
                    for cb in self.callbacks:
                        cb.before_step(self)
                    t0 = time.perf_counter()
                    loss, norm = self.train_step(*batch)
                    dt = time.perf_counter() - t0
                    self.step += 1
                    self.tokens_seen += x.size
                    tps = x.size / dt if dt > 0 else float("inf")
                    rec = {"step": self.step, "tokens": self.tokens_seen, "loss": round(loss, 6), "lr": lr,
                           "grad_norm": None if math.isnan(norm) else round(norm, 6), "tokens_per_s": round(tps, 1)}
                    bar_started = False
                    if cold:
                        started = t0 if self.compile_started is None else self.compile_started
                        kernel_cache.mark_warm(time.perf_counter() - started)
                        cold = False
                    if self.progress and self._bar is None:  # from here on the rate is the steady one
                        self._bar = progress_bar(cfg.steps, desc="train", unit="step", initial=self.step)
                        bar_started = True
                    bar = self._bar
                    val = None
                    evaluate_now = cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.steps)
                    if evaluate_now and self.eval_fn is not None:
                        metrics = self.eval_fn(self)
                        rec.update(metrics)
                        val = metrics.get("val_loss")
                        last_val = val if val is not None else last_val
                    elif evaluate_now and self.val_loader is not None:
                        val = evaluate(self.model, self.val_loader, cfg.eval_batches, dist=self.dist)
                        rec["val_loss"] = round(val, 6)
                        last_val = val
                    if cfg.log_every and (self.step % cfg.log_every == 0 or val is not None):
                        logf.write(dumps(rec) + "\n")  # standard JSON: a NaN is written as null
                        logf.flush()
                    if val is not None and not math.isfinite(val):
                        err = TrainingDiverged(f"step {self.step}: the validation loss became {val}; stopping. "
                                               + self._kept())
                        err.all_ranks = True  # a reduced value: every rank stops here
                        raise err
                    self.history.append((self.step, self.tokens_seen, loss, val))
                    for cb in self.callbacks:
                        cb.after_step(self, rec)
                    if bar is not None:
                        post = {"loss": f"{loss:.3f}", "tok/s": f"{tps:,.0f}"}
                        if last_val is not None:
                            post["val"] = f"{last_val:.3f}"
                        bar.set_postfix(post, refresh=False)
                        if not bar_started:  # the step that started the report is its `initial`
                            bar.update(1)
                    if val is not None and self.eval_fn is None:  # an eval_fn reports its own metrics
                        self._say(bar, f"step {self.step}: train loss {loss:.3f}, val loss {val:.3f} "
                                       f"(ppl {perplexity(val):.1f})")
                    save_now = (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or \
                               (not cfg.checkpoint_every and evaluate_now) or self.step == cfg.steps
                    if save_now and not self.dist.in_sync(self.params):
                        self._say(bar, f"step {self.step}: the ranks' weights had drifted apart (rounding of the "
                                       "reduction); rank 0's were sent to all")
                    if save_now and main:
                        self.save()
                        self.plot()
                    if cfg.sample_every and self.step % cfg.sample_every == 0 and self.step != cfg.steps and main:
                        self._say(bar, f"--- sample at step {self.step} ---\n{self.sample()}\n---")
        finally:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        return self.summary()

    def summary(self) -> dict:
        """Step, tokens seen, and the last logged train and validation losses (None where none was
        logged): after a resume with nothing left to run, these are the losses the run ended with."""
        vals = [h[3] for h in self.history if h[3] is not None]
        return {"step": self.step, "tokens_seen": self.tokens_seen,
                "train_loss": self.history[-1][2] if self.history else None,
                "val_loss": vals[-1] if vals else None}

    def say(self, msg: str) -> None:
        """Print a message (above the progress bar while one runs), e.g. from an ``eval_fn``."""
        self._say(self._bar, msg)

    def _say(self, bar, msg: str) -> None:
        if bar is not None:
            bar.write(msg, file=sys.stderr)
        else:
            self.log(msg)

    def plot(self) -> Path | None:
        """Write loss.png (train and validation loss against tokens seen); skipped without matplotlib."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            if not self._plot_warned:  # once per run, with the command that enables it
                self._plot_warned = True
                self._say(self._bar, f"note: no {self.out_dir / 'loss.png'}: plotting needs matplotlib "
                                     "(pip install matplotlib, or pip install -e \".[plot]\" in a checkout)")
            return None
        if not self.history or not self.dist.is_main:
            return None
        fig = loss_figure(plt, self.history, self.plot_smoothing)
        path = self.out_dir / "loss.png"
        tmp = self.out_dir / ".loss.png.tmp"
        fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        os.replace(tmp, path)
        return path

