"""One generated token through one transformer block, in one kernel call (inference, KV cache).

During generation each step pushes one position per sequence through every block. As a chain of Tensor
ops that is ~12 small calls per block (layer norms, matrix-vector products, bias adds, attention, GELU,
residual adds), each with Python and thread-pool start-up costs of its own, between matrix-vector
products that only take a few hundred microseconds. Here the whole block is one call:

    h = LN1(x);  qkv = h @ Wqkv + bqkv;  cache[pos] = k, v;  ctx = attention(q, cache[:pos + 1])
    x += ctx @ Wproj + bproj;  x += gelu(LN2(x) @ Wfc + bfc) @ Wout + bout

for ``x`` (B, C), one row per sequence, updated in place, and the block's key/value cache ``k_cache``,
``v_cache`` (B, max_len, H, D), whose position ``pos`` is written. The matrix-vector products run in
parallel over output columns (float32 weights, stored (in, out) as ``Linear`` keeps them) or over output
rows (int8 weights, stored (out, in) with scales, see :mod:`minigpt.kernels.int8`); bias, GELU and the
residual add are applied to each column block while it is in cache. Generation is bound by reading the
weights once per token, so everything else is kept out of the way.

- ``decode_block(x, ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b,
  k_cache, v_cache, pos, eps)``: float32 weights (in, out); returns nothing (``x`` and the caches change).
- ``decode_block_int8(x, ln1_w, ln1_b, qkv_q, qkv_s, qkv_b, proj_q, proj_s, proj_b, ln2_w, ln2_b, fc_q,
  fc_s, fc_b, out_q, out_s, out_b, k_cache, v_cache, pos, eps)``: int8 weights ``(q, scales)``.
- ``matvec_rows(x, table) -> x @ table.T``: the float32 LM head over a (vocab, C) table, parallel over rows.
- ``decode_step(x, blocks, k_caches, v_caches, pos, eps, norm_w, norm_b, norm_eps, head) -> logits``: the
  whole token in one call: every float32 block (``blocks`` holds each block's twelve arrays, in
  ``decode_block``'s order), the final layer norm and the LM head. Between the Python calls of a
  block-by-block loop the thread pool's workers wait tens of microseconds, long enough to fall asleep, and
  waking them costs more than the wait (most of all on virtual machines); inside one call they go straight
  from one matrix-vector product to the next.

Biases are arrays (zeros where a layer has none). The NumPy references compose the existing references
(layer norm, attention, GELU, int8 matmul), so they state the math the fused kernels must match.
"""
import math

import numba
import numpy as np
from numba import types
from numba.typed import List

from ..errors import MiniGPTError
from .attention import attention_forward_numpy
from .. import runtime
from .fastmath import FASTMATH, LazyKernel, array_type, fast_exp, renamed_copy
from .gelu import gelu_forward_numpy
from .int8 import ROWS, int8_matmul_numpy, rows_int8
from .layernorm import layer_norm_forward_numba, layer_norm_forward_numpy
from .registry import kernel

BAND = 96  # input rows per band of a float32 matrix-vector product (fixed: results do not depend on threads)

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


# ---- NumPy reference ----------------------------------------------------------------------------

def _check(x, k_cache, v_cache, pos, n_in):
    if x.ndim != 2 or x.shape[1] != n_in:
        raise MiniGPTError(f"decode_block: x must be (batch, {n_in}), got {x.shape}")
    if k_cache.shape != v_cache.shape or k_cache.ndim != 4 or k_cache.shape[0] != x.shape[0] \
            or k_cache.shape[2] * k_cache.shape[3] != n_in:
        raise MiniGPTError(f"decode_block: caches {k_cache.shape} / {v_cache.shape} do not fit x {x.shape}")
    if not 0 <= pos < k_cache.shape[1]:
        raise MiniGPTError(f"decode_block: position {pos} is outside the cache's {k_cache.shape[1]} positions")


