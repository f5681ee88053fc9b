"""Instruction data (the book's chapter 7): entries ``{"instruction", "input", "output"}``, prompt
templates, a seeded 85/5/10 split, and the padding collate.

Templates (``format_prompt(entry, template)`` is the prompt; the response follows it):

- ``alpaca``: "Below is an instruction that describes a task. ..." then ``### Instruction:``, the optional
  ``### Input:`` and ``### Response:`` sections;
- ``phi3``: ``<|user|>`` (instruction, optional input) then ``<|assistant|>`` (as plain text).

``collate(seqs, pad_id)`` pads a batch as the book does: each sequence gets one end-of-text token appended,
then end-of-text padding up to the batch's longest; targets are the inputs shifted by one, and every
padding target after a sequence's first end-of-text is -100 (ignored by the loss). Example::

    >>> x, y = collate([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]], pad_id=50256)
    >>> x.tolist()[1], y.tolist()[1]
    ([5, 6, 50256, 50256, 50256], [6, 50256, -100, -100, -100])
"""
from __future__ import annotations

import json

import numpy as np

from ..errors import MiniGPTError
from ..settings import TEMPLATES
from .shared import dataset_path

__all__ = ["TEMPLATES", "format_prompt", "format_example", "read_instructions", "split_instructions", "collate",
           "InstructionDataset", "IGNORE_INDEX"]

