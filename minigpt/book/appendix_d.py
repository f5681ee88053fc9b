"""Appendix D, *Adding bells and whistles to the training loop*: linear warmup, cosine decay, clipping.

``train_model`` is the book's loop with its own schedule: step ``s`` (0-based) uses
``initial_lr + s * (peak_lr - initial_lr) / warmup_steps`` while ``s < warmup_steps`` (so the first step
runs at ``initial_lr``), then minigpt's cosine ``lr_at`` (the same formula as the book's:
``min_lr + (peak_lr - min_lr) * (1 + cos(pi * progress)) / 2``); gradients are clipped to norm 1.0 with
minigpt's ``clip_grad_norm`` once the warmup is over (the book's printed loop clips from the step AFTER
the last warmup step, ``global_step > warmup_steps``; the book's repository later changed that to ``>=``,
which ``clip_from_warmup_end=True`` selects). Section D.3's ``find_highest_gradient`` and
``torch.nn.utils.clip_grad_norm_`` are here too (``clip_grad_norm_``).

How minigpt's native schedule (``CosineWithWarmup``, ``minigpt train --warmup``) differs, and why: its
warmup step ``s`` uses ``(s + 1) / warmup_steps`` of the way from ``initial_lr`` to ``peak_lr``, so no
step runs at the starting rate (a step at rate 0, the usual ``initial_lr``, would be wasted) and the last
warmup step reaches the peak; clipping, when set, applies from the first step.
"""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..optim import clip_grad_norm, lr_at
from .ch05 import calc_loss_batch, evaluate_model, generate_and_print_sample

__all__ = ["train_model", "book_lr", "find_highest_gradient", "clip_grad_norm_"]


def clip_grad_norm_(parameters, max_norm: float) -> float:
    """The book's ``torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)``: minigpt's
    ``clip_grad_norm`` (scale every gradient in place so their global L2 norm is at most ``max_norm``);
    returns the norm before clipping, a float."""
    return clip_grad_norm(parameters, max_norm=max_norm)


def find_highest_gradient(model):
    """The largest gradient entry over the model's parameters (None when none has a gradient), the book's
    section D.3 helper. minigpt keeps each ``param.grad`` as a NumPy array, so the book's
    ``param.grad.data.flatten()`` (``.data`` of a NumPy array is its raw buffer) is ``param.grad`` here."""
    highest = None
    for param in model.parameters():
        if param.grad is not None and param.grad.size:
            m = param.grad.max()
            if highest is None or m > highest:
                highest = m
    return None if highest is None else float(highest)


def book_lr(step: int, *, peak_lr: float, warmup_steps: int, total_steps: int, initial_lr: float = 3e-05,
            min_lr: float = 1e-6) -> float:
    """The learning rate of (0-based) step ``step`` in the book's appendix D schedule."""
    if step < warmup_steps:
        return initial_lr + step * (peak_lr - initial_lr) / warmup_steps
    return lr_at(step, peak_lr=peak_lr, warmup_steps=warmup_steps, total_steps=total_steps, min_lr=min_lr)


def train_model(model, train_loader, val_loader, optimizer, device, n_epochs, eval_freq, eval_iter, start_context,
                tokenizer, warmup_steps, initial_lr=3e-05, min_lr=1e-6, clip_from_warmup_end: bool = False):
    """The book's appendix D loop; returns ``(train_losses, val_losses, track_tokens_seen, track_lrs)``.
    The peak rate is the optimizer's ``lr``; the schedule spans ``len(train_loader) * n_epochs`` steps."""
    if not (isinstance(warmup_steps, (int, np.integer)) and warmup_steps >= 1):
        raise MiniGPTError(f"train_model: warmup_steps must be an integer >= 1, got {warmup_steps!r}")
    train_losses, val_losses, track_tokens_seen, track_lrs = [], [], [], []
    tokens_seen, global_step = 0, -1
    peak_lr = optimizer.param_groups[0]["lr"]
    total_training_steps = len(train_loader) * n_epochs
    if total_training_steps <= warmup_steps:
        raise MiniGPTError(f"train_model: {total_training_steps} training steps leave none after {warmup_steps} "
                           "warmup steps")
    for epoch in range(n_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            global_step += 1
            lr = book_lr(global_step, peak_lr=peak_lr, warmup_steps=warmup_steps,
                         total_steps=total_training_steps, initial_lr=initial_lr, min_lr=min_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            track_lrs.append(lr)
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            if global_step > warmup_steps or (clip_from_warmup_end and global_step == warmup_steps):
                clip_grad_norm(model.parameters(), max_norm=1.0)
            optimizer.step()
            tokens_seen += np.asarray(input_batch).size
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Iter {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen, track_lrs

