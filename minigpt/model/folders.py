"""Model folders: which kind of folder a path is (run, checkpoint / model, LoRA adapters), loading a GPT
or a GPTClassifier from it (with LoRA adapters applied), and writing one.

The GPT-2 weights always stay a plain GPT-2 file (``model.safetensors`` read and checked by
``checkpoint.open_pretrained``, each tensor straight into its parameter); a classifier adds its head in ``score.safetensors`` and its labels in
``config.json`` (``num_labels``, ``id2label``, as transformers' GPT2ForSequenceClassification); a LoRA model
adds ``adapter.safetensors`` (the adapters; rank, alpha and targets in its metadata). An adapter-only folder
(``adapter_config.json`` + ``adapter.safetensors``) names the base model folder it applies to, and the
sha256 of that base's weights (``base_sha256``), checked before the adapters are applied: another model of
the same shape in the base's place is refused, not silently adapted.

Everything read is checked as the model's own weights are: JSON files bounded in size and depth with every
field the loader uses type-checked, head and adapter tensors present by name, floating point and finite,
LoRA rank, alpha and targets in range. An int8 base is dequantized for the adapters; a base that carries
adapters itself has them merged into its weights before the new ones are added (adapter folders stack).
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

from ..errors import MiniGPTError
from ..io import atomic_write_bytes, atomic_write_json, read_json
from safetensors import safe_open
from safetensors.numpy import save

from ..nn.lora import apply_lora, check_alpha, check_rank, check_targets, has_lora, merge_lora
from ..nn import uninitialized
from .checkpoint import (ADAPTER_CONFIG, ADAPTER_FILE, CONFIG_BYTES, CONFIG_DEPTH, HEAD_FILE, _FLOAT_DTYPES,
                         _read_header, _read_safetensors, check_finite, config_to_hf, is_classifier_config,
                         open_pretrained, resolve_model_dir, write_pretrained)
from .classifier import GPTClassifier, classifier_config
from .gpt import GPT

MAX_ADAPTER_CHAIN = 8  # adapter folders whose base is an adapter folder ...: at most this many in a chain
WEIGHT_FILES = ("model.safetensors", HEAD_FILE, ADAPTER_FILE)  # what a folder's identity (sha256) covers


def _read_json(p: Path, what: str | None = None) -> dict:
    """A model folder's small JSON file (config.json, adapter_config.json), bounded in size and depth."""
    return read_json(p, what or p.name, max_bytes=CONFIG_BYTES, max_depth=CONFIG_DEPTH)


def folder_kind(path) -> str:
    """"classifier" or "lm" for a model folder (run folders resolve to their latest checkpoint)."""
    path = resolve_model_dir(path)
    if _is_adapter_folder(path):
        return _adapter_config(path)["kind"]
    if not (path / "config.json").exists():
        raise MiniGPTError(f"{path} has no config.json")
    return "classifier" if _is_classifier(_read_json(path / "config.json"), path) else "lm"


def _is_adapter_folder(path: Path) -> bool:
    return (path / ADAPTER_CONFIG).exists() and not (path / "model.safetensors").exists()


def _is_classifier(hf_cfg: dict, path: Path) -> bool:
    return is_classifier_config(hf_cfg, path / "config.json")