def _block_numpy(x, ln1_w, ln1_b, ln2_w, ln2_b, linear, k_cache, v_cache, pos, eps):
    """The block for one position, with ``linear(name, h)`` doing the four products (bias included)."""
    B, C = x.shape
    H, D = k_cache.shape[2], k_cache.shape[3]
    h = layer_norm_forward_numpy(x, ln1_w, ln1_b, eps)[0]
    qkv = linear("qkv", h).reshape(B, 3, H, D)
    k_cache[:, pos] = qkv[:, 1]
    v_cache[:, pos] = qkv[:, 2]
    ctx, _ = attention_forward_numpy(qkv[:, None, 0], k_cache[:, :pos + 1], v_cache[:, :pos + 1],
                                     1.0 / math.sqrt(D))
    x += linear("proj", ctx.reshape(B, C))
    h = layer_norm_forward_numpy(x, ln2_w, ln2_b, eps)[0]
    x += linear("out", gelu_forward_numpy(linear("fc", h)))


def decode_block_numpy(x, ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b,
                       k_cache, v_cache, pos, eps=1e-5):
    _check(x, k_cache, v_cache, pos, qkv_w.shape[0])
    w = {"qkv": (qkv_w, qkv_b), "proj": (proj_w, proj_b), "fc": (fc_w, fc_b), "out": (out_w, out_b)}

    def linear(name, h):
        return h @ w[name][0] + w[name][1]

    _block_numpy(x, ln1_w, ln1_b, ln2_w, ln2_b, linear, k_cache, v_cache, pos, eps)


def decode_block_int8_numpy(x, ln1_w, ln1_b, qkv_q, qkv_s, qkv_b, proj_q, proj_s, proj_b, ln2_w, ln2_b,
                            fc_q, fc_s, fc_b, out_q, out_s, out_b, k_cache, v_cache, pos, eps=1e-5):
    _check(x, k_cache, v_cache, pos, qkv_q.shape[1])
    w = {"qkv": (qkv_q, qkv_s, qkv_b), "proj": (proj_q, proj_s, proj_b), "fc": (fc_q, fc_s, fc_b),
         "out": (out_q, out_s, out_b)}

    def linear(name, h):
        q, s, b = w[name]
        return int8_matmul_numpy(h, q, s) + b

    _block_numpy(x, ln1_w, ln1_b, ln2_w, ln2_b, linear, k_cache, v_cache, pos, eps)


def matvec_rows_numpy(x, table):
    return np.asarray(x) @ np.asarray(table).T


# ---- Numba ------------------------------------------------------------------------------------------

@numba.njit(fastmath=FASTMATH, cache=True)
def _layer_norm(x, w, b, eps, out):
    """out = LN(x) row by row (serial: one token's rows are short)."""
    n, c = x.shape
    inv_c = np.float32(1.0) / np.float32(c)
    for r in range(n):
        row = x[r]
        s = np.float32(0.0)
        for j in range(c):
            s += row[j]
        mu = s * inv_c
        v = np.float32(0.0)
        for j in range(c):
            d = row[j] - mu
            v += d * d
        rs = np.float32(1.0) / np.sqrt(v * inv_c + eps)
        o = out[r]
        for j in range(c):
            o[j] = (row[j] - mu) * rs * w[j] + b[j]


@numba.njit(fastmath=FASTMATH, cache=True)
def _gelu_inplace(a):
    for j in range(a.shape[0]):
        v = a[j]
        z = np.float32(-2.0 * _GELU_C) * (v + np.float32(_GELU_A) * v * v * v)
        z = min(z, np.float32(80.0))
        a[j] = v / (np.float32(1.0) + fast_exp(z))


@numba.njit(fastmath=FASTMATH, cache=True)
def _partial_f32(x, w, i0, i1, acc):
    """acc[r] = x[r, i0:i1] @ w[i0:i1] for every row r of x: a contiguous band of w's rows, read once.

    Eight rows of w per pass over the accumulator: the accumulator (one output row, in L1) is read and
    written once per eight weight rows streamed from memory (with four per pass the step was ~13% slower
    in CPU time, one thread, gpt2-small's matrices; benchmarks/README.md)."""
    n = x.shape[0]
    m = w.shape[1]
    for r in range(n):
        a = acc[r]
        for j in range(m):
            a[j] = np.float32(0.0)
    i = i0
    while i + 8 <= i1:
        w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
        w4, w5, w6, w7 = w[i + 4], w[i + 5], w[i + 6], w[i + 7]
        for r in range(n):
            x0, x1, x2, x3 = x[r, i], x[r, i + 1], x[r, i + 2], x[r, i + 3]
            x4, x5, x6, x7 = x[r, i + 4], x[r, i + 5], x[r, i + 6], x[r, i + 7]
            a = acc[r]
            for j in range(m):
                a[j] += (x0 * w0[j] + x1 * w1[j] + x2 * w2[j] + x3 * w3[j]) \
                    + (x4 * w4[j] + x5 * w5[j] + x6 * w6[j] + x7 * w7[j])
        i += 8
    while i < i1:
        w0 = w[i]
        for r in range(n):
            x0 = x[r, i]
            a = acc[r]
            for j in range(m):
                a[j] += x0 * w0[j]
        i += 1


