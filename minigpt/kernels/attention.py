"""Causal scaled-dot-product attention, forward and backward, with optional attention dropout.

Layout (B, T, H, D): batch, time, head, head size -- the per-head view of a fused q/k/v projection,
``qkv.reshape(B, T, 3, H, D)[:, :, 0]`` (a strided view; it is never copied as a whole).

``attention_forward(q, k, v, scale, dropout_p=0.0, seed=0) -> (out, lse)``

- ``q`` is (B, Tq, H, D), ``k`` and ``v`` are (B, Tk, H, D) with ``Tk >= Tq``. Query ``i`` sits at the
  absolute position ``Tk - Tq + i`` and attends keys ``0 .. Tk - Tq + i``. Training uses ``Tq == Tk``;
  generation with a KV cache passes the new queries (``Tq = 1`` or a chunk) against the whole cache.
- ``out`` (B, Tq, H, D) is C-contiguous, so ``out.reshape(B, Tq, H * D)`` is free; ``lse`` (B, H, Tq) is
  each row's log-sum-exp of the scaled scores, all the backward needs to rebuild the probabilities.
- ``dropout_p > 0`` drops attention probabilities (inverted dropout: kept ones are scaled by
  ``1 / (1 - p)``, like PyTorch's ``dropout(softmax(scores)) @ v``). Keep or drop is a hash of
  ``(seed, b, h, i, j)`` -- a counter-based random generator -- so the backward regenerates the same mask
  without storing a (T, T) array, and the NumPy reference draws the identical mask.

``attention_backward(dout, q, k, v, out, lse, scale, dropout_p=0.0, seed=0, dq=None, dk=None, dv=None)``
returns ``(dq, dk, dv)``. They may be given as preallocated (possibly strided) arrays of the shapes of q,
k, v -- e.g. views into one (B, T, 3, H, D) buffer, which then *is* the gradient of the fused q/k/v
projection's output, with no concatenation. With ``P = softmax`` and ``A = dropout(P)``:
``dV = A^T dO``, ``dA = dO V^T``, ``dP = dA * mask / (1 - p)``, ``dS = P * (dP - delta)`` where
``delta_i = sum_d dO_id * O_id`` (which equals ``sum_j P_ij dP_ij``), ``dQ = scale dS K``,
``dK = scale dS^T Q``.

The Numba kernels run in parallel over the (batch, head) pairs. Each pair copies its keys (transposed)
and values into small contiguous tiles, then works row by row: scores for keys ``0..limit`` only (the
masked upper triangle is never computed, no (T, T) mask exists), the row's max and ``exp`` (vectorised),
and the weighted sum of values. Nothing of size (T, T) is ever allocated.
"""
import minigpt._threads  # noqa: F401  (before numba: selects the workqueue threading layer)
import numba
import numpy as np

from . import backend
from ..errors import MiniGPTError
from .fastmath import FASTMATH, LazyKernel, array_type, fast_exp, row_max

# ---- the dropout mask: a counter-based hash (splitmix64's finaliser) --------------------------------
_GOLD = np.uint64(0x9E3779B97F4A7C15)   # 2**64 / golden ratio: the stride between counters
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
_MASK64 = (1 << 64) - 1


def _mix64_py(z):
    z &= _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _dropout_params(dropout_p, seed):
    """(use_dropout, keep threshold, 1/(1-p), key): keep iff (hash >> 32) >= threshold."""
    p = float(dropout_p)
    if not 0.0 <= p <= 1.0:
        raise MiniGPTError(f"attention dropout_p must be in [0, 1], got {dropout_p}")
    if p == 0.0:
        return False, np.uint64(0), 1.0, np.uint64(0)
    thr = min(int(round(p * 2**32)), 2**32)
    inv_keep = 0.0 if p >= 1.0 else 1.0 / (1.0 - p)
    key = _mix64_py(int(seed) * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019)
    return True, np.uint64(thr), inv_keep, np.uint64(key)


