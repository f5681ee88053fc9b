"""Causal scaled-dot-product attention, forward and backward, with optional attention dropout.

Layout (B, T, H, D): batch, time, head, head size -- the per-head view of a fused q/k/v projection,
``qkv.reshape(B, T, 3, H, D)[:, :, 0]`` (a strided view; it is never copied as a whole).

``attention_forward(q, k, v, scale, dropout_p=0.0, seed=0, slopes=None) -> (out, lse)``

- ``q`` is (B, Tq, H, D), ``k`` and ``v`` are (B, Tk, H, D) with ``Tk >= Tq``. Query ``i`` sits at the
  absolute position ``Tk - Tq + i`` and attends keys ``0 .. Tk - Tq + i``. Training uses ``Tq == Tk``;
  generation with a KV cache passes the new queries (``Tq = 1`` or a chunk) against the whole cache.
- ``out`` (B, Tq, H, D) is C-contiguous, so ``out.reshape(B, Tq, H * D)`` is free; ``lse`` (B, H, Tq) is
  each row's log-sum-exp of the scaled scores, all the backward needs to rebuild the probabilities.
- ``dropout_p > 0`` drops attention probabilities (inverted dropout: kept ones are scaled by
  ``1 / (1 - p)``, like PyTorch's ``dropout(softmax(scores)) @ v``). Keep or drop is a hash of
  ``(seed, b, h, i, j)`` -- a counter-based random generator -- so the backward regenerates the same mask
  without storing a (T, T) array, and the NumPy reference draws the identical mask.
- ``slopes`` (H,) adds ALiBi's linear bias: head ``h`` adds ``-slopes[h] * (i - j)`` to the scaled score
  of the query at absolute position ``i`` and key ``j <= i`` (the distance is absolute, so cached
  generation sees the same biases as a full forward). ``None`` or all zeros: no bias, the same code path
  and bits as without. The bias is a constant: backward only needs it where it rebuilds the
  probabilities from ``lse``.

``attention_backward(dout, q, k, v, out, lse, scale, dropout_p=0.0, seed=0, dq=None, dk=None, dv=None,
slopes=None)`` returns ``(dq, dk, dv)``. They may be given as preallocated (possibly strided) arrays of
the shapes of q, k, v -- e.g. views into one (B, T, 3, H, D) buffer, which then *is* the gradient of the fused q/k/v
projection's output, with no concatenation. With ``P = softmax`` and ``A = dropout(P)``:
``dV = A^T dO``, ``dA = dO V^T``, ``dP = dA * mask / (1 - p)``, ``dS = P * (dP - delta)`` where
``delta_i = sum_d dO_id * O_id`` (which equals ``sum_j P_ij dP_ij``), ``dQ = scale dS K``,
``dK = scale dS^T Q``.

The Numba kernels run in parallel over the (batch, head) pairs. Each pair copies its keys (transposed)
and values into small contiguous tiles, then works through its queries in blocks of 16 rows: the
block's scores (16 x keys, in the L1 cache) for keys up to each group of four rows' causal limit only
(of the masked upper triangle only a sliver along the diagonal is computed; no (T, T) mask exists), each
row's max and ``exp`` (vectorised), and the weighted sum of values. All six matrix products of forward
and backward go through one register-tiled helper (:func:`_mm`: four rows by four terms per vector of
the long operand) and reach 60-80 GFLOP/s on one core. Nothing of size (T, T) is ever allocated.
Generation (fewer than four queries) uses a row-by-row kernel that reads the cache in place.
"""
import math

import numba
import numpy as np

from ..errors import MiniGPTError
from .fastmath import FASTMATH, LazyKernel, array_type, fast_exp, row_max
from .registry import kernel

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


def _alibi_bias(slopes, Tq, Tk):
    """(H, Tq, Tk): ALiBi's ``-slopes[h] * (Tk - Tq + i - j)``, the distance from query i's absolute
    position back to key j (negative distances, the masked future, are left to the causal mask)."""
    dist = (Tk - Tq) + np.arange(Tq)[:, None] - np.arange(Tk)[None, :]       # (Tq, Tk)
    return -np.asarray(slopes)[:, None, None] * dist


