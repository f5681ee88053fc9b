"""Byte-level BPE: training, encoding, decoding, the project's save format and GPT-2's original files.

Vocabulary layout (shared by trained tokenizers and GPT-2's): ids ``0..255`` are the 256 single bytes (in
``byte_ids`` order: byte ``b`` has id ``byte_ids[b]``; the identity for trained tokenizers, a permutation for
GPT-2), id ``256 + i`` is the token made by merge ``i`` (the bytes of its two parts joined), and the special
tokens come last.

Encoding follows tiktoken's rule, so a tokenizer loaded from GPT-2's files gives tiktoken's ids exactly:
the text is cut into pre-tokens by the split pattern; a pre-token that is a token as a whole is that token;
otherwise, starting from its bytes, the adjacent pair whose joined bytes form the token with the lowest id is
merged, the leftmost such pair on ties, until no adjacent pair forms a token.

How encode runs (Numba backend; ``BPETokenizer._encode_ordinary`` is declared as a kernel with the
plain-Python path as its reference): one kernel call per text (``minigpt.kernels.bpe.encode_bytes``) splits the
ASCII stretches itself and takes the pre-tokens of the regions around non-ASCII characters from the ``regex``
package; every pre-token goes through a cache kept in arrays on the tokenizer (pre-token bytes -> ids,
seeded with the vocabulary, grown on demand, cleared past ``_CACHE_LIMIT`` entries or by
:meth:`BPETokenizer.clear_cache`). With the NumPy backend a plain-Python path gives the same ids.

Training (:meth:`BPETokenizer.train`) counts the unique pre-tokens of the text with their frequencies and
repeatedly merges the most frequent adjacent pair. **Tie-break rule**: among pairs with the same count, the
pair ``(a, b)`` with the smallest ``a`` wins, then the smallest ``b`` (ids: byte values for the 256 base
tokens, creation order for merged ones). When the joined bytes of the chosen pair are already a token (two
different pairs can spell the same bytes), the pair is merged into that token and no new token is added, so a
vocabulary never holds the same bytes twice and ``vocab_size`` counts distinct tokens.
"""
from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path

import numpy as np

from ..errors import DisallowedSpecialTokenError, MiniGPTError
from ..io import cache_dir, read_bytes_bounded, read_json
from ..kernels import bpe as bpe_kernels
from ..kernels.registry import backend, kernel
from . import gpt2_vocab
from .gpt2_vocab import gpt2_bytes_to_unicode
from .limits import MAX_FILE_BYTES, MAX_TOKEN_BYTES, MAX_VOCAB_BYTES
from .patterns import NON_ASCII, Splitter, resolve_pattern, safe_cut_after, safe_cut_before, surrogate_error
from .special import ENDOFTEXT
from .training import train_bpe

FORMAT = "minigpt-bpe"
FORMAT_VERSION = 1
_CACHE_LIMIT = 1 << 19  # pre-tokens (besides the vocabulary) kept in the encode cache before it is cleared
_READ_CHARS = 1 << 20  # characters read from a training file at a time


