"""Byte-level BPE: training, encoding, decoding, the project's save format and GPT-2's original files.

Vocabulary layout (shared by trained tokenizers and GPT-2's): ids ``0..255`` are the 256 single bytes (in
``byte_ids`` order: byte ``b`` has id ``byte_ids[b]``; the identity for trained tokenizers, a permutation for
GPT-2), id ``256 + i`` is the token made by merge ``i`` (the bytes of its two parts joined), and the special
tokens come last.

Encoding follows tiktoken's rule, so a tokenizer loaded from GPT-2's files gives tiktoken's ids exactly:
the text is cut into pre-tokens by the split pattern; a pre-token that is a token as a whole is that token;
otherwise, starting from its bytes, the adjacent pair whose joined bytes form the token with the lowest id is
merged, the leftmost such pair on ties, until no adjacent pair forms a token.

Training (:meth:`BPETokenizer.train`) counts the unique pre-tokens of the text with their frequencies and
repeatedly merges the most frequent adjacent pair. **Tie-break rule**: among pairs with the same count, the
pair ``(a, b)`` with the smallest ``a`` wins, then the smallest ``b`` (ids: byte values for the 256 base
tokens, creation order for merged ones). When the joined bytes of the chosen pair are already a token (two
different pairs can spell the same bytes), the pair is merged into that token and no new token is added, so a
vocabulary never holds the same bytes twice and ``vocab_size`` counts distinct tokens.
"""
from __future__ import annotations

import json
import os
import re
from itertools import islice
from pathlib import Path

import numpy as np

from ..errors import MiniGPTError
from .patterns import _NON_ASCII, Splitter, resolve_pattern, safe_cut_after, safe_cut_before

_BLOCK = 4096  # characters per block of encode's loop
_PIECE_BASE = -(1 << 40)  # cache codes <= this stand for a run of word codes (a space piece)
_WS_SPACE = re.compile(r"[\t\n\x0b\x0c\r ] ")  # a space after whitespace: not a safe cut


def _has_ws_space(block: str) -> bool:
    return "  " in block or "\n " in block or "\t " in block or "\r " in block or "\x0b " in block or "\x0c " in block

FORMAT = "minigpt-bpe"
FORMAT_VERSION = 1
_CACHE_LIMIT = 1 << 19  # pre-tokens kept in the encode cache before it is cleared
_READ_CHARS = 1 << 20  # characters read from a training file at a time


def _kernels():
    """The Numba kernels, or None when the NumPy backend is selected (then the Python twins run)."""
    from .. import kernels

    if kernels.backend() != "numba":
        return None
    from ..kernels import bpe

    return bpe


def _surrogate_error(word: str) -> MiniGPTError:
    bad = next(c for c in word if 0xD800 <= ord(c) <= 0xDFFF)
    return MiniGPTError(
        f"the text contains a lone surrogate {bad!r} (U+{ord(bad):04X}), which has no UTF-8 encoding; "
        "clean the text first (e.g. s.encode('utf-8', 'replace').decode('utf-8'))"
    )