def _alibi_params(slopes, H, dt):
    """(slopes as a (H,) array of ``dt``, whether any is nonzero) for the kernels; ``None`` -> zeros."""
    if slopes is None:
        return np.zeros(H, dtype=dt), False
    s = np.asarray(slopes)
    total = float(np.abs(s).sum(dtype=np.float64)) if s.shape == (H,) and s.dtype.kind in "fiu" else math.nan
    if not math.isfinite(total):    # one reduction checks the shape, the type and every value
        raise MiniGPTError(f"attention: ALiBi slopes must be {H} finite numbers (one per head), got "
                           f"{s.dtype} {s.shape}")
    return np.ascontiguousarray(s, dtype=dt), total != 0.0


def _check_shapes(q, k, v):
    if q.ndim != 4 or k.shape != v.shape or k.ndim != 4 or q.shape[0] != k.shape[0] \
            or q.shape[2:] != k.shape[2:]:
        raise MiniGPTError(f"attention expects q (B, Tq, H, D) and k, v (B, Tk, H, D); got q {q.shape}, "
                           f"k {k.shape}, v {v.shape}")
    if k.shape[1] < q.shape[1]:
        raise MiniGPTError(f"attention needs at least as many keys as queries: Tq={q.shape[1]}, "
                           f"Tk={k.shape[1]}")


def attention_forward_numpy(q, k, v, scale, dropout_p=0.0, seed=0, slopes=None):
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    _check_shapes(q, k, v)
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    qh, kh, vh = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # (B, H, T, D)
    # S = scale Q K^T: (B, H, Tq, D) @ (B, H, D, Tk) -> (B, H, Tq, Tk)
    s = (qh @ kh.transpose(0, 1, 3, 2)) * scale
    if _alibi_params(slopes, H, q.dtype)[1]:
        s = s + _alibi_bias(slopes, Tq, Tk)                  # ALiBi: - slope_h * (i - j), (H, Tq, Tk) broadcast
    s = np.where(_causal_mask(Tq, Tk), s, -np.inf)           # masked scores -inf: (Tq, Tk) mask over (B, H, Tq, Tk)
    m = s.max(axis=-1, keepdims=True)                        # row max: (B, H, Tq, 1)
    e = np.exp(s - m)                                        # (B, H, Tq, Tk); masked entries exp(-inf) = 0
    total = e.sum(axis=-1, keepdims=True)                    # (B, H, Tq, 1)
    lse = (m + np.log(total))[..., 0]                        # log-sum-exp of each row: (B, H, Tq)
    p = e / total                                            # P = softmax(S): (B, H, Tq, Tk)
    use, _, inv_keep, _ = _dropout_params(dropout_p, seed)
    if use:
        p = p * dropout_keep_mask(seed, dropout_p, B, H, Tq, Tk) * inv_keep   # A = P * M / (1 - p): (B, H, Tq, Tk)
    out = (p @ vh).transpose(0, 2, 1, 3)                     # O = A V: (B, H, Tq, Tk) @ (B, H, Tk, D) -> (B, Tq, H, D)
    return np.ascontiguousarray(out, dtype=q.dtype), lse.astype(q.dtype)


def attention_backward_numpy(dout, q, k, v, out, lse, scale, dropout_p=0.0, seed=0, dq=None, dk=None,
                             dv=None, slopes=None):
    # The derivation, line by line: docs/course/attention.md. Per (b, h): dV = A^T dO, dA = dO V^T,
    # dP = dA * M / (1 - p), dS = P * (dP - delta) with delta = rowsum(dO * O), dQ = scale dS K, dK = scale dS^T Q.
    # (ALiBi's bias is a constant: it enters only through the scores P is rebuilt from.)
    q, k, v = np.asarray(q), np.asarray(k), np.asarray(v)
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    qh, kh, vh = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # (B, H, Tq|Tk, D)
    doh, oh = np.asarray(dout).transpose(0, 2, 1, 3), np.asarray(out).transpose(0, 2, 1, 3)  # (B, H, Tq, D) each
    s = (qh @ kh.transpose(0, 1, 3, 2)) * scale                           # S again: (B, H, Tq, Tk)
    if _alibi_params(slopes, H, q.dtype)[1]:
        s = s + _alibi_bias(slopes, Tq, Tk)                               # the forward's scores, bias included
    with np.errstate(over="ignore"):  # masked entries may overflow; np.where drops them
        p = np.where(_causal_mask(Tq, Tk), np.exp(s - lse[..., None]), 0.0)  # P = exp(S - lse), rebuilt: (B, H, Tq, Tk)
    use, _, inv_keep, _ = _dropout_params(dropout_p, seed)
    # M / (1 - p): (B, H, Tq, Tk), or 1 without dropout
    keep = dropout_keep_mask(seed, dropout_p, B, H, Tq, Tk) * inv_keep if use else 1.0
    a = p * keep                                                          # A, what multiplied v: (B, H, Tq, Tk)
    dv_h = a.transpose(0, 1, 3, 2) @ doh                                  # dV = A^T dO: (.., Tk, Tq) @ (.., Tq, D)
    dp = (doh @ vh.transpose(0, 1, 3, 2)) * keep                          # dP = (dO V^T) * M / (1 - p): (B, H, Tq, Tk)
    delta = (doh * oh).sum(axis=-1, keepdims=True)  # rowsum(dO * O) = rowsum(P * dP): (B, H, Tq, 1)
    ds = p * (dp - delta) * scale  # scale * dS (softmax's backward): (B, H, Tq, Tk)
    dq_h = ds @ kh                                                        # dQ = scale dS K: (.., Tq, Tk) @ (.., Tk, D)
    dk_h = ds.transpose(0, 1, 3, 2) @ qh  # dK = scale dS^T Q: (.., Tk, Tq) @ (.., Tq, D)
    return (_store(dq, dq_h, q), _store(dk, dk_h, k), _store(dv, dv_h, v))  # each back to (B, T, H, D)


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


