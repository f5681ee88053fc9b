"""Numba kernels of the byte-level BPE tokenizer: encoding text (splitting, a cache, merges) and learning merges.

Pure array code: int32 token ids, uint8 bytes, int64 offsets and counts. The tokenizer module
(``minigpt.tokenizer.bpe``) owns the Python side, including a plain-Python encode path (used with the NumPy
kernel backend) that the tests compare these kernels against.

Encoding (:func:`encode_bytes`)
    One pass over the UTF-8 text: ASCII stretches are split into pre-tokens here (:func:`next_gpt2`,
    :func:`next_gpt4`: the GPT-2 / GPT-4 patterns on ASCII), the regions around non-ASCII characters come
    pre-split by the ``regex`` package; each pre-token's ids come from the encode cache (below) or are merged
    and entered into it. A warm cache costs one table row per pre-token of up to 8 bytes.

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

import heapq

import numpy as np

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


# --------------------------------------------------------------------------------------------------
# the encode cache: pre-token bytes -> token ids, in arrays that live on the tokenizer between calls
#   tab[p] = (key, L, val, kstart): one row per slot (open addressing, linear probing, power-of-two size, at
#            most half full); L = 0 marks a free slot. key: the pre-token's L bytes packed into an int64 when
#            L <= 8 (then the row alone decides a match), else a hash of them (then kbuf[kstart:kstart+L] is
#            compared). val >= 0: the pre-token is that one token; else its m ids are vbuf[v+1:v+1+m] with
#            m = vbuf[v], v = -val - 1.
#   kbuf, vbuf: the long keys' bytes and the multi-token values, back to back
#   cst = (entries, kbuf bytes used, vbuf ints used, length of the pre-token that found no room)
# A lookup that finds a short pre-token reads one row. The cache starts out holding every regular token of the
# vocabulary (value: its own id), which makes tiktoken's rule "a pre-token that is a token as a whole is that
# token" the same lookup; every other pre-token encoded is added. When an array is full the kernels stop before
# the pre-token that needs room; the caller doubles the arrays (``cache_rehash`` refills the larger table) and
# resumes there.
CACHE_ENTRIES, CACHE_KBYTES, CACHE_VINTS, CACHE_NEED = range(4)
_MIX = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def _key(buf, s, L):
    """The bytes ``buf[s:s+L]`` packed into an int64 (little-endian) when ``L <= 8``, else their hash."""
    w = np.uint64(0)
    if L <= 8:
        for q in range(L):
            w |= np.uint64(buf[s + q]) << np.uint64(8 * q)
        return np.int64(w)
    h = np.uint64(L)
    for q0 in range(0, L, 8):
        w = np.uint64(0)
        for q in range(q0, min(q0 + 8, L)):
            w |= np.uint64(buf[s + q]) << np.uint64(8 * (q - q0))
        h = (h ^ w) * _MIX
        h ^= h >> np.uint64(29)
    return np.int64(h)


@njit(cache=True, inline="always")
def _slot(key, L, mask):
    h = (np.uint64(key) + np.uint64(L)) * _MIX
    h ^= h >> np.uint64(32)
    return np.int64(h) & mask


@njit(cache=True, inline="always")
def _cache_find(buf, s, L, key, tab, kbuf):
    """The slot of the pre-token ``buf[s:s+L]`` (key ``key``), or ``-(free slot) - 1`` when it is absent."""
    mask = tab.shape[0] - 1
    p = _slot(key, L, mask)
    while True:
        n = tab[p, 1]
        if n == 0:
            return -p - 1
        if n == L and tab[p, 0] == key:
            if L <= 8:
                return p
            ks = tab[p, 3]
            same = True
            for q in range(L):
                if kbuf[ks + q] != buf[s + q]:
                    same = False
                    break
            if same:
                return p
        p = (p + 1) & mask


@njit(cache=True, inline="always")
def _cache_has_room(L, tab, kbuf, vbuf, cst):
    return (2 * (cst[CACHE_ENTRIES] + 1) <= tab.shape[0] and cst[CACHE_KBYTES] + L <= kbuf.size
            and cst[CACHE_VINTS] + L + 1 <= vbuf.size)


@njit(cache=True, inline="always")
def _cache_add(buf, s, L, key, p, ids, i0, m, tab, kbuf, vbuf, cst):
    """Enter the pre-token ``buf[s:s+L]`` at the free slot ``p`` with the ids ``ids[i0:i0+m]``."""
    tab[p, 0] = key
    tab[p, 1] = L
    tab[p, 3] = -1
    if L > 8:
        ks = cst[CACHE_KBYTES]
        for q in range(L):
            kbuf[ks + q] = buf[s + q]
        tab[p, 3] = ks
        cst[CACHE_KBYTES] = ks + L
    if m == 1:
        tab[p, 2] = ids[i0]
    else:
        v = cst[CACHE_VINTS]
        vbuf[v] = m
        for q in range(m):
            vbuf[v + 1 + q] = ids[i0 + q]
        tab[p, 2] = -v - 1
        cst[CACHE_VINTS] = v + 1 + m
    cst[CACHE_ENTRIES] += 1


@njit(cache=True)
def cache_init(tok_buf, tok_off, tab, kbuf, vbuf, cst):
    """Enter token ``t`` (bytes ``tok_buf[tok_off[t]:tok_off[t+1]]``) with the value ``[t]``, for every t."""
    one = np.empty(1, np.int32)
    for t in range(tok_off.size - 1):
        s = tok_off[t]
        L = tok_off[t + 1] - s
        key = _key(tok_buf, s, L)
        f = _cache_find(tok_buf, s, L, key, tab, kbuf)
        one[0] = t
        _cache_add(tok_buf, s, L, key, -f - 1, one, 0, 1, tab, kbuf, vbuf, cst)


@njit(cache=True)
def cache_rehash(old, tab):
    """Move the rows of the slot table ``old`` into the larger, empty table ``tab``."""
    mask = tab.shape[0] - 1
    for r in range(old.shape[0]):
        L = old[r, 1]
        if L != 0:
            p = _slot(old[r, 0], L, mask)
            while tab[p, 1] != 0:
                p = (p + 1) & mask
            for q in range(4):
                tab[p, q] = old[r, q]


_LONG_WORD = 64  # pre-tokens longer than this merge through a heap (O(m log m)) instead of rescanning (O(m^2))


@njit(cache=True)
def _merge(parts, p0, m, ranks, ta, tb, tv):
    """Apply the merges to the ids ``parts[p0:p0+m]`` in place (lowest id first, leftmost on ties); the new
    length."""
    if m > _LONG_WORD:
        return _merge_long(parts, p0, m, ta, tb, tv)
    big = np.int32(0x7FFFFFFF)
    for i in range(m - 1):
        ranks[i] = _plookup(ta, tb, tv, parts[p0 + i], parts[p0 + i + 1])
    while m > 1:
        best = big
        bi = -1
        for i in range(m - 1):
            if ranks[i] < best:
                best = ranks[i]
                bi = i
        if bi < 0:
            break
        parts[p0 + bi] = best
        for i in range(bi + 1, m - 1):
            parts[p0 + i] = parts[p0 + i + 1]
        for i in range(bi + 1, m - 2):
            ranks[i] = ranks[i + 1]
        m -= 1
        if bi < m - 1:
            ranks[bi] = _plookup(ta, tb, tv, parts[p0 + bi], parts[p0 + bi + 1])
        if bi > 0:
            ranks[bi - 1] = _plookup(ta, tb, tv, parts[p0 + bi - 1], parts[p0 + bi])
    return m


@njit(cache=True)
def _heap_push_key(heap, n, key):
    heap[n] = key
    i = n
    while i > 0:
        p = (i - 1) >> 1
        if heap[p] <= heap[i]:
            break
        heap[p], heap[i] = heap[i], heap[p]
        i = p
    return n + 1


@njit(cache=True)
def _heap_pop_key(heap, n):
    """Remove the smallest key (returned with the new size)."""
    top = heap[0]
    n -= 1
    heap[0] = heap[n]
    i = 0
    while True:
        l = 2 * i + 1
        if l >= n:
            break
        c = l
        if l + 1 < n and heap[l + 1] < heap[l]:
            c = l + 1
        if heap[i] <= heap[c]:
            break
        heap[i], heap[c] = heap[c], heap[i]
        i = c
    return top, n


@njit(cache=True)
def _merge_long(parts, p0, m, ta, tb, tv):
    """:func:`_merge` for a long pre-token, with the same result in O(m log m): the positions form a linked list
    and a min-heap holds ``(rank, position)`` keys of adjacent pairs (the lowest rank first, then the leftmost;
    positions keep their order as elements are removed). A popped key is used only when the pair at its position
    still has that rank, so stale keys left by earlier merges are skipped."""
    big = np.int64(0x7FFFFFFF)
    nxt = np.empty(m, np.int64)
    prv = np.empty(m, np.int64)
    alive = np.ones(m, np.bool_)
    for i in range(m):
        nxt[i] = i + 1
        prv[i] = i - 1
    nxt[m - 1] = -1
    heap = np.empty(3 * m, np.int64)  # m - 1 pairs at first, at most two new ones per merge
    hn = 0
    for i in range(m - 1):
        r = np.int64(_plookup(ta, tb, tv, parts[p0 + i], parts[p0 + i + 1]))
        if r != big:
            hn = _heap_push_key(heap, hn, (r << 32) | i)
    while hn > 0:
        key, hn = _heap_pop_key(heap, hn)
        r = key >> 32
        i = key & 0xFFFFFFFF
        if not alive[i]:
            continue
        j = nxt[i]
        if j == -1 or np.int64(_plookup(ta, tb, tv, parts[p0 + i], parts[p0 + j])) != r:
            continue
        parts[p0 + i] = r
        alive[j] = False
        k = nxt[j]
        nxt[i] = k
        if k != -1:
            prv[k] = i
            r2 = np.int64(_plookup(ta, tb, tv, parts[p0 + i], parts[p0 + k]))
            if r2 != big:
                hn = _heap_push_key(heap, hn, (r2 << 32) | i)
        h = prv[i]
        if h != -1:
            r2 = np.int64(_plookup(ta, tb, tv, parts[p0 + h], parts[p0 + i]))
            if r2 != big:
                hn = _heap_push_key(heap, hn, (r2 << 32) | h)
    n = 0
    for i in range(m):
        if alive[i]:
            parts[p0 + n] = parts[p0 + i]
            n += 1
    return n


@njit(cache=True)
def _encode_new(buf, s, L, key, p, out, n_out, byte_ids, ta, tb, tv, tab, kbuf, vbuf, cst, ranks):
    """A pre-token ``buf[s:s+L]`` that is not in the cache: merge its bytes at ``out[n_out:]`` (which has room
    for ``L`` ids) and enter it at the free slot ``p``. The new ``n_out``, or -1 when the cache has no room for
    it (then nothing is written and ``cst[CACHE_NEED] = L``)."""
    if not _cache_has_room(L, tab, kbuf, vbuf, cst):
        cst[CACHE_NEED] = L
        return -1
    for q in range(L):
        out[n_out + q] = byte_ids[buf[s + q]]
    m = _merge(out, n_out, L, ranks, ta, tb, tv)
    _cache_add(buf, s, L, key, p, out, n_out, m, tab, kbuf, vbuf, cst)
    return n_out + m


@njit(cache=True, inline="always")
def _copy_value(f, out, n_out, tab, vbuf):
    """Write the ids of the cache entry in slot ``f`` at ``out[n_out:]``; the new ``n_out``."""
    val = tab[f, 2]
    if val >= 0:
        out[n_out] = val
        return n_out + 1
    v = -val - 1
    m = vbuf[v]
    for q in range(m):
        out[n_out + q] = vbuf[v + 1 + q]
    return n_out + m


# --------------------------------------------------------------------------------------------------
# pre-tokenizing ASCII text (equal to the GPT-2 / GPT-4 split patterns on ASCII; tested against `regex`)
C_OTHER, C_LETTER, C_DIGIT, C_SPACE = 0, 1, 2, 3


def _ascii_classes():
    c = np.full(128, C_OTHER, np.uint8)
    c[ord("A"):ord("Z") + 1] = C_LETTER
    c[ord("a"):ord("z") + 1] = C_LETTER
    c[ord("0"):ord("9") + 1] = C_DIGIT
    for b in b"\t\n\x0b\x0c\r ":  # Unicode White_Space within ASCII (not \x1c-\x1f)
        c[b] = C_SPACE
    return c


_CLS = _ascii_classes()
KIND_GPT2, KIND_GPT4 = 0, 1


@njit(cache=True, inline="always")
def _run(buf, i, n, k):
    while i < n and _CLS[buf[i]] == k:
        i += 1
    return i


@njit(cache=True, inline="always")
def _space_end(buf, i, n):
    r"""End of the pre-token at ``i`` that a whitespace run starting there forms when no earlier alternative
    matched: ``\s+(?!\S)`` (the run, less its last character when a non-space follows), else ``\s``."""
    e = _run(buf, i + 1, n, C_SPACE)
    if e == n or e - i == 1:
        return e
    return e - 1


@njit(cache=True)
def next_gpt2(buf, i, n):
    r"""End of the GPT-2 pre-token starting at ``i``:
    ``'s|'t|'re|'ve|'m|'ll|'d| ?L+| ?N+| ?[^\sLN]+|\s+(?!\S)|\s+`` on ASCII."""
    c = buf[i]
    if c == 39 and i + 1 < n:  # '
        d = buf[i + 1]
        if d == 115 or d == 116 or d == 109 or d == 100:  # s t m d
            return i + 2
        if i + 2 < n:
            e = buf[i + 2]
            if (d == 114 and e == 101) or (d == 118 and e == 101) or (d == 108 and e == 108):  # re ve ll
                return i + 3
    k = _CLS[c]
    if k != C_SPACE:
        return _run(buf, i + 1, n, k)
    if c == 32 and i + 1 < n:
        k = _CLS[buf[i + 1]]
        if k != C_SPACE:
            return _run(buf, i + 2, n, k)
    return _space_end(buf, i, n)


