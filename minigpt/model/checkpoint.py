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
from safetensors import safe_open
from safetensors.numpy import save

from ..errors import MiniGPTError
from ..io import atomic_write_bytes, atomic_write_json
from .config import GPTConfig

SCALE_SUFFIX = "_scale"  # an int8 weight's float32 scales are stored as "<weight name>_scale"
QUANT_SCHEMES = ("int8",)

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


class _SafetensorsFile:
    """A safetensors file opened with ``safe_open``: the file is memory-mapped and each tensor is read
    when asked for, so loading a model never holds the whole file in memory (one tensor at a time beside
    the model)."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._f = safe_open(str(path), framework="numpy")
            self.keys = list(self._f.keys())
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types (and OSError)
            raise MiniGPTError(f"cannot read {path}: {e}") from None

    def get(self, key: str) -> np.ndarray:
        try:
            return self._f.get_tensor(key)
        except Exception as e:  # noqa: BLE001
            raise MiniGPTError(f"cannot read tensor {key!r} of {self.path}: {e}") from None

    def shape(self, key: str) -> tuple:
        return tuple(self._f.get_slice(key).get_shape())


class _LazyTensor:
    """One tensor of the file, read when converted to an array (``np.asarray``); its shape is known
    without reading it."""

    def __init__(self, f: _SafetensorsFile, key: str):
        self.f, self.key = f, key
        self.shape = f.shape(key)

    def __array__(self, dtype=None, copy=None):
        a = self.f.get(self.key)
        return a if dtype is None else a.astype(dtype, copy=False)


class LazyState(dict):
    """minigpt name -> ``_LazyTensor``: a state dict whose tensors are read from the mapped file one at
    a time, as ``load_state_dict`` copies them into the model."""

    def array(self, name: str) -> np.ndarray:
        return np.asarray(self[name])


def _read_config(path: Path):
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
    if not isinstance(hf_cfg, dict):
        raise MiniGPTError(f"{cfg_path} must hold a JSON object")
    return hf_cfg, w_path


def _quantization(hf_cfg: dict, cfg_path: Path):
    quant = hf_cfg.get("quantization")
    if quant is None:
        return None
    if not isinstance(quant, dict) or quant.get("scheme") not in QUANT_SCHEMES:
        raise MiniGPTError(f"{cfg_path}: unknown quantization {quant!r} (known schemes: {', '.join(QUANT_SCHEMES)})")
    gs = quant.get("group_size", 0)
    if not isinstance(gs, int) or isinstance(gs, bool) or gs < 0:
        raise MiniGPTError(f"{cfg_path}: quantization group_size must be an integer >= 0, got {gs!r}")
    if quant.get("layout", "out_in") != "out_in":
        raise MiniGPTError(f"{cfg_path}: unknown int8 layout {quant.get('layout')!r}")
    return {"scheme": quant["scheme"], "group_size": gs}


def read_checkpoint(path) -> tuple[GPTConfig, LazyState, dict | None]:
    """Read a model folder: its config, a lazy state dict in minigpt's names (tensors are read from the
    memory-mapped file when used) and its quantization (``{"scheme": "int8", "group_size": n}`` for a
    folder written from an int8 model, else None). An int8 weight appears under its weight's name, its
    scales under that name + ``_scale``."""
    path = Path(path)
    hf_cfg, w_path = _read_config(path)
    cfg = config_from_hf(hf_cfg)
    quant = _quantization(hf_cfg, path / "config.json")
    f = _SafetensorsFile(w_path)
    state, unknown = LazyState(), []
    for key in f.keys:
        base = key[:-len(SCALE_SUFFIX)] if quant and key.endswith(SCALE_SUFFIX) else key
        hf = base[len("transformer."):] if base.startswith("transformer.") else base
        if _IGNORED.match(hf):
            continue
        ours = _rename(hf, _FROM_HF)
        if ours is None:
            unknown.append(key)
            continue
        state[ours + (SCALE_SUFFIX if base != key else "")] = _LazyTensor(f, key)
    if unknown:
        raise MiniGPTError(f"{w_path} has tensors that are not GPT-2 parameters: {', '.join(unknown[:8])}")
    if quant:
        cfg.qkv_bias = any(k.endswith(".attn.qkv.bias") for k in state)
        return cfg, state, quant
    if "out_head" in state:  # an lm_head equal to wte is just the tied head stored twice
        same = ("tok_emb.weight" in state and state["out_head"].shape == state["tok_emb.weight"].shape
                and np.array_equal(state.array("out_head"), state.array("tok_emb.weight")))
        if same:
            del state["out_head"]
        cfg.tie_weights = bool(same)
    qkv_biases = [k for k in state if k.endswith(".attn.qkv.bias")]
    if not qkv_biases:
        cfg.qkv_bias = False
    elif not cfg.qkv_bias:
        if all(not np.any(state.array(k)) for k in qkv_biases):
            for k in qkv_biases:  # the zeros save_pretrained writes for a model without q/k/v bias
                del state[k]
        else:
            cfg.qkv_bias = True
    return cfg, state, None


def read_pretrained(path) -> tuple[GPTConfig, dict]:
    """Read a Hugging Face GPT-2 directory (config.json + model.safetensors): the config and the
    state dict in minigpt's parameter names (``GPT.from_pretrained`` builds the model from them). The
    state's tensors are read from the memory-mapped file when used (``np.asarray``)."""
    cfg, state, quant = read_checkpoint(path)
    if quant:
        raise MiniGPTError(f"{path} holds an int8-quantized model: load it with GPT.from_pretrained")
    return cfg, state


def write_pretrained(path, cfg: GPTConfig, state: dict, quantization: dict | None = None) -> None:
    """Write a config and a state dict (minigpt's names) as config.json + model.safetensors (GPT-2
    names, ``transformer.`` prefix, as transformers' GPT2LMHeadModel saves them), each file atomically.

    With ``quantization`` (an int8 model), ``state`` also holds int8 weights (out, in) under the weights'
    names and their float32 scales under the names + ``_scale``; config.json records the scheme, and no
    zero q/k/v biases are added."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, arr in state.items():
        scale = name.endswith(SCALE_SUFFIX)
        hf = to_hf_name(name[:-len(SCALE_SUFFIX)] if scale else name)
        key = hf if hf == "lm_head.weight" else "transformer." + hf
        tensors[key + (SCALE_SUFFIX if scale else "")] = np.ascontiguousarray(arr)
    if not cfg.qkv_bias and not quantization:  # GPT-2's layout always has a q/k/v bias: store zeros
        for i in range(cfg.n_layers):
            tensors[f"transformer.h.{i}.attn.c_attn.bias"] = np.zeros(3 * cfg.emb_dim, dtype=np.float32)
    atomic_write_bytes(path / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    hf_cfg = config_to_hf(cfg)
    if quantization:
        hf_cfg["quantization"] = {**quantization, "layout": "out_in"}
    atomic_write_json(path / "config.json", hf_cfg)
