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
import math
import re
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save

from ..errors import MiniGPTError
from ..io import atomic_write_bytes, atomic_write_json, read_json
from .config import INITS, GPTConfig, checked_field as _field
from .tensorfile import (_FLOAT_DTYPES, _MAX_HEADER, _NP_DTYPES, SCALE_SUFFIX, _read_header, _read_safetensors,  # noqa: F401
                         _TensorFile, check_finite, fill_model)
from .hf_llama import INDEX_FILE, LlamaFile, config_from_llama, config_to_llama, from_llama_names, is_llama_config, uses_llama_layout, write_llama

CONFIG_BYTES, CONFIG_DEPTH = 1 << 20, 16  # the bounds on a model folder's small JSON files (config.json, ...)
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
    """config.json for ``cfg``: GPT-2's (or, for a model beyond GPT-2, Llama's / Qwen 3's: see hf_llama)."""
    if uses_llama_layout(cfg):
        return config_to_llama(cfg)
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
        # minigpt's own fields: GPT-2's file has no q/k/v-bias switch, and ``init`` says how the run's
        # weights were first drawn (so that a config read back builds the same kind of new model)
        "minigpt": {"qkv_bias": cfg.qkv_bias, "drop_rate": cfg.drop_rate, "init": cfg.init},
    }


_SIZE_FIELDS = ("vocab_size", "n_positions", "n_embd", "n_head", "n_layer")


def config_from_hf(d: dict, where: str = "config.json") -> GPTConfig:
    """The GPTConfig of a Hugging Face GPT-2 ``config.json`` (already parsed); every field checked for its type
    and range (``where`` names the file in messages)."""
    if not isinstance(d, dict):
        raise MiniGPTError(f"{where} must hold a JSON object, got {type(d).__name__}")
    if d.get("model_type", "gpt2") != "gpt2":
        raise MiniGPTError(f"{where} describes a {d.get('model_type')!r} model, not gpt2")
    act = d.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise MiniGPTError(f"{where}: activation {act!r} is not supported (minigpt implements GPT-2's tanh GELU)")
    for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
        if d.get(flag):
            raise MiniGPTError(f"{where} sets {flag}, which minigpt does not implement")
    if d.get("scale_attn_weights") is False:
        raise MiniGPTError(f"{where} disables attention scaling, which minigpt does not implement")
    for key in ("vocab_size", "n_embd", "n_head", "n_layer"):
        if key not in d:
            raise MiniGPTError(f"{where} lacks the GPT-2 field {key!r}")
    if "n_positions" not in d and "n_ctx" not in d:
        raise MiniGPTError(f"{where} lacks the GPT-2 field 'n_positions'")
    n_embd = _field(d, "n_embd", "int", where=where)
    if d.get("n_inner") not in (None, 4 * n_embd):
        raise MiniGPTError(f"{where}: n_inner={d['n_inner']!r} is not supported (minigpt's MLP is 4 x n_embd)")
    extra = d.get("minigpt", {})
    if not isinstance(extra, dict):
        raise MiniGPTError(f"{where}: 'minigpt' must be an object, got {extra!r}")
    eps = _field(d, "layer_norm_epsilon", "float", 1e-5, where)
    if not 0 < eps < 1:
        raise MiniGPTError(f"{where}: layer_norm_epsilon must be in (0, 1), got {eps!r}")
    drop = _field(extra, "drop_rate", "float", d.get("resid_pdrop", 0.1), where)
    if not 0 <= drop < 1:
        raise MiniGPTError(f"{where}: the drop rate must be in [0, 1), got {drop!r}")
    init = extra.get("init", "gpt2")
    if init not in INITS:
        raise MiniGPTError(f"{where}: minigpt.init must be one of {', '.join(INITS)}, got {init!r}")
    return GPTConfig(
        vocab_size=_field(d, "vocab_size", "int", where=where),
        context_length=_field(d, "n_positions" if "n_positions" in d else "n_ctx", "int", where=where),
        emb_dim=n_embd,
        n_heads=_field(d, "n_head", "int", where=where),
        n_layers=_field(d, "n_layer", "int", where=where),
        drop_rate=float(drop),
        qkv_bias=_field(extra, "qkv_bias", "bool", True, where),
        tie_weights=_field(d, "tie_word_embeddings", "bool", True, where),
        layer_norm_eps=float(eps),
        init=init,
    )


