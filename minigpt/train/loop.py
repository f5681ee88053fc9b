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
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import random as mrandom
from ..errors import MiniGPTError
from ..io import _fsync_dir, atomic_write_bytes, atomic_write_json, atomic_write_text
from ..model.checkpoint import resolve_model_dir
from ..tensor import no_grad


@dataclass
class TrainConfig:
    steps: int = 600                 # the defaults make the README's quick start: ~2 minutes on 2 cores
    batch_size: int = 8
    lr: float = 1e-3
    min_lr: float | None = None      # cosine floor; default lr / 10
    warmup: int = 30
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 100
    eval_batches: int = 10
    sample_every: int = 0            # 0: only at the end
    sample_prompt: str = "The"
    sample_tokens: int = 80
    checkpoint_every: int = 0        # 0: at every evaluation and at the end
    keep_checkpoints: int = 2
    seed: int = 123
    log_every: int = 1

    def __post_init__(self):
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise MiniGPTError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "eval_every", "eval_batches", "sample_every", "checkpoint_every", "sample_tokens"):
            if getattr(self, name) < 0:
                raise MiniGPTError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise MiniGPTError(f"lr must be a positive number, got {self.lr}")
        if self.warmup > self.steps:
            self.warmup = self.steps
        if self.keep_checkpoints < 1:
            raise MiniGPTError("keep_checkpoints must be >= 1")


class TrainingDiverged(MiniGPTError):
    """The loss or the gradient norm became NaN or infinite."""


def evaluate(model, loader, max_batches: int | None = None) -> float:
    """Mean cross-entropy over the first ``max_batches`` batches of ``loader`` (eval mode, no graph)."""
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    try:
        with no_grad():
            for batch in loader.iter_epoch(0, max_batches):
                total += float(model.loss(*batch).item())
                n += 1
    finally:
        model.train(was_training)
    if n == 0:
        raise MiniGPTError("evaluate: the loader yielded no batch")
    return total / n


def perplexity(loss: float) -> float:
    return float(math.exp(min(loss, 700.0)))


# --- checkpoints ------------------------------------------------------------------------------------
def save_checkpoint(out_dir, step: int, model, optimizer, tokenizer, state: dict, keep: int = 2) -> Path:
    """Write a complete checkpoint for ``step`` and point ``latest.json`` at it (see module docstring)."""
    from safetensors.numpy import save

    out_dir = Path(out_dir)
    ckroot = out_dir / "checkpoints"
    ckroot.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    final = ckroot / name
    tmp = ckroot / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(tmp)
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
    for stale in ckroot.glob(".tmp-*"):  # left behind by a crash mid-save
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load_checkpoint(out_dir):
    """(model, optimizer state dict, tokenizer or None, trainer state) of the latest checkpoint."""
    from safetensors.numpy import load_file

    from ..model.checkpoint import load_model

    ck = resolve_model_dir(out_dir)
    if not (ck / "trainer_state.json").exists():
        raise MiniGPTError(f"{ck} is a model, not a training checkpoint (no trainer_state.json)")
    model = load_model(ck)
    state = json.loads((ck / "trainer_state.json").read_text())
    opt_arrays = load_file(str(ck / "optimizer.safetensors"))
    tok = None
    if (ck / "tokenizer.json").exists():
        from ..tokenizer import BPETokenizer

        tok = BPETokenizer.load(ck / "tokenizer.json")
    return model, {"arrays": opt_arrays, "meta": state.pop("optimizer_meta")}, tok, state


