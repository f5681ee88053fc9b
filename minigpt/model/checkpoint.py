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
from .gpt import GPT, GPTConfig

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
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise MiniGPTError(f"cannot read {path}: {e}") from None


def resolve_model_dir(path) -> Path:
    """A training run folder (with ``latest.json``) resolves to its latest checkpoint; a model folder
    (``model.safetensors``, or an adapter folder with ``adapter_config.json``) to itself."""
    path = Path(path)
    latest = path / "latest.json"
    if latest.exists():
        try:
            rel = json.loads(latest.read_text())["checkpoint"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise MiniGPTError(f"{latest} is damaged: {e}") from None
        target = path / rel
        if not (target / "model.safetensors").exists():
            raise MiniGPTError(f"{latest} points at {target}, which has no model.safetensors")
        return target
    if (path / "model.safetensors").exists() or (path / ADAPTER_CONFIG).exists():
        return path
    if not path.exists():
        raise MiniGPTError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise MiniGPTError(f"{path} is a file, not a model folder")
    raise MiniGPTError(f"{path} holds no model weights: neither a run (latest.json) nor a model "
                       "(model.safetensors) nor LoRA adapters (adapter_config.json)")


ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def _read_json(p: Path) -> dict:
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MiniGPTError(f"{p} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise MiniGPTError(f"{p} must hold a JSON object")
    return d


def folder_kind(path) -> str:
    """"classifier" or "lm" for a model folder (run folders resolve to their latest checkpoint)."""
    path = resolve_model_dir(path)
    if (path / ADAPTER_CONFIG).exists() and not (path / "model.safetensors").exists():
        return _read_json(path / ADAPTER_CONFIG).get("kind", "lm")
    if not (path / "config.json").exists():
        raise MiniGPTError(f"{path} has no config.json")
    return "classifier" if _is_classifier(_read_json(path / "config.json")) else "lm"


def _is_classifier(hf_cfg: dict) -> bool:
    return any("ForSequenceClassification" in a for a in hf_cfg.get("architectures") or [])


def _read_folder(path: Path):
    """(hf config dict, GPTConfig, GPT state under minigpt names, other tensors by their stored name)."""
    if not path.is_dir():
        raise MiniGPTError(f"model directory {path} does not exist")
    cfg_path, w_path = path / "config.json", path / "model.safetensors"
    if not cfg_path.exists():
        raise MiniGPTError(f"{path} has no config.json")
    if not w_path.exists():
        hint = " (only pytorch_model.bin: minigpt reads safetensors, never pickles)" if (path / "pytorch_model.bin").exists() else ""
        raise MiniGPTError(f"{path} has no model.safetensors{hint}")
    hf_cfg = _read_json(cfg_path)
    cfg = config_from_hf(hf_cfg)
    tensors = _read_safetensors(w_path)

    state, extra = {}, {}
    for name, arr in tensors.items():
        hf = name[len("transformer."):] if name.startswith("transformer.") else name
        if _IGNORED.match(hf):
            continue
        ours = _rename(hf, _FROM_HF)
        if ours is None:
            extra[name] = arr
            continue
        state[ours] = arr
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
    return hf_cfg, cfg, state, extra


def load_model(path, dtype=np.float32, kind: str | None = None):
    """A GPT or a GPTClassifier from a run folder, a checkpoint/model folder or a LoRA adapter folder.

    ``kind`` ("lm" or "classifier") makes the other kind an error. LoRA adapters stored beside the
    weights (``adapter.safetensors``) are applied; an adapter-only folder loads its base model first.
    """
    from .classifier import GPTClassifier

    path = resolve_model_dir(path)
    if (path / ADAPTER_CONFIG).exists() and not (path / "model.safetensors").exists():
        return _load_adapter_folder(path, dtype, kind)
    hf_cfg, cfg, state, extra = _read_folder(path)
    is_clf = _is_classifier(hf_cfg)
    _check_kind(path, "classifier" if is_clf else "lm", kind)
    if is_clf:
        labels = _labels(hf_cfg, path)
        model = GPTClassifier(cfg, labels, dtype=dtype)
        model.max_length = (hf_cfg.get("minigpt") or {}).get("max_length")
        try:
            w, b = extra.pop("score.weight"), extra.pop("score.bias", None)
        except KeyError:
            raise MiniGPTError(f"{path / 'model.safetensors'} has no score.weight (the classification head)") from None
        state["score.weight"] = np.ascontiguousarray(w.T)  # stored (labels, dim) as transformers; ours (dim, labels)
        state["score.bias"] = b if b is not None else np.zeros(len(labels), dtype=w.dtype)
    else:
        model = GPT(cfg, dtype=dtype)
    if extra:
        raise MiniGPTError(f"{path / 'model.safetensors'} has tensors that are not GPT-2 parameters: "
                           f"{', '.join(list(extra)[:8])}")
    model.load_state_dict(state)
    if (path / ADAPTER_FILE).exists():
        _attach_adapters(model, path / ADAPTER_FILE)
    return model


def _check_kind(path, have: str, want: str | None) -> None:
    if want is None or want == have:
        return
    if have == "classifier":
        raise MiniGPTError(f"{path} holds a classifier, not a language model: use `minigpt classify --model "
                           f"{path}` (it cannot generate text)")
    raise MiniGPTError(f"{path} holds a language model, not a classifier: finetune one first with "
                       f"`minigpt finetune classify --init {path} ...`")


def _labels(hf_cfg: dict, path) -> list:
    id2label = hf_cfg.get("id2label")
    n = hf_cfg.get("num_labels", len(id2label or {}))
    try:
        labels = [str(id2label[str(i)]) for i in range(int(n))]
    except (KeyError, TypeError, ValueError):
        raise MiniGPTError(f"{path / 'config.json'}: id2label must map '0'..'{n}' to label names") from None
    return labels


def _attach_adapters(model, file: Path) -> None:
    from safetensors import safe_open

    from ..nn.lora import apply_lora

    try:
        with safe_open(str(file), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise MiniGPTError(f"cannot read {file}: {e}") from None
    try:
        rank, alpha = int(meta["rank"]), float(meta["alpha"])
        targets = json.loads(meta["targets"])
    except (KeyError, ValueError, TypeError):
        raise MiniGPTError(f"{file} lacks its LoRA metadata (rank, alpha, targets)") from None
    apply_lora(model, rank, alpha, targets)
    tensors = _read_safetensors(file)
    own = dict(model.named_parameters())
    head = {k: v for k, v in tensors.items() if k.startswith("score.")}
    for k in tensors:
        if k not in own:
            raise MiniGPTError(f"{file}: tensor {k!r} matches no parameter of the model")
    model.load_state_dict({**model.state_dict(), **tensors, **head})
    model.requires_grad_(False)


def _load_adapter_folder(path: Path, dtype, kind):
    from .classifier import GPTClassifier

    acfg = _read_json(path / ADAPTER_CONFIG)
    base = acfg.get("base")
    if not base:
        raise MiniGPTError(f"{path / ADAPTER_CONFIG} does not name its base model ('base')")
    base_path = (path / base) if not Path(base).is_absolute() else Path(base)
    if not base_path.exists():
        raise MiniGPTError(f"{path}: its base model {base_path} does not exist (adapters need their base)")
    _check_kind(path, acfg.get("kind", "lm"), kind)
    model = load_model(base_path, dtype=dtype)
    if acfg.get("kind") == "classifier" and not isinstance(model, GPTClassifier):
        model = GPTClassifier.from_gpt(model, acfg["id2label"])
    if not (path / ADAPTER_FILE).exists():
        raise MiniGPTError(f"{path} has {ADAPTER_CONFIG} but no {ADAPTER_FILE}")
    _attach_adapters(model, path / ADAPTER_FILE)
    return model


def load_pretrained(path, dtype=np.float32) -> GPT:
    """Build a GPT from a Hugging Face GPT-2 directory (config.json + model.safetensors), a checkpoint
    folder or a training run folder (its latest checkpoint)."""
    return load_model(path, dtype=dtype, kind="lm")


def _split_state(model):
    """(tensors for model.safetensors under GPT-2 names, LoRA adapter tensors under minigpt names)."""
    from .classifier import GPTClassifier

    tensors, adapters = {}, {}
    for name, arr in model.state_dict().items():
        if name.endswith((".lora_A", ".lora_B")):
            adapters[name] = np.ascontiguousarray(arr)
        elif isinstance(model, GPTClassifier) and name.startswith("score."):
            tensors[name] = np.ascontiguousarray(arr.T if name == "score.weight" else arr)
        else:
            hf = to_hf_name(name)
            tensors[hf if hf == "lm_head.weight" else "transformer." + hf] = np.ascontiguousarray(arr)
    return tensors, adapters


def _adapter_bytes(model, adapters: dict, with_head: bool) -> bytes:
    from safetensors.numpy import save

    lc = getattr(model, "lora_config", None) or {}
    if with_head:
        adapters = {**adapters, **{n: np.ascontiguousarray(p.data) for n, p in model.named_parameters()
                                   if n.startswith("score.") and not n.endswith((".lora_A", ".lora_B"))}}
    meta = {"rank": str(lc.get("rank")), "alpha": str(lc.get("alpha")), "targets": json.dumps(lc.get("targets", []))}
    return save(adapters, metadata=meta)


def _hf_config(model) -> dict:
    from .classifier import GPTClassifier

    d = config_to_hf(model.config)
    if isinstance(model, GPTClassifier):
        d["architectures"] = ["GPT2ForSequenceClassification"]
        d["num_labels"] = model.num_labels
        d["id2label"] = {str(i): lab for i, lab in enumerate(model.id2label)}
        d["label2id"] = {lab: i for i, lab in enumerate(model.id2label)}
        if getattr(model, "max_length", None):
            d["minigpt"]["max_length"] = int(model.max_length)  # the longest input it was trained on
    return d


def save_pretrained(model: GPT, path) -> None:
    """Write ``model`` as config.json + model.safetensors (GPT-2 names, ``transformer.`` prefix, as
    transformers' GPT2LMHeadModel saves them). Each file is written atomically. A classifier adds its head
    (``score.*``) and labels; a LoRA model adds ``adapter.safetensors`` (its adapters, unmerged)."""
    from safetensors.numpy import save

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    tensors, adapters = _split_state(model)
    if not cfg.qkv_bias:  # GPT-2's layout always has a q/k/v bias: store zeros
        for i in range(cfg.n_layers):
            tensors[f"transformer.h.{i}.attn.c_attn.bias"] = np.zeros(3 * cfg.emb_dim, dtype=model.dtype)
    atomic_write_bytes(path / "model.safetensors", save(tensors, metadata={"format": "pt"}))
    if adapters:
        atomic_write_bytes(path / ADAPTER_FILE, _adapter_bytes(model, adapters, with_head=False))
    elif (path / ADAPTER_FILE).exists():
        (path / ADAPTER_FILE).unlink()
    atomic_write_json(path / "config.json", _hf_config(model))


def save_adapters(model, path, base) -> None:
    """Write only the LoRA adapters (and a classifier's head) to ``path``: adapter.safetensors (rank, alpha
    and targets in its metadata) + adapter_config.json naming the ``base`` model folder they apply to."""
    from .classifier import GPTClassifier

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _, adapters = _split_state(model)
    if not adapters:
        raise MiniGPTError("save_adapters: the model has no LoRA layers")
    is_clf = isinstance(model, GPTClassifier)
    atomic_write_bytes(path / ADAPTER_FILE, _adapter_bytes(model, adapters, with_head=is_clf))
    acfg = {"base": str(Path(base).resolve()), "kind": "classifier" if is_clf else "lm",
            **(getattr(model, "lora_config", None) or {})}
    if is_clf:
        acfg["num_labels"] = model.num_labels
        acfg["id2label"] = list(model.id2label)
    atomic_write_json(path / ADAPTER_CONFIG, acfg)