def load_model(path, dtype=np.float32, kind: str | None = None, float_weights: bool = False, _chain=()):
    """A GPT or a GPTClassifier from a run folder, a checkpoint/model folder or a LoRA adapter folder.

    ``kind`` ("lm" or "classifier") makes the other kind an error. LoRA adapters stored beside the
    weights (``adapter.safetensors``) are applied; an adapter-only folder loads its base model first (whose
    own adapters, if any, are merged into its weights first). ``float_weights``: an int8 folder is
    dequantized to float weights (for finetuning; adapters always apply to float weights) instead of loaded
    as int8 layers.
    """
    path = resolve_model_dir(path)
    if _is_adapter_folder(path):
        return _load_adapter_folder(path, dtype, kind, _chain)
    hf_cfg = _read_json(path / "config.json") if (path / "config.json").exists() else {}  # none: refused below
    is_clf = _is_classifier(hf_cfg, path)
    if hf_cfg.get("quantization") is not None and is_clf:
        raise MiniGPTError(f"{path / 'config.json'}: an int8 classifier is not a folder minigpt writes or reads "
                           "(int8 weights are for generation: quantize language models only)")
    if hf_cfg.get("quantization") is not None:
        _check_kind(path, "lm", kind)  # an int8 folder: GPT reads it without a float32 copy
        model = GPT.from_pretrained(path, dtype=dtype)
        return model.dequantize() if float_weights else model
    with open_pretrained(path) as pf:  # checks config.json and the weights' header before anything is built
        cfg = pf.config
        _check_kind(path, "classifier" if is_clf else "lm", kind)
        head = {}
        if is_clf:
            labels = _labels(hf_cfg, path / "config.json")
            max_length = _max_length(hf_cfg, path / "config.json")
            head = _read_head(path / HEAD_FILE, cfg.emb_dim, len(labels))
        with uninitialized():  # every weight is read from the files: no random initialisation
            if is_clf:
                model = GPTClassifier(cfg, labels, dtype=dtype)
                model.max_length = max_length
            else:
                model = GPT(cfg, dtype=dtype)
        pf.fill(model, head)  # each tensor straight into its parameter: ~1x the file's size in memory
    if (path / ADAPTER_FILE).exists():
        _attach_adapters(model, path / ADAPTER_FILE, need_head=False)
    return model


def _check_kind(path, have: str, want: str | None) -> None:
    if want is None or want == have:
        return
    if have == "classifier":
        raise MiniGPTError(f"{path} holds a classifier, not a language model: use `minigpt classify --model "
                           f"{path}` (it cannot generate text)")
    raise MiniGPTError(f"{path} holds a language model, not a classifier: finetune one first with "
                       f"`minigpt finetune classify --init {path} ...`")


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def check_labels(labels, where) -> list:
    """A classifier's label names: at least 2 distinct non-empty strings."""
    if not isinstance(labels, list) or len(labels) < 2:
        raise MiniGPTError(f"{where}: a classifier needs a list of at least 2 label names, got {_short(labels)}")
    for lab in labels:
        if not isinstance(lab, str) or not lab:
            raise MiniGPTError(f"{where}: label names must be non-empty strings, got {_short(lab)}")
    dup = sorted({lab for lab in labels if labels.count(lab) > 1})
    if dup:
        raise MiniGPTError(f"{where}: label names must differ, {_short(dup[0])} is given twice")
    return labels


def _labels(hf_cfg: dict, where) -> list:
    """The labels of a classifier's config.json: ``id2label`` mapping "0".."n-1" to names (``num_labels``,
    when given, must agree)."""
    id2label = hf_cfg.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise MiniGPTError(f"{where}: a classifier's config needs id2label (an object mapping \"0\", \"1\", ... "
                           f"to label names), got {_short(id2label)}")
    n = hf_cfg.get("num_labels", len(id2label))
    if isinstance(n, bool) or not isinstance(n, int) or n != len(id2label):
        raise MiniGPTError(f"{where}: num_labels must be the number of id2label entries ({len(id2label)}), "
                           f"got {_short(n)}")
    if set(id2label) != {str(i) for i in range(n)}:
        raise MiniGPTError(f"{where}: id2label must map '0'..'{n - 1}' to label names, got keys "
                           f"{_short(sorted(id2label))}")
    return check_labels([id2label[str(i)] for i in range(n)], f"{where}: id2label")


def _max_length(hf_cfg: dict, where):
    extra = hf_cfg.get("minigpt") or {}
    if not isinstance(extra, dict):
        raise MiniGPTError(f"{where}: 'minigpt' must be an object, got {_short(extra)}")
    n = extra.get("max_length")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise MiniGPTError(f"{where}: minigpt.max_length must be a positive integer (the longest input trained "
                           f"on), got {_short(n)}")
    return n


