"""GPTConfig (with presets) and GPT: token + position embeddings, N pre-LayerNorm transformer blocks,
a final LayerNorm and an LM head (by default tied to the token embedding, as GPT-2)."""
from __future__ import annotations

import dataclasses

import numpy as np

from .. import functional as F
from ..errors import MiniGPTError
from ..kernels.int8 import dequantize_int8, quantize_int8
from ..nn import (Dropout, Embedding, Int8Embedding, Int8Linear, KVCache, LayerNorm, Linear, Module, ModuleList,
                  Parameter, TransformerBlock, uninitialized)
from ..nn.lora import has_lora
from ..nn.layers import skip_init
from ..nn.llama import RMSNorm
from ..random import get_rng
from ..io import read_json
from ..tensor import is_grad_enabled
from .checkpoint import (ADAPTER_CONFIG, ADAPTER_FILE, CONFIG_BYTES, CONFIG_DEPTH, QUANT_SCHEMES, SCALE_SUFFIX,
                         is_classifier_config, open_pretrained, read_checkpoint, resolve_model_dir, write_pretrained)
from .config import PRESETS, GPTConfig  # noqa: F401  (re-exported: minigpt.model.gpt.GPTConfig)

# Resident memory of the process besides the model's arrays: the interpreter, NumPy, Numba's compiled
# kernels and OpenBLAS (measured 100-115 MB on Linux x86-64, benchmarks/bench_train.py --memory).
RUNTIME_BYTES = 100 * 2**20

# The linear layers of a block that quantize() converts (attribute paths inside TransformerBlock): GPT-2's,
# or a SwiGLU block's (Llama, Qwen).
_BLOCK_LINEARS = ("attn.qkv", "attn.proj", "ff.fc", "ff.proj", "ff.gate", "ff.up", "ff.down")


def _block_linears(blk):
    """(path, layer) of the linear layers of ``blk`` among ``_BLOCK_LINEARS``."""
    out = []
    for path in _BLOCK_LINEARS:
        parent_name, attr = path.split(".")
        lin = getattr(getattr(blk, parent_name), attr, None)
        if lin is not None:
            out.append((path, lin))
    return out