@njit(cache=True)
def next_gpt4(buf, i, n):
    r"""End of the GPT-4 (cl100k) pre-token starting at ``i``: ``'(?i:[sdmt]|ll|ve|re)|[^\r\nLN]?L+|N{1,3}|
    ?[^\sLN]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+`` on ASCII."""
    c = buf[i]
    if c == 39 and i + 1 < n:  # '
        d = buf[i + 1] | 32  # lower case
        if d == 115 or d == 116 or d == 109 or d == 100:
            return i + 2
        if i + 2 < n:
            e = buf[i + 2] | 32
            if (d == 114 and e == 101) or (d == 118 and e == 101) or (d == 108 and e == 108):
                return i + 3
    k = _CLS[c]
    if k == C_LETTER:
        return _run(buf, i + 1, n, C_LETTER)
    if k != C_DIGIT and c != 10 and c != 13 and i + 1 < n and _CLS[buf[i + 1]] == C_LETTER:
        return _run(buf, i + 2, n, C_LETTER)
    if k == C_DIGIT:
        return min(_run(buf, i + 1, n, C_DIGIT), i + 3)
    if k == C_OTHER or (c == 32 and i + 1 < n and _CLS[buf[i + 1]] == C_OTHER):
        e = _run(buf, i + 1, n, C_OTHER)
        while e < n and (buf[e] == 10 or buf[e] == 13):
            e += 1
        return e
    e = _run(buf, i + 1, n, C_SPACE)
    for p in range(e - 1, i - 1, -1):  # \s*[\r\n]: up to the run's last newline
        if buf[p] == 10 or buf[p] == 13:
            return p + 1
    return _space_end(buf, i, n)


