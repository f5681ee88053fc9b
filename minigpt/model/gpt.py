"""GPTConfig (with presets) and GPT: token + position embeddings, N pre-LayerNorm transformer blocks,
a final LayerNorm and an LM head (by default tied to the token embedding, as GPT-2)."""
from __future__ import annotations

import dataclasses

import numpy as np

from .. import functional as F
from ..errors import MiniGPTError
from ..nn import Dropout, Embedding, KVCache, LayerNorm, Module, ModuleList, Parameter, TransformerBlock
from ..random import get_rng
from ..io import read_json
from .checkpoint import (ADAPTER_CONFIG, ADAPTER_FILE, is_classifier_config, read_pretrained, resolve_model_dir,
                         write_pretrained)
from .config import PRESETS, GPTConfig  # noqa: F401  (re-exported: minigpt.model.gpt.GPTConfig)


class GPT(Module):
    """A GPT-2-style language model: ids (B, T) -> logits (B, T, vocab_size)."""

    def __init__(self, config: GPTConfig | None = None, dtype=np.float32, **kwargs):
        super().__init__()
        if config is None:
            config = GPTConfig(**kwargs)
        elif kwargs:
            config = dataclasses.replace(config, **kwargs)
        self.config = config
        c = config
        self.tok_emb = Embedding(c.vocab_size, c.emb_dim, init_std=0.02, dtype=dtype)
        self.pos_emb = Embedding(c.context_length, c.emb_dim, init_std=0.01, dtype=dtype)
        self.drop_emb = Dropout(c.drop_rate)
        self.blocks = ModuleList(
            TransformerBlock(c.emb_dim, c.n_heads, c.drop_rate, c.qkv_bias, n_layers_for_init=c.n_layers, dtype=dtype)
            for _ in range(c.n_layers)
        )
        self.final_norm = LayerNorm(c.emb_dim, eps=c.layer_norm_eps, dtype=dtype)
        if c.tie_weights:
            self.out_head = None  # logits = h @ tok_emb.weight.T
        else:
            w = get_rng().normal(0.0, 0.02, (c.vocab_size, c.emb_dim)).astype(dtype)
            self.out_head = Parameter(w)  # (vocab, dim), the layout of the embedding table
        for blk in self.blocks:
            blk.norm1.eps = blk.norm2.eps = c.layer_norm_eps

    @property
    def head_weight(self) -> Parameter:
        return self.tok_emb.weight if self.out_head is None else self.out_head

    def _check_ids(self, idx, start: int = 0) -> np.ndarray:
        ids = idx.data if hasattr(idx, "data") and not isinstance(idx, np.ndarray) else np.asarray(idx)
        if ids.dtype.kind not in "iu":
            raise MiniGPTError(f"GPT input must be integer token ids, got dtype {ids.dtype}")
        if ids.ndim == 1:
            ids = ids[None, :]
        if ids.ndim != 2:
            raise MiniGPTError(f"GPT input must have shape (batch, time), got {ids.shape}")
        T = ids.shape[1]
        if T == 0:
            raise MiniGPTError("GPT input has no tokens")
        if start + T > self.config.context_length:
            raise MiniGPTError(
                f"sequence of {start + T} tokens exceeds the model's context_length {self.config.context_length}"
            )
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            bad = ids.min() if ids.min() < 0 else ids.max()
            raise MiniGPTError(f"token id {bad} is out of range for vocab_size {self.config.vocab_size}")
        return ids

    def hidden(self, idx, caches: list | None = None):
        """The final-LayerNorm hidden states (B, T, emb_dim)."""
        return self._hidden(self._check_ids(idx, caches[0].length if caches else 0), caches)

    def _hidden(self, ids: np.ndarray, caches: list | None = None):
        start = caches[0].length if caches else 0
        T = ids.shape[1]
        # ids (B, T) -> token vectors (B, T, C) + position vectors (T, C), broadcast over B
        x = self.tok_emb(ids) + self.pos_emb(np.arange(start, start + T))  # (B, T, C)
        x = self.drop_emb(x)
        for i, blk in enumerate(self.blocks):
            x = blk(x, cache=caches[i] if caches else None)  # (B, T, C) -> (B, T, C)
        return self.final_norm(x)  # (B, T, C)

    def forward(self, idx, caches: list | None = None, last_only: bool = False):
        """Logits (B, T, vocab) for ids (B, T). ``caches`` (from ``new_caches``) is for generation;
        ``last_only`` computes the logits of the last position only, (B, 1, vocab)."""
        h = self.hidden(idx, caches)  # (B, T) -> (B, T, C)
        if last_only:
            h = h[:, -1:]  # (B, 1, C)
        return F.linear_t(h, self.head_weight)  # (B, T, C) @ (vocab, C)^T -> (B, T, vocab)

    def loss(self, idx, targets, ignore_index: int = -100):
        """Mean cross-entropy of next-token predictions: ``targets`` (B, T) holds the ids to predict.

        Same value as ``F.cross_entropy(model(idx), targets)``, computed by the fused LM-head + loss op,
        which keeps one (B*T, vocab) buffer instead of two.
        """
        t = np.asarray(targets)
        ids = self._check_ids(idx)
        if t.shape != ids.shape:
            raise MiniGPTError(f"targets of shape {t.shape} do not match inputs of shape {ids.shape}")
        # (B, T, C) -> logits (B, T, vocab) -> mean of -log p(target) over the (B, T) targets: a scalar
        return F.linear_cross_entropy(self._hidden(ids), self.head_weight, t, ignore_index=ignore_index)

    def new_caches(self, batch_size: int, max_len: int | None = None) -> list:
        """One empty key/value cache per block, for ``batch_size`` sequences of up to ``max_len`` positions."""
        c = self.config
        n = max_len or c.context_length
        return [KVCache(batch_size, n, c.n_heads, c.emb_dim // c.n_heads, dtype=self.dtype) for _ in self.blocks]

    def memory_estimate(self, batch_size: int = 1, context_length: int | None = None, training: bool = True) -> dict:
        """Approximate bytes: parameters, gradients + AdamW moments (training), and activations kept
        for backward (a rough per-layer count of the saved (B, T, C) buffers and the logits)."""
        c = self.config
        T = context_length or c.context_length
        item = np.dtype(self.dtype).itemsize
        params = self.num_parameters() * item
        est = {"parameters": params}
        if training:
            est["gradients"] = params
            est["optimizer"] = 2 * params
            per_layer = batch_size * T * c.emb_dim * (2 + 3 + 1 + 1 + 2 + 4 + 4 + 4) * item
            est["activations"] = c.n_layers * per_layer + 2 * batch_size * T * c.vocab_size * item
        est["total"] = sum(est.values())
        return est

    def extra_repr(self):
        c = self.config
        return (f"vocab={c.vocab_size}, ctx={c.context_length}, dim={c.emb_dim}, heads={c.n_heads}, "
                f"layers={c.n_layers}, params={self.num_parameters():,}")

    def summary(self, batch_size: int = 1, seq_len: int | None = None, max_depth: int | None = None):
        """Per-layer table (name, output shape, parameters, trainable or frozen) for a batch of
        ``batch_size`` sequences of ``seq_len`` tokens (default: the context length); ``print`` it.
        Also ``Module.summary(*inputs)`` for any module and input."""
        T = self.config.context_length if seq_len is None else int(seq_len)
        ids = np.zeros((int(batch_size), T), dtype=np.int64)
        return super().summary(ids, max_depth=max_depth)

    # checkpoints: the file format (GPT-2's layout <-> config + state dict) is model/checkpoint.py's
    @classmethod
    def from_pretrained(cls, path, dtype=np.float32) -> "GPT":
        """Load a directory in the Hugging Face GPT-2 layout (config.json + model.safetensors), a checkpoint
        folder, or a ``minigpt train`` run folder (its latest checkpoint). A classifier folder is refused."""
        path = resolve_model_dir(path)
        if (path / "config.json").exists() and is_classifier_config(read_json(path / "config.json", "config.json")):
            raise MiniGPTError(f"{path} holds a classifier, not a language model: use `minigpt classify --model "
                               f"{path}` (it cannot generate text)")
        if (path / ADAPTER_FILE).exists() or (path / ADAPTER_CONFIG).exists():
            raise MiniGPTError(f"{path} holds LoRA adapters, which GPT.from_pretrained would leave out: load it with "
                               "minigpt.model.folders.load_model (or minigpt.loading.load_model_and_tokenizer)")
        config, state = read_pretrained(path)
        model = cls(config, dtype=dtype)
        model.load_state_dict(state)
        return model

    def save_pretrained(self, path) -> None:
        """Write config.json + model.safetensors in the Hugging Face GPT-2 layout, atomically."""
        state = self.state_dict()
        if any(n.endswith((".lora_A", ".lora_B")) for n in state):
            raise MiniGPTError("this model carries LoRA adapters: save it with minigpt.model.folders.save_model "
                               "(adapters beside the weights) or fold them in with merge_lora first")
        write_pretrained(path, self.config, state)


def count_gpt2_parameters(cfg: GPTConfig) -> int:
    """Parameter count from the config alone (tied head counted once)."""
    C, V, L = cfg.emb_dim, cfg.vocab_size, cfg.n_layers
    per_block = 4 * C + (C * 3 * C + (3 * C if cfg.qkv_bias else 0)) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    return V * C + cfg.context_length * C + L * per_block + 2 * C + (0 if cfg.tie_weights else V * C)