# --- the loop ----------------------------------------------------------------------------------------
class Trainer:
    """Runs ``steps`` AdamW steps of next-token prediction on ``train_loader``'s batches.

    Every ``eval_every`` steps: validation loss (when a val loader is given) and a checkpoint. Every
    ``sample_every`` steps and at the end: a text sample. NaN/inf stops the run with
    ``TrainingDiverged`` and leaves the last good checkpoint in place.
    """

    def __init__(self, model, tokenizer, train_loader, val_loader, cfg: TrainConfig, out_dir,
                 log=print, progress: bool = True, extra_state: dict | None = None, eval_fn=None):
        from ..optim import AdamW, CosineWithWarmup, split_decay_groups

        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.train_loader, self.val_loader = train_loader, val_loader
        self.out_dir = Path(out_dir)
        self.log, self.progress = log, progress
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = AdamW(split_decay_groups(model.named_parameters(), cfg.weight_decay), lr=cfg.lr)
        min_lr = cfg.lr / 10 if cfg.min_lr is None else cfg.min_lr
        self.schedule = CosineWithWarmup(self.optimizer, cfg.lr, cfg.warmup, cfg.steps, min_lr=min(min_lr, cfg.lr))
        self.step = 0
        self.tokens_seen = 0
        self.history = []  # (step, tokens, train_loss, val_loss or None)
        self.extra_state = dict(extra_state or {})  # saved in every checkpoint as is (e.g. a data fingerprint)
        # eval_fn(trainer) -> dict of metrics logged at every evaluation instead of the validation loss
        # (its "val_loss" entry, if any, is the validation loss); used by finetuning
        self.eval_fn = eval_fn

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
        self._truncate_log(self.step)

    def _truncate_log(self, step: int) -> None:
        """Drop log lines of steps after ``step`` (written after the checkpoint we resume from)."""
        path = self.out_dir / "log.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a crash
        atomic_write_text(path, "".join(line + "\n" for line in keep))

    def save(self) -> Path:
        return save_checkpoint(self.out_dir, self.step, self.model, self.optimizer, self.tokenizer,
                               self.trainer_state(), keep=self.cfg.keep_checkpoints)

    def sample(self, prompt: str | None = None, max_new_tokens: int | None = None) -> str:
        from ..model import generate

        if self.tokenizer is None:
            return ""
        prompt = self.cfg.sample_prompt if prompt is None else prompt
        ids = self.tokenizer.encode(prompt, allowed_special="all") or [0]
        out = generate(self.model, np.array(ids), max_new_tokens or self.cfg.sample_tokens, temperature=0.8,
                       top_k=40, seed=self.cfg.seed + self.step)
        return self.tokenizer.decode(out.tolist())

    def train_step(self, *batch) -> tuple[float, float]:
        """One optimizer step on ``batch`` (the arguments of ``model.loss``: inputs and targets for a language
        model; ids, labels and lengths for a classifier)."""
        loss = self.model.loss(*batch)
        self.optimizer.zero_grad()
        loss.backward()
        from ..optim import clip_grad_norm

        norm = clip_grad_norm(self.params, self.cfg.grad_clip) if self.cfg.grad_clip > 0 else float("nan")
        lv = float(loss.item())
        if not math.isfinite(lv) or (self.cfg.grad_clip > 0 and not math.isfinite(norm)):
            raise TrainingDiverged(
                f"step {self.step + 1}: the loss became {lv} (gradient norm {norm}); stopping. The last good "
                f"checkpoint in {self.out_dir} is kept; try a lower --lr or more --warmup"
            )
        self.optimizer.step()
        self.schedule.step()
        return lv, norm

    def run(self) -> dict:
        cfg = self.cfg
        self.out_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.out_dir / "log.jsonl"
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                       file=sys.stderr, mininterval=0.5)
        self._bar = bar
        batches = self.train_loader.batches()
        last_val = None
        self.model.train()
        try:
            with open(log_path, "a", encoding="utf-8") as logf:
                while self.step < cfg.steps:
                    batch = next(batches)
                    x = batch[0]
                    lr = self.optimizer.param_groups[0]["lr"]
                    t0 = time.perf_counter()
                    loss, norm = self.train_step(*batch)
                    dt = time.perf_counter() - t0
                    self.step += 1
                    self.tokens_seen += x.size
                    tps = x.size / dt if dt > 0 else float("inf")
                    rec = {"step": self.step, "tokens": self.tokens_seen, "loss": round(loss, 6), "lr": lr,
                           "grad_norm": None if math.isnan(norm) else round(norm, 6), "tokens_per_s": round(tps, 1)}
                    val = None
                    evaluate_now = cfg.eval_every and (self.step % cfg.eval_every == 0 or self.step == cfg.steps)
                    if evaluate_now and self.eval_fn is not None:
                        metrics = self.eval_fn(self)
                        rec.update(metrics)
                        val = metrics.get("val_loss")
                        last_val = val if val is not None else last_val
                    elif evaluate_now and self.val_loader is not None:
                        val = evaluate(self.model, self.val_loader, cfg.eval_batches)
                        rec["val_loss"] = round(val, 6)
                        last_val = val
                    self.history.append((self.step, self.tokens_seen, loss, val))
                    if cfg.log_every and (self.step % cfg.log_every == 0 or val is not None):
                        logf.write(json.dumps(rec) + "\n")
                        logf.flush()
                    if bar is not None:
                        post = {"loss": f"{loss:.3f}", "tok/s": f"{tps:,.0f}"}
                        if last_val is not None:
                            post["val"] = f"{last_val:.3f}"
                        bar.set_postfix(post, refresh=False)
                        bar.update(1)
                    if val is not None:
                        self._say(bar, f"step {self.step}: train loss {loss:.3f}, val loss {val:.3f} "
                                       f"(ppl {perplexity(val):.1f})")
                    save_now = (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or \
                               (not cfg.checkpoint_every and evaluate_now) or self.step == cfg.steps
                    if save_now:
                        self.save()
                        self.plot()
                    if cfg.sample_every and self.step % cfg.sample_every == 0 and self.step != cfg.steps:
                        self._say(bar, f"--- sample at step {self.step} ---\n{self.sample()}\n---")
        finally:
            self._bar = None
            if bar is not None:
                bar.close()
        return {"step": self.step, "tokens_seen": self.tokens_seen,
                "train_loss": self.history[-1][2] if self.history else None, "val_loss": last_val}

    def say(self, msg: str) -> None:
        """Print a message (above the progress bar while one runs), e.g. from an ``eval_fn``."""
        self._say(getattr(self, "_bar", None), msg)

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
            return None
        if not self.history:
            return None
        steps, toks, tr, va = zip(*self.history)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(toks, tr, label="train", lw=1)
        vx = [t for t, v in zip(toks, va) if v is not None]
        if vx:
            ax.plot(vx, [v for v in va if v is not None], "o-", label="validation")
        ax.set_xlabel("tokens seen")
        ax.set_ylabel("cross-entropy loss")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = self.out_dir / "loss.png"
        tmp = self.out_dir / ".loss.png.tmp"
        fig.savefig(tmp, format="png", dpi=100)
        plt.close(fig)
        os.replace(tmp, path)
        return path