def dropout_keep_mask(seed, dropout_p, B, H, Tq, Tk):
    """The (B, H, Tq, Tk) boolean keep-mask of attention dropout (True = kept), as the kernels draw it.

    Entry (b, h, i, j) is the hash of the counter ((b*H + h)*Tk + (Tk - Tq + i))*Tk + j under the key
    derived from ``seed``: query rows are numbered by absolute position, so a chunk of queries gets the
    same decisions as the same rows of a full-length call.
    """
    _, thr, _, key = _dropout_params(dropout_p, seed)
    off = Tk - Tq
    bh = np.arange(B * H, dtype=np.uint64).reshape(B, H, 1, 1)
    i = (off + np.arange(Tq, dtype=np.uint64)).reshape(1, 1, Tq, 1)
    j = np.arange(Tk, dtype=np.uint64).reshape(1, 1, 1, Tk)
    tk = np.uint64(Tk)
    z = key + ((bh * tk + i) * tk + j) * _GOLD          # uint64 arithmetic wraps modulo 2**64
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    z = z ^ (z >> _S31)
    return (z >> _S32) >= thr


# ---- NumPy reference ----------------------------------------------------------------------------

def _causal_mask(Tq, Tk):
    """(Tq, Tk) True where query i may attend key j (j <= Tk - Tq + i)."""
    return np.arange(Tk)[None, :] <= (Tk - Tq) + np.arange(Tq)[:, None]


def _check_shapes(q, k, v):
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or q.shape[0] != k.shape[0] \
            or q.shape[2:] != k.shape[2:]:
        raise MiniGPTError(f"attention expects q (B, Tq, H, D) and k, v (B, Tk, H, D); got q {q.shape}, "
                           f"k {k.shape}, v {v.shape}")
    if k.shape[1] < q.shape[1]:
        raise MiniGPTError(f"attention needs at least as many keys as queries: Tq={q.shape[1]}, "
                           f"Tk={k.shape[1]}")


def attention_forward_numpy(q, k, v, scale, dropout_p=0.0, seed=0):
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    _check_shapes(q, k, v)
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    qh, kh, vh = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # (B, H, T, D)
    s = (qh @ kh.transpose(0, 1, 3, 2)) * scale                                              # (B, H, Tq, Tk)
    s = np.where(_causal_mask(Tq, Tk), s, -np.inf)
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - m)
    total = e.sum(axis=-1, keepdims=True)
    lse = (m + np.log(total))[..., 0]
    p = e / total
    use, _, inv_keep, _ = _dropout_params(dropout_p, seed)
    if use:
        p = p * dropout_keep_mask(seed, dropout_p, B, H, Tq, Tk) * inv_keep
    out = (p @ vh).transpose(0, 2, 1, 3)
    return np.ascontiguousarray(out, dtype=q.dtype), lse.astype(q.dtype)


def attention_backward_numpy(dout, q, k, v, out, lse, scale, dropout_p=0.0, seed=0, dq=None, dk=None,
                             dv=None):
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    qh, kh, vh = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
    doh, oh = np.asarray(dout).transpose(0, 2, 1, 3), np.asarray(out).transpose(0, 2, 1, 3)
    s = (qh @ kh.transpose(0, 1, 3, 2)) * scale
    p = np.where(_causal_mask(Tq, Tk), np.exp(s - lse[..., None]), 0.0)     # softmax, rebuilt from lse
    use, _, inv_keep, _ = _dropout_params(dropout_p, seed)
    keep = dropout_keep_mask(seed, dropout_p, B, H, Tq, Tk) * inv_keep if use else 1.0
    a = p * keep                                                          # what multiplied v
    dv_h = a.transpose(0, 1, 3, 2) @ doh                                  # (B, H, Tk, D)
    dp = (doh @ vh.transpose(0, 1, 3, 2)) * keep                          # d loss / d p
    delta = (doh * oh).sum(axis=-1, keepdims=True)                        # = sum_j p_ij dp_ij
    ds = p * (dp - delta) * scale
    dq_h = ds @ kh
    dk_h = ds.transpose(0, 1, 3, 2) @ qh
    return (_store(dq, dq_h, q), _store(dk, dk_h, k), _store(dv, dv_h, v))


def _store(dst, value_bhtd, like):
    value = value_bhtd.transpose(0, 2, 1, 3)
    if dst is None:
        return np.ascontiguousarray(value, dtype=like.dtype)
    dst[...] = value
    return dst


# ---- Numba ------------------------------------------------------------------------------------------

