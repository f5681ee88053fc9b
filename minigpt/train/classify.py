"""Classification finetuning (the book's chapter 6): a pretrained GPT + a classification head, trained on
labelled texts with the same Trainer (checkpoints, resume, log.jsonl, plots) as pretraining.

``finetune_classify(init, data, out, cfg)`` is what ``minigpt finetune classify`` calls; ``Classifier`` is
the user-facing predictor (``Classifier.from_pretrained(dir).predict(texts)``).

An output folder looks like a pretraining run (``latest.json``, ``checkpoints/``, ``log.jsonl``,
``loss.png``) plus ``accuracy.png``, ``metrics.json`` (precision, recall, F1, confusion matrix on test) and
``model/``: the final classifier alone (config with ``num_labels``/``id2label``, weights, tokenizer), or
with ``--train lora`` its adapters only (``--merge``: a plain folder with the adapters folded in).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from .. import random as mrandom
from ..errors import MiniGPTError
from ..io import atomic_write_json
from ..tensor import no_grad
from ..settings import ClassifyConfig, TrainConfig  # noqa: F401  (ClassifyConfig re-exported)
from .loop import Trainer, check_run_folder, load_checkpoint
from .. import functional as F
from ..data.classification import (ClassificationDataset, balance, check_label_config, check_splits, read_labelled,
                                   stratified_split)
from ..data import DataLoader
from ..loading import load_model_and_tokenizer
from ..model import GPTClassifier
from .finetune import apply_train_mode, check_single_process, fresh_start, saved_config
from ..model.folders import resolve_model_dir, save_adapters
from ..nn.lora import has_lora, merge_lora


ENDOFTEXT = "<|endoftext|>"


# --- metrics ------------------------------------------------------------------------------------------
def confusion_matrix(y_true, y_pred, n: int) -> np.ndarray:
    """(n, n) counts: row = true class, column = predicted class."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return m


def classification_report(y_true, y_pred, labels: list) -> dict:
    """Accuracy, per-class precision / recall / F1 (0 where undefined), their macro averages and the
    confusion matrix. Example: true [0, 1, 1], predicted [0, 1, 0] -> accuracy 2/3, class 1 precision 1.0,
    recall 0.5, F1 2/3."""
    n = len(labels)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(float)
    pred_pos, true_pos = cm.sum(axis=0), cm.sum(axis=1)
    prec = np.divide(tp, pred_pos, out=np.zeros(n), where=pred_pos > 0)
    rec = np.divide(tp, true_pos, out=np.zeros(n), where=true_pos > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros(n), where=(prec + rec) > 0)
    per = {lab: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(true_pos[i])}
           for i, lab in enumerate(labels)}
    total = cm.sum()
    return {"accuracy": float(tp.sum() / total) if total else 0.0, "per_class": per,
            "macro_precision": float(prec.mean()), "macro_recall": float(rec.mean()), "macro_f1": float(f1.mean()),
            "confusion_matrix": cm.tolist(), "labels": list(labels)}


def predict_dataset(model, ds, batch_size: int = 32):
    """(mean loss, predicted label ids, probabilities) over a whole ClassificationDataset, no_grad."""
    was = model.training
    model.eval()
    preds, probs, total = [], [], 0.0
    try:
        with no_grad():
            for s in range(0, len(ds), batch_size):
                ids, labels, lengths = ds.get_batch(np.arange(s, min(s + batch_size, len(ds))))
                logits = model(ids, lengths)
                total += float(F.cross_entropy(logits, labels, reduction="sum").item())
                p = F.softmax(logits, axis=-1).data
                probs.append(p)
                preds.append(p.argmax(axis=-1))
    finally:
        model.train(was)
    return total / len(ds), np.concatenate(preds), np.concatenate(probs)


# --- data -------------------------------------------------------------------------------------------
def _encode_all(tok, texts):
    return [tok.encode_ordinary(t) for t in texts]


