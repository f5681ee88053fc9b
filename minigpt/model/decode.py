"""Generation's two phases on plain arrays: the prompt ("prefill") and the KV-cache decoding step.

:func:`prefiller` returns ``prefill(ids (B, T), caches) -> logits (B, vocab)``: the whole prompt through
every block at once, filling the empty caches, and the logits of its last position only. For a GPT of the
standard layout (float32 or int8 layers with biases) it is the model's forward written out on arrays --
the same kernels and matrix products in the same order (so the same numbers, bit for bit), without the
autograd engine's Tensor wrappers, the graph bookkeeping, and the final layer norm and LM head of the
positions nobody samples from.
Any other model runs its own ``forward`` with the caches.

After the prompt has filled the caches, each generated token runs one position through every block.
:func:`decoder` returns the function that does it, ``step(ids (B,), caches) -> logits (B, vocab)``:

- for a float32 GPT whose blocks are the standard ones (``Linear`` layers, no LoRA, no hooks), one call of
  ``kernels.decode.decode_step`` per token: every block, the final layer norm and the LM head inside one
  Numba call, so the thread pool goes from one matrix-vector product to the next without Python between;
- for int8 blocks, one call of ``kernels.decode.decode_block_int8`` per block on plain arrays, then the
  final layer norm and the int8 LM head: no autograd graph, no Tensor wrappers;
- for anything else, the model's own ``forward`` with the caches (same results, slower). That includes
  every model whose positions are not GPT-2's learned table: the fused kernels know no ALiBi bias and no
  rotation, so an ALiBi, RoPE or sinusoidal model always takes the model's forward, whose attention
  kernel adds the bias at the queries' absolute positions.

Both compute the same function; the fused path rounds differently only in the order of float32 sums.
"""
from __future__ import annotations

import math

import numpy as np

from ..kernels import decode as kd
from ..kernels import int8 as k8
from ..kernels.attention import attention_forward
from ..kernels.bias import add_bias
from ..kernels.gelu import bias_gelu_forward, gelu_forward
from ..kernels.layernorm import layer_norm_forward
from ..nn import Embedding, Int8Embedding, Int8Linear, LayerNorm, TransformerBlock
from ..nn import module as nn_module
from ..nn.attention import MultiHeadAttention
from ..nn.layers import Dropout, FeedForward, Linear


def _zeros_if_none(bias, n):
    return np.zeros(n, dtype=np.float32) if bias is None else np.ascontiguousarray(bias.data)


def _no_hooks(model) -> bool:
    return not nn_module._CALL_HOOKS and not any(m._forward_hooks or m._backward_hooks for m in model.modules())


def _block_args(blk):
    """The arrays ``decode_block`` / ``decode_block_int8`` take for one block (without x, caches, pos), or
    None when the block is not the standard one."""
    if (type(blk) is not TransformerBlock or type(blk.attn) is not MultiHeadAttention
            or type(blk.ff) is not FeedForward or type(blk.norm1) is not LayerNorm
            or type(blk.norm2) is not LayerNorm or type(blk.drop) is not Dropout):
        return None
    if blk.attn.alibi_slopes is not None:     # decode_block has no ALiBi bias: the model's forward adds it
        return None
    lins = (blk.attn.qkv, blk.attn.proj, blk.ff.fc, blk.ff.proj)
    if blk.norm1.eps != blk.norm2.eps:
        return None
    ln = lambda n: (np.ascontiguousarray(n.weight.data), np.ascontiguousarray(n.bias.data))  # noqa: E731
    if all(type(lin) is Linear for lin in lins):
        w = [(np.ascontiguousarray(lin.weight.data), _zeros_if_none(lin.bias, lin.out_features)) for lin in lins]
        return "float32", (*ln(blk.norm1), *w[0], *w[1], *ln(blk.norm2), *w[2], *w[3])
    if all(type(lin) is Int8Linear for lin in lins):
        w = [(np.ascontiguousarray(lin.q), np.ascontiguousarray(lin.scales),
              _zeros_if_none(lin.bias, lin.out_features)) for lin in lins]
        return "int8", (*ln(blk.norm1), *w[0], *w[1], *ln(blk.norm2), *w[2], *w[3])
    return None