# Every product in the training kernels -- S = Q K^T, O = P V, dA = dO V^T, dQ = dS K, dV = A^T dO,
# dK = dS^T Q -- has the form C[i, :n] = sum_k X[i, k] B[k, :n] with B and C row-contiguous; one
# register-tiled helper computes them all. Query rows go in blocks of _ROWS; within a block, each group of
# four rows stops at its own causal limit, so of the masked triangle only a sliver along the diagonal is
# computed.

_ROWS = 16      # query rows per block: the score buffer (16 x Tk) stays in the L1 cache


@numba.njit(fastmath=FASTMATH)
def _mm(x, b, c, m, kd, n, k0, n0, accumulate, zero):
    """c[i, :n_g] (+)= sum_{k < k_g} x[i, k] * b[k, :n_g] for rows i < m, in groups of four rows.

    For the group starting at row ``i`` (of ``g`` rows) ``k_g = min(kd, k0 + i + g)`` and
    ``n_g = min(n, n0 + i + g)``: pass ``k0`` / ``n0`` as the causal offset to stop each group at its limit,
    or a large number to use the whole ``kd`` / ``n``. ``n_g`` is then rounded up to a multiple of 8 as
    far as the widths of ``b`` and ``c`` allow (the kernels allocate them so, with zeros in ``b``'s extra
    columns): the columns past ``n_g`` get values that are never used, or zero.

    The innermost loop runs along the rows of ``b`` and ``c`` (contiguous, so it becomes SIMD code) and
    does sixteen multiply-adds -- four rows of ``c`` by four rows of ``b`` -- per vector of ``b`` loaded;
    the sixteen ``x`` values stay in registers.
    """
    nmax = min(b.shape[1], c.shape[1])
    for i in range(0, m, 4):
        g = min(4, m - i)
        ke = min(kd, k0 + i + g)
        ne = min(n, n0 + i + g)
        ne = min((ne + 7) & -8, nmax)   # whole vectors when the buffers are wide enough: no scalar tail
        k4 = ke - ke % 4
        if g == 4:
            c0, c1, c2, c3 = c[i], c[i + 1], c[i + 2], c[i + 3]
            if not accumulate:
                for j in range(ne):
                    c0[j] = zero
                    c1[j] = zero
                    c2[j] = zero
                    c3[j] = zero
            for k in range(0, k4, 4):
                b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
                x00, x01, x02, x03 = x[i, k], x[i, k + 1], x[i, k + 2], x[i, k + 3]
                x10, x11, x12, x13 = x[i + 1, k], x[i + 1, k + 1], x[i + 1, k + 2], x[i + 1, k + 3]
                x20, x21, x22, x23 = x[i + 2, k], x[i + 2, k + 1], x[i + 2, k + 2], x[i + 2, k + 3]
                x30, x31, x32, x33 = x[i + 3, k], x[i + 3, k + 1], x[i + 3, k + 2], x[i + 3, k + 3]
                for j in range(ne):
                    e0, e1, e2, e3 = b0[j], b1[j], b2[j], b3[j]
                    c0[j] += x00 * e0 + x01 * e1 + x02 * e2 + x03 * e3
                    c1[j] += x10 * e0 + x11 * e1 + x12 * e2 + x13 * e3
                    c2[j] += x20 * e0 + x21 * e1 + x22 * e2 + x23 * e3
                    c3[j] += x30 * e0 + x31 * e1 + x32 * e2 + x33 * e3
            for k in range(k4, ke):
                bk = b[k]
                x0, x1, x2, x3 = x[i, k], x[i + 1, k], x[i + 2, k], x[i + 3, k]
                for j in range(ne):
                    e = bk[j]
                    c0[j] += x0 * e
                    c1[j] += x1 * e
                    c2[j] += x2 * e
                    c3[j] += x3 * e
        else:
            for r in range(i, i + g):
                cr = c[r]
                if not accumulate:
                    for j in range(ne):
                        cr[j] = zero
                for k in range(0, k4, 4):
                    b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
                    x0, x1, x2, x3 = x[r, k], x[r, k + 1], x[r, k + 2], x[r, k + 3]
                    for j in range(ne):
                        cr[j] += x0 * b0[j] + x1 * b1[j] + x2 * b2[j] + x3 * b3[j]
                for k in range(k4, ke):
                    bk = b[k]
                    x0 = x[r, k]
                    for j in range(ne):
                        cr[j] += x0 * bk[j]