@njit(cache=True)
def pretoken_ends(buf, kind):
    """End offsets of the pre-tokens of the ASCII bytes ``buf`` (``kind``: KIND_GPT2 or KIND_GPT4)."""
    n = buf.size
    out = np.empty(n, np.int64)
    k = 0
    i = 0
    while i < n:
        i = next_gpt2(buf, i, n) if kind == KIND_GPT2 else next_gpt4(buf, i, n)
        out[k] = i
        k += 1
    return out[:k].copy()


@njit(cache=True)
def encode_bytes(data, pos, kind, rlo, rhi, cuts, out, n_out, byte_ids, ta, tb, tv, tab, kbuf, vbuf, cst):
    """Encode the UTF-8 text ``data[pos:]`` through the cache, writing the ids at ``out[n_out:]`` (``out``
    holds at least ``data.size`` ids).

    Its pre-tokens: inside the regions ``[rlo[r], rhi[r])`` (sorted, each starting and ending where the
    pattern has a boundary) they end at the given offsets ``cuts`` (sorted; the split of the ``regex``
    package); elsewhere the text is ASCII and the kernel splits it with ``kind`` (KIND_GPT2 or KIND_GPT4).
    ``pos`` must be a pre-token boundary.

    Returns ``(pos, n_out)``: ``pos < data.size`` when the cache needs more room for the pre-token at ``pos``.
    """
    n = data.size
    ranks = np.empty(max(n, 1), np.int32)
    r = np.searchsorted(rhi, pos, side="right")  # the first region that ends after pos
    c = np.searchsorted(cuts, pos, side="right")  # the first cut after pos
    i = pos
    while i < n:
        if r < rlo.size and i >= rlo[r]:
            j = cuts[c]
            c += 1
            if j == rhi[r]:
                r += 1
        else:
            stop = rlo[r] if r < rlo.size else n
            j = next_gpt2(data, i, stop) if kind == KIND_GPT2 else next_gpt4(data, i, stop)
        # the pre-token data[i:j]: its ids from the cache, else merged and entered (the hit path stays inline)
        key = _key(data, i, j - i)
        f = _cache_find(data, i, j - i, key, tab, kbuf)
        if f >= 0:
            n_out = _copy_value(f, out, n_out, tab, vbuf)
        else:
            m = _encode_new(data, i, j - i, key, -f - 1, out, n_out, byte_ids, ta, tb, tv, tab, kbuf, vbuf, cst,
                            ranks)
            if m < 0:
                return i, n_out
            n_out = m
        i = j
    return n, n_out