def expected_shapes(cfg: GPTConfig) -> dict:
    """The shape of every parameter of a GPT with config ``cfg`` (minigpt names), without building one."""
    V, C, E = cfg.vocab_size, cfg.context_length, cfg.emb_dim
    out = {"tok_emb.weight": (V, E), "pos_emb.weight": (C, E)}
    for i in range(cfg.n_layers):
        b = f"blocks.{i}."
        out.update({b + "norm1.weight": (E,), b + "norm1.bias": (E,), b + "attn.qkv.weight": (E, 3 * E),
                    b + "attn.qkv.bias": (3 * E,), b + "attn.proj.weight": (E, E), b + "attn.proj.bias": (E,),
                    b + "norm2.weight": (E,), b + "norm2.bias": (E,), b + "ff.fc.weight": (E, 4 * E),
                    b + "ff.fc.bias": (4 * E,), b + "ff.proj.weight": (4 * E, E), b + "ff.proj.bias": (E,)})
    out.update({"final_norm.weight": (E,), "final_norm.bias": (E,), "out_head": (V, E)})
    return out


def _numbered(layers: set, n: int) -> bool:
    """Whether the block numbers ``layers`` are exactly 0..n-1 (checked without building range(n): a
    config may claim n_layer 10**9)."""
    return len(layers) == n and (n == 0 or (min(layers) == 0 and max(layers) == n - 1))


def _check_header(cfg: GPTConfig, header: dict, w_path: Path, cfg_path: Path) -> dict:
    """Check the tensors a safetensors header announces against the config before anything is allocated:
    float dtypes, every parameter present with the shape the config implies. ``{minigpt name: file name}``."""
    names, unknown = {}, []
    for name, (shape, dtype) in header.items():
        hf = name[len("transformer."):] if name.startswith("transformer.") else name
        if _IGNORED.match(hf):
            continue
        ours = _rename(hf, _FROM_HF)
        if ours is None:
            unknown.append(name)
            continue
        if dtype not in _FLOAT_DTYPES:
            raise MiniGPTError(f"{w_path}: tensor {name} has dtype {dtype}; weights must be floating point "
                               f"({', '.join(sorted(_FLOAT_DTYPES))})")
        names[ours] = name
    if unknown:
        raise MiniGPTError(f"{w_path} has tensors that are not GPT-2 parameters: {', '.join(unknown[:8])}")
    layers = {int(m.group(1)) for m in map(re.compile(r"blocks\.(\d+)\.").match, names) if m}
    if not _numbered(layers, cfg.n_layers):  # before listing the config's parameters: n_layer may be huge
        raise MiniGPTError(f"{cfg_path} does not match {w_path.name}: n_layer is {cfg.n_layers}, the file holds "
                           f"{len(layers)} blocks{'' if layers == set(range(len(layers))) else ' (not numbered 0..n-1)'}")
    want = expected_shapes(cfg)
    for ours, shape in want.items():
        if ours not in names:
            if ours == "out_head" or ours.endswith(".attn.qkv.bias"):
                continue  # optional: a tied head, a model without q/k/v bias
            raise MiniGPTError(f"{w_path} lacks the tensor {to_hf_name(ours)} that {cfg_path.name} implies "
                               f"(n_layer={cfg.n_layers})")
        got = header[names[ours]][0]
        if got != shape:
            raise MiniGPTError(f"{cfg_path} does not match {w_path.name}: {names[ours]} has shape {list(got)}, the "
                               f"config implies {list(shape)} (vocab_size={cfg.vocab_size}, n_positions="
                               f"{cfg.context_length}, n_embd={cfg.emb_dim})")
    extra = [names[o] for o in names if o not in want]
    if extra:
        raise MiniGPTError(f"{w_path} has tensors beyond the n_layer={cfg.n_layers} of {cfg_path.name}: "
                           f"{', '.join(extra[:8])}")
    return names


# --- where a training run's checkpoints are (GPT.from_pretrained and the CLI take run folders) ----------
CHECKPOINT_FILES = ("config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json")
_STEP_DIR = re.compile(r"step-(\d{6,})")