# The training kernels read q, k, v, dO, O and write dQ, dK, dV through flat views: ``xf`` is a
# contiguous 1-D view that starts at the array's first element and ``xs`` its (B, T, H) strides in
# elements, so element (b, j, h, d) is ``xf[b*xs[0] + j*xs[1] + h*xs[2] + d]`` -- the head rows of the
# strided (B, T, 3, H, D) buffers are contiguous, and this way the compiler knows it (vector loads and
# stores instead of one strided access per element).

@numba.njit(inline="always")
def _pad8(n):
    return (n + 7) & -8


@numba.njit(inline="always")
def _zero_cols(x, c0, zero):
    """x[:, c0:] = 0 (the padding columns of a work buffer)."""
    for r in range(x.shape[0]):
        for j in range(c0, x.shape[1]):
            x[r, j] = zero


@numba.njit(inline="always")
def _add_alibi(sr, lim, slope):
    """ALiBi: sr[j] -= slope * (lim - 1 - j) for j < lim, the slope times the distance from the query (at
    absolute position lim - 1) back to key j."""
    last = lim - 1
    for j in range(lim):
        sr[j] -= slope * (last - j)


_U = np.uint64      # flat indices are unsigned: no negative-index wraparound test per element


@numba.njit(fastmath=FASTMATH)
def _gather_t(xf, base, rs, T, D, xt):
    """xt[d, j] = xf[base + j*rs + d] for j < T, d < D: one head, transposed (16 keys at a time, so the
    lines of ``xt`` being written stay in the L1 cache)."""
    for j0 in range(0, T, 16):
        j1 = min(j0 + 16, T)
        for d in range(D):
            o = _U(base + d)
            for j in range(j0, j1):
                xt[d, j] = xf[o + _U(j * rs)]


@numba.njit(fastmath=FASTMATH)
def _gather(xf, base, rs, T, D, xr):
    """xr[j, d] = xf[base + j*rs + d]: one head's rows, contiguous."""
    for j in range(T):
        o = _U(base + j * rs)
        dst = xr[j]
        for d in range(D):
            dst[d] = xf[o + _U(d)]


def _fwd(qf, qs_, kf, ks_, vf, vs_, dims, scale, one, dropout, thr, inv_keep, key, out, lse, slopes, alibi):
    for bh in numba.prange(dims[0] * dims[3]):
        _fwd_pair(qf, qs_, kf, ks_, vf, vs_, dims, scale, one, dropout, thr, inv_keep, key, out, lse, bh, slopes,
                  alibi)