def prepare_data(path, tok, cfg: ClassifyConfig, context_length: int, id2label=None, log=print):
    """Read, balance, split and encode; returns (datasets dict, id2label, info dict)."""
    texts, labels, where = read_labelled(path, cfg.format, cfg.text_column, cfg.label_column)
    classes = sorted(set(labels))
    if id2label is None:
        id2label = classes
    elif sorted(check_label_config(list(id2label), where="the --init classifier")) != classes:
        raise MiniGPTError(f"{path}: labels {classes} differ from the model's {list(id2label)}")
    counts = {c: labels.count(c) for c in classes}
    idx = balance(labels, cfg.seed) if cfg.balance else np.arange(len(labels))
    sub_labels = [labels[i] for i in idx]
    parts = stratified_split(sub_labels, cfg.split, cfg.seed)
    check_splits(path, sub_labels, parts)  # no empty split, every class trained on: before any work
    label2id = {lab: i for i, lab in enumerate(id2label)}
    if ENDOFTEXT not in tok.special_tokens:
        raise MiniGPTError("the tokenizer has no <|endoftext|> token to pad with")
    pad = tok.special_tokens[ENDOFTEXT]
    enc = {}
    for name, part in zip(("train", "val", "test"), parts):
        sel = idx[part]
        enc[name] = (_encode_all(tok, [texts[i] for i in sel]), [label2id[labels[i]] for i in sel])
    for name, (ids, _) in enc.items():
        for k, t in enumerate(ids):
            if not t:
                raise MiniGPTError(f"{name} example {k} encodes to no tokens")
    longest = max(len(t) for t in enc["train"][0])
    max_len = cfg.max_length or min(longest, context_length)
    if max_len > context_length:
        raise MiniGPTError(f"--max-length {max_len} exceeds the model's context length {context_length}")
    ds = {name: ClassificationDataset(ids, labs, max_len, pad) for name, (ids, labs) in enc.items()}
    truncated = {name: d.truncated for name, d in ds.items()}
    info = {"examples": len(texts), "counts": counts, "used": len(idx),
            "split": {n: len(d) for n, d in ds.items()}, "max_length": max_len, "longest_train": longest,
            "truncated": truncated}
    log(f"data: {path}: {len(texts):,} examples ({', '.join(f'{c} {n:,}' for c, n in counts.items())}); "
        f"{'balanced to ' if cfg.balance else ''}{len(idx):,}; split train/val/test "
        f"{len(ds['train'])}/{len(ds['val'])}/{len(ds['test'])}; max length {max_len} tokens"
        + (f" (truncated: {sum(truncated.values())} texts)" if sum(truncated.values()) else ""))
    return ds, list(id2label), info


def _fingerprint(ds) -> str:
    h = hashlib.sha256()
    for name in ("train", "val", "test"):
        for t in ds[name].ids:
            h.update(t.tobytes() + b"|")
        h.update(ds[name].labels.tobytes())
    return h.hexdigest()[:16]


# --- the run -------------------------------------------------------------------------------------------
def finetune_classify(out_dir, init=None, data=None, cfg: ClassifyConfig | None = None, resume: bool = False,
                      progress: bool = True, log=print, tokenizer: str | None = None) -> dict:
    """Finetune a classifier from ``init`` (any model folder) on ``data``; returns the final metrics."""
    out_dir = Path(out_dir)
    check_single_process("finetune classify")
    if not resume:
        data, cfg = fresh_start("classify", init, data, cfg, ClassifyConfig)
    check_run_folder(out_dir, resume)  # nothing of an earlier run is overwritten; --resume needs a checkpoint
    if resume:
        model, opt_state, tok, state = load_checkpoint(out_dir)
        if state.get("task") != "classify":
            raise MiniGPTError(f"--resume: {out_dir} is not a classification run")
        cfg, data, init = saved_config(state, "classify", ClassifyConfig, out_dir)
    else:
        model, tok = load_model_and_tokenizer(init, tokenizer, strict_vocab=True, for_training=True)
    mrandom.manual_seed(cfg.seed)
    ds, id2label, info = prepare_data(data, tok, cfg, model.config.context_length,
                                      getattr(model, "id2label", None), log=log)
    if resume:
        if _fingerprint(ds) != state.get("data_fingerprint"):
            raise MiniGPTError(f"--resume: the data differs from the one this run started with ({data})")
    elif not isinstance(model, GPTClassifier):
        model = GPTClassifier.from_gpt(model, id2label)
    model.max_length = info["max_length"]
    n_train = apply_train_mode(model, cfg.train, cfg.lora_rank, cfg.lora_alpha)
    log(f"model: {model.num_parameters():,} parameters, {n_train:,} trainable (--train {cfg.train})")

    train_loader = DataLoader(ds["train"], min(cfg.batch_size, len(ds["train"])), shuffle=True, seed=cfg.seed,
                              drop_last=True)
    per_epoch = len(train_loader)
    steps = max(1, math.ceil(cfg.epochs * per_epoch))
    tcfg = TrainConfig(steps=steps, batch_size=train_loader.batch_size, lr=cfg.lr, warmup=cfg.warmup,
                       weight_decay=cfg.weight_decay, grad_clip=cfg.grad_clip, eval_every=per_epoch,
                       seed=cfg.seed, sample_tokens=0)

    def eval_fn(trainer):
        rec = {"epoch": round(trainer.step / per_epoch, 3)}
        for name in ("train", "val", "test"):
            loss, pred, _ = predict_dataset(trainer.model, ds[name])
            rec[f"{name}_loss"] = round(loss, 6)
            rec[f"{name}_acc"] = round(float((pred == ds[name].labels).mean()), 6)
        trainer.say(f"epoch {rec['epoch']:g}: loss train {rec['train_loss']:.3f} val {rec['val_loss']:.3f}; "
                    f"accuracy train {rec['train_acc']:.2%} val {rec['val_acc']:.2%} test {rec['test_acc']:.2%}")
        return rec

    extra = {"task": "classify", "classify": dataclasses.asdict(cfg), "data": str(data), "init": str(init),
             "data_fingerprint": _fingerprint(ds)}
    trainer = Trainer(model, tok, train_loader, None, tcfg, out_dir, log=log, progress=progress,
                      extra_state=extra, eval_fn=eval_fn)
    trainer.plot_smoothing = per_epoch  # loss.png: the mean over an epoch's batches over the noisy batch losses
    if resume:
        trainer.restore(opt_state, state)
        log(f"resuming {out_dir} at step {trainer.step} of {steps}")
    if trainer.step < steps:
        trainer.run()
    _, pred, _ = predict_dataset(model, ds["test"])
    report = classification_report(ds["test"].labels, pred, id2label)
    report.update({"data": info, "train": cfg.train, "trainable_parameters": n_train, "steps": trainer.step})
    atomic_write_json(out_dir / "metrics.json", report)
    plot_accuracy(out_dir)
    _save_final(model, tok, out_dir / "model", cfg, init)
    report["model_dir"] = str(out_dir / "model")
    return report