@numba.njit(fastmath=FASTMATH)
def _keep_scale(rowbase, j, thr, inv_keep, zero):
    """inv_keep if the element of counter offset j (in its row) is kept, else 0."""
    z = rowbase + np.uint64(j) * _GOLD
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    z = z ^ (z >> _S31)
    return inv_keep if (z >> _S32) >= thr else zero


# Query rows are processed in blocks of four: scores are computed two rows by four keys at a time,
# outputs (and dQ) two rows at a time, and in the backward the updates of dK and dV from the four rows
# are summed before touching memory. A block needs the keys up to its last row's limit; earlier rows of
# the block get zero weight beyond their own limit.

@numba.njit(fastmath=FASTMATH)
def _scores2(x0, x1, rows, s0, s1, lb, zero):
    """s0[j] = x0 . rows[j] and s1[j] = x1 . rows[j] for j < lb.

    Two query rows against four keys at a time: eight dot products over d share their loads, and each
    keeps its running sum in a register (measured 1.5-2.5x faster than accumulating score rows in memory).
    """
    D = rows.shape[1]
    j4 = lb - lb % 4
    for j in range(0, j4, 4):
        k0, k1, k2, k3 = rows[j], rows[j + 1], rows[j + 2], rows[j + 3]
        a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero
        for d in range(D):
            x = x0[d]
            y = x1[d]
            c0, c1, c2, c3 = k0[d], k1[d], k2[d], k3[d]
            a0 += x * c0
            a1 += x * c1
            a2 += x * c2
            a3 += x * c3
            b0 += y * c0
            b1 += y * c1
            b2 += y * c2
            b3 += y * c3
        s0[j], s0[j + 1], s0[j + 2], s0[j + 3] = a0, a1, a2, a3
        s1[j], s1[j + 1], s1[j + 2], s1[j + 3] = b0, b1, b2, b3
    for j in range(j4, lb):
        kj = rows[j]
        a0 = b0 = zero
        for d in range(D):
            a0 += x0[d] * kj[d]
            b0 += x1[d] * kj[d]
        s0[j] = a0
        s1[j] = b0


@numba.njit(fastmath=FASTMATH)
def _matvec2(mt, x0, x1, lim, y0, y1, zero):
    """y0[d] = sum_{j < lim} mt[d, j] x0[j] and the same for x1 -> y1: two rows by four d at a time."""
    D = mt.shape[0]
    d4 = D - D % 4
    for d in range(0, d4, 4):
        m0, m1, m2, m3 = mt[d], mt[d + 1], mt[d + 2], mt[d + 3]
        a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = zero
        for j in range(lim):
            x = x0[j]
            y = x1[j]
            c0, c1, c2, c3 = m0[j], m1[j], m2[j], m3[j]
            a0 += c0 * x
            a1 += c1 * x
            a2 += c2 * x
            a3 += c3 * x
            b0 += c0 * y
            b1 += c1 * y
            b2 += c2 * y
            b3 += c3 * y
        y0[d], y0[d + 1], y0[d + 2], y0[d + 3] = a0, a1, a2, a3
        y1[d], y1[d + 1], y1[d + 2], y1[d + 3] = b0, b1, b2, b3
    for d in range(d4, D):
        md = mt[d]
        a0 = b0 = zero
        for j in range(lim):
            a0 += md[j] * x0[j]
            b0 += md[j] * x1[j]
        y0[d] = a0
        y1[d] = b0


@numba.njit(fastmath=FASTMATH)
def _matvec(mt, x, lim, y, zero):
    """y[d] = sum_{j < lim} mt[d, j] * x[j]: four rows of mt at a time, sharing each load of x."""
    D = mt.shape[0]
    d4 = D - D % 4
    for d in range(0, d4, 4):
        m0, m1, m2, m3 = mt[d], mt[d + 1], mt[d + 2], mt[d + 3]
        a0 = a1 = a2 = a3 = zero
        for j in range(lim):
            xj = x[j]
            a0 += m0[j] * xj
            a1 += m1[j] * xj
            a2 += m2[j] * xj
            a3 += m3[j] * xj
        y[d], y[d + 1], y[d + 2], y[d + 3] = a0, a1, a2, a3
    for d in range(d4, D):
        md = mt[d]
        acc = zero
        for j in range(lim):
            acc += md[j] * x[j]
        y[d] = acc