# The parallel kernels only distribute (batch, head) pairs; each pair's work is a plain (serial) Numba
# function, readable on its own.
@numba.njit(fastmath=FASTMATH)
def _fwd_pair(qf, qs_, kf, ks_, vf, vs_, dims, scale, one, dropout, thr, inv_keep, key, out, lse, bh, slopes,
              alibi):
    B, Tq, Tk, H, D = dims
    off = Tk - Tq
    zero = one - one
    b = bh // H
    h = bh - b * H
    R = _ROWS
    dt = out.dtype
    W, Dp = _pad8(Tk), _pad8(D)                 # buffer widths: whole vectors of 8
    kt = np.empty((D, W), dtype=dt)             # keys transposed: S = Q K^T runs along the keys
    vv = np.empty((Tk, Dp), dtype=dt)           # values by row: O = P V runs along d
    _zero_cols(kt, Tk, zero)
    _zero_cols(vv, D, zero)
    _gather_t(kf, b * ks_[0] + h * ks_[2], ks_[1], Tk, D, kt)
    _gather(vf, b * vs_[0] + h * vs_[2], vs_[1], Tk, D, vv)
    qbase = b * qs_[0] + h * qs_[2]
    s = np.empty((R, W), dtype=dt)              # scores, then probabilities (after dropout)
    qs = np.empty((R, D), dtype=dt)
    o = np.empty((R, Dp), dtype=dt)
    inv_total = np.empty(R, dtype=dt)
    bh_base = np.uint64(bh) * np.uint64(Tk)
    for i0 in range(0, Tq, R):
        nr = min(R, Tq - i0)
        lb = off + i0 + nr                          # keys any row of the block sees
        for r in range(nr):
            o_ = qbase + (i0 + r) * qs_[1]
            qsr = qs[r]
            o_ = _U(o_)
            for d in range(D):
                qsr[d] = qf[o_ + _U(d)] * scale
        _mm(qs, kt, s, nr, D, lb, D, off + i0, False, zero)
        for r in range(nr):
            i = i0 + r
            lim = off + i + 1                       # keys 0 .. lim-1 are visible to query i
            sr = s[r]
            if alibi:
                _add_alibi(sr, lim, slopes[h])
            m = row_max(sr, lim)
            # the exp loop runs to a multiple of 8 (no scalar tail): past lim it sees m - 80, whose exp
            # (1.8e-35, a normal number) vanishes in the total (>= 1) and is then set to zero
            lp = _pad8(lim)
            for j in range(lim, lp):
                sr[j] = m - 80
            total = zero
            for j in range(lp):
                e = fast_exp(sr[j] - m)
                sr[j] = e
                total += e
            lse[b, h, i] = m + np.log(total)
            inv_total[r] = one / total
            if dropout:
                rowbase = key + (bh_base + np.uint64(i + off)) * np.uint64(Tk) * _GOLD
                for j in range(lim):
                    sr[j] *= _keep_scale(rowbase, j, thr, inv_keep, zero)
            for j in range(lim, max(lp, min(lb, lim + 3))):  # the row's group runs to its last row's limit
                sr[j] = zero
        _mm(s, vv, o, nr, lb, D, off + i0, D, False, zero)
        for r in range(nr):
            inv = inv_total[r]
            for d in range(D):
                out[b, i0 + r, h, d] = o[r, d] * inv


def _fwd_rows(q, k, v, scale, one, dropout, thr, inv_keep, key, out, lse, slopes, alibi):
    """The forward for a few queries (generation with a KV cache): reads k and v in place, row by row.

    With one new query per step, copying (and transposing) the whole cache would cost as much as the
    attention itself.
    """
    for bh in numba.prange(q.shape[0] * q.shape[2]):
        _fwd_rows_pair(q, k, v, scale, one, dropout, thr, inv_keep, key, out, lse, bh, slopes, alibi)


@numba.njit(fastmath=FASTMATH)
def _fwd_rows_pair(q, k, v, scale, one, dropout, thr, inv_keep, key, out, lse, bh, slopes, alibi):
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
        if alibi:
            _add_alibi(s, lim, slopes[h])
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


def _bwd(gf, gs, qf, qs_, kf, ks_, vf, vs_, of, os_, lse, dims, scale, one, dropout, thr, inv_keep, key,
         dqf, dqs, dkf, dks, dvf, dvs, slopes, alibi):
    for bh in numba.prange(dims[0] * dims[3]):
        _bwd_pair(gf, gs, qf, qs_, kf, ks_, vf, vs_, of, os_, lse, dims, scale, one, dropout, thr, inv_keep, key,
                  dqf, dqs, dkf, dks, dvf, dvs, bh, slopes, alibi)


