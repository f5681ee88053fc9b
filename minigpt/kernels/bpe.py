"""Numba kernels of the byte-level BPE tokenizer: applying merges to words, and learning merges.

Pure array code: int32 token ids, uint8 bytes, int64 offsets and counts. The tokenizer module
(``minigpt.tokenizer.bpe``) owns the Python side; each kernel here has a plain-Python twin
(``*_python``) that the tests compare it against.

Pair table (encoding)
    An open-addressing hash table (linear probing, power-of-two size) from a pair of token ids ``(a, b)`` to
    the id of the token whose bytes are ``bytes(a) + bytes(b)``, or -1. That id is also the pair's rank: the
    pair with the lowest id merges first, the leftmost one on ties (tiktoken's rule).

Training state
    Unique words are stored back to back in ``sym`` (``start[w]``, ``wlen[w]``, ``wcount[w]``). Each distinct
    adjacent pair has a slot: its ids, its count (summed over words, weighted by word frequency) and a linked
    list of the words it occurs in (``node_w``/``node_next``, appended to when the pair appears in a word; stale
    or repeated entries are skipped when the list is read). A binary max-heap holds ``(count, a, b, slot)``
    entries with lazy invalidation: an entry whose count is stale is re-pushed with the current count when it
    reaches the top. After a merge only the words on the merged pair's list are touched, and only the pairs
    next to a merge site change their counts.
"""
from __future__ import annotations

import numpy as np

from .. import _threads  # noqa: F401  (before numba)
from numba import njit

# --------------------------------------------------------------------------------------------------
# pair table and encoding
@njit(cache=True, inline="always")
def _phash(a, b, mask):
    return (np.int64(a) * 0x9E3779B1 + np.int64(b) * 0x85EBCA77 + (np.int64(a) >> 7)) & mask


@njit(cache=True)
def build_pair_table(pa, pb, pv, size):
    """Hash table of ``size`` slots (a power of two) holding ``(pa[i], pb[i]) -> pv[i]``."""
    ta = np.full(size, -1, np.int32)
    tb = np.full(size, -1, np.int32)
    tv = np.full(size, -1, np.int32)
    mask = size - 1
    for i in range(pa.size):
        h = _phash(pa[i], pb[i], mask)
        while ta[h] != -1 and not (ta[h] == pa[i] and tb[h] == pb[i]):
            h = (h + 1) & mask
        ta[h] = pa[i]
        tb[h] = pb[i]
        tv[h] = pv[i]
    return ta, tb, tv


@njit(cache=True, inline="always")
def _plookup(ta, tb, tv, a, b):
    mask = ta.size - 1
    h = _phash(a, b, mask)
    while True:
        x = ta[h]
        if x == -1:
            return np.int32(0x7FFFFFFF)
        if x == a and tb[h] == b:
            return tv[h]
        h = (h + 1) & mask


@njit(cache=True)
def encode_words(data, offsets, byte_ids, ta, tb, tv):
    """Apply the merges to each word ``data[offsets[i]:offsets[i+1]]`` (UTF-8 bytes).

    Returns ``(ids, out_offsets)``: the token ids of word ``i`` are ``ids[out_offsets[i]:out_offsets[i+1]]``.
    """
    n = offsets.size - 1
    maxlen = 1
    for i in range(n):
        L = offsets[i + 1] - offsets[i]
        if L > maxlen:
            maxlen = L
    parts = np.empty(maxlen, np.int32)
    ranks = np.empty(maxlen, np.int32)
    out = np.empty(offsets[n] - offsets[0], np.int32)
    out_off = np.empty(n + 1, np.int64)
    big = np.int32(0x7FFFFFFF)
    pos = 0
    out_off[0] = 0
    for w in range(n):
        s = offsets[w]
        m = offsets[w + 1] - s
        for i in range(m):
            parts[i] = byte_ids[data[s + i]]
        for i in range(m - 1):
            ranks[i] = _plookup(ta, tb, tv, parts[i], parts[i + 1])
        while m > 1:
            best = big
            bi = -1
            for i in range(m - 1):
                if ranks[i] < best:
                    best = ranks[i]
                    bi = i
            if bi < 0:
                break
            parts[bi] = best
            for i in range(bi + 1, m - 1):
                parts[i] = parts[i + 1]
            for i in range(bi + 1, m - 2):
                ranks[i] = ranks[i + 1]
            m -= 1
            if bi < m - 1:
                ranks[bi] = _plookup(ta, tb, tv, parts[bi], parts[bi + 1])
            if bi > 0:
                ranks[bi - 1] = _plookup(ta, tb, tv, parts[bi - 1], parts[bi])
        for i in range(m):
            out[pos + i] = parts[i]
        pos += m
        out_off[w + 1] = pos
    return out[:pos].copy(), out_off


