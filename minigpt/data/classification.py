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
import math
from pathlib import Path

import numpy as np

from ..errors import MiniGPTError
from ..settings import FORMATS
from .shared import dataset_path

__all__ = ["read_labelled", "balance", "stratified_split", "check_splits", "check_label_config",
           "ClassificationDataset", "FORMATS"]


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
        raw = path.read_text(encoding="utf-8-sig")  # a leading byte-order mark is not part of the first field
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
        except csv.Error as e:
            raise MiniGPTError(f"{path}:1: not a valid {fmt.upper()} header ({e})") from None
        for col in (text_column, label_column):
            if col not in header:
                raise MiniGPTError(f"{path}: no column {col!r}; the header has {header}")
        ti, li = header.index(text_column), header.index(label_column)
        while True:
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as e:  # e.g. a field longer than the csv module's limit (131,072 characters)
                raise MiniGPTError(f"{path}:{rows.line_num}: not a valid {fmt.upper()} row ({e})") from None
            n = rows.line_num
            if not row:
                continue
            if len(row) <= max(ti, li):
                raise MiniGPTError(f"{path}:{n}: {len(row)} fields, the header has {len(header)}")
            texts.append(row[ti]), labels.append(row[li].strip()), where.append(f"{path}:{n}")
    else:
        first_label = None  # (line, value) of the first label: labels are all strings or all integers
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except RecursionError:
                raise MiniGPTError(f"{path}:{n}: not valid JSON (nested too deeply)") from None
            except json.JSONDecodeError as e:
                raise MiniGPTError(f"{path}:{n}: not valid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise MiniGPTError(f"{path}:{n}: expected a JSON object, got {_json_kind(obj)}")
            for key in (text_column, label_column):
                if key not in obj:
                    raise MiniGPTError(f"{path}:{n}: no key {key!r} (keys: {sorted(obj)})")
            if not isinstance(obj[text_column], str):
                raise MiniGPTError(f"{path}:{n}: {text_column!r} must be a string, got {_json_kind(obj[text_column])}")
            lab = obj[label_column]
            if isinstance(lab, bool) or not isinstance(lab, (str, int)):
                raise MiniGPTError(f"{path}:{n}: {label_column!r} must be a string or an integer, got "
                                   f"{_json_kind(lab)}")
            if first_label is None:
                first_label = (n, lab)
            elif isinstance(lab, str) != isinstance(first_label[1], str):
                raise MiniGPTError(f"{path}:{n}: label {json.dumps(lab)} is {_json_kind(lab)} but line "
                                   f"{first_label[0]}'s label {json.dumps(first_label[1])} is "
                                   f"{_json_kind(first_label[1])}; use one kind for every label")
            texts.append(obj[text_column]), labels.append(str(lab).strip()), where.append(f"{path}:{n}")
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


def _json_kind(v) -> str:
    """'a string', 'an integer', ... for a parsed JSON value, in messages."""
    if isinstance(v, bool):
        return "a boolean"
    if v is None:
        return "null"
    return {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "an object"}.get(
        type(v), type(v).__name__)


def check_label_config(id2label, num_labels=None, max_length=None, where: str = "config.json") -> list[str]:
    """The labels of a classifier as a list (index = class id), refusing instead of coercing: ``id2label``
    (a list, or a JSON object ``{"0": "ham", "1": "spam"}`` with keys 0..n-1) must hold distinct non-empty
    strings; ``num_labels``, when given, an integer (not a bool, "2" or 2.7) equal to their number, at least
    2; ``max_length``, when given, an integer >= 1 (not 2.5 or true). ``where`` names the source in messages.

        >>> check_label_config({"0": "ham", "1": "spam"}, num_labels=2)
        ['ham', 'spam']
    """
    if isinstance(id2label, dict):
        try:
            keys = sorted(id2label, key=int)
        except (TypeError, ValueError):
            raise MiniGPTError(f"{where}: id2label keys must be class ids 0, 1, ..., got {sorted(id2label)}") from None
        if [int(k) for k in keys] != list(range(len(keys))) or any(str(int(k)) != k for k in keys):
            raise MiniGPTError(f"{where}: id2label keys must be class ids 0..{len(keys) - 1}, got {keys}")
        labels = [id2label[k] for k in keys]
    elif isinstance(id2label, list):
        labels = list(id2label)
    else:
        raise MiniGPTError(f"{where}: id2label must be a JSON object or list of labels, got {_json_kind(id2label)}")
    for i, lab in enumerate(labels):
        if not isinstance(lab, str) or not lab.strip():
            raise MiniGPTError(f"{where}: id2label[{i}] must be a non-empty string, got {json.dumps(lab)}")
    seen = set()
    for lab in labels:
        if lab in seen:
            raise MiniGPTError(f"{where}: id2label names {lab!r} twice; every class needs its own label")
        seen.add(lab)
    if len(labels) < 2:
        raise MiniGPTError(f"{where}: a classifier needs at least two labels, got {labels}")
    if num_labels is not None:
        if isinstance(num_labels, bool) or not isinstance(num_labels, int):
            raise MiniGPTError(f"{where}: num_labels must be an integer, got {json.dumps(num_labels)}")
        if num_labels != len(labels):
            raise MiniGPTError(f"{where}: num_labels is {num_labels} but id2label names {len(labels)} labels")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise MiniGPTError(f"{where}: max_length must be an integer >= 1, got {json.dumps(max_length)}")
    return labels


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
    if not all(math.isfinite(f) and f >= 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
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


def check_splits(path, labels, parts, names=("train", "validation", "test")) -> None:
    """Refuse a split that leaves a part empty or a class without a training example (too little data for
    the fractions), before any training starts. ``labels``: the class of every used example; ``parts``:
    index arrays into it."""
    sizes = [len(p) for p in parts]
    for name, size in zip(names, sizes):
        if size == 0:
            raise MiniGPTError(f"{path}: the {name} split is empty ({'/'.join(map(str, sizes))} examples for "
                               f"{'/'.join(names)}); use more examples or other --split fractions")
    labels = np.asarray(labels)
    missing = sorted(set(labels.tolist()) - set(labels[parts[0]].tolist()))
    if missing:
        counts = ", ".join(f"{c!r} has {(labels == c).sum()}" for c in missing)
        raise MiniGPTError(f"{path}: no training example of class(es) {', '.join(map(repr, missing))} ({counts} "
                           "in all); add examples of it or leave it out")


class ClassificationDataset:
    """Token ids + label ids; ``get_batch(indices)`` -> ``(ids (B, T), labels (B,), lengths (B,))`` with
    each row padded by ``pad_id`` (end-of-text) to the batch's longest, T <= ``max_length`` (longer texts
    are truncated: ``truncated`` counts them)."""

    def __init__(self, token_ids: list, label_ids, max_length: int, pad_id: int):
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
            raise MiniGPTError(f"max_length must be an integer >= 1, got {max_length!r}")
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