@numba.njit(fastmath=FASTMATH)
def _bwd_pair(gf, gs, qf, qs_, kf, ks_, vf, vs_, of, os_, lse, dims, scale, one, dropout, thr, inv_keep, key,
              dqf, dqs, dkf, dks, dvf, dvs, bh, slopes, alibi):
    B, Tq, Tk, H, D = dims
    off = Tk - Tq
    zero = one - one
    b = bh // H
    h = bh - b * H
    R = _ROWS
    dt = lse.dtype
    W, Dp = _pad8(Tk), _pad8(D)           # buffer widths: whole vectors of 8
    kt = np.empty((D, W), dtype=dt)       # keys transposed (S = Q K^T)
    vt = np.empty((D, W), dtype=dt)       # values transposed (dA = dO V^T)
    kk = np.empty((Tk, Dp), dtype=dt)     # keys by row (dQ = dS K)
    _zero_cols(kt, Tk, zero)
    _zero_cols(vt, Tk, zero)
    _zero_cols(kk, D, zero)
    kbase = b * ks_[0] + h * ks_[2]
    _gather_t(kf, kbase, ks_[1], Tk, D, kt)
    _gather_t(vf, b * vs_[0] + h * vs_[2], vs_[1], Tk, D, vt)
    _gather(kf, kbase, ks_[1], Tk, D, kk)
    qbase = b * qs_[0] + h * qs_[2]
    gbase = b * gs[0] + h * gs[2]
    obase = b * os_[0] + h * os_[2]
    dqbase = b * dqs[0] + h * dqs[2]
    dkt = np.zeros((D, W), dtype=dt)      # dK and dV accumulate transposed: the products
    dvt = np.zeros((D, W), dtype=dt)      # then run along the keys (long rows) instead of d
    s = np.empty((R, W), dtype=dt)        # scores (unscaled), then P, then dS (scale folded in)
    dp = np.empty((R, W), dtype=dt)       # dA = dO V^T
    a = np.empty((R, W), dtype=dt)        # P after dropout: what multiplied V
    qb = np.empty((R, D), dtype=dt)       # q
    db = np.empty((R, D), dtype=dt)       # dO
    dqb = np.empty((R, Dp), dtype=dt)
    delta = np.empty(R, dtype=dt)
    bh_base = np.uint64(bh) * np.uint64(Tk)
    big = Tk + D + R
    for i0 in range(0, Tq, R):
        nr = min(R, Tq - i0)
        lb = off + i0 + nr                      # keys any row of the block sees
        for r in range(nr):
            acc = zero
            iq = qbase + (i0 + r) * qs_[1]
            ig = gbase + (i0 + r) * gs[1]
            io = obase + (i0 + r) * os_[1]
            iq, ig, io = _U(iq), _U(ig), _U(io)
            qbr, dbr = qb[r], db[r]
            for d in range(D):
                ud = _U(d)
                ov = gf[ig + ud]
                acc += ov * of[io + ud]
                qbr[d] = qf[iq + ud]
                dbr[d] = ov
            delta[r] = acc                      # sum_d dO * O = sum_j P dP
        _mm(qb, kt, s, nr, D, lb, D, off + i0, False, zero)
        _mm(db, vt, dp, nr, D, lb, D, off + i0, False, zero)
        for r in range(nr):
            i = i0 + r
            lim = off + i + 1
            sr, dpr, ar = s[r], dp[r], a[r]
            l_ = lse[b, h, i]
            dl = delta[r]
            sc = scale                              # P = exp(sc * sr - lse)
            if alibi:                               # ALiBi: the forward's biased scores, then sc = 1
                sl = slopes[h]
                for j in range(lim):
                    sr[j] = sr[j] * scale - sl * (lim - 1 - j)
                sc = one
            if dropout:
                rowbase = key + (bh_base + np.uint64(i + off)) * np.uint64(Tk) * _GOLD
                for j in range(lim):
                    pj = fast_exp(sr[j] * sc - l_)
                    mk = _keep_scale(rowbase, j, thr, inv_keep, zero)
                    ar[j] = pj * mk
                    sr[j] = pj * (dpr[j] * mk - dl) * scale
            else:
                lp = _pad8(lim)                     # to a multiple of 8, as in the forward (zeroed below)
                pad = (l_ - 80) / sc if sc != zero else zero           # exp(pad * sc - l_) = 1.8e-35
                for j in range(lim, lp):
                    sr[j] = pad
                    dpr[j] = zero
                for j in range(lp):
                    pj = fast_exp(sr[j] * sc - l_)
                    ar[j] = pj
                    sr[j] = pj * (dpr[j] - dl) * scale
            for j in range(lim, min(_pad8(lb), W)):  # beyond this row's limit (dK, dV read to a multiple of 8)
                ar[j] = zero
                sr[j] = zero
        _mm(s, kk, dqb, nr, lb, D, off + i0, D, False, zero)       # dQ = dS K
        for r in range(nr):
            io = dqbase + (i0 + r) * dqs[1]
            dqr = dqb[r]
            io = _U(io)
            for d in range(D):
                dqf[io + _U(d)] = dqr[d]
        _mm(db.T, a, dvt, D, nr, lb, big, big, True, zero)         # dV^T += dO^T A
        _mm(qb.T, s, dkt, D, nr, lb, big, big, True, zero)         # dK^T += Q^T dS
    kbase = b * dks[0] + h * dks[2]                                # transpose back
    vbase = b * dvs[0] + h * dvs[2]
    for j0 in range(0, Tk, 16):
        j1 = min(j0 + 16, Tk)
        for d in range(D):
            dkd, dvd = dkt[d], dvt[d]
            ik, iv = _U(kbase + d), _U(vbase + d)
            for j in range(j0, j1):
                dkf[ik + _U(j * dks[1])] = dkd[j]
                dvf[iv + _U(j * dvs[1])] = dvd[j]


