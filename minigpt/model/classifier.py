"""GPTClassifier: a GPT whose LM head is replaced by a classification head on the last real token.

``logits = score(hidden[b, lengths[b] - 1])``: the final-LayerNorm hidden state of each sequence's last
real (non-padding) token goes through ``score = Linear(emb_dim, num_labels)``. With causal attention that
state never sees the padding after it, so a text's prediction does not depend on its batch's padding.
Labels are kept by name (``id2label``); the saved folder is a GPT-2 folder plus ``score.weight`` /
``score.bias`` and ``num_labels`` / ``id2label`` in config.json (transformers' GPT2ForSequenceClassification
keys).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import save

from .. import functional as F
from ..errors import MiniGPTError
from ..nn import Linear
from ..io import atomic_write_bytes, atomic_write_json
from .checkpoint import HEAD_FILE, config_to_hf, write_pretrained
from .gpt import GPT, GPTConfig
from ..tensor import no_grad


class GPTClassifier(GPT):
    """ids (B, T) + lengths (B,) -> class logits (B, num_labels)."""

    def __init__(self, config: GPTConfig, id2label: list[str], dtype=np.float32):
        super().__init__(config, dtype=dtype)
        if len(id2label) < 2:
            raise MiniGPTError(f"a classifier needs at least 2 labels, got {list(id2label)}")
        self.id2label = [str(x) for x in id2label]
        self.score = Linear(config.emb_dim, len(self.id2label), dtype=dtype)
        self.max_length = None  # the longest input the classifier was trained on (saved in config.json)

    @property
    def num_labels(self) -> int:
        return len(self.id2label)

    @classmethod
    def from_gpt(cls, gpt: GPT, id2label) -> "GPTClassifier":
        """A classifier sharing ``gpt``'s (pretrained) parameters, with a new randomly initialised head."""
        if getattr(gpt, "quantization", None):
            raise MiniGPTError("a classifier cannot be built on an int8 model (its weights are for inference only): "
                               "dequantize it first (GPT.dequantize) or start from the float32 model")
        clf = cls(gpt.config, id2label, dtype=gpt.dtype)
        state = gpt.state_dict()
        own = dict(clf.named_parameters())
        odd = [n for n in own if n not in state and not n.startswith("score.")] + [n for n in state if n not in own]
        if odd:  # e.g. a model carrying LoRA layers: never leave a weight at its random initial value
            raise MiniGPTError(f"from_gpt: a classifier needs a plain GPT; the parameters differ in "
                               f"{', '.join(odd[:4])}")
        clf.load_state_dict(state, strict=False)  # all but the new head, checked above
        return clf

    def _lengths(self, ids: np.ndarray, lengths) -> np.ndarray:
        B, T = ids.shape
        if lengths is None:
            return np.full(B, T, dtype=np.int64)
        n = np.asarray(lengths, dtype=np.int64).reshape(-1)
        if n.shape != (B,) or n.min() < 1 or n.max() > T:
            raise MiniGPTError(f"lengths must be {B} integers in 1..{T}, got {np.asarray(lengths).tolist()}")
        return n

    def forward(self, idx, lengths=None):
        """Class logits (B, num_labels); ``lengths[b]`` = real tokens of row b (default: all of them)."""
        ids = self._check_ids(idx)
        n = self._lengths(ids, lengths)
        h = self._hidden(ids)                                # [B, T, C]
        pooled = h[np.arange(ids.shape[0]), n - 1]           # [B, C]: each row's last real token
        return self.score(pooled)                            # [B, C] -> [B, num_labels]

    def loss(self, idx, labels, lengths=None):
        """Mean cross-entropy of the class logits against ``labels`` (B,)."""
        return F.cross_entropy(self.forward(idx, lengths), np.asarray(labels, dtype=np.int64))

    def predict_proba(self, idx, lengths=None) -> np.ndarray:
        with no_grad():
            return F.softmax(self.forward(idx, lengths), axis=-1).data

    def save_pretrained(self, path) -> None:
        """The GPT-2 files, plus the head (score.safetensors) and the labels in config.json."""
        save_classifier(self, path)

    def extra_repr(self):
        return super().extra_repr() + f", labels={self.id2label}"


def classifier_config(model: GPTClassifier) -> dict:
    """config.json of a classifier: GPT-2's fields plus transformers' num_labels / id2label / label2id."""
    d = config_to_hf(model.config)
    d["architectures"] = ["GPT2ForSequenceClassification"]
    d["num_labels"] = model.num_labels
    d["id2label"] = {str(i): lab for i, lab in enumerate(model.id2label)}
    d["label2id"] = {lab: i for i, lab in enumerate(model.id2label)}
    if getattr(model, "max_length", None):
        d.setdefault("minigpt", {})["max_length"] = int(model.max_length)  # the longest input trained on
    return d


def save_classifier(model: GPTClassifier, path) -> None:
    """Write the GPT-2 files (model.safetensors stays a plain GPT-2 file), the head and the config."""
    if getattr(model, "quantization", None):
        raise MiniGPTError("an int8 classifier cannot be saved: its int8 weights are for inference only; save the "
                           "float32 classifier")
    if any(n.endswith((".lora_A", ".lora_B")) for n in model.state_dict()):
        raise MiniGPTError("this classifier carries LoRA adapters: save it with minigpt.model.folders.save_model "
                           "(adapters beside the weights) or fold them in with merge_lora first")
    gpt = {n: a for n, a in model.state_dict().items() if not n.startswith("score.")}
    write_pretrained(path, model.config, gpt)
    head = {n: np.ascontiguousarray(a) for n, a in model.state_dict().items() if n.startswith("score.")}
    atomic_write_bytes(Path(path) / HEAD_FILE, save(head))
    atomic_write_json(Path(path) / "config.json", classifier_config(model))