def _standard_outside_blocks(model) -> bool:
    """float32, no hooks, GPT-2's learned position table and final LayerNorm: what the fused paths assume
    around the blocks (any other positions -- RoPE, ALiBi, sinusoidal -- take the model's forward)."""
    return (model.dtype == np.float32 and _no_hooks(model) and type(model.pos_emb) is Embedding
            and type(model.final_norm) is LayerNorm and model.config.pos_encoding == "learned")


def _embedder(model):
    """``ids (B,) -> token vectors (B, C)`` as plain arrays, or None for an embedding of another kind."""
    tok = model.tok_emb
    if type(tok) is Embedding:
        return lambda ids: tok.weight.data[ids]
    if type(tok) is Int8Embedding:
        return lambda ids: k8.dequantize_rows(tok.q, tok.scales, ids)
    return None


def _fused_decoder(model):
    """The fused step for ``model``, or None if some part of it is not the standard GPT layout."""
    if not _standard_outside_blocks(model):
        return None
    embed = _embedder(model)
    if embed is None:
        return None
    blocks = [_block_args(blk) for blk in model.blocks]
    if not blocks or any(b is None for b in blocks) or len({b[0] for b in blocks}) != 1:
        return None
    kind = blocks[0][0]
    if kind == "int8" and model.head_int8 is None:
        return None
    run_block = kd.decode_block if kind == "float32" else kd.decode_block_int8
    eps = [float(blk.norm1.eps) for blk in model.blocks]
    fn = model.final_norm
    pos_table = model.pos_emb.weight.data
    if model.quantization:
        hq, hs = model.head_int8.q, model.head_int8.scales

        def head(h):
            return k8.int8_matmul(h, hq, hs)
    else:
        table = np.ascontiguousarray(model.head_weight.data)

        def head(h):
            return kd.matvec_rows(h, table)

    if kind == "float32" and not model.quantization:
        # the whole token in one kernel call (kernels/decode.py decode_step): no Python between blocks
        block_arrays = [args for _, args in blocks]
        prepared = kd.StepArgs.make(block_arrays, fn.weight.data, fn.bias.data, table)

        def step(ids, caches):
            pos = caches[0].length
            x = np.ascontiguousarray(embed(ids) + pos_table[pos], dtype=np.float32)  # (B, C)
            logits = kd.decode_step(x, block_arrays, [c.k for c in caches], [c.v for c in caches], pos, eps,
                                    fn.weight.data, fn.bias.data, fn.eps, table, prepared=prepared)
            for cache in caches:
                cache.length = pos + 1
            return logits

        return step

    def step(ids, caches):
        pos = caches[0].length
        x = np.ascontiguousarray(embed(ids) + pos_table[pos], dtype=np.float32)  # (B, C)
        for (_, args), cache, e in zip(blocks, caches, eps):
            run_block(x, *args, cache.k, cache.v, pos, e)
            cache.length = pos + 1
        h = layer_norm_forward(x, fn.weight.data, fn.bias.data, fn.eps)[0]
        return head(np.ascontiguousarray(h, dtype=np.float32))

    return step