def complete_checkpoints(out_dir) -> list[tuple[int, Path]]:
    """``(step, folder)`` of every complete checkpoint in ``out_dir/checkpoints`` (all its files present),
    oldest first. A checkpoint is renamed into place only once complete, so one that is listed is whole even
    when a kill came before ``latest.json`` was updated."""
    root = Path(out_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.fullmatch(p.name)
        if m and p.is_dir() and not p.is_symlink() and all((p / f).is_file() for f in CHECKPOINT_FILES):
            found.append((int(m.group(1)), p))
    return sorted(found)


def _read_latest(out_dir: Path) -> Path | None:
    """The checkpoint folder ``latest.json`` names, checked to be a ``checkpoints/step-N`` folder of this run
    (never a path outside it); None when there is no latest.json."""
    latest = out_dir / "latest.json"
    if not latest.exists():
        return None
    d = read_json(latest, "latest.json", max_bytes=1 << 16, max_depth=CONFIG_DEPTH)
    rel = d.get("checkpoint")
    if not isinstance(rel, str):
        raise MiniGPTError(f"{latest} is damaged: 'checkpoint' must be a path such as \"checkpoints/step-000400\", "
                           f"got {rel!r}")
    parts = Path(rel).parts
    if Path(rel).is_absolute() or len(parts) != 2 or parts[0] != "checkpoints" or not _STEP_DIR.fullmatch(parts[1]):
        raise MiniGPTError(f"{latest} is damaged: it points at {rel!r}, which is not a checkpoint of this run "
                           "(only checkpoints/step-N folders inside the run folder count)")
    return out_dir / "checkpoints" / parts[1]


def latest_checkpoint(out_dir) -> Path | None:
    """The newest complete checkpoint of the run in ``out_dir``: the one ``latest.json`` names, or a newer complete
    one (a kill between renaming a checkpoint into place and updating ``latest.json`` leaves it stale), or with
    no ``latest.json`` the newest complete one. None when the run has no complete checkpoint."""
    out_dir = Path(out_dir)
    named = _read_latest(out_dir)
    found = complete_checkpoints(out_dir)
    if named is not None and not named.is_symlink() and all((named / f).is_file() for f in CHECKPOINT_FILES[:2]):
        m = _STEP_DIR.fullmatch(named.name)
        if not found or int(m.group(1)) >= found[-1][0]:
            return named
    return found[-1][1] if found else None


def resolve_model_dir(path) -> Path:
    """A training output directory resolves to its latest complete checkpoint; a model directory to itself."""
    path = Path(path)
    if (path / "latest.json").exists() or (path / "checkpoints").is_dir():
        ck = latest_checkpoint(path)
        if ck is None:
            raise MiniGPTError(f"{path} is a training run folder without a complete checkpoint (the run stopped "
                               "before its first one)")
        return ck
    if (path / "model.safetensors").exists() or (path / INDEX_FILE).exists() or (path / ADAPTER_CONFIG).exists():
        return path
    if not path.exists():
        raise MiniGPTError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise MiniGPTError(f"{path} is a file; --model expects a training output folder or a model folder")
    raise MiniGPTError(f"{path} holds no model weights: neither a run (latest.json) nor a model "
                       "(model.safetensors) nor LoRA adapters (adapter_config.json)")


class PretrainedFile:
    """A float GPT-2 checkpoint, opened and checked (see :func:`open_pretrained`): ``config`` (tie and q/k/v
    bias settled from the file) and ``names`` (minigpt name -> tensor name in the file). Its tensors are read
    one at a time, each straight into the array that keeps it (:meth:`fill`, :meth:`state`), then checked to
    be finite. A context manager (the file is closed on exit)."""

    def __init__(self, config: GPTConfig, names: dict, tensors: _TensorFile):
        self.config, self.names, self.tensors = config, names, tensors
        self.path = tensors.path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.tensors.close()
        return False

    def read(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """minigpt parameter ``name`` read into ``out`` (a new array without), refused unless finite."""
        arr = self.tensors.read(self.names[name], out)
        check_finite({self.names[name]: arr}, self.path)
        return arr

    def state(self) -> dict:
        """The state dict (minigpt names -> new arrays of the file's dtypes)."""
        return {ours: self.read(ours) for ours in self.names}

    def shape(self, name: str) -> tuple:
        """The shape of minigpt parameter ``name`` in the file."""
        return tuple(self.tensors.header[self.names[name]][0])

    def fill(self, model, extra: dict | None = None) -> None:
        """Read every tensor into ``model``'s own parameter array (``extra``: more arrays by name, e.g. a
        classifier's head); names and shapes are checked as ``Module.load_state_dict`` checks them, before
        anything is read."""
        fill_model(self, model, extra)


def open_pretrained(path) -> PretrainedFile:
    """Open a Hugging Face GPT-2 directory (config.json + model.safetensors), or a training output directory
    (its latest complete checkpoint, as ``minigpt generate --model`` takes it), for reading.

    The config is checked field by field and against the shapes in the safetensors header before any array is
    read; weights must be floating point (and finite, as each is read). Whether the head is tied
    (``lm_head.weight`` absent or equal to ``wte``) and whether the model has a q/k/v bias (a stored one that
    is all zeros under a config without it is the padding ``write_pretrained`` adds) are settled here, reading
    only those tensors, a chunk at a time.
    """
    path = Path(path)
    if (path / "latest.json").exists() or (path / "checkpoints").is_dir():  # a run folder: its checkpoint
        path = resolve_model_dir(path)
    if not path.is_dir():
        raise MiniGPTError(f"model directory {path} does not exist")
    cfg_path, w_path = path / "config.json", path / "model.safetensors"
    if not cfg_path.exists():
        raise MiniGPTError(f"{path} has no config.json")
    if not w_path.exists() and not (path / INDEX_FILE).exists():
        hint = " (only pytorch_model.bin: minigpt reads safetensors, never pickles)" if (path / "pytorch_model.bin").exists() else ""
        raise MiniGPTError(f"{path} has no model.safetensors{hint}")
    hf_cfg = read_json(cfg_path, "config.json", max_bytes=CONFIG_BYTES, max_depth=CONFIG_DEPTH)
    if is_llama_config(hf_cfg):
        return LlamaFile(path, hf_cfg)
    cfg = config_from_hf(hf_cfg, str(cfg_path))
    header = _read_header(w_path)
    names = _check_header(cfg, header, w_path, cfg_path)
    tensors = _TensorFile(w_path, header)
    try:
        if "out_head" in names:  # an lm_head equal to wte is just the tied head stored twice
            if "tok_emb.weight" in names and tensors.equal(names["out_head"], names["tok_emb.weight"]):
                del names["out_head"]
                cfg.tie_weights = True
            else:
                cfg.tie_weights = False
        qkv_biases = [k for k in names if k.endswith(".attn.qkv.bias")]
        if not qkv_biases:
            cfg.qkv_bias = False
        elif not cfg.qkv_bias:
            if all(not np.any(tensors.read(names[k])) for k in qkv_biases):
                for k in qkv_biases:  # the zeros save_pretrained writes for a model without q/k/v bias
                    del names[k]
            else:
                cfg.qkv_bias = True
    except BaseException:
        tensors.close()
        raise
    return PretrainedFile(cfg, names, tensors)


def read_pretrained(path) -> tuple[GPTConfig, dict]:
    """The config and the state dict (minigpt's parameter names, new arrays) of a folder
    :func:`open_pretrained` opens. To load a model, ``GPT.from_pretrained`` (or ``PretrainedFile.fill``) reads
    the tensors straight into the model's parameters instead: the state dict and the model never coexist."""
    with open_pretrained(path) as pf:
        return pf.config, pf.state()


def write_pretrained(path, cfg: GPTConfig, state: dict, quantization: dict | None = None) -> None:
    """Write a config and a state dict (minigpt's names) as config.json + model.safetensors (GPT-2
    names, ``transformer.`` prefix, as transformers' GPT2LMHeadModel saves them), each file atomically.

    With ``quantization`` (an int8 model), ``state`` also holds int8 weights (out, in) under the weights'
    names and their float32 scales under the names + ``_scale``; config.json records the scheme, and no
    zero q/k/v biases are added."""
    if uses_llama_layout(cfg):
        return write_llama(path, cfg, state, quantization)
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


# --- int8-quantized folders ------------------------------------------------------------------------

class _LazyTensor:
    """One tensor of a memory-mapped safetensors file, read when converted to an array."""

    def __init__(self, f, key: str, path: Path):
        self.f, self.key, self.path = f, key, path
        self.shape = tuple(f.get_slice(key).get_shape())

    def __array__(self, dtype=None, copy=None):
        try:
            a = self.f.get_tensor(self.key)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise MiniGPTError(f"cannot read tensor {self.key!r} of {self.path}: {e}") from None
        return a if dtype is None else a.astype(dtype, copy=False)


class LazyState(dict):
    """minigpt name -> ``_LazyTensor``: tensors are read from the mapped file one at a time."""

    def array(self, name: str) -> np.ndarray:
        return np.asarray(self[name])


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


_INT8_LINEARS = ("attn.qkv.weight", "attn.proj.weight", "ff.fc.weight", "ff.proj.weight")


def _int8_names(keys, w_path: Path) -> dict:
    """{minigpt name: tensor name} of an int8 GPT-2 file's tensors (scales keep their ``_scale`` suffix);
    tensors that are not GPT-2 parameters are refused by name."""
    names, unknown = {}, []
    for key in keys:
        base = key[:-len(SCALE_SUFFIX)] if key.endswith(SCALE_SUFFIX) else key
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


def _check_int8_header(cfg: GPTConfig, header: dict, w_path: Path, cfg_path: Path) -> None:
    """An int8 folder's tensors checked against its config from the safetensors header alone, as
    ``_check_header`` checks a float folder's: the blocks numbered 0..n_layer-1 (checked first: n_layer may
    be huge), every int8 weight (out, in) with float32 scales (out, G) whose G divides ``in``, every other
    tensor floating point, all with the shapes the config implies."""
    names = _int8_names(header, w_path)
    layers = {int(m.group(1)) for m in map(re.compile(r"blocks\.(\d+)\.").match, names) if m}
    if not _numbered(layers, cfg.n_layers):
        raise MiniGPTError(f"{cfg_path} does not match {w_path.name}: n_layer is {cfg.n_layers}, the file holds "
                           f"{len(layers)} blocks{'' if layers == set(range(len(layers))) else ' (not numbered 0..n-1)'}")
    want = expected_shapes(cfg)
    quantized = {f"blocks.{i}.{w}" for i in range(cfg.n_layers) for w in _INT8_LINEARS}
    quantized.add("tok_emb.weight" if cfg.tie_weights else "out_head")
    for ours, shape in want.items():
        if ours not in names:
            if ours.endswith(".attn.qkv.bias") or (ours == "out_head" and cfg.tie_weights):
                continue
            raise MiniGPTError(f"{w_path} lacks the tensor {to_hf_name(ours)} that {cfg_path.name} implies "
                               f"(n_layer={cfg.n_layers}, tie_word_embeddings={str(cfg.tie_weights).lower()})")
        key = names[ours]
        got, dtype = header[key]
        if ours in quantized:
            out_in = shape if ours in ("tok_emb.weight", "out_head") else shape[::-1]
            scale = names.get(ours + SCALE_SUFFIX)
            s_shape, s_dtype = header[scale] if scale else ((), None)
            if (dtype != "I8" or got != out_in or s_dtype != "F32" or len(s_shape) != 2 or s_shape[0] != out_in[0]
                    or s_shape[1] < 1 or out_in[1] % s_shape[1]):
                raise MiniGPTError(f"{cfg_path} does not match {w_path.name}: {key} must be int8 {list(out_in)} with "
                                   f"float32 scales ({out_in[0]}, G), G dividing {out_in[1]}; the file holds {dtype} "
                                   f"{list(got)} and scales {s_dtype} {list(s_shape)}")
        elif dtype not in _FLOAT_DTYPES or got != shape:
            raise MiniGPTError(f"{cfg_path} does not match {w_path.name}: {key} must be floating point {list(shape)}, "
                               f"the file holds {dtype} {list(got)}")
    extra = [names[o] for o in names
             if o not in want and not (o.endswith(SCALE_SUFFIX) and o[:-len(SCALE_SUFFIX)] in quantized)]
    if extra:
        raise MiniGPTError(f"{w_path} has tensors beyond the n_layer={cfg.n_layers} of {cfg_path.name}: "
                           f"{', '.join(extra[:8])}")


def read_checkpoint(path):
    """``(config, state, quantization)`` of a model folder (or a run folder's latest checkpoint).
    A float folder: ``read_pretrained``'s config and state, quantization None. A folder written from an
    int8 model: the state is a ``LazyState`` over the memory-mapped file (int8 weights under the weights'
    names, float32 scales under the names + ``_scale``) and quantization ``{"scheme", "group_size"}``."""
    path = Path(path)
    if (path / "latest.json").exists() or (path / "checkpoints").is_dir():
        path = resolve_model_dir(path)
    cfg_path, w_path = path / "config.json", path / "model.safetensors"
    quant = None
    if cfg_path.exists() and w_path.exists():
        hf_cfg = read_json(cfg_path, "config.json", max_bytes=CONFIG_BYTES, max_depth=CONFIG_DEPTH)
        quant = _quantization(hf_cfg, cfg_path)
    if quant is None:
        cfg, state = read_pretrained(path)
        return cfg, state, None
    if is_llama_config(hf_cfg):
        return _read_llama_int8(path, hf_cfg, w_path, quant)
    cfg = config_from_hf(hf_cfg, str(cfg_path))
    _check_int8_header(cfg, _read_header(w_path), w_path, cfg_path)  # before any model is allocated
    try:
        f = safe_open(str(w_path), framework="numpy")
        keys = list(f.keys())
    except Exception as e:  # noqa: BLE001
        raise MiniGPTError(f"cannot read {w_path}: {e}") from None
    state = LazyState((ours, _LazyTensor(f, key, w_path)) for ours, key in _int8_names(keys, w_path).items())
    cfg.qkv_bias = any(k.endswith(".attn.qkv.bias") for k in state)
    return cfg, state, quant


class _ArrayState(dict):
    """A state dict already in memory, with ``LazyState``'s interface."""

    def array(self, name: str) -> np.ndarray:
        return np.asarray(self[name])


def _read_llama_int8(path: Path, hf_cfg: dict, w_path: Path, quant: dict):
    """read_checkpoint of an int8 folder in the Llama / Qwen 3 layout: the projections' int8 rows (and their
    scales) put side by side again; every array read now (these are small models)."""
    cfg = config_from_llama(hf_cfg, str(path / "config.json"))
    arrays = _read_safetensors(w_path)
    plain = {k[:-len(SCALE_SUFFIX)] if k.endswith(SCALE_SUFFIX) else k for k in arrays}
    found = from_llama_names(cfg, plain)
    state = _ArrayState()
    for name, parts in found.items():
        for suffix in ("", SCALE_SUFFIX):
            keys = [k + suffix for k, _ in parts]
            if not all(k in arrays for k in keys):
                continue
            a = [arrays[k] for k in keys]
            quantized = bool(suffix) or a[0].dtype == np.int8
            if parts[0][1] == "qkv":
                state[name + suffix] = np.concatenate(a) if quantized or a[0].ndim == 1 else \
                    np.concatenate([x.T for x in a], axis=1)
            elif parts[0][1] == "T" and not quantized:
                state[name + suffix] = np.ascontiguousarray(a[0].T)
            else:
                state[name + suffix] = a[0]
    return cfg, state, quant


# --- model folders ------------------------------------------------------------------------------------------
# Beside config.json + model.safetensors (always a plain GPT-2 file) a folder may hold a classifier's head
# and LoRA adapters; an adapter-only folder names its base (see model/folders.py).
HEAD_FILE = "score.safetensors"
ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def is_classifier_config(hf_cfg: dict, where="config.json") -> bool:
    """True for the config.json of a classifier (architectures GPT2ForSequenceClassification); an
    ``architectures`` that is not a list of names is refused (``where`` names the file)."""
    arch = hf_cfg.get("architectures")
    if arch is None:
        return False
    if not isinstance(arch, list) or not all(isinstance(a, str) for a in arch):
        raise MiniGPTError(f"{where}: architectures must be a list of names such as [\"GPT2LMHeadModel\"], "
                           f"got {arch!r}"[:300])
    return any("ForSequenceClassification" in a for a in arch)