IGNORE_INDEX = -100
# TEMPLATES (settings.py): the templates instruction finetuning writes; CHAT_FORMATS: chat models' own formats, for answering with a Llama 3 or Qwen checkpoint (their special tokens)
CHAT_FORMATS = {"llama3": ("<|start_header_id|>user<|end_header_id|>\n\n",
                           "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
                "qwen": ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n", "<|im_end|>")}
KEYS = ("instruction", "input", "output")


def format_prompt(entry: dict, template: str = "alpaca") -> str:
    """The prompt part of an entry (everything up to where the response starts)."""
    inp = entry.get("input") or ""
    if template == "alpaca":
        text = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                f"the request.\n\n### Instruction:\n{entry['instruction']}")
        if inp:
            text += f"\n\n### Input:\n{inp}"
        return text + "\n\n### Response:\n"
    if template == "phi3":
        return f"<|user|>\n{entry['instruction']}" + (f"\n{inp}" if inp else "") + "\n<|assistant|>\n"
    if template in CHAT_FORMATS:
        pre, post, _ = CHAT_FORMATS[template]
        return pre + entry["instruction"] + (f"\n{inp}" if inp else "") + post
    raise MiniGPTError(f"unknown prompt template {template!r}; known: {', '.join((*TEMPLATES, *CHAT_FORMATS))}")


def format_example(entry: dict, template: str = "alpaca") -> str:
    return format_prompt(entry, template) + entry["output"]


def read_instructions(path) -> list[dict]:
    """A JSON list of ``{"instruction", "input", "output"}`` objects (strings; "input" may be empty), read from
    ``path`` or from a data set given by name (``"instruction-data"``: :func:`minigpt.data.dataset_path`)."""
    path = dataset_path(path)
    if not path.is_file():
        raise MiniGPTError(f"data file {path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a leading byte-order mark is skipped
    except RecursionError:
        raise MiniGPTError(f"{path} is not valid JSON: nested too deeply") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MiniGPTError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, list) or not data:
        raise MiniGPTError(f"{path} must hold a non-empty JSON list of instruction entries")
    for i, e in enumerate(data):
        if not isinstance(e, dict):
            raise MiniGPTError(f"{path}: entry {i} is not a JSON object")
        missing = [k for k in KEYS if k not in e]
        if missing:
            raise MiniGPTError(f"{path}: entry {i} lacks {', '.join(repr(k) for k in missing)} (has {sorted(e)})")
        for k in KEYS:
            if not isinstance(e[k], str):
                raise MiniGPTError(f"{path}: entry {i}: {k!r} must be a string, got {type(e[k]).__name__}")
        if not e["instruction"].strip() or not e["output"].strip():
            raise MiniGPTError(f"{path}: entry {i} has an empty {'instruction' if not e['instruction'].strip() else 'output'}")
    return data


def split_instructions(n: int, fractions=(0.85, 0.05, 0.1), seed: int = 123):
    """Seeded (train, val, test) index arrays: a permutation cut into int(0.85 n) train, int(0.1 n) test
    and the rest validation -- 935 / 55 / 110 for the book's 1,100 entries."""
    tr, va, te = fractions
    if min(fractions) < 0 or abs(tr + va + te - 1) > 1e-6:
        raise MiniGPTError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    order = np.random.default_rng(seed).permutation(n)
    n_tr, n_te = int(n * tr), int(n * te)
    return order[:n_tr], order[n_tr + n_te:], order[n_tr:n_tr + n_te]


def check_instruction_splits(path, n_train: int, n_val: int, n_test: int) -> None:
    """Refuse data too small for the split: every part (train, validation, test) needs an entry, which the
    85/5/10 split gives from 10 entries on."""
    if min(n_train, n_val, n_test) < 1:
        raise MiniGPTError(f"{path}: {n_train + n_val + n_test} entries split into {n_train}/{n_val}/{n_test} "
                           "train/validation/test entries; every part needs one: use at least 10 entries")


def collate(seqs, pad_id: int, ignore_index: int = IGNORE_INDEX, max_length: int | None = None,
            prompt_lengths=None):
    """(inputs, targets) int64 arrays for a batch of token-id lists (see the module docstring).

    ``prompt_lengths`` (one per sequence) also sets the targets that predict prompt tokens to
    ``ignore_index`` (``--mask-prompt``); ``max_length`` truncates both arrays to that many columns (each
    sequence is cut first, so one very long entry never makes a batch-wide padded array).
    """
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) or max_length < 1:
            raise MiniGPTError(f"max_length must be an integer >= 1, got {max_length!r}")
        # the columns kept are x[:, :max_length] and y[:, :max_length]: tokens 0..max_length of a sequence
        # (one more than max_length: the last target) decide them; the appended end-of-text is kept only when
        # it falls within them
        seqs = [s[:max_length + 1] for s in seqs]
    longest = max(len(s) for s in seqs) + 1
    x = np.full((len(seqs), longest - 1), pad_id, dtype=np.int64)
    y = np.full((len(seqs), longest - 1), ignore_index, dtype=np.int64)
    for k, s in enumerate(seqs):
        n = len(s)
        padded = np.full(longest, pad_id, dtype=np.int64)
        padded[:n] = s
        x[k] = padded[:-1]
        tgt = padded[1:].copy()
        tgt[n:] = ignore_index          # tgt[n - 1] is the appended end-of-text: kept; padding after it: masked
        if prompt_lengths is not None:
            tgt[:max(0, int(prompt_lengths[k]) - 1)] = ignore_index
        y[k] = tgt
    if max_length is not None:
        x, y = x[:, :max_length], y[:, :max_length]
    return x, y


class InstructionDataset:
    """Token ids of formatted entries; ``get_batch(indices)`` -> the collated (inputs, targets)."""

    def __init__(self, entries: list, tokenizer, template: str, pad_id: int, max_length: int,
                 mask_prompt: bool = False):
        self.pad_id, self.max_length, self.mask_prompt = int(pad_id), int(max_length), bool(mask_prompt)
        self.ids, self.prompt_lengths, self.truncated = [], [], 0
        for e in entries:
            p = tokenizer.encode_ordinary(format_prompt(e, template))
            r = tokenizer.encode_ordinary(e["output"])
            ids = p + r
            self.truncated += len(ids) + 1 > self.max_length
            self.ids.append(ids[:self.max_length + 1])  # what collate can use of it: a long entry is not kept whole
            self.prompt_lengths.append(len(p))

    def __len__(self) -> int:
        return len(self.ids)

    def get_batch(self, indices):
        idx = [int(i) for i in indices]
        x, y = collate([self.ids[i] for i in idx], self.pad_id, max_length=self.max_length,
                       prompt_lengths=[self.prompt_lengths[i] for i in idx] if self.mask_prompt else None)
        if (y == IGNORE_INDEX).all():  # every target masked (prompts longer than max_length): keep one
            y[:, -1] = x[:, -1]
        return x, y
