"""GPT-2 checkpoints in the Hugging Face layout: ``config.json`` + ``model.safetensors``.

This is the layout in which OpenAI's GPT-2 weights (124M ... 1558M) are published. Parameter names are
GPT-2's (``h.0.attn.c_attn.weight``; with or without a ``transformer.`` prefix), Conv1D weights are stored
(in, out) — the same layout as minigpt's Linear, so nothing is transposed — and the LM head is tied to
``wte.weight`` unless a separate ``lm_head.weight`` is stored. Only safetensors is read: nothing is
ever unpickled.

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

from ..errors import MiniGPTError
from ..io import atomic_write_bytes, atomic_write_json
from ..nn import Int8Embedding, Int8Linear, uninitialized
from .gpt import GPT, QUANT_SCHEMES, GPTConfig

SCALE_SUFFIX = "_scale"  # an int8 weight's float32 scales are stored as "<weight name>_scale"

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
    when asked for, so loading a model never holds the whole file in memory (only one tensor at a time
    beside the model)."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = path
        try:
            self._ctx = safe_open(str(path), framework="numpy")
            self._f = self._ctx.__enter__()
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

    def close(self):
        self._ctx.__exit__(None, None, None)


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


def _names(f: _SafetensorsFile, w_path: Path, quantized: bool) -> dict:
    """minigpt name -> tensor key of the file (int8 scales under the weight's name + "_scale")."""
    names, unknown = {}, []
    for key in f.keys:
        base = key[:-len(SCALE_SUFFIX)] if quantized and key.endswith(SCALE_SUFFIX) else key
        hf = base[len("transformer."):] if base.startswith("transformer.") else base
        if _IGNORED.match(hf):
            continue
        ours = _rename(hf, _FROM_HF)
        if ours is None:
            unknown.append(key)
            continue
        names[ours + (SCALE_SUFFIX if base != key else "")] = key
    if unknown:
        raise MiniGPTError(f"{w_path} has tensors that are not GPT-2 parameters: {', '.join(unknown[:8])}")
    return names


def _copy_params(model: GPT, f: _SafetensorsFile, names: dict, w_path: Path) -> None:
    """Read each float parameter's tensor and copy it into the model, one tensor at a time."""
    own = dict(model.named_parameters())
    missing = [n for n in own if n not in names]
    if missing:
        raise MiniGPTError(f"{w_path} lacks {len(missing)} parameter(s): {', '.join(missing[:8])}")
    for n, p in own.items():
        shape = f.shape(names[n])
        if shape != p.shape:
            raise MiniGPTError(f"{w_path}: tensor {names[n]!r} has shape {shape}, the model expects {p.shape}")
        np.copyto(p.data, f.get(names[n]), casting="unsafe")


def load_pretrained(path, dtype=np.float32) -> GPT:
    """Build a GPT from a Hugging Face GPT-2 directory (config.json + model.safetensors), or from a
    folder written by ``save_pretrained`` of an int8-quantized model (its config.json says so)."""
    path = Path(path)
    hf_cfg, w_path = _read_config(path)
    cfg = config_from_hf(hf_cfg)
    if hf_cfg.get("quantization") is not None:
        return _load_quantized(hf_cfg, cfg, w_path)
    f = _SafetensorsFile(w_path)
    try:
        names = _names(f, w_path, quantized=False)
        if "out_head" in names:  # an lm_head equal to wte is just the tied head stored twice
            same = ("tok_emb.weight" in names and f.shape(names["out_head"]) == f.shape(names["tok_emb.weight"])
                    and np.array_equal(f.get(names["out_head"]), f.get(names["tok_emb.weight"])))
            if same:
                del names["out_head"]
            cfg.tie_weights = bool(same)
        qkv_biases = [k for k in names if k.endswith(".attn.qkv.bias")]
        if not qkv_biases:
            cfg.qkv_bias = False
        elif not cfg.qkv_bias:
            if all(not np.any(f.get(names[k])) for k in qkv_biases):
                for k in qkv_biases:  # the zeros save_pretrained writes for a model without q/k/v bias
                    del names[k]
            else:
                cfg.qkv_bias = True
        with uninitialized():  # every weight is about to be read from the file
            model = GPT(cfg, dtype=dtype)
        unexpected = [k for k in names if k not in dict(model.named_parameters())]
        if unexpected:
            raise MiniGPTError(f"{w_path} has tensors the model does not use: {', '.join(unexpected[:8])}")
        _copy_params(model, f, names, w_path)
    finally:
        f.close()
    return model


def _load_quantized(hf_cfg: dict, cfg: GPTConfig, w_path: Path) -> GPT:
    """An int8 model folder: int8 weights and float32 scales go straight into the quantized layers (no
    float32 copy of a quantized matrix is ever made), the rest into the float32 parameters."""
    quant = hf_cfg["quantization"]
    if not isinstance(quant, dict) or quant.get("scheme") not in QUANT_SCHEMES:
        raise MiniGPTError(f"{w_path.parent / 'config.json'}: unknown quantization {quant!r} "
                           f"(known schemes: {', '.join(QUANT_SCHEMES)})")
    group_size = quant.get("group_size", 0)
    if not isinstance(group_size, int) or group_size < 0:
        raise MiniGPTError(f"{w_path.parent / 'config.json'}: quantization group_size must be an integer >= 0, "
                           f"got {group_size!r}")
    if quant.get("layout", "out_in") != "out_in":
        raise MiniGPTError(f"{w_path.parent / 'config.json'}: unknown int8 layout {quant.get('layout')!r}")
    f = _SafetensorsFile(w_path)
    try:
        names = _names(f, w_path, quantized=True)
        cfg.qkv_bias = any(k.endswith(".attn.qkv.bias") for k in names)
        used = set()

        def source(layer: str):
            wname = layer if layer == "out_head" else layer + ".weight"
            if wname not in names or wname + SCALE_SUFFIX not in names:
                raise MiniGPTError(f"{w_path} lacks the int8 weight or its scales for {layer}")
            q, s = f.get(names[wname]), f.get(names[wname + SCALE_SUFFIX])
            if q.dtype != np.int8 or q.ndim != 2 or s.dtype != np.float32 or s.ndim != 2 or s.shape[0] != q.shape[0]:
                raise MiniGPTError(f"{w_path}: {names[wname]} must be int8 (out, in) with float32 scales (out, G), "
                                   f"got {q.dtype} {q.shape} and {s.dtype} {s.shape}")
            if group_size and q.shape[1] > group_size and s.shape[1] * group_size != q.shape[1]:
                raise MiniGPTError(f"{w_path}: scales {s.shape} of {names[wname]} do not match group_size {group_size}")
            used.update((wname, wname + SCALE_SUFFIX))
            return q, s

        with uninitialized():  # allocated, never written: the float32 weights are not materialised
            model = GPT(cfg)
        model.quantize(quant["scheme"], group_size, source=source)
        for n, k in names.items():
            if n not in used and n not in dict(model.named_parameters()):
                raise MiniGPTError(f"{w_path} has a tensor the quantized model does not use: {k}")
        _copy_params(model, f, {n: k for n, k in names.items() if n not in used}, w_path)
    finally:
        f.close()
    return model


def save_pretrained(model: GPT, path) -> None:
    """Write ``model`` as config.json + model.safetensors (GPT-2 names, ``transformer.`` prefix, as
    transformers' GPT2LMHeadModel saves them). Each file is written atomically.

    An int8-quantized model is written in minigpt's own variant of that layout: each quantized weight is
    an int8 tensor of shape (out, in) under the weight's GPT-2 name plus its float32 scales (out, G)
    under that name + ``_scale``, and config.json records ``"quantization": {"scheme": "int8",
    "group_size": n, "layout": "out_in"}``. Only minigpt reads such a folder."""
    from safetensors.numpy import save

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    tensors = {}

    def put(name, arr):
        hf = to_hf_name(name)
        key = hf if hf == "lm_head.weight" else "transformer." + hf
        tensors[key] = np.ascontiguousarray(arr)
        return key

    for name, arr in model.state_dict().items():
        put(name, arr)
    if model.quantization:
        for name, m in model.named_modules():
            if isinstance(m, (Int8Linear, Int8Embedding)) and name != "head_int8":
                tensors[put(name + ".weight", m.q) + SCALE_SUFFIX] = np.ascontiguousarray(m.scales)
        if not cfg.tie_weights:
            tensors[put("out_head", model.head_int8.q) + SCALE_SUFFIX] = np.ascontiguousarray(model.head_int8.scales)
    elif not cfg.qkv_bias:  # GPT-2's layout always has a q/k/v bias: store zeros
        for i in range(cfg.n_layers):
            tensors[f"transformer.h.{i}.attn.c_attn.bias"] = np.zeros(3 * cfg.emb_dim, dtype=np.float32)
    atomic_write_bytes(path / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    hf_cfg = config_to_hf(cfg)
    if model.quantization:
        hf_cfg["quantization"] = {**model.quantization, "layout": "out_in"}
    atomic_write_json(path / "config.json", hf_cfg)
