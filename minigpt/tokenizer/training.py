"""BPE training: stream the text, count unique pre-tokens, learn merges with the Numba kernel.

Only the counts of unique pre-tokens are kept (a ``Counter``), never the text itself: files are read
``_READ_CHARS`` characters at a time and cut where the split pattern has a boundary anyway (just before a
space that follows a non-space ASCII character; with the GPT-2 and GPT-4 patterns this never changes the
pre-tokens, a custom pattern whose pre-tokens span such a place may see them cut there).

The merge loop (``minigpt.kernels.bpe.train_merges``) works on the unique words as int32 arrays, with pair
counts updated incrementally after each merge (only the words holding the merged pair are touched) and a
lazy max-heap to find the next pair; see that module for the data layout.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from pathlib import Path

import numpy as np

from ..errors import MiniGPTError
from ..kernels import bpe as bpe_kernels
from ..progress import progress_bar
from .limits import MAX_TOKEN_BYTES, MAX_VOCAB_SIZE
from .patterns import Splitter, safe_cut_before, surrogate_error

_READ_CHARS = 1 << 20
_BATCH = 256  # merges per kernel call (progress bar granularity)


def _file_chunks(path: Path):
    """Yield the text of a UTF-8 file in pieces cut at safe places."""
    if not path.is_file():
        raise MiniGPTError(f"training file not found: {path}")
    buf = ""
    try:
        with open(path, "r", encoding="utf-8", newline="") as f:
            while True:
                block = f.read(_READ_CHARS)
                if not block:
                    break
                buf += block
                cut = safe_cut_before(buf, 0, len(buf))
                if cut > 0:
                    yield buf[:cut], len(block)
                    buf = buf[cut:]
                else:
                    yield "", len(block)
    except UnicodeDecodeError as e:
        raise MiniGPTError(f"{path} is not UTF-8 text ({e})") from None
    if buf:
        yield buf, 0


def _sources(texts):
    """Yield ``(text, n_chars_read)`` pieces from a str, a Path, or a list/iterable of them."""
    if isinstance(texts, (str, os.PathLike)):
        texts = [texts]
    elif isinstance(texts, (bytes, bytearray)):
        raise MiniGPTError("train expects text (str), files (pathlib.Path) or a list of them, got bytes")
    try:
        it = iter(texts)
    except TypeError:
        raise MiniGPTError(f"train expects text (str), files (pathlib.Path) or a list of them, "
                           f"got {type(texts).__name__}") from None
    for t in it:
        if isinstance(t, str):
            yield t, len(t)
        elif isinstance(t, os.PathLike):
            yield from _file_chunks(Path(t))
        else:
            raise MiniGPTError(f"train expects text (str), files (pathlib.Path) or a list of them; got an item "
                               f"of type {type(t).__name__}")


def count_pretokens(texts, splitter: Splitter, special_tokens=(), progress=False) -> Counter:
    """Frequencies of the pre-tokens of ``texts`` (special-token text removed)."""
    counts: Counter = Counter()
    special_rx = None
    if special_tokens:
        special_rx = re.compile("|".join(re.escape(s) for s in sorted(special_tokens, key=lambda s: (-len(s), s))))
    bar = progress_bar(desc="counting pre-tokens", unit="char", unit_scale=True, disable=not progress, leave=False)
    with bar:
        for text, n in _sources(texts):
            if text:
                if special_rx is not None and any(s in text for s in special_tokens):
                    for piece in special_rx.split(text):
                        counts.update(splitter(piece))
                else:
                    counts.update(splitter(text))
            bar.update(n)
    return counts


def _pow2(n: int) -> int:
    return 1 << max(4, int(n - 1).bit_length())


def _grow(arr: np.ndarray, size: int, fill=None) -> np.ndarray:
    out = np.empty(size, arr.dtype) if fill is None else np.full(size, fill, arr.dtype)
    out[: arr.size] = arr
    return out


def learn_merges(words: list[bytes], counts: np.ndarray, n_new: int, progress=False):
    """Learn up to ``n_new`` new tokens from ``words`` (UTF-8 bytes, each with its count).

    Returns ``(merges, n_made)``: the list of ``(a, b)`` pairs that made new tokens ``256, 257, ...`` in order.
    """
    keep = [i for i, w in enumerate(words) if len(w) >= 2]
    words = [words[i] for i in keep]
    wcount = np.ascontiguousarray(counts[keep], dtype=np.int64)
    n_words = len(words)
    lens = np.fromiter(map(len, words), np.int64, n_words)
    start = np.zeros(n_words, np.int64)
    if n_words:
        np.cumsum(lens[:-1], out=start[1:])
    sym = np.frombuffer(b"".join(words), np.uint8).astype(np.int32)
    wlen = lens.copy()
    N = max(int(sym.size), 16)
    max_len = int(lens.max()) if n_words else 1

    sa = np.empty(N, np.int32)
    sb = np.empty(N, np.int32)
    scount = np.zeros(N, np.int64)
    shead = np.full(N, -1, np.int32)
    sstamp = np.full(N, -1, np.int64)
    node_w = np.empty(N, np.int32)
    node_next = np.empty(N, np.int32)
    hc = np.empty(N, np.int64)
    ha = np.empty(N, np.int32)
    hb = np.empty(N, np.int32)
    hs = np.empty(N, np.int32)
    ht = np.full(_pow2(4 * N), -1, np.int32)
    st = np.zeros(8, np.int64)
    bpe_kernels.train_init(sym, start, wlen, wcount, ht, sa, sb, scount, shead, sstamp, node_w, node_next,
                 hc, ha, hb, hs, st)

    max_tokens = 256 + n_new
    tok_start = np.zeros(max_tokens, np.int64)
    tok_len = np.zeros(max_tokens, np.int64)
    tok_start[:256] = np.arange(256)
    tok_len[:256] = 1
    tok_buf = np.zeros(max(4096, 256 + 16 * n_new), np.uint8)
    tok_buf[:256] = np.arange(256, dtype=np.uint8)
    bh_key = np.zeros(_pow2(2 * max_tokens), np.uint64)
    bh_id = np.full(bh_key.size, -1, np.int32)
    bpe_kernels.token_table_init(tok_buf, tok_start, tok_len, 256, bh_key, bh_id)
    st[bpe_kernels.ST_TOKENS] = 256
    st[bpe_kernels.ST_TOKBYTES] = 256
    wstamp = np.zeros(max(n_words, 1), np.int64)
    tmp_cov = np.zeros(max_len + 1, np.int8)
    tmp_new = np.zeros(max_len + 1, np.int8)
    touched = np.empty(sa.size, np.int32)
    cap = max(16, n_new + 16)
    out_a = np.empty(cap, np.int32)
    out_b = np.empty(cap, np.int32)
    out_id = np.empty(cap, np.int32)

    bar = progress_bar(n_new, desc="learning merges", unit="token", disable=not progress, leave=False)
    made = 0
    with bar:
        while True:
            room = out_a.size - int(st[bpe_kernels.ST_MERGES])
            if room == 0:
                out_a, out_b, out_id = (_grow(x, 2 * x.size) for x in (out_a, out_b, out_id))
                continue
            status = bpe_kernels.train_merges(sym, start, wlen, wcount, ht, sa, sb, scount, shead, sstamp, node_w,
                                              node_next, hc, ha, hb, hs, st, tok_start, tok_len, tok_buf, bh_key,
                                              bh_id, wstamp, tmp_cov, tmp_new, touched, out_a, out_b, out_id,
                                              max_tokens, min(_BATCH, room))
            now = int(st[bpe_kernels.ST_TOKENS]) - 256
            bar.update(now - made)
            made = now
            if status == 0:
                break
            if status == 2:
                need = int(st[bpe_kernels.ST_NEED])
                n_slots = int(st[bpe_kernels.ST_SLOTS])
                n_nodes, n_heap = int(st[bpe_kernels.ST_NODES]), int(st[bpe_kernels.ST_HEAP])
                if n_slots + need > sa.size:
                    size = max(2 * sa.size, n_slots + need)
                    sa, sb = _grow(sa, size), _grow(sb, size)
                    scount, shead, sstamp = _grow(scount, size), _grow(shead, size), _grow(sstamp, size)
                    touched = np.empty(size, np.int32)
                if 2 * (n_slots + need) > ht.size:
                    ht = bpe_kernels.rebuild_slot_table(sa, sb, n_slots, _pow2(4 * (n_slots + need)))
                if n_nodes + need > node_w.size:
                    size = max(2 * node_w.size, n_nodes + need)
                    node_w, node_next = _grow(node_w, size), _grow(node_next, size)
                if n_heap + need > hc.size:
                    size = max(2 * hc.size, n_heap + need)
                    hc, ha, hb, hs = _grow(hc, size), _grow(ha, size), _grow(hb, size), _grow(hs, size)
                if int(st[bpe_kernels.ST_TOKBYTES]) + need > tok_buf.size:
                    tok_buf = _grow(tok_buf, max(2 * tok_buf.size, int(st[bpe_kernels.ST_TOKBYTES]) + need))
    n_merges = int(st[bpe_kernels.ST_MERGES])
    merges = []
    nxt = 256
    for a, b, t in zip(out_a[:n_merges].tolist(), out_b[:n_merges].tolist(), out_id[:n_merges].tolist()):
        if t == nxt:  # a new token (others reused the id of a token with the same bytes)
            merges.append((a, b))
            nxt += 1
    return merges, made


def train_bpe(cls, texts, vocab_size, special_tokens, pattern, progress):
    """The body of :meth:`BPETokenizer.train`."""
    if isinstance(special_tokens, str):
        special_tokens = (special_tokens,)
    special_tokens = tuple(special_tokens or ())
    for s in special_tokens:
        if not isinstance(s, str) or not s:
            raise MiniGPTError(f"special tokens must be non-empty strings, got {s!r}")
    if len(set(special_tokens)) != len(special_tokens):
        raise MiniGPTError(f"special tokens must be distinct, got {list(special_tokens)}")
    if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool):
        raise MiniGPTError(f"vocab_size must be an integer, got {vocab_size!r}")
    vocab_size = int(vocab_size)
    if vocab_size > MAX_VOCAB_SIZE:
        raise MiniGPTError(f"vocab_size {vocab_size:,} is too large: at most {MAX_VOCAB_SIZE:,} tokens")
    lo = 256 + len(special_tokens)
    if vocab_size < lo:
        raise MiniGPTError(f"vocab_size must be at least {lo} (256 byte tokens + {len(special_tokens)} special "
                           f"tokens), got {vocab_size}")
    splitter = Splitter(pattern)
    counts = count_pretokens(texts, splitter, special_tokens, progress)
    words = []
    for w in counts:
        try:
            words.append(w.encode("utf-8"))
        except UnicodeEncodeError:
            raise surrogate_error(w) from None
    freq = np.fromiter(counts.values(), np.int64, len(counts))
    if any(len(w) > MAX_TOKEN_BYTES for w in words):  # learn from pieces: no token may exceed the limit
        cut_words, cut_freq = [], []
        for w, c in zip(words, freq.tolist()):
            for k in range(0, len(w), MAX_TOKEN_BYTES):
                cut_words.append(w[k:k + MAX_TOKEN_BYTES])
                cut_freq.append(c)
        words, freq = cut_words, np.array(cut_freq, np.int64)
    n_new = vocab_size - lo
    merges, made = learn_merges(words, freq, n_new, progress)
    if made < n_new:
        raise MiniGPTError(f"the training text is too small for vocab_size={vocab_size}: it has pairs for only "
                           f"{made} merges, so vocab_size can be at most {lo + made}")
    specials = {s: 256 + len(merges) + k for k, s in enumerate(special_tokens)}
    return cls(merges, specials, pattern)
