"""GPT-2's vocabulary files (``encoder.json`` + ``vocab.bpe``) read with whole-file operations, and a binary
cache of what they hold.

:class:`Vocab` is a vocabulary as arrays: the bytes of the regular tokens back to back (``tok_buf``, in id
order) with their lengths, the merges, the special tokens, and optionally the pair table's entries (every pair
of tokens whose joined bytes are a token; computed on a tokenizer's first encode, kept in the cache).

:func:`parse` turns the two files into a :class:`Vocab` without a Python step per entry: the stand-in
characters of all tokens are mapped to bytes in one NumPy lookup, the merge lines are checked against the
tokens as character arrays, and the ids of each line's two parts come from the pair table's entries (or a
dictionary lookup per part without the Numba backend). It returns None at the first thing it does not expect
(blank lines, ids out of order, a character outside the byte alphabet, ...); the caller then reads the files
line by line, which either accepts them or names the faulty line. :func:`check` verifies a :class:`Vocab`
with array operations: merge ids in range, token lengths within the limits, every merged token equal to its
two parts joined, the 256 single bytes; it is what makes a vocabulary read from the cache trustworthy.

The cache (:func:`cache_file`, :func:`read_cache`, :func:`write_cache`): one safetensors file per vocabulary
under ``<cache_dir>/tokenizers/``, named by a BLAKE2b hash of both source files' bytes (so an edited file is
never served the old vocabulary), written atomically, read without the safetensors package (its import costs
more than reading the file).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..io import atomic_write_bytes
from .limits import MAX_TOKEN_BYTES, MAX_VOCAB_BYTES

CACHE_FORMAT = "minigpt-gpt2-vocab"
CACHE_VERSION = "1"
CACHE_MIN_MERGES = 4096  # smaller vocabularies parse faster than a cache file is written (none is kept)


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


def _char_table() -> np.ndarray:
    """``t[ord(c)]``: the byte the stand-in character ``c`` means, -1 for characters outside the alphabet."""
    b2u = gpt2_bytes_to_unicode()
    t = np.full(max(map(ord, b2u.values())) + 1, -1, np.int16)
    for b, c in b2u.items():
        t[ord(c)] = b
    return t


_CHARS = _char_table()


class Vocab(NamedTuple):
    tok_buf: np.ndarray  # uint8: the regular tokens' bytes, back to back in id order
    lens: np.ndarray  # int64: their lengths (256 + number of merges)
    merges: np.ndarray  # int64 (M, 2): merge i joins tokens merges[i] into token 256 + i
    special: dict  # special token text -> id (ids after the regular tokens)
    pairs: tuple | None = None  # (pa, pb, pv) int32: the pair table's entries, or None (computed on demand)

    def offsets(self) -> np.ndarray:
        off = np.zeros(self.lens.size + 1, np.int64)
        np.cumsum(self.lens, out=off[1:])
        return off


def parse(encoder: dict, bpe_text: str, pairs_of=None) -> Vocab | None:
    """The vocabulary of a parsed ``encoder.json`` and the text of ``vocab.bpe``, or None when the files are
    not in the usual shape (the caller's line-by-line reading then decides).

    The merge lines must spell the merged tokens in id order, one per line, split by one space; this is
    checked on the characters as arrays (the lines without their separators equal the tokens back to back,
    and each line ends where its token ends). The ids of a line's two parts then come from
    ``pairs_of(tok_buf, tok_off)`` when given -- a function returning every split of a token into two tokens
    as ``(pa, pb, pv)`` (the pair table's entries, sorted by ``pv``), which the result keeps -- else from
    ``encoder`` (a dictionary lookup per part).
    """
    ids = list(encoder.values())
    if set(map(type, ids)) != {int}:
        return None
    keys = list(encoder)
    n = len(keys)
    if ids != list(range(n)):  # the usual order is by id; any other order of the same ids is fine
        order = sorted(range(n), key=ids.__getitem__)
        if [ids[i] for i in order] != list(range(n)):
            return None
        keys = [keys[i] for i in order]
    body = bpe_text
    if body.startswith("#version"):
        nl = body.find("\n")
        body = "" if nl < 0 else body[nl + 1:]
    body = body[:-1] if body.endswith("\n") else body
    codes = np.frombuffer(body.encode("utf-32-le", "surrogatepass"), np.uint32)
    is_sep = (codes == 32) | (codes == 10)
    at = np.flatnonzero(is_sep)  # the separators: space, newline, space, ..., space (one line each)
    if body and (at.size % 2 == 0 or np.any(codes[at[0::2]] != 32) or np.any(codes[at[1::2]] != 10)):
        return None  # a line without exactly one space, a blank line
    m = (at.size + 1) // 2
    n_regular = 256 + m
    if n_regular > n:
        return None
    regular = keys[:n_regular]
    lens = np.fromiter(map(len, regular), np.int64, n_regular)
    if int(lens.sum()) > MAX_VOCAB_BYTES or int(lens.max()) > MAX_TOKEN_BYTES:
        return None  # (the line reader names the first token past the limits)
    chars = np.frombuffer("".join(regular).encode("utf-32-le", "surrogatepass"), np.uint32)
    off = np.zeros(n_regular + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    # line j, its separators removed, is token 256 + j: the same characters, and each line ends where its token
    # ends (positions counted without the separators: 2j of them come before line j's space)
    if not np.array_equal(codes[~is_sep], chars[off[256]:]):
        return None
    j = np.arange(m)
    ends = off[257:] - off[256]
    if not np.array_equal(at[1::2] - 2 * j[:-1] - 1, ends[:-1]):
        return None
    split = at[0::2] - 2 * j - (ends - lens[256:])  # the length of each line's first part
    if m and (split.min() < 1 or np.any(split >= lens[256:])):
        return None
    if chars.size and chars.max() >= _CHARS.size:
        return None
    tok_buf = _CHARS[chars]
    if tok_buf.size and tok_buf.min() < 0:
        return None
    tok_buf = np.frombuffer(tok_buf.astype(np.uint8).tobytes(), np.uint8)  # read-only, like every tok_buf
    special = dict(zip(keys[n_regular:], range(n_regular, n)))
    merges = np.empty((m, 2), np.int64)
    if pairs_of is not None:
        pa, pb, pv = pairs = pairs_of(tok_buf, off)
        # the entry of each token whose first part has the line's length (tokens are distinct: one at most)
        pick = np.flatnonzero(lens[pa] == split[pv - 256])
        if not np.array_equal(pv[pick], np.arange(256, n_regular)):
            return None  # a part that is not a token
        merges[:, 0] = pa[pick]
        merges[:, 1] = pb[pick]
        return Vocab(tok_buf, lens, merges, special, pairs)
    parts = body.replace("\n", " ").split(" ") if body else []
    a = list(map(encoder.get, parts[0::2]))
    b = list(map(encoder.get, parts[1::2]))
    if None in a or None in b:
        return None
    merges[:, 0] = a
    merges[:, 1] = b
    return Vocab(tok_buf, lens, merges, special)


def _joined(tok_buf: np.ndarray, off: np.ndarray, x: np.ndarray, y: np.ndarray, t: np.ndarray) -> bool:
    """Whether token ``t[i]`` is token ``x[i]`` followed by token ``y[i]`` for every ``i`` (their lengths
    already agree)."""
    lt = off[t + 1] - off[t]
    total = int(lt.sum())
    if total == 0:
        return True
    row = np.repeat(np.arange(t.size), lt)
    starts = np.zeros(t.size, np.int64)
    np.cumsum(lt[:-1], out=starts[1:])
    q = np.arange(total) - starts[row]  # the position inside token t[row]
    lx = (off[x + 1] - off[x])[row]
    src = np.where(q < lx, off[x][row] + q, off[y][row] + q - lx)
    return bool(np.array_equal(tok_buf[off[t][row] + q], tok_buf[src]))


def check(v: Vocab, joined: bool = True) -> list[int] | None:
    """``byte_ids`` (the id of each single byte) when ``v`` is a sound vocabulary, else None: the merges refer
    to earlier tokens, the lengths respect the limits, ids 0..255 are the 256 single bytes, the pair entries
    (when present) are in range with consistent lengths, and (``joined``) each merged token is its two parts
    joined. Not checked: that no two tokens have the same bytes (:func:`parse` gets that from the JSON keys)."""
    lens, merges = v.lens, v.merges
    m = merges.shape[0] if merges.ndim == 2 and merges.shape[1] == 2 else -1
    n = 256 + m
    if m < 0 or lens.shape != (n,) or v.tok_buf.ndim != 1 or v.tok_buf.size != int(lens.sum()):
        return None
    if lens.min() < 1 or lens.max() > MAX_TOKEN_BYTES or int(lens.sum()) > MAX_VOCAB_BYTES:
        return None
    if not np.all(lens[:256] == 1):
        return None
    byte_ids = np.full(256, -1, np.int64)
    byte_ids[v.tok_buf[:256]] = np.arange(256)
    if byte_ids.min() < 0:
        return None
    a, b = merges[:, 0], merges[:, 1]
    t = np.arange(256, n)
    if m and (min(a.min(), b.min()) < 0 or np.any(a >= t) or np.any(b >= t)):
        return None
    if not np.array_equal(lens[256:], lens[a] + lens[b]):
        return None
    if joined and not _joined(v.tok_buf, v.offsets(), a, b, t):
        return None
    if v.pairs is not None:
        pa, pb, pv = v.pairs
        if not (pa.shape == pb.shape == pv.shape and pa.ndim == 1):
            return None
        if pa.size and (min(pa.min(), pb.min()) < 0 or max(pa.max(), pb.max()) >= n or pv.min() < 256
                        or pv.max() >= n or not np.array_equal(lens[pa] + lens[pb], lens[pv])):
            return None
    return byte_ids.tolist()


# --- the binary cache ----------------------------------------------------------------------------------
def source_key(encoder_bytes: bytes, bpe_bytes: bytes) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{CACHE_FORMAT} {CACHE_VERSION} {len(encoder_bytes)}\n".encode())
    h.update(encoder_bytes)
    h.update(bpe_bytes)
    return h.hexdigest()


def cache_file(folder: Path, key: str) -> Path:
    return Path(folder) / "tokenizers" / f"gpt2-vocab-{key}.safetensors"


_ARRAYS = {"tok_buf": ("U8", np.uint8), "lens": ("I32", np.int32), "merges": ("I32", np.int32),
           "pairs": ("I32", np.int32)}


def _checksum(payload) -> str:
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def write_cache(path: Path, key: str, v: Vocab) -> None:
    """Write ``v`` (with its pair entries) as a safetensors file, atomically. OSError when it cannot."""
    arrays = {"tok_buf": v.tok_buf.astype(np.uint8), "lens": v.lens.astype(np.int32),
              "merges": v.merges.astype(np.int32), "pairs": np.stack([np.asarray(p, np.int32) for p in v.pairs])}
    header, chunks, at = {}, [], 0
    for name, arr in arrays.items():
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": _ARRAYS[name][0], "shape": list(arr.shape), "data_offsets": [at, at + len(data)]}
        chunks.append(data)
        at += len(data)
    payload = b"".join(chunks)
    header["__metadata__"] = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "source": key,
                              "special_tokens": json.dumps(v.special), "checksum": _checksum(payload)}
    head = json.dumps(header).encode("utf-8")
    head += b" " * (-len(head) % 8)
    atomic_write_bytes(path, len(head).to_bytes(8, "little") + head + payload)


def read_cache(path: Path, key: str) -> Vocab | None:
    """The vocabulary cached at ``path`` for the sources hashed to ``key``; None when the file is missing,
    for other sources, or not in the expected layout (its contents are checked by :func:`check` after)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        n = int.from_bytes(data[:8], "little")
        if len(data) < 8 + n or n > 1 << 16:
            return None
        header = json.loads(data[8:8 + n].decode("utf-8"))
        meta = header.pop("__metadata__")
        if (meta.get("format"), meta.get("version"), meta.get("source")) != (CACHE_FORMAT, CACHE_VERSION, key):
            return None
        if meta.get("checksum") != _checksum(memoryview(data)[8 + n:]):
            return None
        special = json.loads(meta["special_tokens"])
        if not isinstance(special, dict) or set(map(type, special.values())) - {int}:
            return None
        if set(header) != set(_ARRAYS):
            return None
        out = {}
        for name, (dtype, np_dtype) in _ARRAYS.items():
            e = header[name]
            shape = tuple(int(s) for s in e["shape"])
            s, t = (int(x) for x in e["data_offsets"])
            count = int(np.prod(shape)) if shape else 1
            if e["dtype"] != dtype or t - s != count * np.dtype(np_dtype).itemsize or not 0 <= s <= t:
                return None
            if 8 + n + t > len(data):
                return None
            out[name] = np.frombuffer(data, np_dtype, count, 8 + n + s).reshape(shape)
        pairs = out["pairs"]
        if pairs.ndim != 2 or pairs.shape[0] != 3:
            return None
        pairs = pairs.copy()  # writable, like the arrays the kernels return (one compiled signature)
        return Vocab(out["tok_buf"], out["lens"].astype(np.int64), out["merges"].astype(np.int64), special,
                     (pairs[0], pairs[1], pairs[2]))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError):
        return None
