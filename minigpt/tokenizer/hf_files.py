"""Vocabulary files of other libraries, loaded into minigpt's byte-level BPE engine (same speed, same ids):

- a Hugging Face ``tokenizer.json`` of a byte-level BPE model (Qwen's, GPT-2's, one trained with the
  ``tokenizers`` library): its ``vocab`` and ``merges``, the split regex of its pre-tokenizer and its added
  (special) tokens -- :func:`from_tokenizer_json`;
- a tiktoken BPE file (Llama 3's ``tokenizer.model``: one ``base64-token rank`` per line), with the split
  pattern and special tokens given separately (Llama 3's are built in) -- :func:`from_tiktoken`.

The engine numbers tokens its own way (the 256 bytes, then the merged tokens in merge order, then the special
tokens); :meth:`BPETokenizer.renumber` makes it show the file's ids.

A tiktoken file lists ranks, not merges: a token of rank ``r`` is what byte-pair encoding makes of its own
bytes with the tokens of lower rank, and the last merge of that encoding joins two tokens ``(a, b)`` -- that
pair is the token's merge. Applying merges by rank (the lowest-ranked pair first) is exactly tiktoken's rule.
"""
from __future__ import annotations

import base64
import binascii
from pathlib import Path

import numpy as np

from ..errors import MiniGPTError
from ..io import read_json
from .bpe import BPETokenizer
from .gpt2_vocab import gpt2_bytes_to_unicode
from .patterns import GPT2_PATTERN

# Llama 3's split pattern (as its tokenizer publishes it) and its 256 special tokens after the 128,000 ranks
LLAMA3_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                  r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
_LLAMA3_NAMED = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>",
                 6: "<|start_header_id|>", 7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>",
                 10: "<|python_tag|>"}


def llama3_special_tokens(n_ranks: int = 128000, count: int = 256) -> dict[str, int]:
    """Llama 3's special tokens: ``<|begin_of_text|>`` = ``n_ranks``, ..., the rest ``<|reserved_special_token_k|>``."""
    out, k = {}, 0
    for i in range(count):
        name = _LLAMA3_NAMED.get(i)
        if name is None:
            name = f"<|reserved_special_token_{k}|>"
            k += 1
        out[name] = n_ranks + i
    return out


def _build(merge_tokens: list[tuple[bytes, bytes]], byte_ids: list[int], merged_ids: list[int],
           special: dict[str, int], pattern: str, where: str) -> BPETokenizer:
    """The engine's tokenizer for merges given as byte pairs, renumbered to the file's ids: ``byte_ids[b]`` is
    the file id of byte ``b``, ``merged_ids[i]`` that of merge ``i``'s result, ``special`` text -> file id."""
    index = {bytes([b]): b for b in range(256)}
    merges = []
    for i, (a, b) in enumerate(merge_tokens):
        ia, ib = index.get(a), index.get(b)
        if ia is None or ib is None:
            raise MiniGPTError(f"{where}: merge {i} ({a!r}, {b!r}) joins a token that no earlier merge makes")
        if a + b in index:
            raise MiniGPTError(f"{where}: merge {i} makes {a + b!r}, which an earlier merge already made")
        index[a + b] = 256 + len(merges)
        merges.append((ia, ib))
    n_regular = 256 + len(merges)
    order = sorted(special, key=special.get)
    tok = BPETokenizer(merges, {s: n_regular + k for k, s in enumerate(order)}, pattern)
    file_ids = byte_ids + merged_ids + [special[s] for s in order]
    if sorted(file_ids) != list(range(len(file_ids))):
        raise MiniGPTError(f"{where}: the ids of the bytes, the merged tokens and the special tokens must number "
                           f"0..{len(file_ids) - 1} without gaps or repeats (tokens no merge makes are not "
                           "supported)")
    return tok.renumber(file_ids)