def encode_word_python(word: bytes, byte_ids, pair_to_id: dict) -> list[int]:
    """The plain-Python twin of :func:`encode_words` for one word (reference for the tests)."""
    parts = [int(byte_ids[b]) for b in word]
    while len(parts) > 1:
        best, bi = None, -1
        for i in range(len(parts) - 1):
            r = pair_to_id.get((parts[i], parts[i + 1]))
            if r is not None and (best is None or r < best):
                best, bi = r, i
        if bi < 0:
            break
        parts[bi : bi + 2] = [best]
    return parts


# --------------------------------------------------------------------------------------------------
# training
# st (int64 state): 0 n_slots, 1 n_nodes, 2 heap_size, 3 n_tokens, 4 tok_used (bytes), 5 n_merges_done,
#                   6 status/need (capacity asked for when a kernel returns early), 7 stamp counter
ST_SLOTS, ST_NODES, ST_HEAP, ST_TOKENS, ST_TOKBYTES, ST_MERGES, ST_NEED, ST_STAMP = range(8)


@njit(cache=True, inline="always")
def _slot_find(ht, sa, sb, a, b):
    mask = ht.size - 1
    h = _phash(a, b, mask)
    while True:
        s = ht[h]
        if s == -1:
            return -1, h
        if sa[s] == a and sb[s] == b:
            return s, h
        h = (h + 1) & mask


@njit(cache=True, inline="always")
def _heap_less(hc, ha, hb, i, j):
    # True when entry i ranks below entry j (max-heap order: count desc, then a asc, then b asc)
    if hc[i] != hc[j]:
        return hc[i] < hc[j]
    if ha[i] != ha[j]:
        return ha[i] > ha[j]
    return hb[i] > hb[j]


@njit(cache=True, inline="always")
def _heap_swap(hc, ha, hb, hs, i, j):
    hc[i], hc[j] = hc[j], hc[i]
    ha[i], ha[j] = ha[j], ha[i]
    hb[i], hb[j] = hb[j], hb[i]
    hs[i], hs[j] = hs[j], hs[i]


@njit(cache=True)
def _heap_push(hc, ha, hb, hs, n, c, a, b, s):
    hc[n] = c
    ha[n] = a
    hb[n] = b
    hs[n] = s
    i = n
    while i > 0:
        p = (i - 1) >> 1
        if _heap_less(hc, ha, hb, p, i):
            _heap_swap(hc, ha, hb, hs, p, i)
            i = p
        else:
            break
    return n + 1


@njit(cache=True)
def _heap_pop(hc, ha, hb, hs, n):
    n -= 1
    _heap_swap(hc, ha, hb, hs, 0, n)
    i = 0
    while True:
        l = 2 * i + 1
        if l >= n:
            break
        c = l
        r = l + 1
        if r < n and _heap_less(hc, ha, hb, l, r):
            c = r
        if _heap_less(hc, ha, hb, i, c):
            _heap_swap(hc, ha, hb, hs, i, c)
            i = c
        else:
            break
    return n


