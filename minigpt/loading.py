"""One place that turns a model folder into ``(model, tokenizer)``, for train, generate, classify and
finetune alike.

A model folder is any of:

- a ``minigpt train`` / ``minigpt finetune`` run folder (``latest.json``): its latest checkpoint;
- a checkpoint or saved model folder: ``config.json`` + ``model.safetensors`` (GPT-2's Hugging Face layout,
  as ``minigpt download gpt2`` installs it), optionally a classifier (``score.*``, ``id2label``) and/or
  LoRA adapters (``adapter.safetensors``);
- a LoRA adapter folder (``adapter_config.json`` naming its base model folder).

The tokenizer comes from the same folder: ``tokenizer.json`` (minigpt's BPE), else GPT-2's ``encoder.json``
+ ``vocab.bpe``, else -- for a GPT-2-sized vocabulary (50,257) only -- GPT-2's vocabulary from the download
cache or the shared data folder. Example::

    >>> model, tok = load_model_and_tokenizer("runs/mini")          # doctest: +SKIP
    >>> tok.decode(model_generate(...))                               # doctest: +SKIP
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .data.shared import shared_file
from .errors import MiniGPTError
from .io import cache_dir
from .tokenizer import BPETokenizer
from .tokenizer.hf_files import from_tiktoken, from_tokenizer_json, is_hf_tokenizer_json, load_hf_tokenizer
from .model.folders import ADAPTER_CONFIG, adapter_base, folder_kind, load_model, resolve_model_dir
from .nn.lora import has_lora, merge_lora

GPT2_VOCAB_SIZE = 50257

__all__ = ["resolve_model_dir", "load_tokenizer", "load_model_and_tokenizer", "gpt2_vocab_dir", "folder_kind",
           "tokenizer_from_spec"]


def gpt2_vocab_dir() -> Path:
    """The folder holding GPT-2's encoder.json + vocab.bpe (download cache, else the shared data folder)."""
    for cand in (cache_dir() / "gpt2-vocab", cache_dir() / "gpt2" / "124M"):
        if (cand / "encoder.json").exists() and (cand / "vocab.bpe").exists():
            return cand
    f = shared_file("gpt2/encoder.json")
    if f is not None:
        return f.parent
    raise MiniGPTError("GPT-2's vocabulary files are not installed: run `minigpt download gpt2-vocab` "
                       "(or `--from DIR` with a local copy), or pass --tokenizer DIR")


def tokenizer_from_spec(spec: str):
    """"gpt2" (GPT-2's vocabulary), a tokenizer .json file, or a folder holding tokenizer.json or GPT-2's
    encoder.json + vocab.bpe."""
    if spec == "gpt2":
        return BPETokenizer.from_gpt2(gpt2_vocab_dir())
    p = Path(spec)
    if p.is_dir():
        if (p / "tokenizer.json").exists():
            return _tokenizer_json(p / "tokenizer.json")
        if (p / "encoder.json").exists() and (p / "vocab.bpe").exists():
            return BPETokenizer.from_gpt2(p)
        hf = load_hf_tokenizer(p)  # a tiktoken file (Llama 3's tokenizer.model)
        if hf is not None:
            return hf
        raise MiniGPTError(f"{p} holds no tokenizer (tokenizer.json, or encoder.json + vocab.bpe, or a tiktoken "
                           "tokenizer.model)")
    if p.is_file():
        if p.suffix == ".tiktoken":
            return from_tiktoken(p)
        return _tokenizer_json(p)
    raise MiniGPTError(f"tokenizer {spec!r} not found: expected 'gpt2', a tokenizer .json file or a folder with "
                       "tokenizer.json or GPT-2's encoder.json and vocab.bpe")


def _tokenizer_json(path: Path):
    """minigpt's tokenizer file, or a Hugging Face tokenizer.json (both go by that name)."""
    return from_tokenizer_json(path) if is_hf_tokenizer_json(path) else BPETokenizer.load(path)


