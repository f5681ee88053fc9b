"""Llama and Qwen 3 checkpoints in the Hugging Face layout: ``config.json`` + ``model.safetensors`` (or shards
``model-0000k-of-0000n.safetensors`` listed in ``model.safetensors.index.json``), as transformers'
``LlamaForCausalLM`` and ``Qwen3ForCausalLM`` save them. Float32, float16 and bfloat16 tensors are read
(bfloat16 widened to float32 exactly); minigpt writes float32.

minigpt name                         Hugging Face name (PyTorch's (out, in) weights: transposed here)
tok_emb.weight                       model.embed_tokens.weight
blocks.{i}.norm1.weight              model.layers.{i}.input_layernorm.weight
blocks.{i}.attn.qkv.weight (C, ...)  model.layers.{i}.self_attn.{q,k,v}_proj.weight, side by side
blocks.{i}.attn.proj.weight          model.layers.{i}.self_attn.o_proj.weight
blocks.{i}.attn.{q,k}_norm.weight    model.layers.{i}.self_attn.{q,k}_norm.weight (Qwen 3)
blocks.{i}.norm2.weight              model.layers.{i}.post_attention_layernorm.weight
blocks.{i}.ff.{gate,up,down}.weight  model.layers.{i}.mlp.{gate,up,down}_proj.weight
final_norm.weight                    model.norm.weight
out_head (untied only)               lm_head.weight

A minigpt model whose configuration no Hugging Face class describes (sinusoidal positions, or GPT-2's
LayerNorm with rotary attention, ...) is written in the same layout with its whole configuration in
config.json's ``minigpt`` object and its other tensors under ``minigpt.<name>``: minigpt reads it back,
transformers does not.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import numpy as np
from safetensors.numpy import save

from ..errors import MiniGPTError
from ..io import atomic_write_bytes, atomic_write_json, read_json
from .config import GPTConfig, checked_field
from .tensorfile import SCALE_SUFFIX, _read_header, _TensorFile, check_finite, fill_model

ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}
INDEX_FILE = "model.safetensors.index.json"
_EXTRA_PREFIX = "minigpt."


def is_llama_config(d: dict) -> bool:
    """Whether a parsed config.json describes a Llama or Qwen 3 model (or a minigpt model in their layout)."""
    archs = d.get("architectures") or []
    return (d.get("model_type") in ARCHITECTURES or any(a in ARCHITECTURES.values() for a in archs if isinstance(a, str))
            or isinstance(d.get("minigpt"), dict) and isinstance(d["minigpt"].get("config"), dict))


def uses_llama_layout(cfg: GPTConfig) -> bool:
    """Whether a model of ``cfg`` is saved in this layout (anything but GPT-2's own blocks and positions)."""
    return not (cfg.is_gpt2_block and cfg.pos_encoding == "learned")


def _is_hf_describable(cfg: GPTConfig) -> bool:
    return (cfg.norm == "rmsnorm" and cfg.ffn == "swiglu" and cfg.pos_encoding == "rope" and not cfg.bias
            and cfg.qkv_bias == cfg.bias)


# --- config.json ---------------------------------------------------------------------------------------

def config_from_llama(d: dict, where: str = "config.json") -> GPTConfig:
    """The GPTConfig of a Llama / Qwen 3 ``config.json`` (parsed), every field checked."""
    if not isinstance(d, dict):
        raise MiniGPTError(f"{where} must hold a JSON object, got {type(d).__name__}")
    own = d.get("minigpt")
    if isinstance(own, dict) and "config" in own:
        fields = own["config"]
        names = {f.name for f in dataclasses.fields(GPTConfig)}
        if not isinstance(fields, dict) or set(fields) - names:
            raise MiniGPTError(f"{where}: minigpt.config must be an object of GPTConfig fields, got "
                               f"{sorted(set(fields) - names) if isinstance(fields, dict) else fields!r}")
        try:
            return GPTConfig(**fields)
        except TypeError as e:
            raise MiniGPTError(f"{where}: minigpt.config: {e}") from None
    mt = d.get("model_type")
    if mt not in ARCHITECTURES:
        raise MiniGPTError(f"{where} describes a {mt!r} model; minigpt reads llama and qwen3 ones in this layout")
    if d.get("hidden_act", "silu") != "silu":
        raise MiniGPTError(f"{where}: hidden_act {d.get('hidden_act')!r} is not supported (SwiGLU uses silu)")
    if d.get("mlp_bias"):
        raise MiniGPTError(f"{where}: mlp_bias is not supported")
    if mt == "qwen3" and d.get("use_sliding_window"):
        raise MiniGPTError(f"{where}: sliding-window attention is not supported")
    field = lambda key, kind, default=None: checked_field(d, key, kind, default, where=where)  # noqa: E731
    hidden, heads = field("hidden_size", "int"), field("num_attention_heads", "int")
    rope = d.get("rope_parameters") if isinstance(d.get("rope_parameters"), dict) else {}
    legacy = d.get("rope_scaling") if isinstance(d.get("rope_scaling"), dict) else {}
    rope_type = rope.get("rope_type", legacy.get("rope_type", legacy.get("type", "default")))
    theta = checked_field({**d, **rope}, "rope_theta", "positive", 10000.0, where=where)
    scaling = None
    if rope_type == "llama3":
        src = rope if "factor" in rope else legacy
        scaling = {k: float(checked_field(src, k, "positive", where=where)) for k in
                   ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")}
    elif rope_type != "default":
        raise MiniGPTError(f"{where}: rope_type {rope_type!r} is not supported (default and llama3 are)")
    bias, eps = field("attention_bias", "bool", False), field("rms_norm_eps", "positive", 1e-6)
    return GPTConfig(
        vocab_size=field("vocab_size", "int"), context_length=field("max_position_embeddings", "int"),
        emb_dim=hidden, n_heads=heads, n_layers=field("num_hidden_layers", "int"), drop_rate=0.0, qkv_bias=bias,
        bias=bias, tie_weights=field("tie_word_embeddings", "bool", False), layer_norm_eps=float(eps),
        norm="rmsnorm", ffn="swiglu", hidden_dim=field("intermediate_size", "int"),
        n_kv_groups=field("num_key_value_heads", "int", heads), head_dim=field("head_dim", "int", hidden // heads),
        qk_norm=mt == "qwen3", pos_encoding="rope", rope_theta=float(theta), rope_scaling=scaling)


def config_to_llama(cfg: GPTConfig) -> dict:
    """config.json for ``cfg``: a Llama or Qwen 3 one transformers loads when the model is one of theirs,
    always with minigpt's whole configuration in ``minigpt.config``."""
    own = {"minigpt": {"config": dataclasses.asdict(cfg)}}
    if not _is_hf_describable(cfg):
        return {"model_type": "minigpt", **own}
    mt = "qwen3" if cfg.qk_norm else "llama"
    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.rope_scaling:
        rope = {"rope_type": "llama3", "rope_theta": cfg.rope_theta, **cfg.rope_scaling}
    return {
        "architectures": [ARCHITECTURES[mt]], "model_type": mt, "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.emb_dim, "intermediate_size": cfg.ffn_dim, "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.attn_head_dim,
        "hidden_act": "silu", "max_position_embeddings": cfg.context_length, "rms_norm_eps": cfg.layer_norm_eps,
        "tie_word_embeddings": cfg.tie_weights, "attention_bias": cfg.qkv_bias, "mlp_bias": False,
        "rope_parameters": rope, "rope_theta": cfg.rope_theta,
        "rope_scaling": {**cfg.rope_scaling, "rope_type": "llama3"} if cfg.rope_scaling else None,
        "torch_dtype": "float32", **own,
    }


# --- names ---------------------------------------------------------------------------------------------
_L = "model.layers.{i}."
_SIMPLE = {  # minigpt name pattern -> HF name pattern, tensors stored alike
    "tok_emb.weight": "model.embed_tokens.weight",
    "final_norm.weight": "model.norm.weight",
    "out_head": "lm_head.weight",
    "blocks.{i}.norm1.weight": _L + "input_layernorm.weight",
    "blocks.{i}.norm2.weight": _L + "post_attention_layernorm.weight",
    "blocks.{i}.attn.q_norm.weight": _L + "self_attn.q_norm.weight",
    "blocks.{i}.attn.k_norm.weight": _L + "self_attn.k_norm.weight",
    "blocks.{i}.attn.proj.bias": _L + "self_attn.o_proj.bias",
}
_TRANSPOSED = {  # minigpt's (in, out) weights <-> PyTorch's (out, in)
    "blocks.{i}.attn.proj.weight": _L + "self_attn.o_proj.weight",
    "blocks.{i}.ff.gate.weight": _L + "mlp.gate_proj.weight",
    "blocks.{i}.ff.up.weight": _L + "mlp.up_proj.weight",
    "blocks.{i}.ff.down.weight": _L + "mlp.down_proj.weight",
}
_QKV = {"blocks.{i}.attn.qkv.weight": "weight", "blocks.{i}.attn.qkv.bias": "bias"}


def _match(name: str, table: dict):
    """(HF pattern, block number) of the first pattern of ``table`` that matches minigpt ``name``."""
    for ours, theirs in table.items():
        m = re.fullmatch(re.escape(ours).replace(re.escape("{i}"), r"(\d+)"), name)
        if m:
            return theirs, (m.group(1) if m.groups() else None)
    return None, None


def _sizes(cfg: GPTConfig):
    D = cfg.attn_head_dim
    return cfg.n_heads * D, cfg.kv_heads * D


def to_llama_tensors(cfg: GPTConfig, state: dict, quantized: bool = False) -> dict:
    """minigpt state dict -> {HF name: array}. ``quantized``: int8 weights are stored (out, in) already (and
    their ``_scale`` arrays beside them), so nothing is transposed; rows are split instead of columns."""
    q_w, kv_w = _sizes(cfg)
    out = {}
    for name, arr in state.items():
        scale = name.endswith(SCALE_SUFFIX)
        base = name[:-len(SCALE_SUFFIX)] if scale else name
        suffix = SCALE_SUFFIX if scale else ""
        arr = np.asarray(arr)
        theirs, i = _match(base, _QKV)
        if theirs is not None:
            parts = (q_w, q_w + kv_w)
            pre = _L.format(i=i) + "self_attn."
            if arr.ndim == 1 or quantized:   # a bias, or an (out, in) int8 weight: split along the first axis
                pieces = np.split(arr, parts, axis=0)
            else:                             # (C, (H + 2G) D): split columns, transpose each to (out, in)
                pieces = [p.T for p in np.split(arr, parts, axis=1)]
            for proj, p in zip(("q_proj", "k_proj", "v_proj"), pieces):
                out[f"{pre}{proj}.{theirs}{suffix}"] = np.ascontiguousarray(p)
            continue
        theirs, i = _match(base, _TRANSPOSED)
        if theirs is not None:
            out[theirs.format(i=i) + suffix] = np.ascontiguousarray(arr if quantized or scale else arr.T)
            continue
        theirs, i = _match(base, _SIMPLE)
        key = theirs.format(i=i) if theirs is not None else _EXTRA_PREFIX + base
        out[key + suffix] = np.ascontiguousarray(arr)
    return out


def from_llama_names(cfg: GPTConfig, keys) -> dict:
    """{minigpt name: [(HF name, how)]} for the tensors ``keys`` of a file; ``how`` is "same", "T"
    (transpose) or "qkv" (the three projections side by side). Unknown names are refused by name."""
    rev = {}
    for table, how in ((_SIMPLE, "same"), (_TRANSPOSED, "T")):
        for ours, theirs in table.items():
            rev[re.escape(theirs).replace(re.escape("{i}"), r"(\d+)")] = (ours, how)
    for part in ("weight", "bias"):
        for proj in ("q_proj", "k_proj", "v_proj"):
            rev[re.escape(_L).replace(re.escape("{i}"), r"(\d+)") + f"self_attn\\.{proj}\\.{part}"] = \
                (f"blocks.{{i}}.attn.qkv.{part}", "qkv")
    found, unknown = {}, []
    for key in keys:
        if key.startswith(_EXTRA_PREFIX):
            found.setdefault(key[len(_EXTRA_PREFIX):], []).append((key, "same"))
            continue
        for pat, (ours, how) in rev.items():
            m = re.fullmatch(pat, key)
            if m:
                found.setdefault(ours.format(i=m.group(1)) if m.groups() else ours, []).append((key, how))
                break
        else:
            if not re.fullmatch(r"model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq|model\.rotary_emb\.inv_freq", key):
                unknown.append(key)
    if unknown:
        raise MiniGPTError(f"the checkpoint has tensors that are not parameters of this {cfg.norm}/{cfg.ffn} model: "
                           f"{', '.join(unknown[:8])}")
    for name, parts in found.items():
        if parts[0][1] == "qkv":
            order = {"q_proj": 0, "k_proj": 1, "v_proj": 2}
            parts.sort(key=lambda p: order[p[0].split(".")[-2]])
            if len(parts) != 3:
                raise MiniGPTError(f"the checkpoint has {len(parts)} of the q/k/v projections of {name}; all three "
                                   "are needed")
    return found


def parameter_shapes(cfg: GPTConfig) -> dict:
    """The shape of every parameter of a GPT of ``cfg`` (minigpt's names, in model order), without building it."""
    C, V, Hf = cfg.emb_dim, cfg.vocab_size, cfg.ffn_dim
    q_w, kv_w = _sizes(cfg)
    out = {"tok_emb.weight": (V, C)}
    if cfg.pos_encoding == "learned":
        out["pos_emb.weight"] = (cfg.context_length, C)
    gpt2 = cfg.is_gpt2_block
    ln = cfg.norm == "layernorm"
    for i in range(cfg.n_layers):
        b = f"blocks.{i}."
        out[b + "norm1.weight"] = (C,)
        if ln:
            out[b + "norm1.bias"] = (C,)
        out[b + "attn.qkv.weight"] = (C, q_w + 2 * kv_w)
        if cfg.qkv_bias:
            out[b + "attn.qkv.bias"] = (q_w + 2 * kv_w,)
        out[b + "attn.proj.weight"] = (q_w, C)
        if gpt2 or cfg.bias:
            out[b + "attn.proj.bias"] = (C,)
        if cfg.qk_norm:
            out[b + "attn.q_norm.weight"] = out[b + "attn.k_norm.weight"] = (cfg.attn_head_dim,)
        out[b + "norm2.weight"] = (C,)
        if ln:
            out[b + "norm2.bias"] = (C,)
        if cfg.ffn == "swiglu":
            for name, shape in (("gate", (C, Hf)), ("up", (C, Hf)), ("down", (Hf, C))):
                out[b + f"ff.{name}.weight"] = shape
                if cfg.bias:
                    out[b + f"ff.{name}.bias"] = shape[1:]
        else:
            out.update({b + "ff.fc.weight": (C, Hf), b + "ff.fc.bias": (Hf,), b + "ff.proj.weight": (Hf, C),
                        b + "ff.proj.bias": (C,)})
    out["final_norm.weight"] = (C,)
    if ln:
        out["final_norm.bias"] = (C,)
    if not cfg.tie_weights:
        out["out_head"] = (V, C)
    return out


# --- reading -------------------------------------------------------------------------------------------

def _shards(path: Path) -> list:
    index = path / INDEX_FILE
    if (path / "model.safetensors").exists():
        return [path / "model.safetensors"]
    if not index.exists():
        raise MiniGPTError(f"{path} has neither model.safetensors nor {INDEX_FILE}")
    meta = read_json(index, INDEX_FILE, max_bytes=64 << 20)
    wmap = meta.get("weight_map") if isinstance(meta, dict) else None
    if not isinstance(wmap, dict) or not wmap or not all(isinstance(v, str) for v in wmap.values()):
        raise MiniGPTError(f"{index}: weight_map must be an object of tensor name -> file name")
    files = []
    for name in dict.fromkeys(wmap.values()):
        f = (path / name)
        if Path(name).name != name or not f.is_file():
            raise MiniGPTError(f"{index} names the shard {name!r}, which is not a file in {path}")
        files.append(f)
    return files


class LlamaFile:
    """A Llama / Qwen 3 (or minigpt-in-that-layout) checkpoint opened and checked, with the interface of
    ``checkpoint.PretrainedFile``: ``config``, ``names``, ``read(name, out)``, ``state()``, ``fill(model)``."""

    def __init__(self, path: Path, hf_cfg: dict):
        self.path = path
        where = str(path / "config.json")
        self.config = config_from_llama(hf_cfg, where)
        self.files, self.where = [], {}
        try:
            for shard in _shards(path):
                header = _read_header(shard)
                bad = [f"{k} ({dt})" for k, (_, dt) in header.items() if dt not in ("F32", "F16", "BF16", "F64")]
                if bad:
                    raise MiniGPTError(f"{shard}: tensors must be floating point, got {', '.join(bad[:4])}")
                tf = _TensorFile(shard, header)
                self.files.append(tf)
                for k in header:
                    self.where[k] = tf
            self.names = from_llama_names(self.config, self.where)
            if "out_head" in self.names:
                self.config.tie_weights = False
            self._check_shapes()
        except BaseException:
            self.close()
            raise

    def _check_shapes(self):
        cfg = self.config
        layers = {int(m.group(1)) for m in map(re.compile(r"blocks\.(\d+)\.").match, self.names) if m}
        if layers != set(range(cfg.n_layers)):  # before listing the config's parameters: it may be huge
            raise MiniGPTError(f"{self.path}: config.json says {cfg.n_layers} layers, the weights hold {len(layers)}")
        want = parameter_shapes(cfg)
        missing = [n for n in want if n not in self.names]
        extra = [n for n in self.names if n not in want]
        if missing or extra:
            raise MiniGPTError(f"{self.path}: the weights do not match config.json: "
                               + "; ".join(f"{w} {', '.join(ns[:6])}" for w, ns in (("missing", missing),
                                                                                    ("unexpected", extra)) if ns))
        for n, shape in want.items():
            got = self.shape(n)
            if got != shape:
                raise MiniGPTError(f"{self.path}: {self.names[n][0][0]} gives {n} the shape {got}, config.json "
                                   f"implies {shape}")

    def _hf_shape(self, key):
        return tuple(self.where[key].header[key][0])

    def shape(self, name: str) -> tuple:
        parts = self.names[name]
        how = parts[0][1]
        shapes = [self._hf_shape(k) for k, _ in parts]
        if how == "T":
            return shapes[0][::-1]
        if how == "qkv":
            if len(shapes[0]) == 1:
                return (sum(s[0] for s in shapes),)
            return (shapes[0][1], sum(s[0] for s in shapes))
        return shapes[0]

    def _raw(self, key) -> np.ndarray:
        tf = self.where[key]
        shape, dtype = tf.header[key]
        if dtype == "BF16":  # bfloat16 is the top half of a float32: widen exactly
            bits = tf.read_bits(key)
            return (bits.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        return tf.read(key)

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        parts = self.names[name]
        how = parts[0][1]
        arrs = [self._raw(k) for k, _ in parts]
        for (k, _), a in zip(parts, arrs):
            check_finite({k: a}, self.path)
        if how == "T":
            arr = arrs[0].T
        elif how == "qkv":
            arr = np.concatenate(arrs) if arrs[0].ndim == 1 else np.concatenate([a.T for a in arrs], axis=1)
        else:
            arr = arrs[0]
        if out is None:
            return np.ascontiguousarray(arr)
        np.copyto(out, arr, casting="unsafe")
        return out

    def state(self) -> dict:
        return {n: self.read(n) for n in self.names}

    def fill(self, model, extra: dict | None = None) -> None:
        fill_model(self, model, extra)

    def close(self):
        for tf in self.files:
            tf.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


# --- writing -------------------------------------------------------------------------------------------

def write_llama(path, cfg: GPTConfig, state: dict, quantization: dict | None = None) -> None:
    """config.json + model.safetensors in the Llama / Qwen 3 layout, each file written atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = to_llama_tensors(cfg, state, quantized=bool(quantization))
    atomic_write_bytes(path / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    hf_cfg = config_to_llama(cfg)
    if quantization:
        hf_cfg["quantization"] = {**quantization, "layout": "out_in"}
    atomic_write_json(path / "config.json", hf_cfg)