def encode_word_python(word: bytes, byte_ids, pair_to_id: dict) -> list[int]:
    """The plain-Python twin of the merge loop (:func:`_merge`) for one word that is not a token as a whole."""
    parts = [int(byte_ids[b]) for b in word]
    if len(parts) > _LONG_WORD:
        return _encode_long_python(parts, pair_to_id)
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


def _encode_long_python(parts: list[int], pair_to_id: dict) -> list[int]:
    """The plain-Python twin of :func:`_merge_long`: the same ids in O(m log m). A linked list of positions and
    a heap of ``(rank, position)`` pairs; a popped pair is used only while the pair at its position still has
    that rank (stale entries left by earlier merges are skipped)."""
    m = len(parts)
    nxt = list(range(1, m)) + [-1]
    prv = list(range(-1, m - 1))
    alive = [True] * m
    heap = [(r, i) for i in range(m - 1) if (r := pair_to_id.get((parts[i], parts[i + 1]))) is not None]
    heapq.heapify(heap)
    while heap:
        r, i = heapq.heappop(heap)
        j = nxt[i] if alive[i] else -1
        if j == -1 or pair_to_id.get((parts[i], parts[j])) != r:
            continue
        parts[i] = r
        alive[j] = False
        k = nxt[j]
        nxt[i] = k
        if k != -1:
            prv[k] = i
            if (r2 := pair_to_id.get((parts[i], parts[k]))) is not None:
                heapq.heappush(heap, (r2, i))
        h = prv[i]
        if h != -1 and (r2 := pair_to_id.get((parts[h], parts[i]))) is not None:
            heapq.heappush(heap, (r2, h))
    return [p for p, a in zip(parts, alive) if a]


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