def _tokenizer_folder(folder: Path) -> Path | None:
    """The folder whose tokenizer files go with ``folder`` (an adapter folder may rely on its base's, or its
    base's base ...; the chain is checked as loading the model checks it)."""
    chain = []
    while True:
        if ((folder / "tokenizer.json").exists() or ((folder / "encoder.json").exists() and (folder / "vocab.bpe").exists())
                or (folder / "tokenizer.model").exists()):
            return folder
        if not (folder / ADAPTER_CONFIG).exists() or (folder / "model.safetensors").exists():
            return None
        base = adapter_base(folder, tuple(chain))
        chain.append(folder.resolve())
        folder = base


def load_tokenizer(folder, vocab_size: int | None = None):
    """The tokenizer of a model folder (see the module docstring); ``vocab_size``: the model's, to allow
    GPT-2's vocabulary as the fallback only for GPT-2-sized models."""
    folder = resolve_model_dir(folder)
    src = _tokenizer_folder(folder)
    if src is not None:
        return tokenizer_from_spec(str(src))
    if vocab_size == GPT2_VOCAB_SIZE:
        return tokenizer_from_spec("gpt2")
    raise MiniGPTError(f"{folder} has no tokenizer (tokenizer.json, or GPT-2's encoder.json + vocab.bpe), and "
                       f"its vocabulary ({vocab_size} tokens) is not GPT-2's; pass --tokenizer")


def check_vocab(model, tok, where, strict: bool = False) -> None:
    """The tokenizer's ids must all be rows of the model's embedding table; ``strict``: the two sizes must
    be equal (a run that trains the model on this tokenizer's ids)."""
    if strict and tok.vocab_size != model.config.vocab_size:
        raise MiniGPTError(f"{where}: the model's vocabulary has {model.config.vocab_size} tokens but the tokenizer "
                           f"{tok.vocab_size}; they do not belong together (pass the model's own tokenizer)")
    if tok.vocab_size > model.config.vocab_size:
        raise MiniGPTError(f"{where}: the tokenizer has {tok.vocab_size} tokens but the model's vocabulary only "
                           f"{model.config.vocab_size}; they do not belong together")


def load_model_and_tokenizer(path, tokenizer: str | None = None, kind: str | None = None, strict_vocab: bool = False,
                             for_training: bool = False):
    """``(model, tokenizer)`` from any model folder; ``kind`` = "lm" or "classifier" refuses the other kind;
    ``tokenizer`` overrides the folder's (a spec as :func:`tokenizer_from_spec` takes); ``strict_vocab``
    requires equal vocabulary sizes (training runs). ``for_training``: the starting point of a finetuning
    run, always a plain float model: an int8 folder is dequantized and LoRA adapters are merged into the
    weights (new adapters, if any, are added on top)."""
    folder = resolve_model_dir(path)
    model = load_model(folder, kind=kind, float_weights=for_training)
    if for_training and has_lora(model):
        merge_lora(model)
    tok = tokenizer_from_spec(tokenizer) if tokenizer else load_tokenizer(folder, model.config.vocab_size)
    check_vocab(model, tok, path, strict_vocab)
    return model, tok


def shrink_context(model, context_length: int):
    """``model`` with a shorter context: the first ``context_length`` rows of its position table (the
    weights are shared otherwise). Raising the context is refused: the positions beyond it were never
    trained."""

    have = model.config.context_length
    if context_length == have:
        return model
    if context_length > have:
        raise MiniGPTError(f"--context-length {context_length} exceeds the initial model's {have}: a context can "
                           "be lowered, never raised (positions beyond it were never trained)")
    if context_length < 1:
        raise MiniGPTError(f"--context-length must be >= 1, got {context_length}")
    cfg = dataclasses.replace(model.config, context_length=int(context_length))
    new = type(model)(cfg, dtype=model.dtype) if not hasattr(model, "id2label") else \
        type(model)(cfg, model.id2label, dtype=model.dtype)
    state = dict(model.state_dict())
    if "pos_emb.weight" in state:  # learned positions; rotary and sinusoidal ones have no table to cut
        state["pos_emb.weight"] = state["pos_emb.weight"][:context_length]
    new.load_state_dict(state)
    return new