@njit(cache=True)
def rebuild_slot_table(sa, sb, n_slots, size):
    """A fresh pair -> slot hash table of ``size`` entries for the first ``n_slots`` slots."""
    ht = np.full(size, -1, np.int32)
    mask = size - 1
    for s in range(n_slots):
        h = _phash(sa[s], sb[s], mask)
        while ht[h] != -1:
            h = (h + 1) & mask
        ht[h] = s
    return ht


@njit(cache=True)
def train_init(sym, start, wlen, wcount, ht, sa, sb, scount, shead, sstamp, node_w, node_next,
               hc, ha, hb, hs, st):
    """Count every adjacent pair of every word; fill the slots, their word lists and the heap.

    The caller sizes the arrays: slots, nodes and heap for ``sym.size`` entries, ``ht`` at least twice that.
    """
    n_slots = 0
    n_nodes = 0
    for w in range(start.size):
        s0 = start[w]
        c = wcount[w]
        for i in range(s0, s0 + wlen[w] - 1):
            a = sym[i]
            b = sym[i + 1]
            s, h = _slot_find(ht, sa, sb, a, b)
            if s == -1:
                s = n_slots
                n_slots += 1
                ht[h] = s
                sa[s] = a
                sb[s] = b
                scount[s] = 0
                shead[s] = -1
                sstamp[s] = -1
            scount[s] += c
            if sstamp[s] != w:
                sstamp[s] = w
                node_w[n_nodes] = w
                node_next[n_nodes] = shead[s]
                shead[s] = n_nodes
                n_nodes += 1
    n = 0
    for s in range(n_slots):
        n = _heap_push(hc, ha, hb, hs, n, scount[s], sa[s], sb[s], s)
    st[ST_SLOTS] = n_slots
    st[ST_NODES] = n_nodes
    st[ST_HEAP] = n
    st[ST_STAMP] = 0
    for s in range(n_slots):
        sstamp[s] = -1


@njit(cache=True)
def _bytes_hash(buf, s, L):
    h = np.uint64(1469598103934665603)
    for i in range(L):
        h = (h ^ np.uint64(buf[s + i])) * np.uint64(1099511628211)
    return h


@njit(cache=True)
def token_table_init(tok_buf, tok_start, tok_len, n, bh_key, bh_id):
    """Enter tokens ``0..n-1`` into the bytes -> id table used by :func:`train_merges`."""
    mask = bh_key.size - 1
    for t in range(n):
        hsh = _bytes_hash(tok_buf, tok_start[t], tok_len[t])
        h = np.int64(hsh & np.uint64(mask))
        while bh_id[h] != -1:
            h = (h + 1) & mask
        bh_key[h] = hsh
        bh_id[h] = t


