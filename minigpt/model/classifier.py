"""GPTClassifier: a GPT whose LM head is replaced by a classification head on the last real token.

``logits = score(hidden[b, lengths[b] - 1])``: the final-LayerNorm hidden state of each sequence's last
real (non-padding) token goes through ``score = Linear(emb_dim, num_labels)``. With causal attention that
state never sees the padding after it, so a text's prediction does not depend on its batch's padding.
Labels are kept by name (``id2label``); the saved folder is a GPT-2 folder plus ``score.weight`` /
``score.bias`` and ``num_labels`` / ``id2label`` in config.json (transformers' GPT2ForSequenceClassification
keys).
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..errors import MiniGPTError
from ..nn import Linear
from .gpt import GPT, GPTConfig


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
        clf = cls(gpt.config, id2label, dtype=gpt.dtype)
        clf.load_state_dict(gpt.state_dict(), strict=False)
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
        from ..tensor import no_grad

        with no_grad():
            return F.softmax(self.forward(idx, lengths), axis=-1).data

    def extra_repr(self):
        return super().extra_repr() + f", labels={self.id2label}"