_u64 = numba.types.uint64
_bool = numba.types.boolean


def _fwd_types(f, layout="A"):
    ro = dict(readonly=True, layout=layout)
    return (array_type(f, 4, **ro), array_type(f, 4, **ro), array_type(f, 4, **ro), f, f, _bool, _u64, f,
            _u64, array_type(f, 4), array_type(f, 3), *_alibi_types(f))


_i64x3 = numba.types.UniTuple(numba.types.int64, 3)
_dims = numba.types.UniTuple(numba.types.int64, 5)


def _alibi_types(f):
    """The (H,) slopes and the flag that turns them on."""
    return (array_type(f, 1, readonly=True), _bool)


def _flat_in(f):
    """A read-only flat view and its (B, T, H) strides (see ``_flat``)."""
    return (array_type(f, 1, readonly=True), _i64x3)


def _flat_out(f):
    return (array_type(f, 1), _i64x3)


def _train_fwd_types(f):
    return (*_flat_in(f), *_flat_in(f), *_flat_in(f), _dims, f, f, _bool, _u64, f, _u64, array_type(f, 4),
            array_type(f, 3), *_alibi_types(f))


def _bwd_types(f):
    return (*_flat_in(f), *_flat_in(f), *_flat_in(f), *_flat_in(f), *_flat_in(f),
            array_type(f, 3, readonly=True, layout="A"), _dims, f, f, _bool, _u64, f, _u64,
            *_flat_out(f), *_flat_out(f), *_flat_out(f), *_alibi_types(f))


_fwd_k = LazyKernel(_fwd, _train_fwd_types)
# few queries: one version for C-contiguous q/k/v (a batch-1 KV cache; inner loops vectorise), one for views
_fwd_rows_c = LazyKernel(_fwd_rows, lambda f: _fwd_types(f, "C"))
_fwd_rows_a = LazyKernel(_fwd_rows, _fwd_types)
_FEW_QUERIES = 4
_bwd_k = LazyKernel(_bwd, _bwd_types)


def _as(a, dt):
    a = np.asarray(a)
    return a if a.dtype == dt else a.astype(dt)