def _save_final(model, tok, path: Path, cfg: ClassifyConfig, init) -> None:
    tmp = path.parent / f".tmp-{path.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    if has_lora(model) and not cfg.merge:
        save_adapters(model, tmp, resolve_model_dir(init))
    else:
        if has_lora(model):
            merge_lora(model)  # the last use of the model in the run: fold the adapters in place
        model.save_pretrained(tmp)
    tok.save(tmp / "tokenizer.json")
    if path.exists():
        old = path.parent / f".old-{path.name}-{os.getpid()}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def plot_accuracy(out_dir) -> Path | None:
    """accuracy.png: train / validation / test accuracy per epoch from log.jsonl (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return None
    out_dir = Path(out_dir)
    recs = [json.loads(line) for line in (out_dir / "log.jsonl").read_text().splitlines() if '"train_acc"' in line]
    if not recs:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ep = [r["epoch"] for r in recs]
    for name in ("train", "val", "test"):
        ax1.plot(ep, [r[f"{name}_loss"] for r in recs], "o-", label=name)
        ax2.plot(ep, [r[f"{name}_acc"] for r in recs], "o-", label=name)
    ax1.set(xlabel="epoch", ylabel="cross-entropy loss")
    ax2.set(xlabel="epoch", ylabel="accuracy")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs 1, 2, 3: no tick at 1.5
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = out_dir / "accuracy.png"
    tmp = out_dir / ".accuracy.png.tmp"
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


class Classifier:
    """A finetuned classifier and its tokenizer. Example::

        >>> clf = Classifier.from_pretrained("runs/spam")                       # doctest: +SKIP
        >>> clf.predict(["You won a prize! Call now", "See you at lunch"])      # doctest: +SKIP
        [('spam', 0.98), ('ham', 0.99)]
    """

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.model.eval()
        ml = getattr(model, "max_length", None)
        check_label_config(list(model.id2label), max_length=ml, where="the classifier")  # refused, not coerced
        self.max_length = ml if ml is not None else model.config.context_length
        self.pad_id = tokenizer.special_tokens.get(ENDOFTEXT, 0)

    @classmethod
    def from_pretrained(cls, path, tokenizer: str | None = None) -> "Classifier":
        model, tok = load_model_and_tokenizer(path, tokenizer, kind="classifier")
        return cls(model, tok)

    @property
    def labels(self) -> list:
        return list(self.model.id2label)

    def predict_proba(self, texts, batch_size: int = 32) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        for i, t in enumerate(texts):
            if not t.strip():
                raise MiniGPTError(f"text {i + 1} is empty")
        ds = ClassificationDataset(_encode_all(self.tokenizer, texts), np.zeros(len(texts)), self.max_length,
                                   self.pad_id)
        return predict_dataset(self.model, ds, batch_size)[2]

    def predict(self, texts, batch_size: int = 32) -> list[tuple[str, float]]:
        """(label, probability) per text."""
        p = self.predict_proba(texts, batch_size)
        return [(self.model.id2label[int(k)], float(row[k])) for row, k in zip(p, p.argmax(axis=-1))]