@numba.njit(fastmath=FASTMATH)
def _transpose_head(x, b, h, xt):
    """xt[d, j] = x[b, j, h, d], in tiles of 16 keys so reads and writes both stay in cache."""
    T = x.shape[1]
    D = x.shape[3]
    for j0 in range(0, T, 16):
        j1 = min(j0 + 16, T)
        for d in range(D):
            for j in range(j0, j1):
                xt[d, j] = x[b, j, h, d]


@numba.njit(fastmath=FASTMATH)
def _copy_head(x, b, h, xr):
    """xr[j, d] = x[b, j, h, d]: one head's rows, contiguous."""
    for j in range(x.shape[1]):
        for d in range(x.shape[3]):
            xr[j, d] = x[b, j, h, d]


def _fwd(q, k, v, scale, one, dropout, thr, inv_keep, key, out, lse):
    for bh in numba.prange(q.shape[0] * q.shape[2]):
        _fwd_pair(q, k, v, scale, one, dropout, thr, inv_keep, key, out, lse, bh)


# The parallel kernels only distribute (batch, head) pairs; each pair's work is a plain (serial) Numba
# function, readable on its own.
@numba.njit(fastmath=FASTMATH)
def _fwd_pair(q, k, v, scale, one, dropout, thr, inv_keep, key, out, lse, bh):
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    off = Tk - Tq
    zero = one - one
    b = bh // H
    h = bh - b * H
    kk = np.empty((Tk, D), dtype=q.dtype)       # keys by row: scores are dot products over d
    vt = np.empty((D, Tk), dtype=q.dtype)       # values transposed: outputs are dot products over j
    _copy_head(k, b, h, kk)
    _transpose_head(v, b, h, vt)
    s = np.empty((4, Tk), dtype=q.dtype)
    qb = np.zeros((4, D), dtype=q.dtype)
    o = np.empty(D, dtype=q.dtype)
    o2 = np.empty(D, dtype=q.dtype)
    inv_total = np.empty(4, dtype=q.dtype)
    bh_base = np.uint64(bh) * np.uint64(Tk)
    for i0 in range(0, Tq, 4):
        nr = min(4, Tq - i0)
        for r in range(nr):
            for d in range(D):
                qb[r, d] = q[b, i0 + r, h, d] * scale
        lb = off + i0 + nr                          # keys any row of the block sees
        _scores2(qb[0], qb[1], kk, s[0], s[1], lb, zero)
        if nr > 2:
            _scores2(qb[2], qb[3], kk, s[2], s[3], lb, zero)
        for r in range(nr):
            i = i0 + r
            lim = off + i + 1                     # keys 0 .. lim-1 are visible to query i
            sr = s[r]
            m = row_max(sr, lim)
            total = zero
            for j in range(lim):
                e = fast_exp(sr[j] - m)
                sr[j] = e
                total += e
            lse[b, h, i] = m + np.log(total)
            inv_total[r] = one / total
            if dropout:
                rowbase = key + (bh_base + np.uint64(i + off)) * np.uint64(Tk) * _GOLD
                for j in range(lim):
                    sr[j] *= _keep_scale(rowbase, j, thr, inv_keep, zero)
            if lim < Tk:
                sr[lim] = zero                      # the pair below runs to the next row's limit
        for r in range(0, nr, 2):                   # o = sum_j p_j v_j, two rows at a time
            i = i0 + r
            if r + 1 < nr:
                _matvec2(vt, s[r], s[r + 1], off + i + 2, o, o2, zero)
            else:
                _matvec(vt, s[r], off + i + 1, o, zero)
            inv = inv_total[r]
            for d in range(D):
                out[b, i, h, d] = o[d] * inv
            if r + 1 < nr:
                inv = inv_total[r + 1]
                for d in range(D):
                    out[b, i + 1, h, d] = o2[d] * inv


def _fwd_rows(q, k, v, scale, one, dropout, thr, inv_keep, key, out, lse):
    """The forward for a few queries (generation with a KV cache): reads k and v in place, row by row.

    With one new query per step, copying (and transposing) the whole cache would cost as much as the
    attention itself.
    """
    for bh in numba.prange(q.shape[0] * q.shape[2]):
        _fwd_rows_pair(q, k, v, scale, one, dropout, thr, inv_keep, key, out, lse, bh)


