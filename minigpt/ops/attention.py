"""Fused causal self-attention over a packed q/k/v tensor.

The input is the output of the fused q/k/v projection, (B, T, 3*C); heads are strided views of it,
(B, T, H, D), never copied. The kernel (``minigpt.kernels.attention``) computes each query row's softmax
inside the causal limit and saves only the row's log-sum-exp; backward recomputes the probabilities
from it and writes dq, dk, dv straight into one (B, T, 3, H, D) buffer, which is the gradient of the
packed input. Attention dropout draws its mask from a counter-based hash of (seed, b, h, i, j), so
backward regenerates it without storing a (T, T) mask. ALiBi (``alibi_slopes``) adds each head's
``-slope * (i - j)`` to the scores inside the same kernels.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import MiniGPTError
from ..kernels import attention, rmsnorm
from ..kernels import rope as rope_kernels
from ..random import as_generator
from ..tensor import Function, Tensor
from ._util import as_tensor, check_float
from .rope import rope_tables


def alibi_slopes(n_heads: int) -> np.ndarray:
    """ALiBi's per-head slopes (Press et al., "Train Short, Test Long"), float64 (n_heads,).

    For H a power of two: the geometric sequence ``2^(-8 (h + 1) / H)``, h = 0 .. H-1 (H = 8: 1/2, 1/4,
    ..., 1/256). Otherwise: the slopes of the closest power of two below H, n, followed by every other
    slope of 2n (the first H - n of them): H = 6 -> 1/4, 1/16, 1/64, 1/256, then 1/2, 1/8.
    """
    if isinstance(n_heads, bool) or not isinstance(n_heads, (int, np.integer)) or n_heads <= 0:
        raise MiniGPTError(f"alibi_slopes: n_heads must be a positive integer, got {n_heads!r}")

    def power_of_two(n):
        return 2.0 ** (-8.0 * np.arange(1, n + 1) / n)

    n = 1 << (int(n_heads).bit_length() - 1)          # the largest power of two <= n_heads
    if n == n_heads:
        return power_of_two(n)
    return np.concatenate([power_of_two(n), power_of_two(2 * n)[0::2][:n_heads - n]])


class CausalAttentionOp(Function):
    """out = softmax(q k^T * scale + causal mask [+ ALiBi bias]) v per head, heads read from the packed
    q/k/v input. The ALiBi bias ``-slope_h * (i - j)`` is a constant: it has no gradient of its own and
    enters the backward only where the probabilities are rebuilt from the log-sum-exp.

    math: kernels/attention.py::attention_forward_numpy, attention_backward_numpy
    """

    def forward(self, qkv, n_heads, dropout_p, seed, slopes=None):
        B, T, C3 = qkv.shape
        C = C3 // 3
        H, D = n_heads, C // n_heads
        packed = qkv.reshape(B, T, 3, H, D)                          # (B, T, 3C) -> (B, T, 3, H, D)
        q, k, v = packed[:, :, 0], packed[:, :, 1], packed[:, :, 2]  # each (B, T, H, D), strided views
        scale = 1.0 / math.sqrt(D)
        # S = scale q k^T (B, H, T, T), causal; P = softmax(S); out = P v: (B, T, H, D); lse: log-sum-exp
        # of each row of S, (B, H, T), from which backward rebuilds P
        # ALiBi (slopes (H,)): S[h, i, j] -= slope_h * (i - j) before the softmax
        out, lse = attention.attention_forward(q, k, v, scale, dropout_p, seed, slopes=slopes)
        self.saved = (q, k, v, out, lse, scale, dropout_p, seed, slopes)
        return out.reshape(B, T, C)                                  # (B, T, H, D) -> (B, T, C)

    def backward(self, g):
        q, k, v, out, lse, scale, dropout_p, seed, slopes = self.saved
        B, T, H, D = q.shape
        dqkv = np.empty((B, T, 3, H, D), dtype=g.dtype)              # dq, dk, dv side by side
        # With P = exp(S - lse) (and the dropout mask M applied: P' = P * M / (1 - p)):
        #   dv = P'^T dout                      (B, T, H, D)
        #   dP' = dout v^T; dP = dP' * M / (1 - p)
        #   dS = P * (dP - rowsum(dout * out))  softmax's backward, rowsum(dP * P) = rowsum(dout * out)
        #   dq = scale dS k,  dk = scale dS^T q (B, T, H, D) each
        # (ALiBi's bias is part of S when P is rebuilt; being constant, it adds no term of its own)
        attention.attention_backward(np.ascontiguousarray(g).reshape(B, T, H, D), q, k, v, out, lse, scale,
                                     dropout_p, seed, dq=dqkv[:, :, 0], dk=dqkv[:, :, 1], dv=dqkv[:, :, 2],
                                     slopes=slopes)
        return (dqkv.reshape(B, T, 3 * H * D),)                      # (B, T, 3, H, D) -> (B, T, 3C)


def causal_attention(qkv, n_heads: int, dropout_p: float = 0.0, training: bool = True, rng=None,
                     alibi_slopes=None) -> Tensor:
    """Multi-head causal self-attention of a packed (B, T, 3*C) tensor [q | k | v] -> (B, T, C).

    Scores are scaled by 1/sqrt(head_dim); ``dropout_p`` applies to the attention probabilities when
    ``training``. ``alibi_slopes`` (n_heads,) adds ALiBi's bias ``-slope_h * (i - j)`` to head h's score
    of query i and key j (see :func:`alibi_slopes`); None: no bias.
    """
    qkv = as_tensor(qkv)
    check_float(qkv, "causal_attention")
    if qkv.ndim != 3 or qkv.shape[-1] % 3:
        raise MiniGPTError(f"causal_attention: expected a packed (B, T, 3*C) tensor, got shape {qkv.shape}")
    C = qkv.shape[-1] // 3
    if n_heads <= 0 or C % n_heads:
        raise MiniGPTError(f"causal_attention: embedding size {C} is not divisible by n_heads={n_heads}")
    if not 0.0 <= dropout_p < 1.0:
        raise MiniGPTError(f"causal_attention: dropout_p must be in [0, 1), got {dropout_p}")
    slopes = _check_slopes(alibi_slopes, n_heads, qkv.dtype, "causal_attention")
    p = float(dropout_p) if training else 0.0
    seed = 0
    if p > 0:
        seed = int(as_generator(rng).integers(0, 2**62))
    return CausalAttentionOp.apply(qkv, n_heads=int(n_heads), dropout_p=p, seed=seed, slopes=slopes)


def _check_slopes(slopes, n_heads, dtype, where):
    """ALiBi slopes as a read-only (n_heads,) array of ``dtype``, or None."""
    if slopes is None:
        return None
    s = np.asarray(slopes.data if isinstance(slopes, Tensor) else slopes)
    if s.shape != (n_heads,) or s.dtype.kind not in "fiu" or not np.all(np.isfinite(s)):
        raise MiniGPTError(f"{where}: alibi_slopes must be {n_heads} finite numbers (one per head), got "
                           f"{s.dtype} {s.shape}")
    s = s.astype(dtype)
    s.flags.writeable = False
    return s



# --- Llama / Qwen attention: grouped keys and values, QK-norm, rotary positions -------------------------

def split_heads(qkv, n_heads: int, n_kv: int, head_dim: int):
    """Views q (B, T, H, D), k and v (B, T, G, D) of a packed (B, T, (H + 2G) D) array [q | k | v]."""
    B, T, _ = qkv.shape
    HD, GD = n_heads * head_dim, n_kv * head_dim
    q = qkv[..., :HD].reshape(B, T, n_heads, head_dim)
    k = qkv[..., HD:HD + GD].reshape(B, T, n_kv, head_dim)
    v = qkv[..., HD + GD:].reshape(B, T, n_kv, head_dim)
    return q, k, v


def norm_and_rotate(x, norm_w, eps, cos, sin):
    """QK-norm (RMSNorm over each head vector, weights (D,)) when ``norm_w`` is given, then RoPE when
    ``cos`` is given: x (B, T, n, D) -> (the result (B, T, n, D), a strided view; rstd (B*T*n,) or None)."""
    B, T, n, D = x.shape
    rstd = None
    if norm_w is not None:
        xn, rstd = rmsnorm.rms_norm_forward(x.reshape(-1, D), norm_w, eps)   # (B*T*n, D) rows
        x = xn.reshape(B, T, n, D)
    if cos is not None:
        x = rope_kernels.rope_apply(x.transpose(0, 2, 1, 3), cos, sin).transpose(0, 2, 1, 3)  # turn along T
    return x, rstd


def expand_groups(x, n_heads: int):
    """(B, T, G, D) -> (B, T, H, D): each key/value head repeated for the H/G query heads of its group
    (head h reads group h // (H/G), as Llama's and Qwen's ``repeat_kv``)."""
    rep = n_heads // x.shape[2]
    return x if rep == 1 else np.repeat(x, rep, axis=2)


class GroupedAttentionOp(Function):
    """Causal attention of Llama 3 and Qwen 3 over a packed (B, T, (H + 2G) D) projection [q | k | v]:

    1. QK-norm (Qwen 3): each query and key head vector RMS-normalised with weights (D,);
    2. RoPE: queries and keys turned by their positions' angles;
    3. grouped keys/values: G key/value heads, each shared by H/G query heads;
    4. softmax(q k^T / sqrt(D) [- slope_h (i - j): ALiBi], causal) v per head, heads side by side: (B, T, H D).

    Backward runs the same steps in reverse: attention's backward gives dq and the expanded dk, dv; a
    key/value head's gradient is the sum over the query heads of its group (they all read it); RoPE's
    backward turns dq and dk back; RMSNorm's backward gives the pre-norm gradients and the norm weights'.
    math: kernels/attention.py::attention_forward_numpy, attention_backward_numpy;
    kernels/rope.py::rope_apply_numpy; kernels/rmsnorm.py::rms_norm_forward_numpy, rms_norm_backward_numpy
    """

    def forward(self, qkv, q_norm=None, k_norm=None, *, n_heads, n_kv, head_dim, cos, sin, eps, dropout_p, seed,
                slopes=None):
        H, G, D = n_heads, n_kv, head_dim
        q0, k0, v = split_heads(qkv, H, G, D)                      # (B, T, H, D), (B, T, G, D) x 2: views
        q, q_rstd = norm_and_rotate(q0, q_norm, eps, cos, sin)     # (B, T, H, D)
        k, k_rstd = norm_and_rotate(k0, k_norm, eps, cos, sin)     # (B, T, G, D)
        ke, ve = expand_groups(k, H), expand_groups(v, H)          # (B, T, H, D) each
        scale = 1.0 / math.sqrt(D)
        out, lse = attention.attention_forward(q, ke, ve, scale, dropout_p, seed, slopes=slopes)  # (B,T,H,D), (B,H,T)
        self.saved = (q0, k0, q, ke, ve, out, lse, q_norm, k_norm, q_rstd, k_rstd)
        self.params = (H, G, D, cos, sin, scale, dropout_p, seed, slopes)
        B, T = qkv.shape[:2]
        return out.reshape(B, T, H * D)                            # (B, T, H, D) -> (B, T, H D)

    def backward(self, g):
        q0, k0, q, ke, ve, out, lse, q_norm, k_norm, q_rstd, k_rstd = self.saved
        H, G, D, cos, sin, scale, dropout_p, seed, slopes = self.params
        B, T = q.shape[:2]
        dqkv = np.empty((B, T, (H + 2 * G) * D), dtype=g.dtype)
        dq_out, dk_out, dv_out = split_heads(dqkv, H, G, D)        # views into the packed gradient
        dq, dke, dve = attention.attention_backward(np.ascontiguousarray(g).reshape(B, T, H, D), q, ke, ve, out,
                                                    lse, scale, dropout_p, seed, slopes=slopes)  # (B, T, H, D) each
        rep = H // G
        dk = dke.reshape(B, T, G, rep, D).sum(axis=3)              # a group's heads all read it: (B, T, G, D)
        dv_out[...] = dve.reshape(B, T, G, rep, D).sum(axis=3)     # (B, T, G, D)
        grads = [dqkv]
        for d, x0, w, rstd, dst in ((dq, q0, q_norm, q_rstd, dq_out), (dk, k0, k_norm, k_rstd, dk_out)):
            if cos is not None:                                     # RoPE's backward: turn back
                d = rope_kernels.rope_apply(d.transpose(0, 2, 1, 3), cos, sin, inverse=True).transpose(0, 2, 1, 3)
            if w is not None:                                       # RMSNorm's backward, rows of D
                n = x0.shape[2]
                d, dw = rmsnorm.rms_norm_backward(np.ascontiguousarray(d).reshape(-1, D),
                                                  np.ascontiguousarray(x0).reshape(-1, D), w, rstd)
                d = d.reshape(B, T, n, D)
                grads.append(dw)                                    # (D,)
            dst[...] = d
        return tuple(grads)


def grouped_attention(qkv, n_heads: int, n_kv_groups: int | None = None, head_dim: int | None = None,
                      q_norm=None, k_norm=None, rope_theta: float | None = None, rope_scaling: dict | None = None,
                      start: int = 0, eps: float = 1e-6, dropout_p: float = 0.0, training: bool = True,
                      rng=None, alibi_slopes=None) -> Tensor:
    """Causal attention over a packed (B, T, (H + 2G) D) tensor [q | k | v] -> (B, T, H D), as Llama 3 and
    Qwen 3 compute it: ``n_kv_groups`` = G key/value heads (default H: plain multi-head attention),
    optional QK-norm (``q_norm``, ``k_norm``: RMSNorm weights of shape (D,)), RoPE with base ``rope_theta``
    (None: no rotation) for positions ``start, start + 1, ...``. ``head_dim`` defaults to
    width / (H + 2G). ``alibi_slopes`` (H,): ALiBi's bias per query head (see :func:`alibi_slopes`)."""
    qkv = as_tensor(qkv)
    check_float(qkv, "grouped_attention")
    G = n_heads if n_kv_groups is None else n_kv_groups
    if not (isinstance(n_heads, (int, np.integer)) and n_heads > 0 and isinstance(G, (int, np.integer)) and G > 0
            and n_heads % G == 0):
        raise MiniGPTError(f"grouped_attention: n_heads ({n_heads}) must be a positive multiple of n_kv_groups "
                           f"({G})")
    if qkv.ndim != 3:
        raise MiniGPTError(f"grouped_attention: expected a packed (B, T, (H + 2G) * D) tensor, got {qkv.shape}")
    width = qkv.shape[-1]
    D = head_dim if head_dim is not None else width // (n_heads + 2 * G)
    if D <= 0 or width != (n_heads + 2 * G) * D:
        raise MiniGPTError(f"grouped_attention: width {width} is not (n_heads + 2 n_kv_groups) * head_dim = "
                           f"({n_heads} + 2*{G}) * {D}")
    norms = []
    for name, w in (("q_norm", q_norm), ("k_norm", k_norm)):
        if w is not None:
            w = as_tensor(w, like=qkv)
            if w.shape != (D,) or w.dtype != qkv.dtype:
                raise MiniGPTError(f"grouped_attention: {name} must be a {qkv.dtype} ({D},) array, got "
                                   f"{w.dtype} {w.shape}")
            norms.append(w)
    if len(norms) == 1:
        raise MiniGPTError("grouped_attention: give both q_norm and k_norm (QK-norm), or neither")
    if not 0.0 <= dropout_p < 1.0:
        raise MiniGPTError(f"grouped_attention: dropout_p must be in [0, 1), got {dropout_p}")
    cos = sin = None
    if rope_theta is not None:
        if D % 2:
            raise MiniGPTError(f"grouped_attention: RoPE needs an even head size, got {D}")
        cos, sin = rope_tables(qkv.shape[1], D, rope_theta, start, rope_scaling, qkv.dtype)
    slopes = _check_slopes(alibi_slopes, n_heads, qkv.dtype, "grouped_attention")
    p = float(dropout_p) if training else 0.0
    seed = int(as_generator(rng).integers(0, 2**62)) if p > 0 else 0
    return GroupedAttentionOp.apply(qkv, *norms, n_heads=int(n_heads), n_kv=int(G), head_dim=int(D), cos=cos,
                                    sin=sin, eps=float(eps), dropout_p=p, seed=seed, slopes=slopes)