@njit(cache=True)
def train_merges(sym, start, wlen, wcount, ht, sa, sb, scount, shead, sstamp, node_w, node_next,
                 hc, ha, hb, hs, st, tok_start, tok_len, tok_buf, bh_key, bh_id, wstamp, tmp_cov, tmp_new,
                 touched, out_a, out_b, out_id, max_tokens, max_steps):
    """Learn merges until ``max_tokens`` tokens exist, the heap runs dry, ``max_steps`` merges were made, or
    an array is too small for the next merge.

    Returns 0 when done (token target reached or no pair left), 1 after ``max_steps`` merges, 2 when an array
    must grow (``st[ST_NEED]`` holds the number of new slots/nodes/heap entries the next merge may need).
    Merge ``k`` (``st[ST_MERGES]`` counts them) joined ``out_a[k]``, ``out_b[k]`` into ``out_id[k]``; that id is
    a new token unless the joined bytes were a token already (then the existing id is reused).
    """
    steps = 0
    bmask = bh_key.size - 1
    while True:
        if st[ST_TOKENS] >= max_tokens:
            return 0
        if steps >= max_steps:
            return 1
        # clean the top of the heap until its entry is current
        n = st[ST_HEAP]
        best = -1
        while n > 0:
            s = hs[0]
            c = hc[0]
            cur = scount[s]
            if cur == c and c > 0:
                best = s
                break
            n = _heap_pop(hc, ha, hb, hs, n)
            if 0 < cur < c:
                n = _heap_push(hc, ha, hb, hs, n, cur, sa[s], sb[s], s)
        st[ST_HEAP] = n
        if best == -1:
            return 0
        a = sa[best]
        b = sb[best]
        # capacity check: every merge site may add two pairs (slots, nodes, heap entries)
        need = 0
        k = shead[best]
        while k != -1:
            need += wlen[node_w[k]]
            k = node_next[k]
        L = tok_len[a] + tok_len[b]
        if (st[ST_SLOTS] + need > sa.size or st[ST_NODES] + need > node_w.size
                or 2 * (st[ST_SLOTS] + need) > ht.size or st[ST_HEAP] + need > hc.size
                or st[ST_TOKBYTES] + L > tok_buf.size):
            st[ST_NEED] = need + L
            return 2
        n = _heap_pop(hc, ha, hb, hs, st[ST_HEAP])
        st[ST_HEAP] = n
        # the new token's bytes; reuse the id when these bytes are a token already
        t0 = st[ST_TOKBYTES]
        tok_buf[t0:t0 + tok_len[a]] = tok_buf[tok_start[a]:tok_start[a] + tok_len[a]]
        tok_buf[t0 + tok_len[a]:t0 + L] = tok_buf[tok_start[b]:tok_start[b] + tok_len[b]]
        hsh = _bytes_hash(tok_buf, t0, L)
        h = np.int64(hsh & np.uint64(bmask))
        t = -1
        while bh_id[h] != -1:
            if bh_key[h] == hsh:
                u = bh_id[h]
                if tok_len[u] == L:
                    same = True
                    for i in range(L):
                        if tok_buf[tok_start[u] + i] != tok_buf[t0 + i]:
                            same = False
                            break
                    if same:
                        t = u
                        break
            h = (h + 1) & bmask
        if t == -1:
            t = st[ST_TOKENS]
            st[ST_TOKENS] += 1
            tok_start[t] = t0
            tok_len[t] = L
            st[ST_TOKBYTES] += L
            bh_key[h] = hsh
            bh_id[h] = t
        m = st[ST_MERGES]
        out_a[m] = a
        out_b[m] = b
        out_id[m] = t
        st[ST_MERGES] = m + 1
        steps += 1
        stamp = st[ST_STAMP] + 1
        st[ST_STAMP] = stamp
        n_touched = 0
        k = shead[best]
        shead[best] = -1
        while k != -1:
            w = node_w[k]
            k = node_next[k]
            if wstamp[w] == stamp:
                continue
            wstamp[w] = stamp
            s0 = start[w]
            Lw = wlen[w]
            # find the merge sites, leftmost first, without overlaps
            nsites = 0
            i = 0
            while i < Lw:
                tmp_cov[i] = 0
                i += 1
            i = 0
            while i < Lw - 1:
                if sym[s0 + i] == a and sym[s0 + i + 1] == b:
                    tmp_cov[i] = 1
                    tmp_cov[i + 1] = 1
                    nsites += 1
                    i += 2
                else:
                    i += 1
            if nsites == 0:
                continue
            c = wcount[w]
            # pairs that touch a merge site disappear
            for i in range(Lw - 1):
                if tmp_cov[i] or tmp_cov[i + 1]:
                    s, h = _slot_find(ht, sa, sb, sym[s0 + i], sym[s0 + i + 1])
                    scount[s] -= c
            # rewrite the word in place
            j = 0
            i = 0
            while i < Lw:
                if i < Lw - 1 and sym[s0 + i] == a and sym[s0 + i + 1] == b:  # the same sites as above
                    sym[s0 + j] = t
                    tmp_new[j] = 1
                    i += 2
                else:
                    sym[s0 + j] = sym[s0 + i]
                    tmp_new[j] = 0
                    i += 1
                j += 1
            Lw = j
            wlen[w] = Lw
            # pairs that touch a new token appear
            for i in range(Lw - 1):
                if tmp_new[i] or tmp_new[i + 1]:
                    x = sym[s0 + i]
                    y = sym[s0 + i + 1]
                    s, h = _slot_find(ht, sa, sb, x, y)
                    if s == -1:
                        s = st[ST_SLOTS]
                        st[ST_SLOTS] = s + 1
                        ht[h] = s
                        sa[s] = x
                        sb[s] = y
                        scount[s] = 0
                        shead[s] = -1
                        sstamp[s] = -1
                    scount[s] += c
                    if sstamp[s] != stamp:
                        sstamp[s] = stamp
                        touched[n_touched] = s
                        n_touched += 1
                    # record the word on the pair's list (once per word and merge)
                    if not (shead[s] != -1 and node_w[shead[s]] == w):
                        nn = st[ST_NODES]
                        node_w[nn] = w
                        node_next[nn] = shead[s]
                        shead[s] = nn
                        st[ST_NODES] = nn + 1
        scount[best] = 0  # the pair is gone for good (its words were all rewritten)
        n = st[ST_HEAP]
        for q in range(n_touched):
            s = touched[q]
            if scount[s] > 0:
                n = _heap_push(hc, ha, hb, hs, n, scount[s], sa[s], sb[s], s)
        st[ST_HEAP] = n