def _float_tensors(file: Path) -> dict:
    """``{name: (shape, dtype)}`` of a safetensors file (header only), every tensor floating point."""
    header = _read_header(file)
    for name, (_, dtype) in header.items():
        if dtype not in _FLOAT_DTYPES:
            raise MiniGPTError(f"{file}: tensor {name} has dtype {dtype}; weights must be floating point "
                               f"({', '.join(sorted(_FLOAT_DTYPES))})")
    return header


def _read_checked(file: Path) -> dict:
    tensors = _read_safetensors(file)
    check_finite(tensors, file)
    return tensors


def _read_head(file: Path, emb_dim: int, n_labels: int) -> dict:
    """A classifier's head (score.weight, score.bias) from ``file``: both present, float, finite, of the shapes
    the model and its labels imply."""
    if not file.exists():
        raise MiniGPTError(f"{file.parent} is a classifier folder without its head ({file.name})")
    header = _float_tensors(file)
    want = {"score.weight": (emb_dim, n_labels), "score.bias": (n_labels,)}
    for name, shape in want.items():
        if name not in header:
            raise MiniGPTError(f"{file} lacks the tensor {name} (expected shape {list(shape)})")
        if header[name][0] != shape:
            raise MiniGPTError(f"{file}: {name} has shape {list(header[name][0])}, expected {list(shape)} "
                               f"({emb_dim} features, {n_labels} labels)")
    extra = sorted(set(header) - set(want))
    if extra:
        raise MiniGPTError(f"{file} has tensors that are not a classifier head: {', '.join(extra[:8])}")
    return _read_checked(file)


def _lora_meta(file: Path) -> tuple[int, float, tuple]:
    try:
        with safe_open(str(file), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for damaged files
        raise MiniGPTError(f"cannot read {file}: {e}") from None
    missing = [k for k in ("rank", "alpha", "targets") if k not in meta]
    if missing:
        raise MiniGPTError(f"{file} lacks its LoRA metadata ({', '.join(missing)})")
    def number(s, kind):
        try:
            return kind(s)
        except ValueError:
            return s  # refused by the check below, which names it

    try:
        targets = json.loads(meta["targets"])
    except (ValueError, RecursionError):
        targets = meta["targets"]
    rank, alpha = number(meta["rank"], int), number(meta["alpha"], float)
    return (check_rank(rank, f"{file}: LoRA rank"), check_alpha(alpha, f"{file}: LoRA alpha"),
            check_targets(targets, f"{file}: LoRA targets"))


def _attach_adapters(model, file: Path, need_head: bool) -> None:
    """Wrap ``model``'s layers in LoRA layers and fill them from ``file``: every adapter the metadata (rank,
    alpha, targets) implies must be in the file, float and finite, and nothing else but (``need_head``: must
    be) a classifier's head. A model that already carries adapters has them merged into its weights first."""
    rank, alpha, targets = _lora_meta(file)
    header = _float_tensors(file)
    if has_lora(model):  # a base that carries adapters itself: fold them in, then add these on top
        merge_lora(model)
    try:
        apply_lora(model, rank, alpha, targets)
    except MiniGPTError as e:  # e.g. a rank wider than the layers, a head target on a language model
        raise MiniGPTError(f"{file}: {e}") from None
    own = dict(model.named_parameters())
    want = [n for n in own if n.endswith((".lora_A", ".lora_B"))]
    if need_head:
        want += ["score.weight", "score.bias"]
    missing = [n for n in want if n not in header]
    if missing:
        raise MiniGPTError(f"{file} lacks the tensor{'s' if len(missing) > 1 else ''} {', '.join(missing[:4])}"
                           f"{' ...' if len(missing) > 4 else ''} that its metadata (rank {rank}, targets "
                           f"{list(targets)}) implies")
    unknown = [k for k in header if k not in own or not (k in want or k.startswith("score."))]
    if unknown:
        raise MiniGPTError(f"{file}: tensor {unknown[0]!r} matches no adapter of the model")
    bad = [f"{k} {list(header[k][0])} (expected {list(own[k].shape)})" for k in header if header[k][0] != own[k].shape]
    if bad:
        raise MiniGPTError(f"{file}: shape mismatch for {'; '.join(bad[:4])}")
    model.load_state_dict(_read_checked(file), strict=False)  # every name was checked above
    model.requires_grad_(False)


def _adapter_config(path: Path) -> dict:
    """adapter_config.json of an adapter folder, every field the loader uses checked."""
    where = path / ADAPTER_CONFIG
    acfg = _read_json(where)
    base = acfg.get("base")
    if not isinstance(base, str) or not base.strip():
        raise MiniGPTError(f"{where}: 'base' must name the base model folder the adapters apply to, got "
                           f"{_short(base)}")
    kind = acfg.get("kind", "lm")
    if kind not in ("lm", "classifier"):
        raise MiniGPTError(f"{where}: 'kind' must be \"lm\" or \"classifier\", got {_short(kind)}")
    acfg["kind"] = kind
    if "targets" in acfg:
        check_targets(acfg["targets"], f"{where}: targets")
    if kind == "classifier":
        check_labels(acfg.get("id2label"), f"{where}: id2label")
        n = acfg.get("num_labels", len(acfg["id2label"]))
        if isinstance(n, bool) or not isinstance(n, int) or n != len(acfg["id2label"]):
            raise MiniGPTError(f"{where}: num_labels must be the number of id2label entries "
                               f"({len(acfg['id2label'])}), got {_short(n)}")
    digest = acfg.get("base_sha256")
    if digest is not None and (not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest)):
        raise MiniGPTError(f"{where}: base_sha256 must be 64 hexadecimal digits, got {_short(digest)}")
    return acfg