def _split_pattern(pre, where: str) -> str:
    """The regex of a byte-level ``pre_tokenizer``: a Split's pattern, or GPT-2's for ByteLevel(use_regex)."""
    if not isinstance(pre, dict):
        raise MiniGPTError(f"{where}: pre_tokenizer must be an object, got {pre!r}")
    kind = pre.get("type")
    if kind == "ByteLevel":
        if pre.get("add_prefix_space"):
            raise MiniGPTError(f"{where}: ByteLevel add_prefix_space is not supported")
        return GPT2_PATTERN if pre.get("use_regex", True) else None
    if kind == "Split":
        pat = pre.get("pattern")
        if not isinstance(pat, dict) or not isinstance(pat.get("Regex"), str):
            raise MiniGPTError(f"{where}: a Split pre-tokenizer must have a Regex pattern, got {pat!r}")
        if pre.get("behavior") != "Isolated" or pre.get("invert"):
            raise MiniGPTError(f"{where}: only Split with behavior Isolated (not inverted) is supported")
        return pat["Regex"]
    if kind == "Sequence":
        found = [p for p in (_split_pattern(x, where) for x in pre.get("pretokenizers") or []) if p is not None]
        if len(found) != 1:
            raise MiniGPTError(f"{where}: expected exactly one split regex among the pre-tokenizers, got {len(found)}")
        return found[0]
    raise MiniGPTError(f"{where}: pre-tokenizer {kind!r} is not supported (byte-level BPE: Split + ByteLevel)")


