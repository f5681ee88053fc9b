"""Text generation: greedy, temperature, top-k and nucleus (top-p) sampling, with a KV cache.

With the cache, the prompt is run once ("prefill") and each new token then costs one position of work:
its query attends over the cached keys and values of every earlier position. Without it, every step
re-runs the whole window. Both give identical greedy results. The context is a sliding window of the
last ``context_length`` tokens: once a sequence outgrows it, positions shift, so the cache is rebuilt
from the cropped window (each further token then costs a full window, exactly as without the cache).
"""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..tensor import no_grad
from .decode import decoder, prefiller


def _filter_logits(logits: np.ndarray, top_k: int | None, top_p: float | None) -> np.ndarray:
    """Set to -inf every logit outside the top-k and outside the smallest set with mass >= top_p."""
    logits = logits.astype(np.float64)
    V = logits.shape[-1]
    if top_k is not None and top_k < V:
        kth = np.partition(logits, V - top_k, axis=-1)[:, V - top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-logits, axis=-1, kind="stable")
        sorted_logits = np.take_along_axis(logits, order, axis=-1)
        p = np.exp(sorted_logits - sorted_logits[:, :1])
        p /= p.sum(axis=-1, keepdims=True)
        cum = np.cumsum(p, axis=-1)
        drop_sorted = (cum - p) >= top_p  # keep tokens until the mass before them reaches top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        logits = np.where(drop, -np.inf, logits)
    return logits


def sample_next(logits: np.ndarray, temperature: float, top_k, top_p, rng: np.random.Generator) -> np.ndarray:
    """Pick one id per row of ``logits`` (B, V)."""
    if not np.isfinite(logits).all():
        raise MiniGPTError("the model produced non-finite logits (NaN or infinity): its weights are damaged or "
                           "too large to compute with")
    if temperature == 0.0:
        return np.argmax(logits, axis=-1)
    z = _filter_logits(logits, top_k, top_p) / temperature
    z -= z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    u = rng.random((p.shape[0], 1))
    ids = (np.cumsum(p, axis=-1) < u).sum(axis=-1)
    return np.minimum(ids, p.shape[-1] - 1)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _validate(model, idx, max_new_tokens, temperature, top_k, top_p):
    ids = np.asarray(idx)
    if ids.dtype.kind not in "iu":
        raise MiniGPTError(f"generate: prompt ids must be integers, got {ids.dtype}")
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise MiniGPTError(f"generate: the prompt must be a non-empty (batch, time) array, got shape {ids.shape}")
    if not _is_int(max_new_tokens) or max_new_tokens < 0:
        raise MiniGPTError(f"generate: max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float, np.floating)) and 0 <= temperature < float("inf")):
        raise MiniGPTError(f"generate: temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        raise MiniGPTError(f"generate: top_k must be an integer >= 1, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise MiniGPTError(f"generate: top_p must be in (0, 1], got {top_p}")
    V = model.config.vocab_size
    if ids.min() < 0 or ids.max() >= V:
        raise MiniGPTError(f"generate: prompt holds ids outside the vocabulary (0..{V - 1})")
    return ids.astype(np.int64)


def generate_stream(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                    top_p: float | None = None, eos_id: int | None = None, seed: int | None = None,
                    use_cache: bool = True):
    """Yield the new token ids one step at a time, each as an int64 array of shape (B,).

    Stops after ``max_new_tokens`` steps, or when every sequence has produced ``eos_id`` (a sequence
    that has finished keeps producing ``eos_id``). Bad arguments raise here, before the first step.
    """
    ids = _validate(model, idx, max_new_tokens, temperature, top_k, top_p)
    return _steps(model, ids, max_new_tokens, temperature, top_k, top_p, eos_id, seed, use_cache)


def _steps(model, ids, max_new_tokens, temperature, top_k, top_p, eos_id, seed, use_cache):
    """The generation loop over validated (B, T) int64 ids."""
    rng = np.random.default_rng(seed)
    ctx = model.config.context_length
    B = ids.shape[0]
    was_training = model.training
    model.eval()
    done = np.zeros(B, dtype=bool)
    try:
        with no_grad():
            caches = None
            step = decoder(model) if use_cache else None
            prefill = prefiller(model) if use_cache else None
            window = ids[:, -ctx:]
            for _ in range(max_new_tokens):
                if use_cache:
                    if caches is None or caches[0].length + 1 > ctx:
                        caches = model.new_caches(B)
                        logits = prefill(window, caches)  # the prompt (or the cropped window): fused
                    else:
                        logits = step(window[:, -1], caches)  # one new position: fused kernels
                else:
                    logits = model(window, last_only=True).data[:, -1]
                nxt = sample_next(logits, temperature, top_k, top_p, rng)
                if eos_id is not None:
                    nxt = np.where(done, eos_id, nxt)
                    done |= nxt == eos_id
                yield nxt.astype(np.int64)
                window = np.concatenate([window, nxt[:, None]], axis=1)[:, -ctx:]
                if eos_id is not None and done.all():
                    return
    finally:
        model.train(was_training)


def generate(model, idx, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, eos_id: int | None = None, seed: int | None = None,
             use_cache: bool = True) -> np.ndarray:
    """The prompt ``idx`` (B, T) (or (T,)) followed by up to ``max_new_tokens`` generated ids.

    ``temperature=0`` is greedy; otherwise logits are divided by ``temperature`` and filtered by
    ``top_k`` / ``top_p`` before sampling with a generator seeded by ``seed``.
    """
    squeeze = np.ndim(idx) == 1
    ids = _validate(model, idx, max_new_tokens, temperature, top_k, top_p)
    new = list(_steps(model, ids, max_new_tokens, temperature, top_k, top_p, eos_id, seed, use_cache))
    out = np.concatenate([ids, np.stack(new, axis=1)], axis=1) if new else ids
    return out[0] if squeeze else out