def adapter_base(path: Path, chain=()) -> Path:
    """The model folder an adapter folder's ``base`` names (resolved; a run folder to its checkpoint), refusing
    a base that is the folder itself, a cycle of adapter folders, or one that does not exist. ``chain``: the
    adapter folders already followed to get here."""
    acfg = _adapter_config(path)
    base = Path(acfg["base"])
    base_path = base if base.is_absolute() else path / base
    here = path.resolve()
    chain = (*chain, here)
    if base_path.resolve() == here:
        raise MiniGPTError(f"{path / ADAPTER_CONFIG}: 'base' {acfg['base']!r} is the adapter folder itself")
    if not base_path.exists():
        raise MiniGPTError(f"{path}: its base model {base_path} does not exist (adapters need their base)")
    resolved = resolve_model_dir(base_path)
    if resolved.resolve() in chain:
        raise MiniGPTError(f"{path / ADAPTER_CONFIG}: 'base' {acfg['base']!r} leads back to {resolved} (a cycle of "
                           "adapter folders)")
    if len(chain) >= MAX_ADAPTER_CHAIN and _is_adapter_folder(resolved):
        raise MiniGPTError(f"{path}: more than {MAX_ADAPTER_CHAIN} adapter folders stacked on each other")
    return resolved


_DIGESTS: dict = {}  # (file, size, mtime_ns) -> sha256: a folder is hashed once per process


def weights_sha256(folder) -> str:
    """The identity of a model folder's weights: sha256 over its weight files (model.safetensors, the
    classifier head, the adapters; names and bytes). An adapter folder records its base's."""
    folder = Path(folder)
    h = hashlib.sha256()
    for name in WEIGHT_FILES:
        f = folder / name
        if not f.is_file():
            continue
        st = f.stat()
        key = (str(f.resolve()), st.st_size, st.st_mtime_ns)
        if key not in _DIGESTS:
            fh = hashlib.sha256()
            try:
                with open(f, "rb") as src:
                    while chunk := src.read(1 << 22):
                        fh.update(chunk)
            except OSError as e:
                raise MiniGPTError(f"cannot read {f}: {e.strerror or e}") from None
            _DIGESTS[key] = fh.hexdigest()
        h.update(f"{name}\0{_DIGESTS[key]}\0".encode())
    return h.hexdigest()