@numba.njit(fastmath=FASTMATH)
def _fwd_rows_pair(q, k, v, scale, one, dropout, thr, inv_keep, key, out, lse, bh):
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    off = Tk - Tq
    zero = one - one
    b = bh // H
    h = bh - b * H
    s = np.empty(Tk, dtype=q.dtype)
    o = np.empty(D, dtype=q.dtype)
    qr = np.empty(D, dtype=q.dtype)
    bh_base = np.uint64(bh) * np.uint64(Tk)
    for i in range(Tq):
        lim = off + i + 1
        for d in range(D):
            qr[d] = q[b, i, h, d] * scale
        j4 = lim - lim % 4
        for j in range(0, j4, 4):                   # four keys at a time, sums in registers
            k0, k1, k2, k3 = k[b, j, h], k[b, j + 1, h], k[b, j + 2, h], k[b, j + 3, h]
            a0 = a1 = a2 = a3 = zero
            for d in range(D):
                x = qr[d]
                a0 += x * k0[d]
                a1 += x * k1[d]
                a2 += x * k2[d]
                a3 += x * k3[d]
            s[j], s[j + 1], s[j + 2], s[j + 3] = a0, a1, a2, a3
        for j in range(j4, lim):
            kr = k[b, j, h]
            acc = zero
            for d in range(D):
                acc += qr[d] * kr[d]
            s[j] = acc
        m = row_max(s, lim)
        total = zero
        for j in range(lim):
            e = fast_exp(s[j] - m)
            s[j] = e
            total += e
        lse[b, h, i] = m + np.log(total)
        if dropout:
            rowbase = key + (bh_base + np.uint64(i + off)) * np.uint64(Tk) * _GOLD
            for j in range(lim):
                s[j] *= _keep_scale(rowbase, j, thr, inv_keep, zero)
        for d in range(D):
            o[d] = zero
        for j in range(0, j4, 4):                   # o += p_j v_j, four keys per pass over o
            p0, p1, p2, p3 = s[j], s[j + 1], s[j + 2], s[j + 3]
            v0, v1, v2, v3 = v[b, j, h], v[b, j + 1, h], v[b, j + 2, h], v[b, j + 3, h]
            for d in range(D):
                o[d] += p0 * v0[d] + p1 * v1[d] + p2 * v2[d] + p3 * v3[d]
        for j in range(j4, lim):
            pj = s[j]
            vr = v[b, j, h]
            for d in range(D):
                o[d] += pj * vr[d]
        inv = one / total
        for d in range(D):
            out[b, i, h, d] = o[d] * inv


def _bwd(dout, q, k, v, out, lse, scale, one, dropout, thr, inv_keep, key, dq, dk, dv):
    for bh in numba.prange(q.shape[0] * q.shape[2]):
        _bwd_pair(dout, q, k, v, out, lse, scale, one, dropout, thr, inv_keep, key, dq, dk, dv, bh)


