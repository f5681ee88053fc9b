"""Chapter 7, *Fine-tuning to follow instructions*: the Alpaca prompt, InstructionDataset and the collate.

``format_input`` is minigpt's Alpaca template (``minigpt.data.instruct.format_prompt``) without its
``### Response:`` header, which the book adds separately; ``custom_collate_fn`` is minigpt's ``collate``
(the same batches: one end-of-text appended, end-of-text padding, every padding target after the first
set to -100); ``custom_collate_draft_1`` / ``custom_collate_draft_2``, the section's first two steps, are
the same batches before the -100 mask. ``download_and_load_file(file_path, url)`` reads the file, first
installing it from the book's URL through minigpt's checksummed downloads when it is missing;
``load_file(path)`` only reads (the file is also in the shared data folder).

How minigpt's native API differs: ``minigpt finetune instruct`` encodes the prompt and the response
separately (so ``--mask-prompt`` knows where the response starts), shuffles the 85/5/10 split with a seed,
and can use the Phi-3 template; the book encodes the whole text at once and splits in file order.
"""
from __future__ import annotations

from pathlib import Path

from ..data.instruct import collate, format_prompt, read_instructions
from ..download import fetch, load_manifest
from ..errors import MiniGPTError
from ..io import atomic_write_bytes

__all__ = ["load_file", "download_and_load_file", "format_input", "InstructionDataset", "custom_collate_draft_1",
           "custom_collate_draft_2", "custom_collate_fn"]

_RESPONSE = "\n\n### Response:\n"


def load_file(file_path) -> list:
    """The instruction entries of a JSON file (a list of {"instruction", "input", "output"}), each checked."""
    return read_instructions(file_path)


def download_and_load_file(file_path, url) -> list:
    """The book's ``download_and_load_file(file_path, url)``: the entries of the JSON file ``file_path``;
    when it does not exist, the file at ``url`` is installed there first. minigpt downloads only the files
    its data manifest lists (checked against their sha256, as ``minigpt download``), so ``url`` must be one
    of those (the book's URL of ``instruction-data.json`` is); an existing file is never replaced."""
    path = Path(file_path).expanduser()
    if not path.exists():
        name, spec = _manifest_file(url)
        folder = fetch(name)  # minigpt's cache; nothing is fetched when it is installed there already
        with open(folder / spec["name"], "rb") as f:
            atomic_write_bytes(path, f.read())
    return read_instructions(path)


def _manifest_file(url: str):
    """(data set name, file entry) of the manifest file that ``url`` downloads, or a clear error."""
    for name, entry in load_manifest().get("entries", {}).items():
        for spec in entry.get("files", []):
            if url in spec.get("urls", []):
                return name, spec
    raise MiniGPTError(f"download_and_load_file: {url} is not a file minigpt knows (it downloads only the "
                       "checksummed files of its data manifest, `minigpt download --list`); download it "
                       "yourself and pass its path")


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


def custom_collate_draft_1(batch, pad_token_id: int = 50256, device=None):
    """The inputs of ``custom_collate_fn`` without its targets: each sequence plus one ``pad_token_id``,
    padded with it to the batch's longest, the last column dropped (section 7.3's first draft)."""
    return collate(batch, pad_token_id, ignore_index=pad_token_id)[0]


def custom_collate_draft_2(batch, pad_token_id: int = 50256, device=None):
    """``(inputs, targets)``: the targets are the inputs shifted by one, every padding kept as
    ``pad_token_id`` (section 7.3's second draft; ``custom_collate_fn`` then masks them with -100)."""
    return collate(batch, pad_token_id, ignore_index=pad_token_id)


def custom_collate_fn(batch, pad_token_id: int = 50256, ignore_index: int = -100, allowed_max_length=None,
                      device=None):
    """``(inputs, targets)`` int64 arrays (batch, longest + 1 - 1): each sequence gets one ``pad_token_id``
    (end-of-text), is padded with it to the batch's longest, targets are the inputs shifted by one with
    every padding target after the first replaced by ``ignore_index``; ``allowed_max_length`` cuts both.
    ``device`` is accepted and ignored. Bind the options with ``functools.partial`` as the book does."""
    return collate(batch, pad_token_id, ignore_index=ignore_index, max_length=allowed_max_length)
