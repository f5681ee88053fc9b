"""Model folders: which kind of folder a path is (run, checkpoint / model, LoRA adapters), loading a GPT
or a GPTClassifier from it (with LoRA adapters applied), and writing one.

The GPT-2 weights always stay a plain GPT-2 file (``model.safetensors`` read and checked by
``checkpoint.open_pretrained``, each tensor straight into its parameter); a classifier adds its head in ``score.safetensors`` and its labels in
``config.json`` (``num_labels``, ``id2label``, as transformers' GPT2ForSequenceClassification); a LoRA model
adds ``adapter.safetensors`` (the adapters; rank, alpha and targets in its metadata). An adapter-only folder
(``adapter_config.json`` + ``adapter.safetensors``) names the base model folder it applies to.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import MiniGPTError
from ..io import atomic_write_bytes, atomic_write_json
from safetensors import safe_open
from safetensors.numpy import save

from ..nn.lora import apply_lora
from ..nn import uninitialized
from .checkpoint import (ADAPTER_CONFIG, ADAPTER_FILE, HEAD_FILE, _read_safetensors, config_to_hf, open_pretrained,
                         resolve_model_dir, write_pretrained)
from .classifier import GPTClassifier, classifier_config
from .gpt import GPT


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


def load_model(path, dtype=np.float32, kind: str | None = None):
    """A GPT or a GPTClassifier from a run folder, a checkpoint/model folder or a LoRA adapter folder.

    ``kind`` ("lm" or "classifier") makes the other kind an error. LoRA adapters stored beside the
    weights (``adapter.safetensors``) are applied; an adapter-only folder loads its base model first.
    """
    path = resolve_model_dir(path)
    if (path / ADAPTER_CONFIG).exists() and not (path / "model.safetensors").exists():
        return _load_adapter_folder(path, dtype, kind)
    if (path / "config.json").is_file():
        hf_cfg = _read_json(path / "config.json")
        if hf_cfg.get("quantization") is not None and not _is_classifier(hf_cfg):
            _check_kind(path, "lm", kind)  # an int8 folder: GPT reads it without a float32 copy
            return GPT.from_pretrained(path, dtype=dtype)
    hf_cfg = _read_json(path / "config.json") if (path / "config.json").is_file() else {}
    is_clf = _is_classifier(hf_cfg)
    with open_pretrained(path) as pf:  # checks config.json and the weights' header before anything is built
        cfg = pf.config
        _check_kind(path, "classifier" if is_clf else "lm", kind)
        head = {}
        if is_clf:
            labels = _labels(hf_cfg, path)
            if not (path / HEAD_FILE).exists():
                raise MiniGPTError(f"{path} is a classifier folder without its head ({HEAD_FILE})")
            head = _read_safetensors(path / HEAD_FILE)
            if set(head) != {"score.weight", "score.bias"} or head["score.weight"].shape != (cfg.emb_dim, len(labels)):
                raise MiniGPTError(f"{path / HEAD_FILE}: expected score.weight ({cfg.emb_dim}, {len(labels)}) and "
                                   f"score.bias, found {sorted(head)}")
        with uninitialized():  # every weight is read from the files: no random initialisation
            if is_clf:
                model = GPTClassifier(cfg, labels, dtype=dtype)
                model.max_length = (hf_cfg.get("minigpt") or {}).get("max_length")
            else:
                model = GPT(cfg, dtype=dtype)
        pf.fill(model, head)  # each tensor straight into its parameter: ~1x the file's size in memory
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
    """(GPT state under minigpt names, classifier head, LoRA adapters)."""
    gpt, head, adapters = {}, {}, {}
    for name, arr in model.state_dict().items():
        if name.endswith((".lora_A", ".lora_B")):
            adapters[name] = np.ascontiguousarray(arr)
        elif isinstance(model, GPTClassifier) and name.startswith("score."):
            head[name] = np.ascontiguousarray(arr)
        else:
            gpt[name] = arr
    return gpt, head, adapters


def _adapter_bytes(model, adapters: dict, head: dict | None = None) -> bytes:
    lc = getattr(model, "lora_config", None) or {}
    meta = {"rank": str(lc.get("rank")), "alpha": str(lc.get("alpha")), "targets": json.dumps(lc.get("targets", []))}
    return save({**adapters, **(head or {})}, metadata=meta)


def save_model(model, path) -> None:
    """Write ``model`` (a GPT or GPTClassifier, with or without LoRA layers) as a model folder (see the module
    docstring); every file atomically."""
    path = Path(path)
    gpt, head, adapters = _split_state(model)
    write_pretrained(path, model.config, gpt)
    for f, tensors in ((HEAD_FILE, head), (ADAPTER_FILE, adapters)):
        if tensors:
            data = _adapter_bytes(model, tensors) if f == ADAPTER_FILE else save(tensors)
            atomic_write_bytes(path / f, data)
        elif (path / f).exists():
            (path / f).unlink()
    atomic_write_json(path / "config.json", classifier_config(model) if isinstance(model, GPTClassifier)
                      else config_to_hf(model.config))


def save_adapters(model, path, base) -> None:
    """Write only the LoRA adapters (and a classifier's head) to ``path``: adapter.safetensors (rank, alpha
    and targets in its metadata) + adapter_config.json naming the ``base`` model folder they apply to."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _, head, adapters = _split_state(model)
    if not adapters:
        raise MiniGPTError("save_adapters: the model has no LoRA layers")
    is_clf = isinstance(model, GPTClassifier)
    atomic_write_bytes(path / ADAPTER_FILE, _adapter_bytes(model, adapters, head))
    acfg = {"base": str(Path(base).resolve()), "kind": "classifier" if is_clf else "lm",
            **(getattr(model, "lora_config", None) or {})}
    if is_clf:
        acfg["num_labels"] = model.num_labels
        acfg["id2label"] = list(model.id2label)
    atomic_write_json(path / ADAPTER_CONFIG, acfg)