def from_tokenizer_json(path) -> BPETokenizer:
    """A Hugging Face byte-level BPE ``tokenizer.json``, with its ids, split regex and added tokens."""
    path = Path(path)
    where = str(path)
    d = read_json(path, "tokenizer.json", max_bytes=256 << 20)
    model = d.get("model") if isinstance(d, dict) else None
    if not isinstance(model, dict) or model.get("type") != "BPE":
        raise MiniGPTError(f"{where}: model.type must be BPE (a byte-level BPE tokenizer)")
    for key in ("dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise MiniGPTError(f"{where}: model.{key} is not supported by byte-level BPE")
    if d.get("normalizer"):
        raise MiniGPTError(f"{where}: a normalizer is not supported (byte-level BPE reads the text as it is)")
    pattern = _split_pattern(d.get("pre_tokenizer"), where) or GPT2_PATTERN
    vocab, merges = model.get("vocab"), model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(merges, list):
        raise MiniGPTError(f"{where}: model.vocab must be an object and model.merges a list")
    u2b = {c: b for b, c in gpt2_bytes_to_unicode().items()}

    def as_bytes(s):
        try:
            return bytes(u2b[c] for c in s)
        except (KeyError, TypeError):
            raise MiniGPTError(f"{where}: token {s!r} uses characters outside the byte-level alphabet") from None

    ids = {}
    for s, i in vocab.items():
        if type(i) is not int:
            raise MiniGPTError(f"{where}: the id of {s!r} must be an integer, got {i!r}")
        ids[as_bytes(s)] = i
    byte_ids = []
    for b in range(256):
        if bytes([b]) not in ids:
            raise MiniGPTError(f"{where}: the vocabulary lacks the single byte {b} ({gpt2_bytes_to_unicode()[b]!r})")
        byte_ids.append(ids[bytes([b])])
    pairs, merged_ids = [], []
    for n, m in enumerate(merges):
        parts = m.split(" ") if isinstance(m, str) else m
        if not isinstance(parts, list) or len(parts) != 2 or not all(isinstance(p, str) for p in parts):
            raise MiniGPTError(f"{where}: merge {n} must be 'a b' or [a, b], got {m!r}")
        a, b = as_bytes(parts[0]), as_bytes(parts[1])
        if a + b not in ids:
            raise MiniGPTError(f"{where}: merge {n} makes {parts[0] + parts[1]!r}, which is not in the vocabulary")
        pairs.append((a, b))
        merged_ids.append(ids[a + b])
    special = {}
    for t in d.get("added_tokens") or []:
        if not isinstance(t, dict) or not isinstance(t.get("content"), str) or type(t.get("id")) is not int:
            raise MiniGPTError(f"{where}: an added token must have a string content and an integer id, got {t!r}")
        special[t["content"]] = t["id"]
    return _build(pairs, byte_ids, merged_ids, special, pattern, where)


def _bpe_parts(token: bytes, ranks: dict) -> list[bytes]:
    """Byte-pair encoding of ``token`` with ``ranks`` (the lowest-ranked adjacent pair merged first)."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def from_tiktoken(path, pattern: str | None = None, special_tokens: dict | None = None) -> BPETokenizer:
    """A tiktoken BPE file (``base64-token rank`` per line). ``pattern``: the split regex (default Llama 3's);
    ``special_tokens``: text -> id (default Llama 3's 256, numbered after the last rank)."""
    path = Path(path)
    where = str(path)
    try:
        if not path.is_file():
            raise MiniGPTError(f"tiktoken file {path} does not exist")
        if path.stat().st_size > 64 << 20:
            raise MiniGPTError(f"{where} is larger than 64 MB; a tiktoken vocabulary file is a few MB")
        lines = path.read_bytes().splitlines()
    except OSError as e:
        raise MiniGPTError(f"cannot read {where}: {e}") from None
    ranks = {}
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            tok, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
            if len(parts) != 2 or not tok or rank < 0:
                raise ValueError
        except (ValueError, IndexError, binascii.Error):
            raise MiniGPTError(f"{where} line {n}: expected 'base64-token rank', got {line[:60]!r}") from None
        if tok in ranks:
            raise MiniGPTError(f"{where} line {n}: token {tok!r} is listed twice")
        ranks[tok] = rank
    byte_ids = []
    for b in range(256):
        if bytes([b]) not in ranks:
            raise MiniGPTError(f"{where}: the single byte {b} has no rank")
        byte_ids.append(ranks[bytes([b])])
    pairs, merged_ids = [], []
    for tok, r in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(tok) == 1:
            continue
        parts = _bpe_parts(tok, _Below(ranks, r))
        if len(parts) != 2:
            raise MiniGPTError(f"{where}: token {tok!r} (rank {r}) is not the merge of two tokens of lower rank")
        pairs.append((parts[0], parts[1]))
        merged_ids.append(r)
    if special_tokens is None:
        special_tokens = llama3_special_tokens(len(ranks))
    return _build(pairs, byte_ids, merged_ids, dict(special_tokens), pattern or LLAMA3_PATTERN, where)


class _Below:
    """``ranks`` seen as a dict of the tokens ranked below ``limit`` only."""

    def __init__(self, ranks: dict, limit: int):
        self.ranks, self.limit = ranks, limit

    def get(self, key):
        r = self.ranks.get(key)
        return r if r is not None and r < self.limit else None


def is_hf_tokenizer_json(path) -> bool:
    """Whether ``path`` is a Hugging Face tokenizer.json (a ``model`` object) rather than minigpt's own
    tokenizer file (``"format": "minigpt-bpe"``), which shares the name."""
    d = read_json(Path(path), "tokenizer.json", max_bytes=256 << 20)
    return isinstance(d, dict) and isinstance(d.get("model"), dict) and "format" not in d


def load_hf_tokenizer(folder) -> BPETokenizer | None:
    """The tokenizer of a model folder: ``tokenizer.json`` (Hugging Face) or ``tokenizer.model`` /
    ``*.tiktoken`` (tiktoken format, Llama 3); None when the folder has neither."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        return from_tokenizer_json(folder / "tokenizer.json")
    for cand in [folder / "tokenizer.model", *sorted(folder.glob("*.tiktoken"))]:
        if cand.is_file():
            return from_tiktoken(cand)
    return None


__all__ = ["from_tokenizer_json", "from_tiktoken", "llama3_special_tokens", "load_hf_tokenizer", "LLAMA3_PATTERN",
           "is_hf_tokenizer_json"]