def _fused_prefill(model):
    """The fused prompt pass for ``model``, or None if it is not a GPT of the standard layout (float32 or
    int8 ``Linear`` layers with biases, no LoRA, no hooks)."""
    if not _standard_outside_blocks(model):
        return None
    blocks = [_block_args(blk) for blk in model.blocks]
    if not blocks or any(b is None for b in blocks) or len({b[0] for b in blocks}) != 1:
        return None
    kind = blocks[0][0]
    if any(blk.attn.qkv.bias is None or blk.attn.proj.bias is None or blk.ff.fc.bias is None
           or blk.ff.proj.bias is None for blk in model.blocks):
        return None  # the forward takes other ops without biases; keep to the one it is written after
    embed = _embedder(model)
    if embed is None:
        return None
    if not model.quantization:
        def head(h):
            return h @ model.head_weight.data.T                         # (B, C) @ (C, vocab), as LinearTOp
    elif model.head_int8 is not None:
        def head(h):
            return k8.int8_matmul(h, model.head_int8.q, model.head_int8.scales)  # as Int8LinearOp, no bias
    else:
        return None
    pos_table, fn = model.pos_emb.weight.data, model.final_norm
    eps = [float(blk.norm1.eps) for blk in model.blocks]
    C, H = model.config.emb_dim, model.config.n_heads
    D = C // H

    if kind == "float32":
        def linear(h, w, b):                                            # LinearOp: x @ W, then += b
            y = h @ w
            add_bias(y, b)
            return y

        def linear_gelu(h, w, b):                                       # FeedForwardOp's first half
            return bias_gelu_forward(h @ w, b)

        def unpack(a):
            ln1_w, ln1_b, qkv_w, qkv_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, out_w, out_b = a
            return ln1_w, ln1_b, (qkv_w, qkv_b), (proj_w, proj_b), ln2_w, ln2_b, (fc_w, fc_b), (out_w, out_b)
    else:
        def linear(h, w, b):                                            # Int8LinearOp: int8 product, += b
            y = k8.int8_matmul(h, w[0], w[1])
            add_bias(y, b)
            return y

        def linear_gelu(h, w, b):                                       # F.gelu(Int8Linear(h))
            return gelu_forward(linear(h, w, b))

        def unpack(a):
            ln1_w, ln1_b, qq, qs, qb, pq, ps, pb, ln2_w, ln2_b, fq, fs, fb, oq, os_, ob = a
            return ln1_w, ln1_b, ((qq, qs), qb), ((pq, ps), pb), ln2_w, ln2_b, ((fq, fs), fb), ((oq, os_), ob)

    layers = [unpack(a) for _, a in blocks]

    def prefill(ids, caches):
        B, T = ids.shape
        N = B * T
        # the forward's own sequence of kernels and products (GPT._hidden, TransformerBlock with fused
        # residuals, the linear / feed-forward ops, MultiHeadAttention._attend_with_cache) on (N, C) arrays
        x = np.ascontiguousarray((embed(ids) + pos_table[:T]).reshape(N, C))  # (B, T, C) -> (N, C)
        for (ln1_w, ln1_b, qkv, proj, ln2_w, ln2_b, fc, out), cache, e in zip(layers, caches, eps):
            h = layer_norm_forward(x, ln1_w, ln1_b, e)[0]               # (N, C)
            qkv_out = linear(h, *qkv)                                   # (N, 3C)
            packed = qkv_out.reshape(B, T, 3, H, D)
            cache.k[:, :T] = packed[:, :, 1]
            cache.v[:, :T] = packed[:, :, 2]
            cache.length = T
            ctx, _ = attention_forward(packed[:, :, 0], cache.k[:, :T], cache.v[:, :T], 1.0 / math.sqrt(D))
            y = linear(ctx.reshape(N, C), *proj)                        # (N, C)
            y += x                                                      # residual 1
            x = y
            h = layer_norm_forward(x, ln2_w, ln2_b, e)[0]
            y = linear(linear_gelu(h, *fc), *out)                       # (N, 4C) -> (N, C)
            y += x                                                      # residual 2
            x = y
        last = np.ascontiguousarray(x.reshape(B, T, C)[:, -1])          # the positions sampled from: (B, C)
        return head(layer_norm_forward(last, fn.weight.data, fn.bias.data, fn.eps)[0])

    return prefill


def prefiller(model):
    """``prefill(ids (B, T), caches) -> logits (B, vocab)`` as an ndarray: the prompt through the model
    with empty caches (filled here), the logits of its last position. Written out on arrays for a float32
    GPT of the standard layout (same numbers as the forward), else the model's forward."""
    fused = _fused_prefill(model)
    if fused is not None:
        return fused

    def generic(ids, caches):
        return model(np.asarray(ids), caches=caches, last_only=True).data[:, -1]

    return generic


def decoder(model):
    """``step(ids (B,), caches) -> logits (B, vocab)`` as an ndarray: one new position per sequence after
    the caches' ``length`` positions (and the caches extended by it). Fused kernels when the model has the
    standard layout, else the model's forward."""
    step = _fused_decoder(model)
    if step is not None:
        return step

    def generic(ids, caches):
        return model(np.asarray(ids)[:, None], caches=caches, last_only=True).data[:, -1]

    return generic
