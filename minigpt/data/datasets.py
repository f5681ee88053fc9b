"""Pretraining datasets over token ids: a sliding window, a train/validation split, and text sources.

``SlidingWindowDataset(ids, max_length, stride)`` is the book's GPTDatasetV1 without the copies: window i
starts at token ``i * stride``; its inputs are ``ids[s : s + max_length]`` and its targets the same span
shifted by one token. Batches are gathered by fancy-indexing a strided window view of the id array
(``numpy.lib.stride_tricks.sliding_window_view``), so no Python loop runs per row.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import MiniGPTError
from .shared import dataset_path
from ..tokenizer.special import ENDOFTEXT

__all__ = ["SlidingWindowDataset", "train_val_split", "load_texts", "ENDOFTEXT"]



def _as_ids(ids, what: str = "ids") -> np.ndarray:
    a = np.asarray(ids)
    if a.ndim != 1:
        raise MiniGPTError(f"{what} must be a 1-D sequence of token ids, got shape {a.shape}")
    if a.size == 0:
        return a.astype(np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise MiniGPTError(f"{what} must hold integer token ids, got dtype {a.dtype}")
    if a.min() < 0:
        raise MiniGPTError(f"{what} contains a negative token id ({int(a.min())})")
    return a


def _check_positive_int(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise MiniGPTError(f"{name} must be an integer >= 1, got {v!r}")
    return int(v)


class SlidingWindowDataset:
    """Windows of ``max_length`` tokens every ``stride`` tokens; item i = (inputs, targets), int64 arrays.

    The number of windows is ``len(range(0, len(ids) - max_length, stride))``, as in the book, so the
    corpus needs at least ``max_length + 1`` tokens (one window plus the shifted last target).
    ``ids`` is kept in its own integer dtype (uint16 or int32 save memory); batches come out as int64.
    """

    def __init__(self, ids, max_length: int, stride: int | None = None, *, name: str = "corpus"):
        self.max_length = _check_positive_int("max_length", max_length)
        self.stride = _check_positive_int("stride", max_length if stride is None else stride)
        self.ids = _as_ids(ids)
        n = self.ids.size
        if n < self.max_length + 1:
            raise MiniGPTError(
                f"the {name} has {n} tokens, too few for one training window of max_length={self.max_length} "
                f"(needs at least {self.max_length + 1}: the window plus one shifted target); use more text "
                f"or a shorter context length")
        self._n = len(range(0, n - self.max_length, self.stride))
        L = self.max_length
        # (n_windows, L) views: no copy until a batch is gathered
        self._inputs = np.lib.stride_tricks.sliding_window_view(self.ids[:-1], L)[:: self.stride][: self._n]
        self._targets = np.lib.stride_tricks.sliding_window_view(self.ids[1:], L)[:: self.stride][: self._n]

    def __len__(self) -> int:
        return self._n

    @property
    def num_tokens(self) -> int:
        return int(self.ids.size)

    def __getitem__(self, i):
        if isinstance(i, (int, np.integer)):
            if not -self._n <= i < self._n:
                raise IndexError(f"window {i} out of range for a dataset of {self._n} windows")
            i = int(i) % self._n
            return (self._inputs[i].astype(np.int64), self._targets[i].astype(np.int64))
        raise TypeError(f"dataset indices must be integers, not {type(i).__name__}; use get_batch for arrays")

    def get_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets), each an int64 array of shape (len(indices), max_length)."""
        idx = np.asarray(indices, dtype=np.intp)
        if idx.ndim != 1:
            raise MiniGPTError(f"get_batch expects a 1-D array of window indices, got shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self._n):
            raise MiniGPTError(f"window index out of range 0..{self._n - 1}")
        return (self._inputs[idx].astype(np.int64, copy=False), self._targets[idx].astype(np.int64, copy=False))

    def __repr__(self) -> str:
        return (f"SlidingWindowDataset({self.num_tokens} tokens, max_length={self.max_length}, "
                f"stride={self.stride}, {self._n} windows)")


def train_val_split(ids, val_fraction: float, *, min_val_tokens: int | None = None):
    """Split token ids into (train_ids, val_ids) at a token boundary: the first part trains, the last part
    validates (as the book does with its text). ``val_fraction`` in [0, 1); 0 gives an empty validation part.

    ``min_val_tokens``: when given (for example ``max_length + 1``), a validation part that is non-empty
    but shorter than this raises a clear error instead of failing later in the dataset constructor.
    """
    a = _as_ids(ids)
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not (0.0 <= val_fraction < 1.0):
        raise MiniGPTError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    n = a.size
    split = n - int(round(n * val_fraction))
    train, val = a[:split], a[split:]
    if min_val_tokens is not None and val_fraction > 0 and val.size < min_val_tokens:
        raise MiniGPTError(
            f"the validation part ({val_fraction:.0%} of {n} tokens = {val.size} tokens) is too small for one "
            f"window: it needs at least {min_val_tokens} tokens; raise val_fraction, add text or shorten the "
            f"context length")
    if train.size == 0:
        raise MiniGPTError(f"no training tokens left after taking {val_fraction:.0%} of {n} for validation")
    return train, val


def load_texts(paths, separator: str = ENDOFTEXT) -> str:
    """Read UTF-8 text files and join them with ``separator`` (GPT-2's ``<|endoftext|>`` by default).

    ``paths``: one path or a list; a data set name (``"the-verdict"``, ``"tiny-shakespeare"``) stands for its
    file (:func:`minigpt.data.dataset_path`). A missing, unreadable or non-UTF-8 file is a MiniGPTError naming it.
    A UTF-8 byte-order mark at the start of a file is dropped.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise MiniGPTError("load_texts: no text files given")
    texts = []
    for p in paths:
        path = dataset_path(p)
        if not path.exists():
            raise MiniGPTError(f"text file not found: {path}")
        if path.is_dir():
            raise MiniGPTError(f"{path} is a directory, not a text file")
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise MiniGPTError(f"cannot read text file {path}: {e.strerror or e}") from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise MiniGPTError(f"{path} is not UTF-8 text (undecodable byte {raw[e.start]:#04x} at offset "
                               f"{e.start}); convert it to UTF-8 first") from None
        texts.append(text)
    return separator.join(texts)
