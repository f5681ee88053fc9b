"""Labelled texts for classification finetuning: readers, class balancing, a stratified split, and a
batching dataset that pads with the end-of-text id.

Readers return ``(texts, labels, where)``: two lists and, per example, where it came from (``file:line``)
so later errors can name it.

- ``sms``: the SMS Spam Collection as shipped, ``label<TAB>text`` per line, split at the FIRST tab (quote
  characters are literal; all 5,574 lines are read: 4,827 ham, 747 spam).
- ``csv`` / ``tsv``: a header row, then rows; the text and label columns are chosen by name.
- ``jsonl``: one JSON object per line, text and label by key.

Example::

    >>> texts, labels, _ = read_labelled("sms-spam")     # the data set by name (or a path)  # doctest: +SKIP
    >>> balanced = balance(labels, seed=123)                                    # indices, 747 + 747
    >>> train, val, test = stratified_split([labels[i] for i in balanced], (0.7, 0.1, 0.2), seed=123)
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..errors import MiniGPTError
from .shared import dataset_path

__all__ = ["read_labelled", "balance", "stratified_split", "ClassificationDataset", "FORMATS"]

FORMATS = ("auto", "sms", "csv", "tsv", "jsonl")


def _format_of(path: Path, fmt: str) -> str:
    if fmt not in FORMATS:
        raise MiniGPTError(f"unknown data format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower()
    return {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl"}.get(suffix, "sms")


def read_labelled(path, fmt: str = "auto", text_column: str = "text", label_column: str = "label"):
    """``(texts, labels, where)`` from a labelled data file, or a data set name such as ``"sms-spam"``
    (see the module docstring and :func:`minigpt.data.dataset_path`)."""
    path = dataset_path(path)
    if not path.is_file():
        raise MiniGPTError(f"data file {path} does not exist" if not path.exists() else f"{path} is not a file")
    fmt = _format_of(path, fmt)
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MiniGPTError(f"{path}: not UTF-8 text ({e})") from None
    texts, labels, where = [], [], []
    if fmt == "sms":
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            label, tab, text = line.partition("\t")
            if not tab:
                raise MiniGPTError(f"{path}:{n}: expected 'label<TAB>text', found no tab")
            texts.append(text), labels.append(label.strip()), where.append(f"{path}:{n}")
    elif fmt in ("csv", "tsv"):
        rows = csv.reader(raw.splitlines(), delimiter="," if fmt == "csv" else "\t")
        try:
            header = next(rows)
        except StopIteration:
            raise MiniGPTError(f"{path} is empty") from None
        for col in (text_column, label_column):
            if col not in header:
                raise MiniGPTError(f"{path}: no column {col!r}; the header has {header}")
        ti, li = header.index(text_column), header.index(label_column)
        for row in rows:
            n = rows.line_num
            if not row:
                continue
            if len(row) <= max(ti, li):
                raise MiniGPTError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
            texts.append(row[ti]), labels.append(row[li].strip()), where.append(f"{path}:{n}")
    else:
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise MiniGPTError(f"{path}:{n}: not valid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise MiniGPTError(f"{path}:{n}: expected a JSON object")
            for key in (text_column, label_column):
                if key not in obj:
                    raise MiniGPTError(f"{path}:{n}: no key {key!r} (keys: {sorted(obj)})")
            if not isinstance(obj[text_column], str):
                raise MiniGPTError(f"{path}:{n}: {text_column!r} must be a string")
            texts.append(obj[text_column]), labels.append(str(obj[label_column]).strip()), where.append(f"{path}:{n}")
    for t, lab, w in zip(texts, labels, where):
        if not t.strip():
            raise MiniGPTError(f"{w}: empty text")
        if not lab:
            raise MiniGPTError(f"{w}: empty label")
    if not texts:
        raise MiniGPTError(f"{path} holds no examples")
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise MiniGPTError(f"{path}: every example has the label {classes[0]!r}; a classifier needs at least "
                           "two classes")
    return texts, labels, where


def balance(labels, seed: int = 123) -> np.ndarray:
    """Indices of a class-balanced subset: every class undersampled (seeded) to the smallest one's size,
    in the original order."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    n = counts.min()
    rng = np.random.default_rng(seed)
    keep = [np.sort(rng.choice(np.flatnonzero(labels == c), n, replace=False)) for c in classes]
    return np.sort(np.concatenate(keep))


def stratified_split(labels, fractions=(0.7, 0.1, 0.2), seed: int = 123) -> list[np.ndarray]:
    """Seeded split of example indices into len(fractions) parts keeping each class's proportion: per class,
    a shuffled list is cut at floor(cumulative fraction * count); the last part takes the remainder."""
    fractions = tuple(float(f) for f in fractions)
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise MiniGPTError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    cum = np.cumsum(fractions)[:-1]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        cuts = [int(np.floor(f * len(idx) + 1e-9)) for f in cum]
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].append(chunk)
    return [rng.permutation(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


class ClassificationDataset:
    """Token ids + label ids; ``get_batch(indices)`` -> ``(ids (B, T), labels (B,), lengths (B,))`` with
    each row padded by ``pad_id`` (end-of-text) to the batch's longest, T <= ``max_length`` (longer texts
    are truncated: ``truncated`` counts them)."""

    def __init__(self, token_ids: list, label_ids, max_length: int, pad_id: int):
        if max_length < 1:
            raise MiniGPTError(f"max_length must be >= 1, got {max_length}")
        self.max_length, self.pad_id = int(max_length), int(pad_id)
        self.truncated = sum(len(t) > self.max_length for t in token_ids)
        self.ids = [np.asarray(t[:self.max_length], dtype=np.int64) for t in token_ids]
        for i, t in enumerate(self.ids):
            if t.size == 0:
                raise MiniGPTError(f"example {i} encodes to no tokens")
        self.labels = np.asarray(label_ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def get_batch(self, indices):
        rows = [self.ids[int(i)] for i in indices]
        lengths = np.array([r.size for r in rows], dtype=np.int64)
        out = np.full((len(rows), int(lengths.max())), self.pad_id, dtype=np.int64)
        for k, r in enumerate(rows):
            out[k, :r.size] = r
        return out, self.labels[np.asarray(indices, dtype=np.int64)], lengths
