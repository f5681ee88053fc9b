"""GPT-2 checkpoints in the Hugging Face layout: ``config.json`` + ``model.safetensors``.

This is the layout in which OpenAI's GPT-2 weights (124M ... 1558M) are published. Parameter names are
GPT-2's (``h.0.attn.c_attn.weight``; with or without a ``transformer.`` prefix), Conv1D weights are stored
(in, out) — the same layout as minigpt's Linear, so nothing is transposed — and the LM head is tied to
``wte.weight`` unless a separate ``lm_head.weight`` is stored. Only safetensors is read: nothing is
ever unpickled.

This module is the file format only: GPT-2's layout <-> a ``GPTConfig`` and a state dict in minigpt's
names. It knows nothing of the ``GPT`` class; ``GPT.from_pretrained`` / ``GPT.save_pretrained`` build on it.

minigpt name                      GPT-2 name
tok_emb.weight                    wte.weight
pos_emb.weight                    wpe.weight
blocks.{i}.norm1.{weight,bias}    h.{i}.ln_1.{weight,bias}
blocks.{i}.attn.qkv.{weight,bias} h.{i}.attn.c_attn.{weight,bias}
blocks.{i}.attn.proj.*            h.{i}.attn.c_proj.*
blocks.{i}.norm2.*                h.{i}.ln_2.*
blocks.{i}.ff.fc.*                h.{i}.mlp.c_fc.*
blocks.{i}.ff.proj.*              h.{i}.mlp.c_proj.*
final_norm.*                      ln_f.*
out_head (untied only)            lm_head.weight
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save

from ..errors import MiniGPTError
from ..io import atomic_write_bytes, atomic_write_json
from .config import GPTConfig

# (minigpt prefix, GPT-2 prefix); "{i}" stands for a block number. Names are renamed by prefix.
_NAME_MAP = [
    ("tok_emb.weight", "wte.weight"),
    ("pos_emb.weight", "wpe.weight"),
    ("blocks.{i}.norm1.", "h.{i}.ln_1."),
    ("blocks.{i}.norm2.", "h.{i}.ln_2."),
    ("blocks.{i}.attn.qkv.", "h.{i}.attn.c_attn."),
    ("blocks.{i}.attn.proj.", "h.{i}.attn.c_proj."),
    ("blocks.{i}.ff.fc.", "h.{i}.mlp.c_fc."),
    ("blocks.{i}.ff.proj.", "h.{i}.mlp.c_proj."),
    ("final_norm.", "ln_f."),
    ("out_head", "lm_head.weight"),
]


def _rules(src_col: int):
    """Regex rename rules from one column of _NAME_MAP to the other."""
    rules = []
    for pair in _NAME_MAP:
        src, dst = pair[src_col], pair[1 - src_col]
        whole = not src.endswith(".")
        pat = "^" + re.escape(src).replace(re.escape("{i}"), r"(\d+)") + ("$" if whole else "")
        rules.append((pat, dst.replace("{i}", r"\1")))
    return rules


_TO_HF = _rules(0)
_FROM_HF = _rules(1)
# Buffers that some GPT-2 files carry (the causal mask); not parameters.
_IGNORED = re.compile(r"^h\.\d+\.attn\.(bias|masked_bias)$")


def _rename(name: str, table) -> str | None:
    for pat, rep in table:
        new, n = re.subn(pat, rep, name)
        if n:
            return new
    return None


def to_hf_name(name: str) -> str:
    hf = _rename(name, _TO_HF)
    if hf is None:
        raise MiniGPTError(f"parameter {name!r} has no GPT-2 name")
    return hf


def config_to_hf(cfg: GPTConfig) -> dict:
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "activation_function": "gelu_new",
        "vocab_size": cfg.vocab_size,
        "n_positions": cfg.context_length,
        "n_ctx": cfg.context_length,
        "n_embd": cfg.emb_dim,
        "n_head": cfg.n_heads,
        "n_layer": cfg.n_layers,
        "n_inner": None,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "resid_pdrop": cfg.drop_rate,
        "embd_pdrop": cfg.drop_rate,
        "attn_pdrop": cfg.drop_rate,
        "tie_word_embeddings": cfg.tie_weights,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "minigpt": {"qkv_bias": cfg.qkv_bias, "drop_rate": cfg.drop_rate},
    }


def config_from_hf(d: dict) -> GPTConfig:
    if d.get("model_type", "gpt2") != "gpt2":
        raise MiniGPTError(f"config.json describes a {d.get('model_type')!r} model, not gpt2")
    act = d.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise MiniGPTError(f"activation {act!r} is not supported (minigpt implements GPT-2's tanh GELU)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if d.get(flag):
            raise MiniGPTError(f"config.json sets {flag}, which minigpt does not implement")
    if d.get("scale_attn_weights") is False:
        raise MiniGPTError("config.json disables attention scaling, which minigpt does not implement")
    try:
        n_embd = int(d["n_embd"])
        if d.get("n_inner") not in (None, 4 * n_embd):
            raise MiniGPTError(f"n_inner={d['n_inner']} is not supported (minigpt's MLP is 4 x n_embd)")
        extra = d.get("minigpt", {})
        return GPTConfig(
            vocab_size=int(d["vocab_size"]),
            context_length=int(d.get("n_positions", d.get("n_ctx"))),
            emb_dim=n_embd,
            n_heads=int(d["n_head"]),
            n_layers=int(d["n_layer"]),
            drop_rate=float(extra.get("drop_rate", d.get("resid_pdrop", 0.1))),
            qkv_bias=bool(extra.get("qkv_bias", True)),
            tie_weights=bool(d.get("tie_word_embeddings", True)),
            layer_norm_eps=float(d.get("layer_norm_epsilon", 1e-5)),
        )
    except (KeyError, TypeError) as e:
        raise MiniGPTError(f"config.json lacks or mangles a GPT-2 field: {e}") from None


def _read_safetensors(path: Path) -> dict:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise MiniGPTError(f"cannot read {path}: {e}") from None


def read_pretrained(path) -> tuple[GPTConfig, dict]:
    """Read a Hugging Face GPT-2 directory (config.json + model.safetensors): the config and the
    state dict in minigpt's parameter names (``GPT.from_pretrained`` builds the model from them)."""
    path = Path(path)
    if not path.is_dir():
        raise MiniGPTError(f"model directory {path} does not exist")
    cfg_path, w_path = path / "config.json", path / "model.safetensors"
    if not cfg_path.exists():
        raise MiniGPTError(f"{path} has no config.json")
    if not w_path.exists():
        hint = " (only pytorch_model.bin: minigpt reads safetensors, never pickles)" if (path / "pytorch_model.bin").exists() else ""
        raise MiniGPTError(f"{path} has no model.safetensors{hint}")
    try:
        hf_cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MiniGPTError(f"{cfg_path} is not valid JSON: {e}") from None
    cfg = config_from_hf(hf_cfg)
    tensors = _read_safetensors(w_path)

    state = {}
    unknown = []
    for name, arr in tensors.items():
        hf = name[len("transformer."):] if name.startswith("transformer.") else name
        if _IGNORED.match(hf):
            continue
        ours = _rename(hf, _FROM_HF)
        if ours is None:
            unknown.append(name)
            continue
        state[ours] = arr
    if unknown:
        raise MiniGPTError(f"{w_path} has tensors that are not GPT-2 parameters: {', '.join(unknown[:8])}")
    if "out_head" in state:  # an lm_head equal to wte is just the tied head stored twice
        if "tok_emb.weight" in state and np.array_equal(state["out_head"], state["tok_emb.weight"]):
            del state["out_head"]
            cfg.tie_weights = True
        else:
            cfg.tie_weights = False
    qkv_biases = [k for k in state if k.endswith(".attn.qkv.bias")]
    if not qkv_biases:
        cfg.qkv_bias = False
    elif not cfg.qkv_bias:
        if all(not np.any(state[k]) for k in qkv_biases):
            for k in qkv_biases:  # the zeros save_pretrained writes for a model without q/k/v bias
                del state[k]
        else:
            cfg.qkv_bias = True
    return cfg, state


def write_pretrained(path, cfg: GPTConfig, state: dict) -> None:
    """Write a config and a state dict (minigpt's names) as config.json + model.safetensors (GPT-2
    names, ``transformer.`` prefix, as transformers' GPT2LMHeadModel saves them), each file atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    dtype = next(iter(state.values())).dtype
    for name, arr in state.items():
        hf = to_hf_name(name)
        tensors[hf if hf == "lm_head.weight" else "transformer." + hf] = np.ascontiguousarray(arr)
    if not cfg.qkv_bias:  # GPT-2's layout always has a q/k/v bias: store zeros
        for i in range(cfg.n_layers):
            tensors[f"transformer.h.{i}.attn.c_attn.bias"] = np.zeros(3 * cfg.emb_dim, dtype=dtype)
    atomic_write_bytes(path / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    atomic_write_json(path / "config.json", config_to_hf(cfg))
