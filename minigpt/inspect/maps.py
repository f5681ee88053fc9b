"""Attention maps, the residual stream and the logit lens of a GPT on one prompt.

The fused attention kernel never forms the (T, T) attention weights (it keeps one log-sum-exp per row),
so ``attention_maps`` recomputes them from each layer's packed q/k/v projection with the NumPy reference
math, ``softmax(q k^T / sqrt(D))`` under the causal mask (minus ALiBi's ``slope_h * (i - j)`` in a model
with ``pos_encoding="alibi"``). Multiplied by V they give exactly what the kernel returns (the tests check
it).

Example::

    >>> maps = attention_maps(model, [464, 3290, 318])    # (n_layers, n_heads, 3, 3)
    >>> maps[0, 1, 2]                                        # layer 0, head 1: where token 2 looks
    array([0.21, 0.35, 0.44], dtype=float32)
"""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..tensor import no_grad


def _prompt_ids(model, ids) -> np.ndarray:
    """One prompt as a (1, T) int64 array, checked against the model's context and vocabulary."""
    arr = np.asarray(ids.data if hasattr(ids, "data") and not isinstance(ids, np.ndarray) else ids)
    if arr.ndim == 2:
        if arr.shape[0] != 1:
            raise MiniGPTError(f"inspect works on one prompt at a time, got a batch of {arr.shape[0]}")
        arr = arr[0]
    if arr.ndim != 1 or arr.size == 0:
        raise MiniGPTError(f"expected a non-empty 1-D sequence of token ids, got shape {arr.shape}")
    ctx = model.config.context_length
    if arr.size > ctx:
        raise MiniGPTError(f"the prompt is {arr.size} tokens, longer than the model's context of {ctx} tokens")
    return model._check_ids(arr.astype(np.int64))


def causal_softmax_weights(q: np.ndarray, k: np.ndarray, scale: float, dtype=np.float64,
                           alibi_slopes=None) -> np.ndarray:
    """The attention weights of one sequence: q, k (T, H, D) -> (H, T, T), rows summing to 1, zero above
    the diagonal (query i attends keys 0..i). ``alibi_slopes`` (H,): ALiBi's bias ``-slope_h * (i - j)``
    added to the scores. Computed in ``dtype``, returned in q's dtype."""
    T = q.shape[0]
    s = np.einsum("ihd,jhd->hij", q.astype(dtype), k.astype(dtype)) * dtype(scale)      # (H, T, T) scores
    if alibi_slopes is not None:
        dist = np.arange(T)[:, None] - np.arange(T)[None, :]                           # i - j
        s -= np.asarray(alibi_slopes, dtype=dtype)[:, None, None] * dist
    above = np.triu_indices(T, 1)                                                      # key j > query i
    s[:, above[0], above[1]] = -np.inf
    s -= s.max(axis=-1, keepdims=True)
    e = np.exp(s, out=s)                                                              # masked -> 0
    e /= e.sum(axis=-1, keepdims=True)
    return e.astype(q.dtype, copy=False)


def residual_stream(model, ids) -> dict:
    """Run one prompt through ``model`` (no graph) and keep what flows between the blocks.

    Returns ``{"ids": (T,), "residual": (L+1, T, C)}`` (the stream after the embeddings and after each
    block), ``"qkv": (L, T, 3C)`` (each block's packed q/k/v projection) and ``"logits": (T, V)``.
    """
    ids = _prompt_ids(model, ids)
    T = ids.shape[1]
    residual, qkv = [], []
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            x = model.tok_emb(ids)                                      # (1, T, C)
            if model.pos_emb is not None:
                x = x + model.pos_emb(np.arange(T))                     # + learned positions
            elif model.pos_table is not None:
                x = x + model.pos_table[:T]                             # + sinusoids (ALiBi, RoPE: none)
            residual.append(x.data[0])
            for blk in model.blocks:
                qkv.append(blk.attn.qkv(blk.norm1(x)).data[0])          # (T, 3C), recomputed for the maps
                x = blk(x)                                              # (1, T, C)
                residual.append(x.data[0])
            logits = model.forward(ids).data[0]                         # (T, V)
    finally:
        model.train(was_training)
    return {"ids": ids[0], "residual": np.stack(residual), "qkv": np.stack(qkv), "logits": logits}


def attention_maps(model, ids, stream: dict | None = None) -> np.ndarray:
    """(n_layers, n_heads, T, T) causal attention weights of one prompt: ``maps[l, h, i, j]`` is how much
    query position ``i`` of head ``h`` in layer ``l`` attends to key position ``j``."""
    stream = stream or residual_stream(model, ids)
    H = model.config.n_heads
    T, C3 = stream["qkv"].shape[1:]
    D = C3 // 3 // H
    out = []
    for qkv, blk in zip(stream["qkv"], model.blocks):
        packed = qkv.reshape(T, 3, H, D)
        out.append(causal_softmax_weights(packed[:, 0], packed[:, 1], 1.0 / np.sqrt(D),
                                          alibi_slopes=getattr(blk.attn, "alibi_slopes", None)))
    return np.stack(out)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def logit_lens(model, ids, k: int = 5, stream: dict | None = None) -> dict:
    """Read the residual stream out as next-token predictions after every layer.

    The final LayerNorm and the LM head are applied to the stream after the embeddings and after each
    block (the last read-out is the model's own prediction). Returns::

        {"layers": ["embeddings", "block 0", ...],        # L + 1 read-out points
         "top_ids": (L+1, T, k), "top_probs": (L+1, T, k),  # the k likeliest next tokens per position
         "residual_norm": (L+1, T),                        # L2 norm of the stream per position
         "next_token_probs": (V,)}                         # the model's distribution after the last token
    """
    if k < 1:
        raise MiniGPTError(f"logit_lens: k must be >= 1, got {k}")
    stream = stream or residual_stream(model, ids)
    res = stream["residual"]                                                   # (L+1, T, C)
    k = min(k, model.config.vocab_size)
    with no_grad():
        h = model.final_norm(res).data                                         # (L+1, T, C)
    w = model.head_weight.data                                                 # (V, C)
    probs = _softmax(h @ w.T)                                                  # (L+1, T, V)
    top = np.argsort(-probs, axis=-1, kind="stable")[..., :k]
    return {
        "layers": ["embeddings"] + [f"block {i}" for i in range(res.shape[0] - 1)],
        "top_ids": top,
        "top_probs": np.take_along_axis(probs, top, axis=-1),
        "residual_norm": np.linalg.norm(res.astype(np.float64), axis=-1),
        "next_token_probs": probs[-1, -1],
    }