def gpt2_bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for bytes (used in its ``encoder.json`` and ``vocab.bpe``).

    Bytes that are printable and not whitespace stand for themselves; the other 68 are mapped, in byte order,
    to the characters U+0100, U+0101, ... (so the space 0x20 is ``'Ġ'`` = U+0120).
    """
    keep = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
    out = {b: chr(b) for b in keep}
    nxt = 0x100
    for b in range(256):
        if b not in out:
            out[b] = chr(nxt)
            nxt += 1
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
        byte_ids = [int(x) for x in byte_ids]
        if sorted(byte_ids) != list(range(256)):
            raise MiniGPTError("byte_ids must be a permutation of 0..255 (the ids of the 256 single bytes)")
        tokens: list[bytes] = [b""] * 256
        for b, i in enumerate(byte_ids):
            tokens[i] = bytes([b])
        self._merges: list[tuple[int, int]] = []
        for i, m in enumerate(merges):
            try:
                a, b = (int(x) for x in m)
            except (TypeError, ValueError):
                raise MiniGPTError(f"merge {i} must be a pair of token ids, got {m!r}") from None
            n = 256 + i
            if not (0 <= a < n and 0 <= b < n):
                raise MiniGPTError(f"merge {i} ({a}, {b}) refers to a token that does not exist yet (ids < {n})")
            tokens.append(tokens[a] + tokens[b])
            self._merges.append((a, b))
        self._encoder: dict[bytes, int] = {t: i for i, t in enumerate(tokens)}
        if len(self._encoder) != len(tokens):
            seen: dict[bytes, int] = {}
            for i, t in enumerate(tokens):
                if t in seen:
                    raise MiniGPTError(f"tokens {seen[t]} and {i} have the same bytes {t!r}; a vocabulary must "
                                       "not hold the same bytes twice")
                seen[t] = i
        n_regular = len(tokens)
        special_tokens = dict(special_tokens or {})
        ids = sorted(special_tokens.values())
        if ids != list(range(n_regular, n_regular + len(ids))):
            raise MiniGPTError(f"special token ids must be {n_regular}..{n_regular + len(ids) - 1} (right after "
                               f"the {n_regular} byte and merged tokens), got {ids}")
        for s in special_tokens:
            if not isinstance(s, str) or not s:
                raise MiniGPTError(f"a special token must be a non-empty string, got {s!r}")
        self._special: dict[str, int] = {s: int(i) for s, i in sorted(special_tokens.items(), key=lambda x: x[1])}
        self._n_regular = n_regular
        self._byte_ids = byte_ids
        self._tokens: list[bytes] = tokens + [s.encode("utf-8") for s in self._special]
        self.clear_cache()
        self._pair_table = None
        self._pair_dict = None
        self._special_re = {}

    # --- properties ------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of tokens: 256 bytes + merged tokens + special tokens."""
        return len(self._tokens)

    def __len__(self) -> int:
        return len(self._tokens)

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
        if not 0 <= i < len(self._tokens) or i != token_id:
            raise MiniGPTError(f"token id {token_id!r} is out of range: ids go from 0 to {len(self._tokens) - 1}")
        return self._tokens[i]

    def token_to_id(self, token) -> int:
        """The id of a token given as bytes, or as text (a special token, or the token's UTF-8 text)."""
        if isinstance(token, str):
            if token in self._special:
                return self._special[token]
            key = token.encode("utf-8", "surrogatepass")
        elif isinstance(token, (bytes, bytearray)):
            key = bytes(token)
        else:
            raise MiniGPTError(f"a token must be bytes or str, got {type(token).__name__}")
        i = self._encoder.get(key)
        if i is None:
            raise MiniGPTError(f"{token!r} is not a token of this vocabulary")
        return i

    # --- encoding --------------------------------------------------------------------------------------
    def _build_pair_table(self):
        # every pair (x, y) whose joined bytes are a token t: x, y -> t (t is also the pair's rank)
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
        self._pair_dict = None
        self._pair_lists = (pa, pb, pv)
        size = 1 << max(4, (2 * len(pa) + 1).bit_length())
        kern = _kernels()
        if kern is not None:
            self._pair_table = kern.build_pair_table(np.array(pa, np.int32), np.array(pb, np.int32),
                                                     np.array(pv, np.int32), size)
            self._byte_ids_arr = np.array(self._byte_ids, np.int32)
        else:
            self._pair_table = False

    def _fill_cache(self, words):
        """Encode the pre-tokens ``words`` (not cached yet) and enter them into the cache.

        The cache maps a pre-token to an int: its token id when it is one token, else ``-(k + 1)`` where
        ``k`` indexes its ids in ``_mflat[_moff[k]:_moff[k + 1]]`` (so a warm encode is one dict lookup per
        pre-token and one kernel call that expands the few multi-token ones).
        """
        code = self._code
        enc = self._encoder
        todo_w, todo_b = [], []
        for w in words:
            try:
                b = w.encode("utf-8")
            except UnicodeEncodeError:
                raise _surrogate_error(w) from None
            i = enc.get(b)
            if i is not None:
                code[w] = i
            else:
                todo_w.append(w)
                todo_b.append(b)
        if not todo_w:
            return
        if self._pair_table is None:
            self._build_pair_table()
        kern = _kernels() if self._pair_table is not False else None
        if kern is None:
            from ..kernels.bpe import encode_word_python

            if self._pair_dict is None:
                pa, pb, pv = self._pair_lists
                self._pair_dict = dict(zip(zip(pa, pb), pv))
            ids, off = [], [0]
            for b in todo_b:
                ids += encode_word_python(b, self._byte_ids, self._pair_dict)
                off.append(len(ids))
        else:
            data = np.frombuffer(b"".join(todo_b), np.uint8)
            offsets = np.zeros(len(todo_b) + 1, np.int64)
            np.cumsum(np.fromiter(map(len, todo_b), np.int64, len(todo_b)), out=offsets[1:])
            ta, tb, tv = self._pair_table
            ids, off = kern.encode_words(data, offsets, self._byte_ids_arr, ta, tb, tv)
            ids = ids.tolist()
            off = off.tolist()
        mflat, moff = self._mflat, self._moff
        n_multi = len(moff) - 1
        for k, w in enumerate(todo_w):
            lo, hi = off[k], off[k + 1]
            if hi - lo == 1:
                code[w] = ids[lo]
            else:
                mflat += ids[lo:hi]
                moff.append(len(mflat))
                code[w] = -(n_multi + 1)
                n_multi += 1
        self._marrays = None

    def _expand(self, codes: list) -> list[int]:
        """Token ids from cache codes: ids as they are, multi-token words and pieces expanded."""
        if len(self._moff) == 1 and len(self._poff) == 1:
            return codes
        arr = np.array(codes, np.int64)
        if arr.size == 0 or arr.min() >= 0:
            return codes
        if self._marrays is None:
            self._marrays = (np.array(self._mflat, np.int64), np.array(self._moff, np.int64),
                             np.array(self._pflat, np.int64), np.array(self._poff, np.int64))
        kern = _kernels()
        if kern is not None:
            return kern.expand_piece_codes(arr, *self._marrays).tolist()
        mflat, moff, pflat, poff = self._mflat, self._moff, self._pflat, self._poff
        out: list[int] = []

        def word(c):
            if c >= 0:
                out.append(c)
            else:
                out.extend(mflat[moff[-c - 1]:moff[-c]])

        for c in codes:
            if c > _PIECE_BASE:
                word(c)
            else:
                k = _PIECE_BASE - c
                for w in pflat[poff[k]:poff[k + 1]]:
                    word(w)
        return out

    def _word_codes_into(self, words, codes: list) -> None:
        """Append the cache codes of the pre-tokens ``words`` to ``codes`` (encoding the new ones)."""
        code = self._code
        n = len(codes)
        try:
            codes += map(code.__getitem__, words)
        except KeyError:
            del codes[n:]
            self._fill_cache(set(words).difference(code))
            codes += map(code.__getitem__, words)

    def _ascii_segments(self, text: str, segs: list) -> None:
        """Append the segments of ASCII ``text`` (which starts at a safe cut or at the start of the input).

        Where every space follows a character that is not whitespace, each space starts a piece whose
        pre-tokens do not depend on its neighbours (a safe cut), so the parts of ``text.split(" ")`` are
        looked up whole (kind 1: part ``p`` stands for the piece ``" " + p``). Around a space that follows
        whitespace (``"  "``, ``"\n "``, ...) the text is split into pre-tokens (kind 0).
        """
        sp = self._splitter
        prev = 0
        if _has_ws_space(text):
            for m in _WS_SPACE.finditer(text):
                p = m.start()
                if p < prev:
                    continue
                left = safe_cut_before(text, prev, p + 1)
                right = safe_cut_after(text, m.end())
                if left > prev:
                    self._piece_segments(text[prev:left], segs)
                segs.append((0, sp.fast(text, left, right)))
                prev = right
        if prev < len(text):
            self._piece_segments(text[prev:] if prev else text, segs)

    def _piece_segments(self, text: str, segs: list) -> None:
        parts = text.split(" ")
        if parts[0]:
            segs.append((0, self._splitter(parts[0])))  # only at the start of the input
        if len(parts) > 1:
            if parts[-1] == "":  # the input ends with a space: that space on its own
                parts.pop()
                segs.append((1, parts[1:]))
                segs.append((0, [" "]))
            else:
                segs.append((1, parts[1:]))

    def _fill_pieces(self, missing: list) -> None:
        """Cache the pieces ``" " + p`` for the parts ``missing`` (all at once: joined, they split the same)."""
        words = self._splitter(" " + " ".join(missing))
        wc: list = []
        self._word_codes_into(words, wc)
        wc = np.array(wc, np.int64)
        wend = np.cumsum(np.fromiter(map(len, words), np.int64, len(words)))
        pend = np.cumsum(np.fromiter(map(len, missing), np.int64, len(missing)) + 1)
        last = np.searchsorted(wend, pend)  # the word that ends each piece
        nw = np.diff(last, prepend=-1)
        out = np.where(nw == 1, wc[last], 0)
        multi = nw != 1
        if multi.any():
            k0 = len(self._poff) - 1
            m = int(multi.sum())
            out[multi] = _PIECE_BASE - (k0 + np.arange(m))
            self._pflat += wc[np.repeat(multi, nw)].tolist()
            self._poff += (self._poff[-1] + np.cumsum(nw[multi])).tolist()
        self._pcode.update(zip(missing, out.tolist()))
        self._marrays = None

    def encode_ordinary(self, text: str) -> list[int]:
        """Encode ``text`` treating special-token text like any other text."""
        if not isinstance(text, str):
            raise MiniGPTError(f"encode expects a str, got {type(text).__name__}")
        if len(self._code) + len(self._pcode) > _CACHE_LIMIT:
            self.clear_cache()
        sp = self._splitter
        segs: list = []  # (0, pre-tokens) or (1, parts of space pieces), in order
        if sp.name == "custom":
            segs.append((0, sp(text)))
        else:
            # blocks cut at safe places; non-ASCII runs (with their surroundings up to safe cuts) go to `regex`
            n = len(text)
            i = 0
            while i < n:
                j = safe_cut_after(text, i + _BLOCK) if i + _BLOCK < n else n
                block = text[i:j] if (i or j < n) else text
                i = j
                if block.isascii():
                    self._ascii_segments(block, segs)
                    continue
                prev = 0
                for m in _NON_ASCII.finditer(block):
                    a, b = m.span()
                    if a < prev:
                        continue
                    left = safe_cut_before(block, prev, a)
                    right = safe_cut_after(block, b + 1)
                    if left > prev:
                        self._ascii_segments(block[prev:left], segs)
                    segs.append((0, sp.slow(block, left, right)))
                    prev = right
                if prev < len(block):
                    self._ascii_segments(block[prev:], segs)
        code, pcode = self._code, self._pcode
        codes: list = []
        try:
            for kind, items in segs:
                codes += map(pcode.__getitem__ if kind else code.__getitem__, items)
        except KeyError:
            # a cold cache: encode every new pre-token and piece of the whole text at once
            words: set = set()
            parts: set = set()
            for kind, items in segs:
                (parts if kind else words).update(items)
            words.difference_update(code)
            parts.difference_update(pcode)
            if words:
                self._fill_cache(words)
            if parts:
                self._fill_pieces(list(parts))
            codes = []
            for kind, items in segs:
                codes += map(pcode.__getitem__ if kind else code.__getitem__, items)
        return self._expand(codes)

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
                raise MiniGPTError(
                    f"the text contains the special token {s!r}, which is not allowed here: pass "
                    f"allowed_special={{{s!r}}} (or 'all') to encode it as its special token, or "
                    "disallowed_special=() to encode it as ordinary text")
        if not allowed or not any(s in text for s in allowed):
            return self.encode_ordinary(text)
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
                out += self.encode_ordinary(piece)
        return out

    def encode_batch(self, texts, *, allowed_special=(), disallowed_special="all") -> list[list[int]]:
        """:meth:`encode` of each text of a list."""
        if isinstance(texts, str):
            raise MiniGPTError("encode_batch expects a list of strings; use encode() for a single string")
        return [self.encode(t, allowed_special=allowed_special, disallowed_special=disallowed_special)
                for t in texts]

    def clear_cache(self) -> None:
        """Forget the encodings of pre-tokens seen so far (they are recomputed on demand)."""
        self._code = {}  # pre-token -> token id, or -(k + 1): ids _mflat[_moff[k]:_moff[k + 1]]
        self._pcode = {}  # part p of a space piece " " + p -> as above, or _PIECE_BASE - k: word codes in _pflat
        self._mflat = []
        self._moff = [0]
        self._pflat = []
        self._poff = [0]
        self._marrays = None

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
            n = len(self._tokens)
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
        return b"".join(map(self._tokens.__getitem__, ids))

    def decode(self, ids) -> str:
        """The text of a sequence of token ids; byte sequences that are not valid UTF-8 become U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    # --- training --------------------------------------------------------------------------------------
    @classmethod
    def train(cls, texts, vocab_size: int, special_tokens=("<|endoftext|>",), pattern="gpt2",
              progress: bool = False) -> "BPETokenizer":
        """Learn a vocabulary of exactly ``vocab_size`` tokens (256 bytes + merges + special tokens).

        ``texts``: a string, a list of strings (separate documents), or files given as ``pathlib.Path`` (alone
        or in the list; a plain ``str`` is always text). Files are read in chunks and only the counts of their
        unique pre-tokens are kept. Special-token text inside the training text separates documents and is
        not learnt from. ``pattern``: ``"gpt2"``, ``"gpt4"`` or a regular expression. ``progress``: show
        progress bars (tqdm). Raises MiniGPTError when the text is too small to yield ``vocab_size`` tokens.
        """
        from .training import train_bpe

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
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise MiniGPTError(f"{path} is not a minigpt tokenizer file (invalid JSON: {e})") from None
        except UnicodeDecodeError:
            raise MiniGPTError(f"{path} is not a minigpt tokenizer file (not UTF-8 text)") from None
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
        return cls(d["merges"], d["special_tokens"], d["pattern"], d.get("byte_ids"))

    # --- GPT-2's original files ------------------------------------------------------------------------
    @classmethod
    def from_gpt2(cls, encoder_json, vocab_bpe=None, pattern="gpt2") -> "BPETokenizer":
        """Load GPT-2's ``encoder.json`` and ``vocab.bpe`` (pass the two paths, or the folder holding both).

        The result encodes exactly like tiktoken's ``gpt2`` encoding. Entries of ``encoder.json`` past the
        merged tokens (``<|endoftext|>``) become special tokens.
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
                raise MiniGPTError(f"GPT-2 vocabulary file not found: {p}")
        try:
            encoder = json.loads(encoder_json.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MiniGPTError(f"{encoder_json} is not GPT-2's encoder.json ({e})") from None
        if not isinstance(encoder, dict):
            raise MiniGPTError(f"{encoder_json} is not GPT-2's encoder.json (not a JSON object)")
        u2b = {c: b for b, c in gpt2_bytes_to_unicode().items()}

        def to_bytes(s, where):
            try:
                return bytes(u2b[c] for c in s)
            except KeyError:
                raise MiniGPTError(f"{where}: {s!r} uses characters outside GPT-2's byte alphabet") from None

        lines = vocab_bpe.read_text(encoding="utf-8").split("\n")
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