@numba.njit(fastmath=FASTMATH)
def _bwd_pair(dout, q, k, v, out, lse, scale, one, dropout, thr, inv_keep, key, dq, dk, dv, bh):
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    off = Tk - Tq
    zero = one - one
    b = bh // H
    h = bh - b * H
    kk = np.empty((Tk, D), dtype=q.dtype)      # keys by row (scores)
    kt = np.empty((D, Tk), dtype=q.dtype)      # keys transposed (dQ = dS K)
    vv = np.empty((Tk, D), dtype=q.dtype)      # values by row (dA = dO V^T)
    _copy_head(k, b, h, kk)
    _transpose_head(k, b, h, kt)
    _copy_head(v, b, h, vv)
    dkl = np.zeros((Tk, D), dtype=q.dtype)
    dvl = np.zeros((Tk, D), dtype=q.dtype)
    s = np.empty((4, Tk), dtype=q.dtype)       # scores, then P, then dS (scale folded in)
    dp = np.empty((4, Tk), dtype=q.dtype)      # dA = dO V^T
    a = np.empty((4, Tk), dtype=q.dtype)       # P after dropout: what multiplied V
    qs = np.zeros((4, D), dtype=q.dtype)       # q * scale
    qb = np.zeros((4, D), dtype=q.dtype)       # q
    db = np.zeros((4, D), dtype=q.dtype)       # dO
    delta = np.zeros(4, dtype=q.dtype)
    dqr = np.empty(D, dtype=q.dtype)
    dqr2 = np.empty(D, dtype=q.dtype)
    bh_base = np.uint64(bh) * np.uint64(Tk)
    for i0 in range(0, Tq, 4):
        nr = min(4, Tq - i0)
        lb = off + i0 + nr                      # keys any row of the block sees
        for r in range(4):
            acc = zero
            for d in range(D):
                if r < nr:
                    qv = q[b, i0 + r, h, d]
                    ov = dout[b, i0 + r, h, d]
                    acc += ov * out[b, i0 + r, h, d]
                else:
                    qv = zero
                    ov = zero
                qb[r, d] = qv
                qs[r, d] = qv * scale
                db[r, d] = ov
            delta[r] = acc                      # sum_d dO * O = sum_j P dP
        _scores2(qs[0], qs[1], kk, s[0], s[1], lb, zero)
        _scores2(db[0], db[1], vv, dp[0], dp[1], lb, zero)
        if nr > 2:
            _scores2(qs[2], qs[3], kk, s[2], s[3], lb, zero)
            _scores2(db[2], db[3], vv, dp[2], dp[3], lb, zero)
        for r in range(4):
            i = i0 + r
            lim = off + i + 1 if r < nr else 0
            sr, dpr, ar = s[r], dp[r], a[r]
            if r < nr:
                l_ = lse[b, h, i]
                dl = delta[r]
                if dropout:
                    rowbase = key + (bh_base + np.uint64(i + off)) * np.uint64(Tk) * _GOLD
                    for j in range(lim):
                        pj = fast_exp(sr[j] - l_)
                        mk = _keep_scale(rowbase, j, thr, inv_keep, zero)
                        ar[j] = pj * mk
                        sr[j] = pj * (dpr[j] * mk - dl) * scale
                else:
                    for j in range(lim):
                        pj = fast_exp(sr[j] - l_)
                        ar[j] = pj
                        sr[j] = pj * (dpr[j] - dl) * scale
            for j in range(lim, lb):                # beyond this row's limit (or a padding row)
                ar[j] = zero
                sr[j] = zero
        for r in range(0, nr, 2):                   # dQ_i = sum_j dS_ij k_j, two rows at a time
            i = i0 + r
            if r + 1 < nr:
                _matvec2(kt, s[r], s[r + 1], off + i + 2, dqr, dqr2, zero)
                for d in range(D):
                    dq[b, i, h, d] = dqr[d]
                    dq[b, i + 1, h, d] = dqr2[d]
            else:
                _matvec(kt, s[r], off + i + 1, dqr, zero)
                for d in range(D):
                    dq[b, i, h, d] = dqr[d]
        a0, a1, a2, a3 = a[0], a[1], a[2], a[3]
        g0, g1, g2, g3 = s[0], s[1], s[2], s[3]
        for j in range(lb):                         # dV_j += sum_r A_rj dO_r ; dK_j += sum_r dS_rj q_r
            x0, x1, x2, x3 = a0[j], a1[j], a2[j], a3[j]
            y0, y1, y2, y3 = g0[j], g1[j], g2[j], g3[j]
            dvj = dvl[j]
            dkj = dkl[j]
            for d in range(D):
                dvj[d] += x0 * db[0, d] + x1 * db[1, d] + x2 * db[2, d] + x3 * db[3, d]
                dkj[d] += y0 * qb[0, d] + y1 * qb[1, d] + y2 * qb[2, d] + y3 * qb[3, d]
    for j in range(Tk):
        for d in range(D):
            dk[b, j, h, d] = dkl[j, d]
            dv[b, j, h, d] = dvl[j, d]


_u64 = numba.types.uint64
_bool = numba.types.boolean


def _fwd_types(f, layout="A"):
    ro = dict(readonly=True, layout=layout)
    return (array_type(f, 4, **ro), array_type(f, 4, **ro), array_type(f, 4, **ro), f, f, _bool, _u64, f,
            _u64, array_type(f, 4), array_type(f, 3))


