"""The KV-cache decoding step of generation: one new position per sequence, as fused kernels.

After the prompt has filled the caches, each generated token runs one position through every block.
:func:`decoder` returns the function that does it, ``step(ids (B,), caches) -> logits (B, vocab)``:

- for a GPT whose blocks are the standard ones (float32 ``Linear`` or ``Int8Linear`` layers, no LoRA,
  no hooks), one call of ``kernels.decode.decode_block`` (or ``decode_block_int8``) per block on plain
  arrays, then the final layer norm and the LM head: no autograd graph, no Tensor wrappers, and the
  kernel's thread pool stays busy from one matrix-vector product to the next;
- for anything else, the model's own ``forward`` with the caches (same results, slower). That includes
  every model whose positions are not GPT-2's learned table: ``decode_block`` knows no ALiBi bias and no
  rotation, so an ALiBi, RoPE or sinusoidal model always takes the model's forward, whose attention
  kernel adds the bias at the queries' absolute positions.

Both compute the same function; the fused path rounds differently only in the order of float32 sums.
"""
from __future__ import annotations

import numpy as np

from ..kernels import decode as kd
from ..kernels import int8 as k8
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


def _fused_decoder(model):
    """The fused step for ``model``, or None if some part of it is not the standard GPT layout."""
    if model.dtype != np.float32 or not _no_hooks(model) or type(model.pos_emb) is not Embedding \
            or type(model.final_norm) is not LayerNorm or model.config.pos_encoding != "learned":
        return None
    tok = model.tok_emb
    if type(tok) is Embedding:
        def embed(ids):
            return tok.weight.data[ids]
    elif type(tok) is Int8Embedding:
        def embed(ids):
            return k8.dequantize_rows(tok.q, tok.scales, ids)
    else:
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

    def step(ids, caches):
        pos = caches[0].length
        x = np.ascontiguousarray(embed(ids) + pos_table[pos], dtype=np.float32)  # (B, C)
        for (_, args), cache, e in zip(blocks, caches, eps):
            run_block(x, *args, cache.k, cache.v, pos, e)
            cache.length = pos + 1
        h = layer_norm_forward(x, fn.weight.data, fn.bias.data, fn.eps)[0]
        return head(np.ascontiguousarray(h, dtype=np.float32))

    return step


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