def sinusoidal_table(n: int, dim: int, dtype=np.float32) -> np.ndarray:
    """The fixed position vectors of "Attention Is All You Need": (n, dim), position p's entries
    ``sin(p / 10000^(2i/dim))`` at even indices 2i and ``cos(...)`` at odd ones 2i + 1. Not trained."""
    ang = np.arange(n, dtype=np.float64)[:, None] / 10000.0 ** (np.arange(0, dim, 2) / dim)[None, :]  # (n, dim/2)
    table = np.empty((n, dim), dtype=np.float64)
    table[:, 0::2], table[:, 1::2] = np.sin(ang), np.cos(ang)
    return table.astype(dtype)


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
        torch_init = c.init == "torch"  # PyTorch's defaults (the book's GPTModel), else GPT-2's scheme
        self.tok_emb = Embedding(c.vocab_size, c.emb_dim, init_std=1.0 if torch_init else 0.02, dtype=dtype)
        # position information: learned vectors (GPT-2), a fixed sinusoidal table, or none here (RoPE turns
        # queries and keys inside attention)
        self.pos_emb = Embedding(c.context_length, c.emb_dim, init_std=1.0 if torch_init else 0.01, dtype=dtype) \
            if c.pos_encoding == "learned" else None
        self.pos_table = sinusoidal_table(c.context_length, c.emb_dim, dtype) \
            if c.pos_encoding == "sinusoidal" else None
        self.drop_emb = Dropout(c.drop_rate)
        self.blocks = ModuleList(
            TransformerBlock(c.emb_dim, c.n_heads, c.drop_rate, c.qkv_bias, n_layers_for_init=c.n_layers, dtype=dtype,
                             init=c.init, config=c)
            for _ in range(c.n_layers)
        )
        self.final_norm = RMSNorm(c.emb_dim, eps=c.layer_norm_eps, dtype=dtype) if c.norm == "rmsnorm" else \
            LayerNorm(c.emb_dim, eps=c.layer_norm_eps, dtype=dtype)
        if c.tie_weights:
            self.out_head = None  # logits = h @ tok_emb.weight.T
        else:
            if skip_init():
                w = np.empty((c.vocab_size, c.emb_dim), dtype=dtype)
            elif torch_init:  # nn.Linear(emb_dim, vocab_size, bias=False): U(-1/sqrt(emb_dim), 1/sqrt(emb_dim))
                bound = 1.0 / np.sqrt(c.emb_dim)
                w = get_rng().uniform(-bound, bound, (c.vocab_size, c.emb_dim)).astype(dtype)
            else:
                w = get_rng().normal(0.0, 0.02, (c.vocab_size, c.emb_dim)).astype(dtype)
            self.out_head = Parameter(w)  # (vocab, dim), the layout of the embedding table
        for blk in self.blocks:
            blk.norm1.eps = blk.norm2.eps = c.layer_norm_eps
        self.quantization = None  # {"scheme": "int8", "group_size": n} after quantize()
        self.head_int8 = None

    @property
    def head_weight(self) -> Parameter:
        if self.quantization:
            raise MiniGPTError(self._quantized_msg("has no float32 LM head"))
        return self.tok_emb.weight if self.out_head is None else self.out_head

    def _quantized_msg(self, what: str) -> str:
        return (f"this model is quantized to {self.quantization['scheme']} and {what}: int8 weights are for "
                "inference only; train or finetune the float32 model, then quantize it")

    # --- int8 weight-only quantization -------------------------------------------------------------
    def quantize(self, scheme: str = "int8", group_size: int = 0, source=None) -> "GPT":
        """Convert every linear layer and the LM head to int8 weights (symmetric; one scale per output
        row, or per ``group_size`` consecutive inputs of a row), in place; returns ``self``.

        Activations and the KV cache stay float32; layer norms, biases and the position embedding stay
        float32 too. A tied token embedding shares the LM head's int8 table. The model is then for
        inference only (``loss`` with gradients, ``backward`` and training refuse it).

        ``source`` (used by checkpoint loading) is a function ``name -> (q, scales)`` giving the int8
        arrays of the layer ``name`` (e.g. ``"blocks.0.attn.qkv"``, ``"tok_emb"``, ``"out_head"``) instead
        of quantizing the layer's own weights.
        """
        if scheme not in QUANT_SCHEMES:
            raise MiniGPTError(f"unknown quantization scheme {scheme!r}; known: {', '.join(QUANT_SCHEMES)}")
        if self.quantization:
            raise MiniGPTError(f"the model is already quantized ({self.quantization['scheme']})")
        if has_lora(self):  # quantizing would keep the frozen base weights and drop the adapters
            raise MiniGPTError("the model carries LoRA adapters: fold them into its weights with "
                               "minigpt.nn.merge_lora(model) before quantizing it")
        if not isinstance(group_size, (int, np.integer)) or isinstance(group_size, bool) or group_size < 0:
            raise MiniGPTError(f"quantize: group_size must be an integer >= 0 (0: per output channel), "
                               f"got {group_size!r}")
        group_size = int(group_size)
        c = self.config
        for width in {lin.in_features for blk in self.blocks for _, lin in _block_linears(blk)}:
            if group_size and group_size < width and width % group_size:
                raise MiniGPTError(f"quantize: group_size {group_size} does not divide the layer width {width}")

        def get(name, w_out_in):
            return source(name) if source is not None else quantize_int8(w_out_in, group_size)

        for i, blk in enumerate(self.blocks):
            for path, lin in _block_linears(blk):
                parent_name, attr = path.split(".")
                parent = getattr(blk, parent_name)
                q, s = get(f"blocks.{i}.{path}", None if source else lin.weight.data.T)
                bias = None if lin.bias is None else lin.bias.data
                setattr(parent, attr, Int8Linear(q, s, bias, group_size))
        if self.out_head is None:  # tied: one int8 table for the lookup and the head
            q, s = get("tok_emb", None if source else self.tok_emb.weight.data)
            self.tok_emb = Int8Embedding(q, s, group_size)
        else:
            q, s = get("out_head", None if source else self.out_head.data)
            self.out_head = None
        self.head_int8 = Int8Linear(q, s, None, group_size)
        self.quantization = {"scheme": scheme, "group_size": group_size}
        self.requires_grad_(False)
        self.eval()
        return self

    def dequantize(self) -> "GPT":
        """Undo :meth:`quantize` in place: every int8 layer becomes a float layer (of the model's dtype)
        holding the weights the int8 values and scales stand for; returns ``self``, trainable again.

        The weights keep the rounding error of the int8 format: finetuning an int8 folder starts from
        these values, not from the float32 model it was made from."""
        if not self.quantization:
            return self
        dtype = self.final_norm.weight.dtype

        def linear(m: Int8Linear) -> Linear:
            with uninitialized():
                lin = Linear(m.in_features, m.out_features, bias=m.bias is not None, dtype=dtype)
            lin.weight.data[...] = dequantize_int8(m.q, m.scales).T  # (out, in) -> Linear's (in, out)
            if m.bias is not None:
                lin.bias.data[...] = m.bias.data
            return lin

        for blk in self.blocks:
            for path, lin in _block_linears(blk):
                parent_name, attr = path.split(".")
                setattr(getattr(blk, parent_name), attr, linear(lin))
        if isinstance(self.tok_emb, Int8Embedding):  # tied: the head shares this table
            e = self.tok_emb
            with uninitialized():
                self.tok_emb = Embedding(e.num_embeddings, e.dim, dtype=dtype)
            self.tok_emb.weight.data[...] = dequantize_int8(e.q, e.scales)
        else:
            self.out_head = Parameter(dequantize_int8(self.head_int8.q, self.head_int8.scales).astype(dtype))
        self.head_int8 = None
        self.quantization = None
        self.requires_grad_(True)
        self.train()
        return self

    def weight_bytes(self) -> int:
        """Bytes held by the model's weights (float parameters plus int8 tables and their scales)."""
        total = sum(p.data.nbytes for p in self.parameters())
        seen = set()
        for m in self.modules():
            if isinstance(m, (Int8Linear, Int8Embedding)) and id(m.q) not in seen:
                seen.add(id(m.q))
                total += m.q.nbytes + m.scales.nbytes
        return total

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
        x = self.tok_emb(ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(np.arange(start, start + T))  # + learned position vectors (T, C)
        elif self.pos_table is not None:
            x = x + self.pos_table[start:start + T]  # + fixed sinusoids (T, C), no gradient
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
        if self.quantization:
            return self.head_int8(h)  # int8 LM head: (B, T, C) -> (B, T, vocab)
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
        if self.quantization:
            if is_grad_enabled():
                raise MiniGPTError(self._quantized_msg("cannot be trained (evaluate it under no_grad())"))
            logits = self.head_int8(self._hidden(ids))
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), t.reshape(-1), ignore_index=ignore_index)
        # (B, T, C) -> logits (B, T, vocab) -> mean of -log p(target) over the (B, T) targets: a scalar
        return F.linear_cross_entropy(self._hidden(ids), self.head_weight, t, ignore_index=ignore_index)

    def new_caches(self, batch_size: int, max_len: int | None = None) -> list:
        """One empty key/value cache per block, for ``batch_size`` sequences of up to ``max_len`` positions."""
        c = self.config
        n = max_len or c.context_length
        return [KVCache(batch_size, n, c.kv_heads, c.attn_head_dim, dtype=self.dtype) for _ in self.blocks]

    def memory_estimate(self, batch_size: int = 1, context_length: int | None = None, training: bool = True,
                        loss_path: str = "fused") -> dict:
        """Approximate bytes of a process training (or running) this model: parameters, gradients + AdamW
        moments (training), the activations kept for backward (a per-layer count of the saved (B, T, C)-
        sized buffers, plus the (B*T, vocab) logits), and the runtime itself (``RUNTIME_BYTES``: Python,
        NumPy, Numba's kernels, OpenBLAS).

        ``loss_path``: ``"fused"`` for ``model.loss`` (one (B*T, vocab) buffer: its gradient is written
        over the logits), ``"book"`` for ``F.cross_entropy(model(x)...)``, whose backward needs a second one.
        A training step with ``model.loss`` peaks during the forward pass: the previous step's gradients
        are still held then (``zero_grad`` runs after the forward in the usual loop), next to every saved
        activation.
        """
        if loss_path not in ("fused", "book"):
            raise MiniGPTError(f"memory_estimate: loss_path must be 'fused' or 'book', got {loss_path!r}")
        c = self.config
        T = context_length or c.context_length
        item = np.dtype(self.dtype).itemsize
        params = self.num_parameters() * item
        est = {"parameters": params}
        if training:
            est["gradients"] = params
            est["optimizer"] = 2 * params
            # per block, in (B, T, C) units: layer norm 1's output 1, packed q/k/v 3, attention output 1,
            # residual 1 (the projection adds it in place), layer norm 2's output 1, the feed-forward
            # pre-activation 4 (its GELU output is recomputed in backward), residual 1
            per_layer = batch_size * T * c.emb_dim * (1 + 3 + 1 + 1 + 1 + 4 + 1) * item
            logits = batch_size * T * c.vocab_size * item
            est["activations"] = c.n_layers * per_layer + logits * (2 if loss_path == "book" else 1)
        est["runtime"] = RUNTIME_BYTES
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
        folder, a ``minigpt train`` run folder (its latest checkpoint), or a folder written by
        ``save_pretrained`` from an int8-quantized model: that file is memory-mapped and its int8 weights go
        straight into int8 layers of a model allocated without initialisation (no float32 copy of them is ever
        made). A float file is read tensor by tensor straight into the parameters of a model allocated without
        initialisation, each checked as it is read: loading needs about the file's size of memory, not twice
        it. A classifier folder, or one carrying LoRA adapters, is refused (see minigpt.model.folders)."""
        path = resolve_model_dir(path)
        hf_cfg = read_json(path / "config.json", "config.json", max_bytes=CONFIG_BYTES, max_depth=CONFIG_DEPTH) \
            if (path / "config.json").exists() else None
        if hf_cfg is not None and is_classifier_config(hf_cfg, path / "config.json"):
            raise MiniGPTError(f"{path} holds a classifier, not a language model: use `minigpt classify --model "
                               f"{path}` (it cannot generate text)")
        if (path / ADAPTER_FILE).exists() or (path / ADAPTER_CONFIG).exists():
            raise MiniGPTError(f"{path} holds LoRA adapters, which GPT.from_pretrained would leave out: load it with "
                               "minigpt.model.folders.load_model (or minigpt.loading.load_model_and_tokenizer)")
        if hf_cfg is not None and hf_cfg.get("quantization") is None:
            with open_pretrained(path) as pf:
                with uninitialized():  # every weight is about to be read from the file
                    model = cls(pf.config, dtype=dtype)
                pf.fill(model)
            return model
        config, state, quant = read_checkpoint(path)
        with uninitialized():  # every weight is about to be read from the file
            model = cls(config, dtype=dtype)
        if quant:
            used = set()

            def source(layer):
                wname = layer if layer == "out_head" else layer + ".weight"
                if wname not in state or wname + SCALE_SUFFIX not in state:
                    raise MiniGPTError(f"{path}: the int8 weight or the scales of {layer} are missing")
                q, s = state.array(wname), state.array(wname + SCALE_SUFFIX)
                if (q.dtype != np.int8 or q.ndim != 2 or s.dtype != np.float32 or s.ndim != 2
                        or s.shape[0] != q.shape[0] or q.shape[1] % s.shape[1]):
                    raise MiniGPTError(f"{path}: {wname} must be int8 (out, in) with float32 scales (out, G), "
                                       f"got {q.dtype} {q.shape} and {s.dtype} {s.shape}")
                used.update((wname, wname + SCALE_SUFFIX))
                return q, s

            model.quantize(quant["scheme"], quant["group_size"], source=source)
            state = {k: v for k, v in state.items() if k not in used}
        model.load_state_dict(state)
        return model

    def save_pretrained(self, path) -> None:
        """Write config.json + model.safetensors in the Hugging Face GPT-2 layout, atomically (an int8
        model: its int8 weights and scales, the scheme in config.json; only minigpt reads that)."""
        state = dict(self.state_dict())
        if any(n.endswith((".lora_A", ".lora_B")) for n in state):
            raise MiniGPTError("this model carries LoRA adapters: save it with minigpt.model.folders.save_model "
                               "(adapters beside the weights) or fold them in with merge_lora first")
        if self.quantization:
            for name, m in self.named_modules():
                if isinstance(m, (Int8Linear, Int8Embedding)) and name != "head_int8":
                    state[name + ".weight"], state[name + ".weight" + SCALE_SUFFIX] = m.q, m.scales
            if not self.config.tie_weights:
                state["out_head"], state["out_head" + SCALE_SUFFIX] = self.head_int8.q, self.head_int8.scales
        write_pretrained(path, self.config, state, self.quantization)


def count_gpt2_parameters(cfg: GPTConfig) -> int:
    """Parameter count from the config alone (tied head counted once)."""
    C, V, L = cfg.emb_dim, cfg.vocab_size, cfg.n_layers
    per_block = 4 * C + (C * 3 * C + (3 * C if cfg.qkv_bias else 0)) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    return V * C + cfg.context_length * C + L * per_block + 2 * C + (0 if cfg.tie_weights else V * C)