def _bwd_types(f):
    ro = dict(readonly=True, layout="A")
    wa = dict(layout="A")
    return (array_type(f, 4, **ro), array_type(f, 4, **ro), array_type(f, 4, **ro), array_type(f, 4, **ro),
            array_type(f, 4, **ro), array_type(f, 3, **ro), f, f, _bool, _u64, f, _u64,
            array_type(f, 4, **wa), array_type(f, 4, **wa), array_type(f, 4, **wa))


_fwd_k = LazyKernel(_fwd, _fwd_types)
# few queries: one version for C-contiguous q/k/v (a batch-1 KV cache; inner loops vectorise), one for views
_fwd_rows_c = LazyKernel(_fwd_rows, lambda f: _fwd_types(f, "C"))
_fwd_rows_a = LazyKernel(_fwd_rows, _fwd_types)
_FEW_QUERIES = 4
_bwd_k = LazyKernel(_bwd, _bwd_types)


def _as(a, dt):
    a = np.asarray(a)
    return a if a.dtype == dt else a.astype(dt)


def attention_forward_numba(q, k, v, scale, dropout_p=0.0, seed=0):
    q = np.asarray(q)
    dt = q.dtype
    k, v = _as(k, dt), _as(v, dt)
    _check_shapes(q, k, v)
    B, Tq, H, D = q.shape
    use, thr, inv_keep, key = _dropout_params(dropout_p, seed)
    out = np.empty((B, Tq, H, D), dtype=dt)
    lse = np.empty((B, H, Tq), dtype=dt)
    if out.size or lse.size:
        if Tq < _FEW_QUERIES:
            q = np.ascontiguousarray(q)                      # (B, Tq, H, D) with Tq < 4: tiny
            contiguous = k.flags.c_contiguous and v.flags.c_contiguous
            kernel = (_fwd_rows_c if contiguous else _fwd_rows_a)[dt]
        else:
            kernel = _fwd_k[dt]
        kernel(q, k, v, dt.type(scale), dt.type(1.0), use, thr, dt.type(inv_keep), key, out, lse)
    return out, lse


def _grad_buffer(g, like, name):
    if g is None:
        return np.empty(like.shape, dtype=like.dtype)
    if g.shape != like.shape or g.dtype != like.dtype or not g.flags.writeable:
        raise MiniGPTError(f"attention_backward: {name} must be a writeable {like.dtype} array of shape "
                           f"{like.shape}, got {g.dtype} {g.shape}")
    return g


def attention_backward_numba(dout, q, k, v, out, lse, scale, dropout_p=0.0, seed=0, dq=None, dk=None,
                             dv=None):
    q = np.asarray(q)
    dt = q.dtype
    k, v = _as(k, dt), _as(v, dt)
    use, thr, inv_keep, key = _dropout_params(dropout_p, seed)
    dq = _grad_buffer(dq, q, "dq")
    dk = _grad_buffer(dk, k, "dk")
    dv = _grad_buffer(dv, v, "dv")
    if q.size or k.size:
        _bwd_k[dt](_as(dout, dt), q, k, v, _as(out, dt), _as(lse, dt), dt.type(scale), dt.type(1.0), use, thr,
                   dt.type(inv_keep), key, dq, dk, dv)
    return dq, dk, dv


# ---- public, dispatching on the backend -------------------------------------------------------------

def attention_forward(q, k, v, scale, dropout_p=0.0, seed=0):
    """Causal attention of ``q`` (B, Tq, H, D) over ``k``, ``v`` (B, Tk, H, D); returns ``(out, lse)``."""
    if backend() == "numpy":
        return attention_forward_numpy(q, k, v, scale, dropout_p, seed)
    return attention_forward_numba(q, k, v, scale, dropout_p, seed)


def attention_backward(dout, q, k, v, out, lse, scale, dropout_p=0.0, seed=0, dq=None, dk=None, dv=None):
    """Gradients ``(dq, dk, dv)`` of :func:`attention_forward`; written into ``dq``/``dk``/``dv`` if given."""
    if backend() == "numpy":
        return attention_backward_numpy(dout, q, k, v, out, lse, scale, dropout_p, seed, dq, dk, dv)
    return attention_backward_numba(dout, q, k, v, out, lse, scale, dropout_p, seed, dq, dk, dv)
