"""Chapter 7, *Fine-tuning to follow instructions*: the Alpaca prompt, InstructionDataset and the collate.

``format_input`` is minigpt's Alpaca template (``minigpt.data.instruct.format_prompt``) without its
``### Response:`` header, which the book adds separately; ``custom_collate_fn`` is minigpt's ``collate``
(the same batches: one end-of-text appended, end-of-text padding, every padding target after the first
set to -100). Load the data with ``load_file(path)`` (the book's ``download_and_load_file`` without the
download: minigpt needs no network; the file is in the shared data folder).

How minigpt's native API differs: ``minigpt finetune instruct`` encodes the prompt and the response
separately (so ``--mask-prompt`` knows where the response starts), shuffles the 85/5/10 split with a seed,
and can use the Phi-3 template; the book encodes the whole text at once and splits in file order.
"""
from __future__ import annotations

from ..data.instruct import collate, format_prompt, read_instructions

__all__ = ["load_file", "format_input", "InstructionDataset", "custom_collate_fn"]

_RESPONSE = "\n\n### Response:\n"


def load_file(file_path) -> list:
    """The instruction entries of a JSON file (a list of {"instruction", "input", "output"}), each checked."""
    return read_instructions(file_path)


def format_input(entry: dict) -> str:
    """The Alpaca-style prompt: the fixed preamble, ``### Instruction:`` and, when the entry has one,
    ``### Input:`` (the response header is not included, as in the book)."""
    prompt = format_prompt(entry, "alpaca")
    return prompt[:-len(_RESPONSE)]


class InstructionDataset:
    """The entries encoded as ``format_input(entry) + "\\n\\n### Response:\\n" + entry["output"]``;
    ``dataset[i]`` is a list of token ids (batches are made by the loader's ``collate_fn``)."""

    def __init__(self, data: list, tokenizer):
        self.data = data
        self.encoded_texts = [tokenizer.encode(format_input(e) + _RESPONSE + e["output"]) for e in data]

    def __getitem__(self, index):
        return self.encoded_texts[index]

    def __len__(self) -> int:
        return len(self.data)


def custom_collate_fn(batch, pad_token_id: int = 50256, ignore_index: int = -100, allowed_max_length=None,
                      device=None):
    """``(inputs, targets)`` int64 arrays (batch, longest + 1 - 1): each sequence gets one ``pad_token_id``
    (end-of-text), is padded with it to the batch's longest, targets are the inputs shifted by one with
    every padding target after the first replaced by ``ignore_index``; ``allowed_max_length`` cuts both.
    ``device`` is accepted and ignored. Bind the options with ``functools.partial`` as the book does."""
    return collate(batch, pad_token_id, ignore_index=ignore_index, max_length=allowed_max_length)