def _load_adapter_folder(path: Path, dtype, kind, chain=()):
    acfg = _adapter_config(path)
    base_dir = adapter_base(path, chain)
    _check_kind(path, acfg["kind"], kind)
    if not (path / ADAPTER_FILE).exists():
        raise MiniGPTError(f"{path} has {ADAPTER_CONFIG} but no {ADAPTER_FILE}")
    if acfg.get("base_sha256") and weights_sha256(base_dir) != acfg["base_sha256"]:
        raise MiniGPTError(f"{path}: its base {base_dir} is not the model these adapters were trained on (the "
                           f"weights' sha256 differs from base_sha256 in {ADAPTER_CONFIG}; was it retrained or "
                           "replaced?)")
    model = load_model(base_dir, dtype=dtype, float_weights=True, _chain=(*chain, path.resolve()))
    is_clf = acfg["kind"] == "classifier"
    if is_clf and not isinstance(model, GPTClassifier):
        if has_lora(model):
            merge_lora(model)
        model = GPTClassifier.from_gpt(model, acfg["id2label"])
    elif not is_clf and isinstance(model, GPTClassifier):
        raise MiniGPTError(f"{path / ADAPTER_CONFIG}: kind \"lm\", but its base {base_dir} is a classifier")
    elif is_clf and list(model.id2label) != list(acfg["id2label"]):
        raise MiniGPTError(f"{path / ADAPTER_CONFIG}: id2label {acfg['id2label']} differs from its base "
                           f"classifier's {model.id2label}")
    _attach_adapters(model, path / ADAPTER_FILE, need_head=is_clf)
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


_STEP_DIR = re.compile(r"step-\d{6,}")


def stable_base(base) -> Path:
    """The folder an adapter folder should name as its base, as an absolute path: for a checkpoint of a run
    (``run/checkpoints/step-N``, deleted when the run rotates its checkpoints) or a run folder, the run's
    final ``model/`` when it has one, else the run folder (which resolves to its latest checkpoint); any
    other folder itself."""
    p = Path(base).resolve()
    if p.parent.name == "checkpoints" and _STEP_DIR.fullmatch(p.name):
        p = p.parent.parent
    if (p / "latest.json").exists() or (p / "checkpoints").is_dir():
        final = p / "model"
        if (final / "model.safetensors").is_file() or (final / ADAPTER_CONFIG).is_file():
            return final
    return p


def save_adapters(model, path, base) -> None:
    """Write only the LoRA adapters (and a classifier's head) to ``path``: adapter.safetensors (rank, alpha
    and targets in its metadata) + adapter_config.json naming the ``base`` model folder they apply to (see
    :func:`stable_base`) and the sha256 of its weights, checked when the adapters are loaded."""
    path = Path(path)
    _, head, adapters = _split_state(model)
    if not adapters:
        raise MiniGPTError("save_adapters: the model has no LoRA layers")
    base = stable_base(base)
    digest = weights_sha256(resolve_model_dir(base))
    path.mkdir(parents=True, exist_ok=True)
    is_clf = isinstance(model, GPTClassifier)
    atomic_write_bytes(path / ADAPTER_FILE, _adapter_bytes(model, adapters, head))
    acfg = {"base": str(base), "base_sha256": digest, "kind": "classifier" if is_clf else "lm",
            **(getattr(model, "lora_config", None) or {})}
    if is_clf:
        acfg["num_labels"] = model.num_labels
        acfg["id2label"] = list(model.id2label)
    atomic_write_json(path / ADAPTER_CONFIG, acfg)
