"""What a finetuning run trains: ``--train head|last-blocks:K|all|lora``, shared by classification and
instruction finetuning.

- ``head``: only the new head (a classifier's ``score``; for a language model: the final LayerNorm).
- ``last-blocks:K``: the last K transformer blocks, the final LayerNorm and the head (the book's default
  for classification is K = 1).
- ``all``: every parameter.
- ``lora``: LoRA adapters (``minigpt.nn.lora``) on the blocks' linear layers, plus a classifier's head.

Frozen parameters get no gradient and no optimizer state, and cost no backward time: the autograd graph
is only recorded from the first op that touches a trainable parameter, so backward stops below the lowest
trainable layer (the embeddings and frozen blocks run forward only).
"""
from __future__ import annotations

import dataclasses

from ..data import dataset_path
from ..distributed import launch_env
from ..errors import MiniGPTError
from ..nn.lora import DEFAULT_TARGETS, apply_lora, has_lora

MODES = ("head", "last-blocks:K", "all", "lora")


def parse_mode(spec: str) -> tuple[str, int]:
    """``"last-blocks:2"`` -> ("last-blocks", 2); other modes -> (mode, 0)."""
    if spec in ("head", "all", "lora"):
        return spec, 0
    if spec.startswith("last-blocks:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            k = -1
        if k < 1:
            raise MiniGPTError(f"--train {spec!r}: K must be an integer >= 1 (e.g. last-blocks:1)")
        return "last-blocks", k
    raise MiniGPTError(f"--train {spec!r}: expected one of head, last-blocks:K, all, lora")


def check_single_process(command: str) -> None:
    """Finetuning runs in one process: refuse to start under ``mpiexec -n N`` with N > 1, where every rank
    would run the same finetuning into the same output folder."""
    env = launch_env()
    if env is not None and ((env[1] or 1) > 1 or env[0] > 0):
        raise MiniGPTError(f"{command} runs in a single process, but MPI started {env[1] or 'several'} ranks: start "
                           "it without mpiexec (data-parallel training is `mpiexec -n N minigpt train`)")


def saved_config(state: dict, task: str, cls, path):
    """(config, data, init) of a finetuning run from its ``trainer_state.json`` (``state``), refusing a
    damaged ``task`` section with a one-line message naming the file and the field."""
    where = f"{path}: trainer_state.json"
    section = state.get(task)
    if not isinstance(section, dict):
        raise MiniGPTError(f"{where} is damaged: {task!r} must be a JSON object, got {str(section)[:60]!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise MiniGPTError(f"{where} is damaged: unknown {task} field(s) {unknown}")
    if "split" in section and not isinstance(section["split"], list):
        raise MiniGPTError(f"{where} is damaged: {task}.split must be a list, got {str(section['split'])[:60]!r}")
    try:
        cfg = cls(**section)
    except MiniGPTError as e:
        raise MiniGPTError(f"{where} is damaged: {task}.{e}") from None
    for key in ("data", "init"):
        if not isinstance(state.get(key), str) or not state[key]:
            raise MiniGPTError(f"{where} is damaged: {key!r} must be a path, got {str(state.get(key))[:60]!r}")
    return cfg, state["data"], state["init"]


def apply_train_mode(model, spec: str, lora_rank: int = 16, lora_alpha: float = 16.0,
                     lora_targets=DEFAULT_TARGETS) -> int:
    """Freeze ``model`` for ``spec`` (see the module docstring); returns the number of trainable parameters.
    A model that already carries LoRA layers (a resumed LoRA run) only has its freezing redone."""
    mode, k = parse_mode(spec)
    head = getattr(model, "score", None)
    n_layers = len(model.blocks)
    if mode == "lora":
        if has_lora(model):
            model.requires_grad_(False)
            for n, p in model.named_parameters():
                if n.endswith((".lora_A", ".lora_B")):
                    p.requires_grad = True
            if head is not None and "head" not in tuple(lora_targets):
                head.requires_grad_(True)
            return model.num_parameters(trainable_only=True)
        return apply_lora(model, lora_rank, lora_alpha, lora_targets,
                          train_also=("score",) if head is not None and "head" not in tuple(lora_targets) else ())
    if has_lora(model):
        raise MiniGPTError(f"--train {spec}: the model carries LoRA adapters; merge them first or use --train lora")
    if mode == "all":
        model.requires_grad_(True)
        return model.num_parameters(trainable_only=True)
    model.requires_grad_(False)
    if mode == "last-blocks":
        if k > n_layers:
            raise MiniGPTError(f"--train last-blocks:{k}: the model has only {n_layers} transformer blocks")
        for blk in model.blocks[n_layers - k:]:
            blk.requires_grad_(True)
        model.final_norm.requires_grad_(True)
    if head is not None:
        head.requires_grad_(True)
    elif mode == "head":
        model.final_norm.requires_grad_(True)
    return model.num_parameters(trainable_only=True)


def fresh_start(task: str, init, data, cfg, config_cls):
    """The checks of a new finetuning run, before any work: ``--init`` and ``--data`` given, a data set name
    resolved to its file, the settings (``config_cls()`` by default) and their ``--train`` mode valid.
    Returns ``(data file, cfg)``."""
    if init is None or data is None:
        raise MiniGPTError(f"finetune {task} needs --init DIR and --data FILE")
    data = dataset_path(data)  # a data set name ("sms-spam") becomes its file
    cfg = cfg or config_cls()
    parse_mode(cfg.train)
    return data, cfg