@numba.njit(parallel=True, fastmath=FASTMATH, cache=True)
def _linear_f32(x, w, b, y):
    """y = x @ w + b, w (in, out): bands of BAND rows of w in parallel (each a contiguous stretch of
    memory, streamed once; a thread takes consecutive bands), then the bands' partial sums added in a
    fixed order."""
    n = x.shape[0]
    n_in, n_out = w.shape
    nbands = (n_in + BAND - 1) // BAND
    part = np.empty((nbands, n, n_out), dtype=np.float32)
    for t in numba.prange(nbands):
        _partial_f32(x, w, t * BAND, min((t + 1) * BAND, n_in), part[t])
    for r in range(n):
        yr = y[r]
        for j in range(n_out):
            yr[j] = b[j]
        for t in range(nbands):
            pt = part[t, r]
            for j in range(n_out):
                yr[j] += pt[j]


@numba.njit(fastmath=FASTMATH, cache=True)
def _attend(qkv, k_cache, v_cache, pos, bh, ctx):
    """ctx[b, head] = softmax(q . k[:pos + 1] / sqrt(D)) @ v[:pos + 1] for one (sequence, head) pair ``bh``."""
    H, D = k_cache.shape[2], k_cache.shape[3]
    b, hd = bh // H, bh % H
    scale = np.float32(1.0) / np.sqrt(np.float32(D))
    q = qkv[b, hd * D:(hd + 1) * D]
    p = np.empty(pos + 1, dtype=np.float32)
    m = np.float32(-np.inf)
    for t in range(pos + 1):
        kt = k_cache[b, t, hd]
        a = np.float32(0.0)
        for d in range(D):
            a += q[d] * kt[d]
        a *= scale
        p[t] = a
        m = max(m, a)
    total = np.float32(0.0)
    for t in range(pos + 1):
        e = fast_exp(p[t] - m)
        p[t] = e
        total += e
    inv = np.float32(1.0) / total
    out = ctx[b, hd * D:(hd + 1) * D]
    for d in range(D):
        out[d] = np.float32(0.0)
    for t in range(pos + 1):
        vt = v_cache[b, t, hd]
        pt = p[t] * inv
        for d in range(D):
            out[d] += pt * vt[d]


@numba.njit(fastmath=FASTMATH, cache=True)
def _store_kv(qkv, k_cache, v_cache, pos):
    B = qkv.shape[0]
    H, D = k_cache.shape[2], k_cache.shape[3]
    C = H * D
    for b in range(B):
        for hd in range(H):
            for d in range(D):
                k_cache[b, pos, hd, d] = qkv[b, C + hd * D + d]
                v_cache[b, pos, hd, d] = qkv[b, 2 * C + hd * D + d]


def _block_f32(x, ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b,
               k_cache, v_cache, pos, eps, nthreads):
    B, C = x.shape
    H = k_cache.shape[2]
    F = fc_w.shape[1]
    h = np.empty((B, C), dtype=np.float32)
    qkv = np.empty((B, 3 * C), dtype=np.float32)
    ctx = np.empty((B, C), dtype=np.float32)
    f = np.empty((B, F), dtype=np.float32)
    a = np.empty((B, C), dtype=np.float32)
    _layer_norm(x, ln1_w, ln1_b, eps, h)
    _linear_f32(h, qkv_w, qkv_b, qkv)
    _store_kv(qkv, k_cache, v_cache, pos)
    for bh in numba.prange(B * H):
        _attend(qkv, k_cache, v_cache, pos, bh, ctx)
    _linear_f32(ctx, proj_w, proj_b, a)
    x += a
    _layer_norm(x, ln2_w, ln2_b, eps, h)
    _linear_f32(h, fc_w, fc_b, f)
    for r in range(B):
        _gelu_inplace(f[r])
    _linear_f32(f, out_w, out_b, a)
    x += a


