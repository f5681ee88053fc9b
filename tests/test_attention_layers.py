"""The book's teaching attention versions against the fused MultiHeadAttention, and the KV cache."""

import numpy as np
import pytest

import minigpt
from minigpt import Tensor, nn


def test_simplified_self_attention_matches_formula():
    x = np.random.default_rng(0).standard_normal((6, 3))
    s = x @ x.T
    w = np.exp(s - s.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    np.testing.assert_allclose(nn.simplified_self_attention(Tensor(x)).data, w @ x, rtol=1e-12)


def test_wrapper_of_causal_heads_equals_fused_attention():
    minigpt.random.manual_seed(0)
    B, T, C, H = 2, 7, 12, 3
    D = C // H
    mha = nn.MultiHeadAttention(C, H, qkv_bias=True)
    mha.to_dtype(np.float64)
    wrapper = nn.MultiHeadAttentionWrapper(C, D, context_length=T, dropout=0.0, num_heads=H, qkv_bias=True)
    wrapper.to_dtype(np.float64)
    W, b = mha.qkv.weight.data, mha.qkv.bias.data
    for h, head in enumerate(wrapper.heads):
        for j, lin in enumerate([head.W_query, head.W_key, head.W_value]):
            cols = slice(j * C + h * D, j * C + (h + 1) * D)
            lin.weight.data[...] = W[:, cols]
            lin.bias.data[...] = b[cols]
    x = Tensor(np.random.default_rng(1).standard_normal((B, T, C)))
    fused = mha(x)
    manual = mha.proj(wrapper(x))
    np.testing.assert_allclose(manual.data, fused.data, rtol=1e-10, atol=1e-12)


def test_single_causal_head_is_causal_and_self_attention_is_not():
    minigpt.random.manual_seed(0)
    x = np.random.default_rng(2).standard_normal((1, 5, 4))
    ca = nn.CausalAttention(4, 3, context_length=5).to_dtype(np.float64)
    sa = nn.SelfAttention(4, 3).to_dtype(np.float64)
    y1 = ca(Tensor(x)).data
    x2 = x.copy()
    x2[0, -1] += 1.0  # changing the last token must not change earlier outputs of a causal layer
    y2 = ca(Tensor(x2)).data
    np.testing.assert_allclose(y1[0, :-1], y2[0, :-1])
    assert not np.allclose(sa(Tensor(x)).data[0, :-1], sa(Tensor(x2)).data[0, :-1])
    with pytest.raises(ValueError, match="context_length"):
        ca(Tensor(np.zeros((1, 6, 4))))


def test_kv_cache_matches_full_forward():
    minigpt.random.manual_seed(0)
    mha = nn.MultiHeadAttention(8, 2).to_dtype(np.float64)
    x = np.random.default_rng(3).standard_normal((2, 6, 8))
    full = mha(Tensor(x)).data
    cache = nn.KVCache(2, 6, 2, 4, dtype=np.float64)
    with minigpt.no_grad():
        first = mha(Tensor(x[:, :4]), cache=cache).data
        rest = [mha(Tensor(x[:, t:t + 1]), cache=cache).data for t in (4, 5)]
    np.testing.assert_allclose(np.concatenate([first, *rest], axis=1), full, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="KV cache holds 6"):
        mha(Tensor(x[:, :1]), cache=cache)