def _flat(a, copy_ok=True):
    """(flat, (sB, sT, sH)) for a (B, T, H, D) array: ``flat`` is a contiguous 1-D view from the array's
    first element to its last, strides are in elements; ``None`` if the layout does not allow it (the last
    axis not contiguous, negative or unaligned strides) and ``copy_ok`` is False, else such arrays are
    copied first."""
    it = a.itemsize
    st = a.strides
    if a.size == 0 or (a.shape[3] > 1 and st[3] != it) or any(s < 0 or s % it for s in st):
        if not copy_ok:
            return None
        a = np.ascontiguousarray(a)
        st = a.strides
    span = 1 + sum((n - 1) * s for n, s in zip(a.shape, st)) // it if a.size else 0
    flat = np.lib.stride_tricks.as_strided(a, shape=(span,), strides=(it,), writeable=a.flags.writeable)
    return flat, (st[0] // it, st[1] // it, st[2] // it)


def attention_forward_numba(q, k, v, scale, dropout_p=0.0, seed=0, slopes=None):
    q = np.asarray(q)
    dt = q.dtype
    k, v = _as(k, dt), _as(v, dt)
    _check_shapes(q, k, v)
    B, Tq, H, D = q.shape
    use, thr, inv_keep, key = _dropout_params(dropout_p, seed)
    slopes, alibi = _alibi_params(slopes, H, dt)
    out = np.empty((B, Tq, H, D), dtype=dt)
    lse = np.empty((B, H, Tq), dtype=dt)
    if out.size or lse.size:
        if Tq < _FEW_QUERIES:
            q = np.ascontiguousarray(q)                      # (B, Tq, H, D) with Tq < 4: tiny
            contiguous = k.flags.c_contiguous and v.flags.c_contiguous
            # One generated token's attention is small work: below ~1M multiply-adds a single thread
            # beats starting the pool (0.1-0.3 ms per call next to OpenBLAS's spinning worker).
            kernel = (_fwd_rows_c if contiguous else _fwd_rows_a).pick(dt, (B * H * k.shape[1] * D) >> 6)
            kernel(q, k, v, dt.type(scale), dt.type(1.0), use, thr, dt.type(inv_keep), key, out, lse, slopes, alibi)
        else:
            _fwd_k[dt](*_flat(q), *_flat(k), *_flat(v), (B, Tq, k.shape[1], H, D), dt.type(scale), dt.type(1.0),
                       use, thr, dt.type(inv_keep), key, out, lse, slopes, alibi)
    return out, lse


def _grad_buffer(g, like, name):
    if g is None:
        return np.empty(like.shape, dtype=like.dtype)
    if g.shape != like.shape or g.dtype != like.dtype or not g.flags.writeable:
        raise MiniGPTError(f"attention_backward: {name} must be a writeable {like.dtype} array of shape "
                           f"{like.shape}, got {g.dtype} {g.shape}")
    return g


def attention_backward_numba(dout, q, k, v, out, lse, scale, dropout_p=0.0, seed=0, dq=None, dk=None,
                             dv=None, slopes=None):
    q = np.asarray(q)
    dt = q.dtype
    k, v = _as(k, dt), _as(v, dt)
    use, thr, inv_keep, key = _dropout_params(dropout_p, seed)
    slopes, alibi = _alibi_params(slopes, q.shape[2] if q.ndim == 4 else 0, dt)
    dq = _grad_buffer(dq, q, "dq")
    dk = _grad_buffer(dk, k, "dk")
    dv = _grad_buffer(dv, v, "dv")
    if q.size and k.size:
        B, Tq, H, D = q.shape
        grads = []
        for g in (dq, dk, dv):          # written through flat views; other layouts via a temporary
            fl = _flat(g, copy_ok=False)
            tmp = None
            if fl is None:
                tmp = np.empty(g.shape, dtype=dt)
                fl = _flat(tmp)
            grads.append((fl, tmp))
        _bwd_k[dt](*_flat(_as(dout, dt)), *_flat(q), *_flat(k), *_flat(v), *_flat(_as(out, dt)), _as(lse, dt),
                   (B, Tq, k.shape[1], H, D), dt.type(scale), dt.type(1.0), use, thr, dt.type(inv_keep), key,
                   *grads[0][0], *grads[1][0], *grads[2][0], slopes, alibi)
        for g, (_, tmp) in zip((dq, dk, dv), grads):
            if tmp is not None:
                g[...] = tmp
    elif k.size:                        # no queries: no gradient reaches k or v
        dk[...] = 0
        dv[...] = 0
    return dq, dk, dv


# ---- the kernels, declared once: NumPy reference, Numba version (registry.py picks one) ----------

attention_forward = kernel(
    attention_forward_numpy, attention_forward_numba,
    """Causal attention of ``q`` (B, Tq, H, D) over ``k``, ``v`` (B, Tk, H, D); returns ``(out, lse)``;
    ``slopes`` (H,): ALiBi's per-head linear bias.""")

attention_backward = kernel(
    attention_backward_numpy, attention_backward_numba,
    """Gradients ``(dq, dk, dv)`` of :func:`attention_forward`; written into ``dq``/``dk``/``dv`` if given.""")