@numba.njit(parallel=True, fastmath=FASTMATH, cache=True)
def _linear_int8(x, q, s, b, y, nthreads):
    """y = x @ dequantized(q, s).T + b, parallel over blocks of output rows."""
    n_out = q.shape[0]
    nb = nthreads * max(1, n_out // (nthreads * 64))
    w = ((n_out + nb - 1) // nb + ROWS - 1) // ROWS * ROWS
    for c in numba.prange(nb):
        j0 = min(c * w, n_out)
        j1 = min(j0 + w, n_out)
        rows_int8(x, q, s, j0, j1, y)
        for r in range(x.shape[0]):
            for j in range(j0, j1):
                y[r, j] += b[j]


def _block_int8(x, ln1_w, ln1_b, qkv_q, qkv_s, qkv_b, proj_q, proj_s, proj_b, ln2_w, ln2_b,
                fc_q, fc_s, fc_b, out_q, out_s, out_b, k_cache, v_cache, pos, eps, nthreads):
    B, C = x.shape
    H = k_cache.shape[2]
    F = fc_q.shape[0]
    h = np.empty((B, C), dtype=np.float32)
    qkv = np.empty((B, 3 * C), dtype=np.float32)
    ctx = np.empty((B, C), dtype=np.float32)
    f = np.empty((B, F), dtype=np.float32)
    a = np.empty((B, C), dtype=np.float32)
    _layer_norm(x, ln1_w, ln1_b, eps, h)
    _linear_int8(h, qkv_q, qkv_s, qkv_b, qkv, nthreads)
    _store_kv(qkv, k_cache, v_cache, pos)
    for bh in numba.prange(B * H):
        _attend(qkv, k_cache, v_cache, pos, bh, ctx)
    _linear_int8(ctx, proj_q, proj_s, proj_b, a, nthreads)
    x += a
    _layer_norm(x, ln2_w, ln2_b, eps, h)
    _linear_int8(h, fc_q, fc_s, fc_b, f, nthreads)
    for r in range(B):
        _gelu_inplace(f[r])
    _linear_int8(f, out_q, out_s, out_b, a, nthreads)
    x += a


def _matvec_rows(x, table, y):
    n_out, n_in = table.shape
    nb = (n_out + ROWS - 1) // ROWS
    for c in numba.prange(nb):
        j = c * ROWS
        if j + ROWS <= n_out:
            r0, r1, r2, r3 = table[j], table[j + 1], table[j + 2], table[j + 3]
            for r in range(x.shape[0]):
                xr = x[r]
                a0 = a1 = a2 = a3 = np.float32(0.0)
                for i in range(n_in):
                    xi = xr[i]
                    a0 += xi * r0[i]
                    a1 += xi * r1[i]
                    a2 += xi * r2[i]
                    a3 += xi * r3[i]
                y[r, j], y[r, j + 1], y[r, j + 2], y[r, j + 3] = a0, a1, a2, a3
        else:
            for jj in range(j, n_out):
                row = table[jj]
                for r in range(x.shape[0]):
                    a = np.float32(0.0)
                    for i in range(n_in):
                        a += x[r, i] * row[i]
                    y[r, jj] = a


# ---- the whole token in one call ---------------------------------------------------------------------

_block_f32_jit = numba.njit(parallel=True, fastmath=FASTMATH, cache=True)(renamed_copy(_block_f32, "_jit"))
_matvec_rows_jit = numba.njit(parallel=True, fastmath=FASTMATH, cache=True)(renamed_copy(_matvec_rows, "_jit"))


@numba.njit(fastmath=FASTMATH, cache=True)
def _step_f32(x, vecs, qkv_w, proj_w, fc_w, out_w, k_caches, v_caches, pos, eps, norm, norm_eps, head, logits,
              nthreads):
    """Every block, the final norm and the head for one position. ``vecs[l]`` holds block l's layer-norm
    weights and biases as rows: ln1_w, ln1_b, qkv_b (3C), proj_b, ln2_w, ln2_b, fc_b (F), out_b, padded to
    the widest; ``norm`` the final norm's (2, C) weight and bias."""
    C = x.shape[1]
    F = fc_w[0].shape[1]
    for blk in range(len(qkv_w)):
        v = vecs[blk]
        _block_f32_jit(x, v[0, :C], v[1, :C], qkv_w[blk], v[2, :3 * C], proj_w[blk], v[3, :C], v[4, :C],
                       v[5, :C], fc_w[blk], v[6, :F], out_w[blk], v[7, :C], k_caches[blk], v_caches[blk], pos,
                       eps[blk], nthreads)
    h = np.empty_like(x)
    _layer_norm(x, norm[0], norm[1], norm_eps, h)
    _matvec_rows_jit(h, head, logits)


def decode_step_numpy(x, blocks, k_caches, v_caches, pos, eps, norm_w, norm_b, norm_eps, head, prepared=None):
    for args, kc, vc, e in zip(blocks, k_caches, v_caches, eps):
        decode_block_numpy(x, *args, kc, vc, pos, e)
    h = layer_norm_forward_numpy(x, norm_w, norm_b, norm_eps)[0]
    return matvec_rows_numpy(h, head)


class StepArgs:
    """``decode_step``'s arguments prepared once per model for the fused call (typed lists of the weight
    matrices, the small vectors stacked): ``StepArgs.make(blocks, norm_w, norm_b, head)``, or None when
    the arrays do not fit it (then ``decode_step`` runs block by block)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @classmethod
    def make(cls, blocks, norm_w, norm_b, head):
        if not blocks or not _f32(norm_w, norm_b, head) or any(not _f32(*b) for b in blocks):
            return None
        C = blocks[0][0].shape[0]
        width = max(max(a.shape[0] for i, a in enumerate(b) if a.ndim == 1) for b in blocks)
        vecs = np.zeros((len(blocks), 8, width), np.float32)
        for v, b in zip(vecs, blocks):
            ln1_w, ln1_b, _, qkv_b, _, proj_b, ln2_w, ln2_b, _, fc_b, _, out_b = b
            for row, a in enumerate((ln1_w, ln1_b, qkv_b, proj_b, ln2_w, ln2_b, fc_b, out_b)):
                v[row, :a.shape[0]] = a
        try:
            mats = [List([_c(b[i]) for b in blocks]) for i in (2, 4, 8, 10)]
        except Exception:  # noqa: BLE001 - mixed array types (e.g. some read-only): block by block
            return None
        norm = np.ascontiguousarray(np.stack([norm_w, norm_b]), dtype=np.float32)
        return cls(C=C, vecs=vecs, mats=mats, norm=norm, head=_c(head), caches=None)


def decode_step_numba(x, blocks, k_caches, v_caches, pos, eps, norm_w, norm_b, norm_eps, head, prepared=None):
    """``prepared``: a ``StepArgs`` for these blocks (made once by the caller; made here when None)."""
    if len(blocks) != len(k_caches) or len(blocks) != len(v_caches) or len(blocks) != len(eps):
        raise MiniGPTError(f"decode_step: {len(blocks)} blocks need as many caches and eps values")

    if prepared is None:
        prepared = StepArgs.make(blocks, norm_w, norm_b, head)
    if x.dtype != np.float32:
        return decode_step_numpy(x, blocks, k_caches, v_caches, pos, eps, norm_w, norm_b, norm_eps, head)
    if prepared is None or not (x.flags.c_contiguous and all(
            a.flags.c_contiguous and a.dtype == np.float32 for a in (*k_caches, *v_caches))):
        for args, kc, vc, e in zip(blocks, k_caches, v_caches, eps):  # block by block
            decode_block_numba(x, *args, kc, vc, pos, e)
        h = layer_norm_forward_numba(x, norm_w, norm_b, norm_eps)[0]
        return matvec_rows_numba(h, head)
    for kc in k_caches:
        _check(x, kc, kc, pos, prepared.C)
    key = tuple(id(k) for k in k_caches) + tuple(id(v) for v in v_caches)
    if prepared.caches is None or prepared.caches[0] != key:  # the same caches step after step: build once
        prepared.caches = (key, List(k_caches), List(v_caches))
    logits = np.empty((x.shape[0], prepared.head.shape[0]), dtype=np.float32)
    runtime.ensure()  # before the pool starts (the Kernel call did it already; direct calls too)
    _step_f32(x, prepared.vecs, *prepared.mats, prepared.caches[1], prepared.caches[2], int(pos),
              np.asarray(eps, dtype=np.float32), prepared.norm, np.float32(norm_eps), prepared.head, logits,
              numba.get_num_threads())
    return logits


# One explicit signature each (weights read-only, so memory-mapped int8 folders share the build), compiled
# on first use.
def _ro(t, nd):
    return array_type(t, nd, readonly=True)


def _block_f32_types(f):
    w1, w2 = _ro(f, 1), _ro(f, 2)
    return (array_type(f, 2), w1, w1, w2, w1, w2, w1, w1, w1, w2, w1, w2, w1, array_type(f, 4), array_type(f, 4),
            types.int64, f, types.int64)


def _block_int8_types(f):
    w1, q, sc = _ro(f, 1), _ro(types.int8, 2), _ro(f, 2)
    return (array_type(f, 2), w1, w1, q, sc, w1, q, sc, w1, w1, w1, q, sc, w1, q, sc, w1, array_type(f, 4),
            array_type(f, 4), types.int64, f, types.int64)


_block_f32_kernel = LazyKernel(_block_f32, _block_f32_types)
_block_int8_kernel = LazyKernel(_block_int8, _block_int8_types)
_matvec_rows_kernel = LazyKernel(_matvec_rows, lambda f: (_ro(f, 2), _ro(f, 2), array_type(f, 2)))


def _f32(*arrays):
    return all(isinstance(a, np.ndarray) and a.dtype == np.float32 for a in arrays)


def _c(a):
    return np.ascontiguousarray(a)


def decode_block_numba(x, ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b,
                       k_cache, v_cache, pos, eps=1e-5):
    args = (x, ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b, k_cache, v_cache)
    if not _f32(*args) or not (x.flags.c_contiguous and k_cache.flags.c_contiguous and v_cache.flags.c_contiguous):
        return decode_block_numpy(*args[:15], pos, eps)   # float64 (references, gradient checks): NumPy
    _check(x, k_cache, v_cache, pos, qkv_w.shape[0])
    _block_f32_kernel[np.float32](x, *(_c(a) for a in args[1:13]), k_cache, v_cache, int(pos), np.float32(eps),
               numba.get_num_threads())


def decode_block_int8_numba(x, ln1_w, ln1_b, qkv_q, qkv_s, qkv_b, proj_q, proj_s, proj_b, ln2_w, ln2_b,
                            fc_q, fc_s, fc_b, out_q, out_s, out_b, k_cache, v_cache, pos, eps=1e-5):
    args = (x, ln1_w, ln1_b, qkv_q, qkv_s, qkv_b, proj_q, proj_s, proj_b, ln2_w, ln2_b, fc_q, fc_s, fc_b,
            out_q, out_s, out_b, k_cache, v_cache)
    floats = [a for a in args if a.dtype != np.int8]
    if not _f32(*floats) or not (x.flags.c_contiguous and k_cache.flags.c_contiguous and v_cache.flags.c_contiguous):
        return decode_block_int8_numpy(*args, pos, eps)
    _check(x, k_cache, v_cache, pos, qkv_q.shape[1])
    _block_int8_kernel[np.float32](x, *(_c(a) for a in args[1:17]), k_cache, v_cache, int(pos), np.float32(eps),
                numba.get_num_threads())


def matvec_rows_numba(x, table):
    x, table = np.asarray(x), np.asarray(table)
    if not _f32(x, table):
        return matvec_rows_numpy(x, table)
    if x.ndim != 2 or table.ndim != 2 or x.shape[1] != table.shape[1]:
        raise MiniGPTError(f"matvec_rows: x {x.shape} does not match a table of shape {table.shape}")
    y = np.empty((x.shape[0], table.shape[0]), dtype=np.float32)
    _matvec_rows_kernel[np.float32](_c(x), _c(table), y)
    return y


# ---- the kernels, declared once: NumPy reference, Numba version (registry.py picks one) ---------

decode_block = kernel(decode_block_numpy, decode_block_numba,
                      """One position of one transformer block (float32 weights (in, out)); x, caches in place.""")
decode_block_int8 = kernel(decode_block_int8_numpy, decode_block_int8_numba,
                           """One position of one transformer block with int8 weights; x, caches in place.""")
matvec_rows = kernel(matvec_rows_numpy, matvec_rows_numba, """``x @ table.T`` for a (rows, C) table.""")
decode_step = kernel(decode_step_numpy, decode_step_numba,
                     """One position through every float32 block, the final layer norm and the LM head; returns
                     the logits (B, vocab). x and the caches change in place.""")