def _is_int(x) -> bool:
    """An integer (Python or NumPy), not a bool or a float."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _short(x, limit: int = 60) -> str:
    r = repr(x)
    return r if len(r) <= limit else r[:limit] + "..."


def _utf8_words(words: list) -> list:
    try:
        return [w.encode("utf-8") for w in words]
    except UnicodeEncodeError:
        raise surrogate_error("".join(words)) from None


def _ends(bs: list) -> np.ndarray:
    """The end offsets of the byte strings ``bs`` joined."""
    return np.cumsum(np.fromiter(map(len, bs), np.int64, len(bs)))


class _EncodeCache:
    """The arrays of the Numba encode cache (layout in :mod:`minigpt.kernels.bpe`): pre-token bytes -> ids.

    It starts out holding the regular tokens of the vocabulary; :meth:`clear` goes back to that state.
    """

    def __init__(self, kern, tok_buf: np.ndarray, tok_off: np.ndarray):
        """``tok_buf[tok_off[t]:tok_off[t + 1]]``: the bytes of regular token ``t``."""
        self._kern = kern
        n = tok_off.size - 1
        self.tab = np.zeros((1 << (2 * n + 64).bit_length(), 4), np.int64)
        self.kbuf = np.empty(tok_buf.size + 4096, np.uint8)
        self.vbuf = np.empty(4096, np.int32)
        self.cst = np.zeros(4, np.int64)
        kern.cache_init(tok_buf, tok_off, self.tab, self.kbuf, self.vbuf, self.cst)
        self.tok_buf, self.tok_off = tok_buf, tok_off  # the vocabulary's bytes (for the pair table)
        self._base = (self.tab.copy(), self.cst.copy())

    def arrays(self):
        return self.tab, self.kbuf, self.vbuf, self.cst

    @property
    def added(self) -> int:
        """Pre-tokens entered since the cache was built or cleared."""
        return int(self.cst[0] - self._base[1][0])

    def clear(self) -> None:
        self.tab = self._base[0].copy()
        self.cst[:] = self._base[1]

    def grow(self) -> None:
        """Make room for the pre-token a kernel stopped at: double the arrays that are short of it."""
        n, kbytes, vints, need = (int(x) for x in self.cst)
        if 2 * (n + 1) > len(self.tab):
            old = self.tab
            self.tab = np.zeros((2 * len(old), 4), np.int64)
            self._kern.cache_rehash(old, self.tab)
        if kbytes + need > self.kbuf.size:
            self.kbuf = _grown(self.kbuf, max(2 * self.kbuf.size, kbytes + need))
        if vints + need + 1 > self.vbuf.size:
            self.vbuf = _grown(self.vbuf, max(2 * self.vbuf.size, vints + need + 1))


def _unique_encoder(tokens: list[bytes]) -> dict[bytes, int]:
    """``{token bytes: id}``; a MiniGPTError when two tokens have the same bytes."""
    encoder = dict(zip(tokens, range(len(tokens))))
    if len(encoder) != len(tokens):
        seen: dict[bytes, int] = {}
        for i, t in enumerate(tokens):
            if t in seen:
                raise MiniGPTError(f"tokens {seen[t]} and {i} have the same bytes {t!r}; a vocabulary must "
                                   "not hold the same bytes twice")
            seen[t] = i
    return encoder


def _grown(a: np.ndarray, rows: int) -> np.ndarray:
    out = np.empty((rows,) + a.shape[1:], a.dtype)
    out[: len(a)] = a
    return out


class BPETokenizer:
    """A byte-level BPE tokenizer (see the module docstring for the vocabulary layout and the rules).

    Build one with :meth:`train`, :meth:`load` (the project's format) or :meth:`from_gpt2` (GPT-2's files).
    """

    def __init__(self, merges, special_tokens=None, pattern="gpt2", byte_ids=None):
        """``merges[i] = (a, b)`` makes token ``256 + i``; ``special_tokens`` maps text to id (ids right after
        the merged tokens, in any order); ``byte_ids[b]`` is the id of byte ``b`` (identity when None)."""
        self._splitter = Splitter(pattern)
        if byte_ids is None:
            byte_ids = list(range(256))
        if not isinstance(byte_ids, (list, tuple)) or len(byte_ids) != 256 or not all(map(_is_int, byte_ids)):
            raise MiniGPTError("byte_ids must be a list of 256 integers, a permutation of 0..255 (the ids of the "
                               f"256 single bytes), got {_short(byte_ids)}")
        byte_ids = [int(x) for x in byte_ids]
        if sorted(byte_ids) != list(range(256)):
            raise MiniGPTError("byte_ids must be a permutation of 0..255 (the ids of the 256 single bytes)")
        if not isinstance(merges, (list, tuple)):
            raise MiniGPTError(f"merges must be a list of [a, b] pairs of token ids, got {_short(merges)}")
        # the lengths first (cheap): a hostile merge list (e.g. a chain that grows one token by a byte per merge)
        # would otherwise spell out gigabytes of token bytes
        lengths = [1] * (256 + len(merges))
        total = 256
        pairs: list[tuple[int, int]] = []
        for i, m in enumerate(merges):
            try:
                a, b = m
            except (TypeError, ValueError):
                a = b = None
            if type(a) is not int or type(b) is not int:  # the fast test; NumPy integers pass the slow one
                if not (_is_int(a) and _is_int(b)):
                    raise MiniGPTError(f"merge {i} must be a pair of integer token ids [a, b], got {_short(m)}")
                a, b = int(a), int(b)
            n = 256 + i
            if not (0 <= a < n and 0 <= b < n):
                raise MiniGPTError(f"merge {i} ({a}, {b}) refers to a token that does not exist yet (ids < {n})")
            size = lengths[a] + lengths[b]
            if size > MAX_TOKEN_BYTES:
                raise MiniGPTError(f"merge {i} ({a}, {b}) makes a token of {size} bytes; tokens are limited to "
                                   f"{MAX_TOKEN_BYTES} bytes")
            total += size
            if total > MAX_VOCAB_BYTES:
                raise MiniGPTError(f"the merges up to merge {i} make tokens of {total:,} bytes in total; a "
                                   f"vocabulary is limited to {MAX_VOCAB_BYTES:,} bytes")
            lengths[n] = size
            pairs.append((a, b))
        tokens: list[bytes] = [b""] * 256
        for b, i in enumerate(byte_ids):
            tokens[i] = bytes([b])
        for a, b in pairs:
            tokens.append(tokens[a] + tokens[b])
        self._encoder = _unique_encoder(tokens)
        self._finish(len(tokens), pairs, tokens, byte_ids, special_tokens)

    def _finish(self, n_regular, merges, tokens, byte_ids, special_tokens, tok_arrays=None, pair_entries=None):
        """The special tokens' checks and the state shared by every constructor. ``merges`` (a list of pairs)
        and ``tokens`` (the regular tokens' bytes) may be None when given as arrays instead: ``merges`` an (M, 2)
        array, ``tok_arrays`` = ``(tok_buf, tok_off)``; the lists are then made on first use. ``pair_entries``:
        ``(pa, pb, pv)`` as :meth:`_pairs` lists them, as int32 arrays (computed on the first encode when
        None)."""
        special_tokens = dict(special_tokens or {})
        for s, i in special_tokens.items():
            if not isinstance(s, str) or not s or len(s) > MAX_TOKEN_BYTES:
                raise MiniGPTError(f"a special token must be a non-empty string of at most {MAX_TOKEN_BYTES} "
                                   f"characters, got {_short(s)}")
            if not _is_int(i):
                raise MiniGPTError(f"the id of special token {s!r} must be an integer, got {_short(i)}")
        ids = sorted(special_tokens.values())
        if ids != list(range(n_regular, n_regular + len(ids))):
            raise MiniGPTError(f"special token ids must be {n_regular}..{n_regular + len(ids) - 1} (right after "
                               f"the {n_regular} byte and merged tokens), got {ids}")
        if isinstance(merges, list):
            self._merges = merges
        else:
            self._merge_arr = merges
        self._special: dict[str, int] = {s: int(i) for s, i in sorted(special_tokens.items(), key=lambda x: x[1])}
        self._n_regular = n_regular
        self._byte_ids = byte_ids
        if tokens is not None:
            self._tokens = tokens + [s.encode("utf-8") for s in self._special]
        self._tok_arrays = tok_arrays
        self._pair_entries = pair_entries
        self._pair_lists = None  # (a, b, t): every pair of tokens whose joined bytes are token t
        self._pair_table = None  # the same as a Numba hash table (kernels.bpe.build_pair_table)
        self._pair_dict = None  # the same as a dict (the Python path)
        self._kcache = None  # the Numba encode cache (_EncodeCache), built on first use
        self._special_re = {}
        self._ext_ids = self._int_ids = None  # the file's ids <-> the engine's (see renumber)
        self.clear_cache()

    def renumber(self, file_ids) -> "BPETokenizer":
        """Show the ids of another vocabulary file: ``file_ids[i]`` is the id the file gives to this tokenizer's
        token ``i`` (the engine keeps the 256 bytes first, then the merged tokens in merge order, then the
        special tokens; Hugging Face and tiktoken files may number them otherwise). Encoding then returns, and
        decoding takes, the file's ids. Returns ``self``."""
        ext = np.asarray(file_ids, dtype=np.int64)
        if ext.shape != (self.vocab_size,) or not np.array_equal(np.sort(ext), np.arange(self.vocab_size)):
            raise MiniGPTError(f"renumber: file_ids must be a permutation of 0..{self.vocab_size - 1}")
        if np.array_equal(ext, np.arange(self.vocab_size)):
            self._ext_ids = self._int_ids = None
            return self
        self._ext_ids = ext
        self._int_ids = np.empty_like(ext)
        self._int_ids[ext] = np.arange(self.vocab_size)
        return self

    def _ext(self, ids: list[int]) -> list[int]:
        return ids if self._ext_ids is None else self._ext_ids[ids].tolist()

    # --- the lists made on first use when a constructor gave arrays ------------------------------------
    @functools.cached_property
    def _tokens(self) -> list[bytes]:
        """Every token's bytes, by id (a special token's text as UTF-8)."""
        buf, off = self._tok_arrays
        data, o = buf.tobytes(), off.tolist()
        return list(map(data.__getitem__, map(slice, o, o[1:]))) + [s.encode("utf-8") for s in self._special]

    @functools.cached_property
    def _encoder(self) -> dict[bytes, int]:
        """The regular tokens' bytes -> id."""
        return dict(zip(self._tokens[: self._n_regular], range(self._n_regular)))

    @functools.cached_property
    def _merges(self) -> list[tuple[int, int]]:
        return list(zip(self._merge_arr[:, 0].tolist(), self._merge_arr[:, 1].tolist()))

    # --- properties ------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of tokens: 256 bytes + merged tokens + special tokens."""
        return self._n_regular + len(self._special)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def pattern(self) -> str:
        """The split pattern's regular expression."""
        return self._splitter.pattern

    @property
    def pattern_name(self) -> str:
        """``"gpt2"``, ``"gpt4"`` or ``"custom"``."""
        return self._splitter.name

    @property
    def special_tokens(self) -> dict[str, int]:
        """The special tokens and their ids (a copy)."""
        if self._ext_ids is not None:
            return {t: int(self._ext_ids[i]) for t, i in self._special.items()}
        return dict(self._special)

    @property
    def merges(self) -> list[tuple[int, int]]:
        """``merges[i] = (a, b)``: token ``256 + i`` is token ``a`` followed by token ``b``."""
        return list(self._merges)

    @property
    def byte_ids(self) -> list[int]:
        """``byte_ids[b]``: the id of the single byte ``b``."""
        return list(self._byte_ids)

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, pattern={self.pattern_name!r}, "
                f"special_tokens={list(self._special)})")

    # --- token <-> id ----------------------------------------------------------------------------------
    def id_to_token(self, token_id: int) -> bytes:
        """The bytes of one token (a special token's text as UTF-8)."""
        try:
            i = int(token_id)
        except (TypeError, ValueError):
            raise MiniGPTError(f"a token id must be an integer, got {token_id!r}") from None
        if not 0 <= i < self.vocab_size or i != token_id:
            raise MiniGPTError(f"token id {token_id!r} is out of range: ids go from 0 to {self.vocab_size - 1}")
        return self._tokens[i if self._int_ids is None else int(self._int_ids[i])]

    def token_to_id(self, token) -> int:
        """The id of a token given as bytes, or as text (a special token, or the token's UTF-8 text)."""
        if isinstance(token, str):
            if token in self._special:
                return self._ext([self._special[token]])[0]
            key = token.encode("utf-8", "surrogatepass")
        elif isinstance(token, (bytes, bytearray)):
            key = bytes(token)
        else:
            raise MiniGPTError(f"a token must be bytes or str, got {type(token).__name__}")
        i = self._encoder.get(key)
        if i is None:
            raise MiniGPTError(f"{token!r} is not a token of this vocabulary")
        return self._ext([i])[0]

    # --- encoding --------------------------------------------------------------------------------------
    def _pairs(self):
        """``(pa, pb, pv)``: every pair of tokens ``(pa[i], pb[i])`` whose joined bytes are token ``pv[i]`` (which
        is also the pair's rank: lower ids merge first)."""
        if self._pair_lists is None:
            enc = self._encoder
            pa, pb, pv = [], [], []
            for t in range(256, self._n_regular):
                tok = self._tokens[t]
                for k in range(1, len(tok)):
                    x = enc.get(tok[:k])
                    if x is not None:
                        y = enc.get(tok[k:])
                        if y is not None:
                            pa.append(x)
                            pb.append(y)
                            pv.append(t)
            self._pair_lists = (pa, pb, pv)
        return self._pair_lists

    def _kernel_state(self, kern):
        """The Numba encode cache, with the pair table and the byte ids as arrays (built on first use)."""
        if self._pair_table is None:  # the cache may be seeded already (from_gpt2), not used yet
            if self._tok_arrays is None:
                tokens = self._tokens[: self._n_regular]
                off = np.zeros(len(tokens) + 1, np.int64)
                np.cumsum(np.fromiter(map(len, tokens), np.int64, len(tokens)), out=off[1:])
                self._tok_arrays = (np.frombuffer(b"".join(tokens), np.uint8), off)
            cache = self._kcache if self._kcache is not None else _EncodeCache(kern, *self._tok_arrays)
            if self._pair_entries is None:
                # the pair table's entries, found through the freshly seeded cache (a Numba pass, ~100x faster
                # than the Python dictionary walk of _pairs(), which the NumPy path keeps)
                self._pair_entries = kern.vocab_pairs(cache.tok_buf, cache.tok_off, 256, cache.tab, cache.kbuf)
            pa, pb, pv = self._pair_entries
            size = 1 << max(4, (2 * len(pa) + 1).bit_length())
            self._pair_table = kern.build_pair_table(pa, pb, pv, size)
            self._byte_ids_arr = np.array(self._byte_ids, np.int32)
            self._kcache = cache
        return self._kcache

    def _encode_kernel(self, kern, data: bytes, kind: int, regions=(), cuts=()) -> list[int]:
        """Token ids of the UTF-8 text ``data`` (Numba path; arguments as for ``kernels.bpe.encode_bytes``:
        ``regions`` are ``(lo, hi)`` byte ranges whose pre-tokens end at ``cuts``, the rest is ASCII)."""
        cache = self._kcache
        buf = np.frombuffer(data, np.uint8)
        rg = np.array(regions, np.int64).reshape(-1, 2)
        rlo, rhi = rg[:, 0].copy(), rg[:, 1].copy()
        cuts = np.array(cuts, np.int64)
        out = np.empty(buf.size, np.int32)
        pos = n_out = 0
        while True:
            pos, n_out = kern.encode_bytes(buf, pos, kind, rlo, rhi, cuts, out, n_out, self._byte_ids_arr,
                                           *self._pair_table, *cache.arrays())
            if pos == buf.size:
                return out[:n_out].tolist()
            cache.grow()

    def _encode_ordinary_numpy(self, text: str) -> list[int]:
        """The plain-Python path (the reference): split, then a dict cache per pre-token."""
        encode_word_python = bpe_kernels.encode_word_python
        if self._pair_dict is None:
            pa, pb, pv = self._pairs()
            self._pair_dict = dict(zip(zip(pa, pb), pv))
        code, enc = self._code, self._encoder
        if len(code) > _CACHE_LIMIT:
            code.clear()
        out: list[int] = []
        for w in self._splitter(text):
            ids = code.get(w)
            if ids is None:
                try:
                    b = w.encode("utf-8")
                except UnicodeEncodeError:
                    raise surrogate_error(w) from None
                i = enc.get(b)
                ids = [i] if i is not None else encode_word_python(b, self._byte_ids, self._pair_dict)
                code[w] = ids
            out += ids
        return out

    def _encode_ordinary_numba(self, text: str) -> list[int]:
        """The Numba path: one kernel call splits (ASCII stretches) and encodes through the array cache."""
        kern = bpe_kernels
        cache = self._kernel_state(kern)
        if cache.added > _CACHE_LIMIT:
            cache.clear()
        sp = self._splitter
        if sp.name == "custom":  # any regular expression: `regex` splits, the kernel encodes the pre-tokens
            bs = _utf8_words(sp(text))
            return self._encode_kernel(kern, b"".join(bs), 0, [(0, sum(map(len, bs)))], _ends(bs))
        kind = kern.KIND_GPT2 if sp.name == "gpt2" else kern.KIND_GPT4
        if text.isascii():  # O(1) in CPython: the kernel splits the whole text
            return self._encode_kernel(kern, text.encode("ascii"), kind)
        # the kernel splits the ASCII stretches; `regex` splits the regions around non-ASCII runs, which start
        # and end at safe cuts (where every pre-token of the pattern ends anyway)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise surrogate_error(text) from None
        regions, cuts = [], []
        prev = 0  # in characters
        at = 0  # the byte offset of text[prev]
        for m in NON_ASCII.finditer(text):
            a, b = m.span()
            if a < prev:
                continue  # inside the region already given to `regex`
            left = safe_cut_before(text, prev, a)
            right = safe_cut_after(text, b + 1)
            at += left - prev  # text[prev:left] is ASCII
            lo = at
            for w in sp.slow(text, left, right):
                at += len(w.encode("utf-8"))
                cuts.append(at)
            regions.append((lo, at))
            prev = right
        return self._encode_kernel(kern, data, kind, regions, cuts)

    _encode_ordinary = kernel(_encode_ordinary_numpy, _encode_ordinary_numba,
                              """Token ids of ``text``: the Python reference or the Numba path (same ids).""")

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` treating special-token text like any other text."""
        if not isinstance(text, str):
            raise MiniGPTError(f"encode expects a str, got {type(text).__name__}")
        return self._ext(self._encode_ordinary(text))

    def _special_sets(self, allowed_special, disallowed_special):
        specials = self._special
        if allowed_special == "all":
            allowed = set(specials)
        else:
            if isinstance(allowed_special, str):
                raise MiniGPTError("allowed_special must be 'all' or a collection of special tokens "
                                   f"(e.g. {{{allowed_special!r}}}), got the string {allowed_special!r}")
            allowed = set(allowed_special)
            unknown = allowed.difference(specials)
            if unknown:
                raise MiniGPTError(f"allowed_special names tokens that are not special tokens of this "
                                   f"tokenizer: {sorted(unknown)}; its special tokens are {list(specials)}")
        if disallowed_special == "all":
            disallowed = set(specials) - allowed
        else:
            if isinstance(disallowed_special, str):
                raise MiniGPTError("disallowed_special must be 'all' or a collection of special tokens")
            disallowed = set(disallowed_special)
        return allowed, disallowed

    def encode(self, text: str, *, allowed_special=(), disallowed_special="all") -> list[int]:
        """Token ids of ``text``.

        Special tokens are recognised only when allowed: ``allowed_special="all"`` or a set such as
        ``{"<|endoftext|>"}``. As in tiktoken, text that contains a special token which is not allowed is an
        error (so user text cannot smuggle in control tokens); pass ``disallowed_special=()`` to encode such
        text as ordinary text instead.
        """
        if not isinstance(text, str):
            raise MiniGPTError(f"encode expects a str, got {type(text).__name__}")
        allowed, disallowed = self._special_sets(allowed_special, disallowed_special)
        for s in disallowed:
            if s in text:
                raise DisallowedSpecialTokenError(
                    f"the text contains the special token {s!r}, which is not allowed here: pass "
                    f"allowed_special={{{s!r}}} (or 'all') to encode it as its special token, or "
                    "disallowed_special=() to encode it as ordinary text", token=s)
        if not allowed or not any(s in text for s in allowed):
            return self._ext(self._encode_ordinary(text))
        key = frozenset(allowed)
        rx = self._special_re.get(key)
        if rx is None:
            rx = re.compile("(" + "|".join(re.escape(s) for s in sorted(allowed, key=lambda s: (-len(s), s)))
                            + ")")
            self._special_re[key] = rx
        out: list[int] = []
        for k, piece in enumerate(rx.split(text)):
            if k % 2:
                out.append(self._special[piece])
            elif piece:
                out += self._encode_ordinary(piece)
        return self._ext(out)

    def encode_batch(self, texts, *, allowed_special=(), disallowed_special="all") -> list[list[int]]:
        """:meth:`encode` of each text of a list."""
        if isinstance(texts, str):
            raise MiniGPTError("encode_batch expects a list of strings; use encode() for a single string")
        return [self.encode(t, allowed_special=allowed_special, disallowed_special=disallowed_special)
                for t in texts]

    def clear_cache(self) -> None:
        """Forget the encodings of pre-tokens seen so far (they are recomputed on demand)."""
        self._code: dict[str, list[int]] = {}  # the Python path's cache: pre-token -> ids
        if self._kcache is not None:
            self._kcache.clear()

    # --- decoding --------------------------------------------------------------------------------------
    def _check_ids(self, ids) -> list[int]:
        if isinstance(ids, np.ndarray):
            if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
                raise MiniGPTError(f"token ids must be a 1-D array of integers, got shape {ids.shape} and "
                                   f"dtype {ids.dtype}")
            ids = ids.tolist()
        elif isinstance(ids, (int, np.integer)):
            ids = [int(ids)]
        elif isinstance(ids, (str, bytes)):
            raise MiniGPTError(f"decode expects a sequence of token ids, got {type(ids).__name__}")
        else:
            ids = list(ids)
        if ids:
            try:
                lo, hi = min(ids), max(ids)
            except TypeError:
                bad = next(i for i in ids if not isinstance(i, (int, np.integer)))
                raise MiniGPTError(f"token ids must be integers, got {bad!r}") from None
            n = self.vocab_size
            if lo < 0 or hi >= n:
                bad = lo if lo < 0 else hi
                raise MiniGPTError(f"token id {bad} is out of range: ids go from 0 to {n - 1}")
            if not all(isinstance(i, (int, np.integer)) for i in ids):
                bad = next(i for i in ids if not isinstance(i, (int, np.integer)))
                raise MiniGPTError(f"token ids must be integers, got {bad!r}")
        return ids

    def decode_bytes(self, ids) -> bytes:
        """The exact bytes of a sequence of token ids."""
        ids = self._check_ids(ids)
        if self._int_ids is not None:
            ids = self._int_ids[ids].tolist()
        return b"".join(map(self._tokens.__getitem__, ids))

    def decode(self, ids) -> str:
        """The text of a sequence of token ids; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # --- training --------------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts, vocab_size: int, special_tokens=(ENDOFTEXT,), pattern="gpt2",
              progress: bool = False) -> "BPETokenizer":
        """Learn a vocabulary of exactly ``vocab_size`` tokens (256 bytes + merges + special tokens).

        ``texts``: a string, a list of strings (separate documents), or files given as ``pathlib.Path`` (alone
        or in the list; a plain ``str`` is always text). Files are read in chunks and only the counts of their
        unique pre-tokens are kept. Special-token text inside the training text separates documents and is
        not learnt from. ``pattern``: ``"gpt2"``, ``"gpt4"`` or a regular expression. ``progress``: show
        progress bars (tqdm). Raises MiniGPTError when the text is too small to yield ``vocab_size`` tokens.
        """
        return train_bpe(cls, texts, vocab_size, special_tokens, pattern, progress)

    # --- the project's own format ----------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the tokenizer as JSON (format ``minigpt-bpe`` version 1, one merge per line)."""
        path = Path(path)
        head = {"format": FORMAT, "version": FORMAT_VERSION,
                "pattern": self.pattern_name if self.pattern_name != "custom" else self.pattern,
                "special_tokens": self._special}
        lines = ["{"]
        for k, v in head.items():
            lines.append(f"  {json.dumps(k)}: {json.dumps(v)},")
        if self._byte_ids != list(range(256)):
            lines.append(f'  "byte_ids": {json.dumps(self._byte_ids)},')
        if self._ext_ids is not None:  # the ids another vocabulary file gave the tokens (see renumber)
            lines.append(f'  "file_ids": {json.dumps(self._ext_ids.tolist())},')
        if self._merges:
            lines.append('  "merges": [')
            lines.append(",\n".join(f"    [{a}, {b}]" for a, b in self._merges))
            lines.append("  ]")
        else:
            lines.append('  "merges": []')
        lines.append("}")
        tmp = path.with_name(path.name + ".tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path) -> "BPETokenizer":
        """Read a tokenizer written by :meth:`save`."""
        path = Path(path)
        if path.is_dir():
            raise MiniGPTError(f"{path} is a directory; BPETokenizer.load expects the JSON file written by save() "
                               "(for GPT-2's encoder.json + vocab.bpe use BPETokenizer.from_gpt2)")
        d = read_json(path, "minigpt tokenizer file", max_bytes=MAX_FILE_BYTES)
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise MiniGPTError(f"{path} is not a minigpt tokenizer file (no \"format\": \"{FORMAT}\")")
        if d.get("version") != FORMAT_VERSION:
            raise MiniGPTError(f"{path} has tokenizer format version {d.get('version')!r}; this minigpt reads "
                               f"version {FORMAT_VERSION}")
        for key in ("pattern", "merges", "special_tokens"):
            if key not in d:
                raise MiniGPTError(f"{path} lacks the field {key!r}")
        if not isinstance(d["special_tokens"], dict) or not isinstance(d["merges"], list):
            raise MiniGPTError(f"{path}: 'special_tokens' must be an object and 'merges' a list")
        if not isinstance(d["pattern"], str):
            raise MiniGPTError(f"{path}: 'pattern' must be a string, got {_short(d['pattern'])}")
        try:
            tok = cls(d["merges"], d["special_tokens"], d["pattern"], d.get("byte_ids"))
            return tok if d.get("file_ids") is None else tok.renumber(d["file_ids"])
        except MiniGPTError as e:
            raise MiniGPTError(f"{path}: {e}") from None

    # --- GPT-2's original files ------------------------------------------------------------------------
    @classmethod
    def from_gpt2(cls, encoder_json, vocab_bpe=None, pattern="gpt2", cache=True) -> "BPETokenizer":
        """Load GPT-2's ``encoder.json`` and ``vocab.bpe`` (pass the two paths, or the folder holding both).

        The result encodes exactly like tiktoken's ``gpt2`` encoding. Entries of ``encoder.json`` past the
        merged tokens (``<|endoftext|>``) become special tokens.

        ``cache``: keep the parsed vocabulary in a binary file under ``<minigpt cache>/tokenizers/`` (named by
        a hash of both files' bytes, so an edited file is parsed afresh) and load it from there next time;
        ``False`` reads only the two files. Vocabularies of fewer than 4,096 merges are never cached.
        """
        encoder_json = Path(encoder_json)
        if vocab_bpe is None:
            if not encoder_json.is_dir():
                raise MiniGPTError("from_gpt2 needs the paths of encoder.json and vocab.bpe, or their folder")
            vocab_bpe = encoder_json / "vocab.bpe"
            encoder_json = encoder_json / "encoder.json"
        vocab_bpe = Path(vocab_bpe)
        for p in (encoder_json, vocab_bpe):
            if not p.is_file():
                raise MiniGPTError(f"GPT-2 vocabulary file not found: {p}" if not p.exists() else
                                   f"{p} is not a regular file (a FIFO, device or folder), not GPT-2's {p.name}")
        key = cached = None
        if cache:
            try:
                raw = []
                for p in (encoder_json, vocab_bpe):
                    if p.stat().st_size > MAX_FILE_BYTES:
                        raise MiniGPTError(f"{p} is larger than the {MAX_FILE_BYTES:,} bytes allowed")
                    raw.append(p.read_bytes())
            except OSError as e:
                raise MiniGPTError(f"cannot read {p}: {e.strerror or e}") from None
            key = gpt2_vocab.source_key(*raw)
            cached = gpt2_vocab.cache_file(cache_dir(), key)
            v = gpt2_vocab.read_cache(cached, key)
            if v is not None:
                try:
                    tok = cls._from_vocab(v, pattern, joined=False)  # the file's checksum vouches for the rest
                except MiniGPTError:
                    tok = None
                if tok is not None:
                    return tok
        encoder = read_json(encoder_json, "GPT-2 encoder.json", max_bytes=MAX_FILE_BYTES)
        try:  # a regular file of at most MAX_FILE_BYTES (a FIFO or /dev/zero is refused, not read forever)
            bpe_text = read_bytes_bounded(vocab_bpe, "GPT-2 vocab.bpe", MAX_FILE_BYTES).decode("utf-8")
        except UnicodeDecodeError:
            raise MiniGPTError(f"{vocab_bpe} is not GPT-2's vocab.bpe (not UTF-8 text)") from None
        seeded = []

        def pairs_of(tok_buf, tok_off):  # the encode cache seeded with the tokens finds the pairs (kept for encode)
            seeded.append(_EncodeCache(bpe_kernels, tok_buf, tok_off))
            c = seeded[0]
            return bpe_kernels.vocab_pairs(c.tok_buf, c.tok_off, 256, c.tab, c.kbuf)

        v = gpt2_vocab.parse(encoder, bpe_text, pairs_of if backend() == "numba" else None)
        tok = cls._from_vocab(v, pattern, joined=False) if v is not None else None  # parse() matched the strings
        if tok is not None and seeded and tok._tok_arrays[0] is seeded[0].tok_buf:
            tok._kcache = seeded[0]
        if tok is None:  # not in the usual shape: line by line, naming the first fault
            tok = cls._from_gpt2_lines(encoder, bpe_text, encoder_json, vocab_bpe, pattern)
        if cached is not None and tok._n_regular - 256 >= gpt2_vocab.CACHE_MIN_MERGES and backend() == "numba":
            tok._kernel_state(bpe_kernels)  # the pair entries (the first encode needs them anyway)
            buf, off = tok._tok_arrays
            merges = tok.__dict__.get("_merge_arr")
            if merges is None:
                merges = np.array(tok._merges, np.int64).reshape(-1, 2)
            try:
                gpt2_vocab.write_cache(cached, key, gpt2_vocab.Vocab(buf, np.diff(off), merges, tok._special,
                                                                     tok._pair_entries))
            except OSError:
                pass  # a read-only cache folder only costs the parsing next time
        return tok

    @classmethod
    def _from_vocab(cls, v, pattern, joined: bool) -> "BPETokenizer | None":
        """A tokenizer from a :class:`gpt2_vocab.Vocab`, or None when :func:`gpt2_vocab.check` refuses it
        (``joined``: also check that each merged token is its two parts joined). The token list, the
        bytes -> id dictionary and the merge list are made on first use (the Numba encode path needs none)."""
        byte_ids = gpt2_vocab.check(v, joined)
        if byte_ids is None:
            return None
        self = cls.__new__(cls)
        self._splitter = Splitter(pattern)
        buf = v.tok_buf if not v.tok_buf.flags.writeable else np.frombuffer(v.tok_buf.tobytes(), np.uint8)
        self._finish(len(v.lens), v.merges, None, byte_ids, v.special, (buf, v.offsets()), v.pairs)
        return self

    @classmethod
    def _from_gpt2_lines(cls, encoder, bpe_text, encoder_json, vocab_bpe, pattern) -> "BPETokenizer":
        """:meth:`from_gpt2` one line and one entry at a time: accepts what the whole-file reading does not
        expect (e.g. blank lines) and names the first faulty entry or line."""
        bad = next((k for k, v in encoder.items() if type(v) is not int), None)
        if bad is not None:
            raise MiniGPTError(f"{encoder_json}: the id of {bad!r} must be an integer, got {_short(encoder[bad])}")
        u2b = {c: b for b, c in gpt2_bytes_to_unicode().items()}

        def to_bytes(s, where):
            try:
                return bytes(u2b[c] for c in s)
            except KeyError:
                raise MiniGPTError(f"{where}: {s!r} uses characters outside GPT-2's byte alphabet") from None

        lines = bpe_text.split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        by_id = {int(i): s for s, i in encoder.items()}
        byte_ids = [0] * 256
        for i in range(256):
            if i not in by_id or len(by_id[i]) != 1 or by_id[i] not in u2b:
                raise MiniGPTError(f"{encoder_json}: ids 0..255 must be the 256 single bytes (id {i} is "
                                   f"{by_id.get(i)!r})")
            byte_ids[u2b[by_id[i]]] = i
        merges = []
        for n, line in enumerate(lines, start=2):
            if not line:
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise MiniGPTError(f"{vocab_bpe} line {n}: expected two tokens separated by a space, got {line!r}")
            try:
                a, b = encoder[parts[0]], encoder[parts[1]]
            except KeyError as e:
                raise MiniGPTError(f"{vocab_bpe} line {n}: {e.args[0]!r} is not in {encoder_json.name}") from None
            t = 256 + len(merges)
            if by_id.get(t) != parts[0] + parts[1]:
                raise MiniGPTError(f"{vocab_bpe} line {n}: merge {line!r} should make token id {t} in "
                                   f"{encoder_json.name}, which is {by_id.get(t)!r}")
            merges.append((a, b))
        n_regular = 256 + len(merges)
        special = {s: i for s, i in encoder.items() if i >= n_regular}
        for s, i in encoder.items():
            if i < n_regular:
                to_bytes(s, encoder_json)
        return cls(merges, special, pattern, byte_ids)

    def to_gpt2(self, directory) -> Path:
        """Write ``encoder.json`` and ``vocab.bpe`` in GPT-2's layout into ``directory`` (created if needed).

        The split pattern is not part of these files: load them back with ``from_gpt2(..., pattern=...)``.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        b2u = gpt2_bytes_to_unicode()

        def show(tok: bytes) -> str:
            return "".join(b2u[x] for x in tok)

        encoder = {show(t): i for i, t in enumerate(self._tokens[: self._n_regular])}
        encoder.update(self._special)
        (directory / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
        lines = ["#version: 0.2"] + [f"{show(self._tokens[a])} {show(self._tokens[b])}" for a, b in self._merges]
        (directory / "vocab.bpe").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return directory


__all__ = ["BPETokenizer", "gpt2_bytes_to_unicode", "safe_cut_before", "resolve_pattern"]