# --------------------------------------------------------------------------------------------------
# expanding cached pre-token codes into token ids
@njit(cache=True)
def expand_codes(codes, mflat, moff):
    """``codes[i] >= 0`` is a token id; ``codes[i] = -(k + 1)`` stands for the ids ``mflat[moff[k]:moff[k+1]]``.

    Returns the int64 array of all ids in order.
    """
    n = codes.size
    total = 0
    for i in range(n):
        c = codes[i]
        if c >= 0:
            total += 1
        else:
            k = -c - 1
            total += moff[k + 1] - moff[k]
    out = np.empty(total, np.int64)
    j = 0
    for i in range(n):
        c = codes[i]
        if c >= 0:
            out[j] = c
            j += 1
        else:
            k = -c - 1
            for q in range(moff[k], moff[k + 1]):
                out[j] = mflat[q]
                j += 1
    return out


PIECE_BASE = -(1 << 40)  # codes <= this stand for a run of word codes (see expand_piece_codes)


@njit(cache=True)
def expand_piece_codes(codes, mflat, moff, pflat, poff):
    """Like :func:`expand_codes`, with a second level: ``codes[i] <= PIECE_BASE`` stands for the word codes
    ``pflat[poff[k]:poff[k+1]]`` (``k = PIECE_BASE - codes[i]``), each a token id or a multi-token code."""
    base = -(1 << 40)
    total = 0
    for i in range(codes.size):
        c = codes[i]
        if c >= 0:
            total += 1
        elif c > base:
            total += moff[-c] - moff[-c - 1]
        else:
            k = base - c
            for q in range(poff[k], poff[k + 1]):
                w = pflat[q]
                if w >= 0:
                    total += 1
                else:
                    total += moff[-w] - moff[-w - 1]
    out = np.empty(total, np.int64)
    j = 0
    for i in range(codes.size):
        c = codes[i]
        if c >= 0:
            out[j] = c
            j += 1
        elif c > base:
            for q in range(moff[-c - 1], moff[-c]):
                out[j] = mflat[q]
                j += 1
        else:
            k = base - c
            for q in range(poff[k], poff[k + 1]):
                w = pflat[q]
                if w >= 0:
                    out[j] = w
                    j += 1
                else:
                    for r in range(moff[-w - 1], moff[-w]):
                        out[j] = mflat[r]
                        j += 1
    return out
