"""ALiBi (attention with linear biases): the slopes, the bias inside the fused attention kernels (forward,
row-by-row generation kernel, backward), the ops and layers that pass it, the KV cache, generation and
checkpoints of a model with ``pos_encoding="alibi"``.

Attention takes (B, T, H, D) inputs, so there is no 0-d case: the hypothesis shapes start at one of each.
"""
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigpt.functional as F
from minigpt import Tensor, gradcheck, kernels
from minigpt.errors import MiniGPTError
from minigpt.kernels import attention as A
from minigpt.model import GPT, GPTConfig, generate
from minigpt.model.decode import _fused_decoder
from minigpt.nn.llama import GroupedQueryAttention
from minigpt.ops.attention import alibi_slopes
from minigpt.random import manual_seed
from minigpt.tensor import no_grad

seeds = st.integers(0, 2**31 - 1)
backends = st.sampled_from(["numba", "numpy"])


# ---- the slopes -------------------------------------------------------------------------------------

def test_slopes_for_eight_heads_are_the_papers():
    # H = 8: 2^-1, 2^-2, ..., 2^-8
    expect = [1 / 2, 1 / 4, 1 / 8, 1 / 16, 1 / 32, 1 / 64, 1 / 128, 1 / 256]
    np.testing.assert_array_equal(alibi_slopes(8), expect)


def test_slopes_for_six_heads_follow_the_papers_rule():
    # H = 6 is no power of two: the 4 slopes of H = 4 (2^-2, 2^-4, 2^-6, 2^-8), then every other slope of
    # H = 8 (2^-1, 2^-3, ...), the first 6 - 4 = 2 of them
    expect = [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]
    np.testing.assert_array_equal(alibi_slopes(6), expect)


@pytest.mark.parametrize("H", [1, 2, 4, 16])
def test_slopes_for_powers_of_two_are_geometric(H):
    np.testing.assert_allclose(alibi_slopes(H), 2.0 ** (-8.0 * np.arange(1, H + 1) / H), rtol=0, atol=0)


def test_slopes_for_twelve_heads():
    # 8 of H = 8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 (every other one of H = 16)
    expect = [2.0 ** -k for k in range(1, 9)] + [2.0 ** -(k + 0.5) for k in range(4)]
    np.testing.assert_allclose(alibi_slopes(12), expect, rtol=1e-15)


@pytest.mark.parametrize("bad", [0, -2, 2.5, True, "8"])
def test_slopes_refuse_bad_head_counts(bad):
    with pytest.raises(MiniGPTError, match="n_heads must be a positive integer"):
        alibi_slopes(bad)


# ---- the op: gradient and the explicit composition ---------------------------------------------------

def _composed(qkv, H, slopes):
    """Attention with ALiBi written out from plain ops: scores + bias, the causal mask, softmax, times v."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    D = C // H
    q = qkv[:, :, :C].reshape(B, T, H, D).transpose(0, 2, 1, 3)          # (B, H, T, D)
    k = qkv[:, :, C:2 * C].reshape(B, T, H, D).transpose(0, 2, 1, 3)
    v = qkv[:, :, 2 * C:].reshape(B, T, H, D).transpose(0, 2, 1, 3)
    i, j = np.arange(T)[:, None], np.arange(T)[None, :]
    bias = -np.asarray(slopes)[:, None, None] * (i - j)                    # (H, T, T): -slope * distance
    scores = q @ k.transpose(0, 1, 3, 2) * (1.0 / np.sqrt(D)) + Tensor(bias)
    scores = F.masked_fill(scores, j > i, -np.inf)                         # the future is masked
    return (F.softmax(scores, axis=-1) @ v).transpose(0, 2, 1, 3).reshape(B, T, C)


def _qkv(B, T, H, D, seed, dtype=np.float64):
    return Tensor(np.random.default_rng(seed).standard_normal((B, T, 3 * H * D)).astype(dtype), requires_grad=True)


@given(st.integers(1, 2), st.integers(1, 7), st.integers(1, 3), st.integers(1, 4), seeds, backends,
       st.sampled_from([0.0, 0.3]))
def test_causal_attention_with_alibi_gradcheck(B, T, H, D, seed, backend, dropout_p):
    qkv = _qkv(B, T, H, D, seed)
    slopes = np.random.default_rng(seed + 1).uniform(0.0, 1.5, H)
    g = Tensor(np.random.default_rng(seed + 2).standard_normal((B, T, H * D)))

    def f(x):
        return F.causal_attention(x, H, dropout_p=dropout_p, rng=7, alibi_slopes=slopes)

    with kernels.use_backend(backend):
        gradcheck(lambda x: (f(x) * g).sum(), qkv, eps=1e-6, atol=1e-7, rtol=1e-6)


@given(st.integers(1, 2), st.integers(1, 6), st.sampled_from([(2, 1), (4, 2), (3, 3)]), st.sampled_from([2, 4]),
       seeds, backends, st.booleans())
def test_grouped_attention_with_alibi_gradcheck(B, T, heads, D, seed, backend, qk_norm):
    H, G = heads
    qkv = Tensor(np.random.default_rng(seed).standard_normal((B, T, (H + 2 * G) * D)), requires_grad=True)
    inputs = [qkv]
    if qk_norm:
        inputs += [Tensor(np.random.default_rng(seed + 3).uniform(0.5, 1.5, D), requires_grad=True) for _ in "qk"]
    g = Tensor(np.random.default_rng(seed + 2).standard_normal((B, T, H * D)))

    def f(x, *norms):
        kw = dict(q_norm=norms[0], k_norm=norms[1]) if norms else {}
        return F.grouped_attention(x, H, G, D, alibi_slopes=alibi_slopes(H), **kw)

    with kernels.use_backend(backend):
        gradcheck(lambda *t: (f(*t) * g).sum(), *inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("B,T,H,D", [(1, 1, 1, 1), (2, 5, 3, 4), (1, 19, 2, 8), (2, 33, 4, 3)])
def test_equals_the_explicit_composition(B, T, H, D, backend):
    qkv = _qkv(B, T, H, D, T)
    slopes = alibi_slopes(H) * 3.0                          # strong enough to change the result a lot
    g = np.random.default_rng(5).standard_normal((B, T, H * D))
    with kernels.use_backend(backend):
        fused = F.causal_attention(qkv, H, alibi_slopes=slopes)
        (fused * Tensor(g)).sum().backward()
    grad_fused, qkv.grad = qkv.grad, None
    plain = _composed(qkv, H, slopes)
    (plain * Tensor(g)).sum().backward()
    np.testing.assert_allclose(fused.data, plain.data, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_fused, qkv.grad, rtol=1e-10, atol=1e-12)
    if T > 1:   # the bias matters: without it the result differs
        assert np.abs(F.causal_attention(qkv, H).data - fused.data).max() > 1e-3


def test_a_steep_slope_attends_only_to_the_own_position():
    # slope 1e4: every key but the query's own is penalised by >= 1e4, so each output row is its own v
    B, T, H, D = 2, 9, 2, 4
    qkv = _qkv(B, T, H, D, 1)
    out = F.causal_attention(qkv, H, alibi_slopes=[1e4, 1e4]).data
    np.testing.assert_allclose(out, qkv.data[:, :, 2 * H * D:], rtol=0, atol=1e-12)


def test_bad_slopes_are_refused_in_one_line():
    qkv = _qkv(1, 3, 2, 2, 0)
    for bad in ([0.5], [0.5, np.nan], np.ones((2, 1)), ["a", "b"]):
        with pytest.raises(MiniGPTError, match="alibi_slopes must be 2 finite numbers") as e:
            F.causal_attention(qkv, 2, alibi_slopes=bad)
        assert "\n" not in str(e.value)
    with pytest.raises(MiniGPTError, match="ALiBi slopes must be 2 finite"):
        A.attention_forward(np.ones((1, 2, 2, 2)), np.ones((1, 2, 2, 2)), np.ones((1, 2, 2, 2)), 1.0, slopes=[1.0])
    with pytest.raises(MiniGPTError, match="ALiBi and RoPE"):
        GroupedQueryAttention(16, 2, alibi=True, rope_theta=10000.0)


# ---- the kernels against the NumPy reference -------------------------------------------------------

def _arrays(B, Tq, Tk, H, D, dt, seed):
    r = np.random.default_rng(seed)
    q, k, v = (r.standard_normal((B, T, H, D)).astype(dt) for T in (Tq, Tk, Tk))
    return q, k, v, r.standard_normal((B, Tq, H, D)).astype(dt)


@pytest.mark.parametrize("dt,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("B,Tq,Tk,H,D", [(2, 5, 5, 3, 4),      # training kernel
                                         (1, 37, 37, 2, 8),    # several blocks of 16 rows
                                         (2, 1, 12, 3, 4),     # one generated token: the row-by-row kernel
                                         (1, 3, 9, 2, 5),      # a few queries after a cache
                                         (1, 20, 30, 2, 5)])   # a chunk after a cache: absolute positions
@pytest.mark.parametrize("dropout_p", [0.0, 0.25])
def test_kernels_equal_the_reference(B, Tq, Tk, H, D, dt, tol, dropout_p):
    q, k, v, g = _arrays(B, Tq, Tk, H, D, dt, Tq * Tk)
    sl = alibi_slopes(H) * 2
    o_ref, l_ref = A.attention_forward_numpy(q, k, v, 0.5, dropout_p, 3, slopes=sl)
    o, lse = A.attention_forward_numba(q, k, v, 0.5, dropout_p, 3, slopes=sl)
    np.testing.assert_allclose(o, o_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(lse, l_ref, rtol=tol, atol=tol)
    d_ref = A.attention_backward_numpy(g, q, k, v, o_ref, l_ref, 0.5, dropout_p, 3, slopes=sl)
    d = A.attention_backward_numba(g, q, k, v, o_ref, l_ref, 0.5, dropout_p, 3, slopes=sl)
    for a, b in zip(d, d_ref):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def test_kernels_read_strided_views_with_alibi():
    # q, k, v as views of one packed (B, T, 3, H, D) buffer, gradients written into one too (the op's layout)
    B, T, H, D = 2, 21, 3, 4
    packed = np.random.default_rng(0).standard_normal((B, T, 3, H, D)).astype(np.float32)
    q, k, v = packed[:, :, 0], packed[:, :, 1], packed[:, :, 2]
    sl = alibi_slopes(H)
    o, lse = A.attention_forward_numba(q, k, v, 0.5, slopes=sl)
    o_ref, l_ref = A.attention_forward_numpy(q, k, v, 0.5, slopes=sl)
    np.testing.assert_allclose(o, o_ref, rtol=2e-5, atol=2e-6)
    grads = np.empty_like(packed)
    g = np.ones_like(o)
    A.attention_backward_numba(g, q, k, v, o, lse, 0.5, dq=grads[:, :, 0], dk=grads[:, :, 1], dv=grads[:, :, 2],
                               slopes=sl)
    ref = A.attention_backward_numpy(g, q, k, v, o, lse, 0.5, slopes=sl)
    for i in range(3):
        np.testing.assert_allclose(grads[:, :, i], ref[i], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("impl", ["numba", "numpy"])
@pytest.mark.parametrize("Tq,Tk", [(6, 6), (2, 7), (18, 18)])
def test_zero_slopes_are_bit_identical_to_none(impl, Tq, Tk):
    fwd = getattr(A, f"attention_forward_{impl}")
    bwd = getattr(A, f"attention_backward_{impl}")
    q, k, v, g = _arrays(2, Tq, Tk, 3, 4, np.float32, 1)
    o0, l0 = fwd(q, k, v, 0.5, 0.1, 4)
    o1, l1 = fwd(q, k, v, 0.5, 0.1, 4, slopes=np.zeros(3))
    assert np.array_equal(o0, o1) and np.array_equal(l0, l1)
    for a, b in zip(bwd(g, q, k, v, o0, l0, 0.5, 0.1, 4), bwd(g, q, k, v, o0, l0, 0.5, 0.1, 4, slopes=[0, 0, 0])):
        assert np.array_equal(a, b)


def test_queries_after_a_cache_use_absolute_distances():
    # the last 3 queries over all 11 keys equal the last 3 rows of the full 11 x 11 attention
    q, k, v, _ = _arrays(1, 11, 11, 2, 4, np.float64, 2)
    sl = [0.7, 0.2]
    full, _ = A.attention_forward_numba(q, k, v, 0.5, slopes=sl)
    for n in (1, 3, 5):   # the row-by-row kernel (< 4 queries) and the blocked one
        tail, _ = A.attention_forward_numba(q[:, -n:], k, v, 0.5, slopes=sl)
        np.testing.assert_allclose(tail, full[:, -n:], rtol=1e-13, atol=1e-13)


# ---- the model ----------------------------------------------------------------------------------------

LLAMA_ALIBI = dict(norm="rmsnorm", ffn="swiglu", n_kv_groups=2, bias=False, qk_norm=True)


def _model(**kw):
    manual_seed(3)
    m = GPT(GPTConfig.preset("nano", pos_encoding="alibi", vocab_size=97, context_length=24, **kw))
    m.eval()
    return m


def test_an_alibi_model_has_no_position_table_and_biased_attention():
    m = _model()
    assert m.pos_emb is None and m.pos_table is None
    assert not any("pos" in n for n, _ in m.named_parameters())
    np.testing.assert_array_equal(m.blocks[0].attn.alibi_slopes, alibi_slopes(4))
    assert "alibi=True" in repr(m.blocks[0].attn)
    g = _model(**LLAMA_ALIBI)
    assert type(g.blocks[0].attn) is GroupedQueryAttention and g.blocks[0].attn.rope_theta is None
    np.testing.assert_array_equal(g.blocks[0].attn.alibi_slopes, alibi_slopes(4))


@pytest.mark.parametrize("kw", [{}, LLAMA_ALIBI], ids=["gpt2-block", "llama-block"])
def test_kv_cache_equals_full_forward(kw):
    m = _model(**kw)
    ids = np.random.default_rng(0).integers(0, 97, (2, 20))
    with no_grad():
        full = m(ids).data
        caches = m.new_caches(2)
        parts = [m(ids[:, a:b], caches=caches).data for a, b in ((0, 7), (7, 8), (8, 9), (9, 20))]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=2e-5, rtol=0)


@pytest.mark.parametrize("quantize", [False, True])
@pytest.mark.parametrize("kw", [{}, LLAMA_ALIBI], ids=["gpt2-block", "llama-block"])
def test_greedy_generation_with_and_without_cache(kw, quantize):
    m = _model(**kw)
    if quantize:
        m.quantize("int8")
    assert _fused_decoder(m) is None            # the fused decode step has no ALiBi bias: never taken
    prompt = np.random.default_rng(1).integers(0, 97, (2, 5))
    a = generate(m, prompt, 25, temperature=0.0, use_cache=True)      # crosses the 24-token window
    b = generate(m, prompt, 25, temperature=0.0, use_cache=False)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kw", [{}, LLAMA_ALIBI], ids=["gpt2-block", "llama-block"])
def test_save_and_load_round_trip(kw, tmp_path):
    m = _model(**kw)
    m.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "minigpt" and cfg["minigpt"]["config"]["pos_encoding"] == "alibi"
    again = GPT.from_pretrained(tmp_path)
    assert again.config == m.config
    ids = np.arange(12)[None]
    np.testing.assert_array_equal(again(ids).data, m(ids).data)


def test_an_alibi_model_trains():
    manual_seed(0)
    m = GPT(GPTConfig.preset("nano", pos_encoding="alibi", vocab_size=32, context_length=32))
    from minigpt.optim import AdamW

    seq = np.tile(np.random.default_rng(0).integers(0, 32, 8), 4)
    x, y = seq[None, :31].repeat(2, 0), seq[None, 1:32].repeat(2, 0)
    opt = AdamW(m.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        loss = m.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first or float(loss.data)
    assert float(loss.data) < 0.5 * first


def test_attention_maps_of_an_alibi_model_include_the_bias():
    from minigpt.inspect import attention_maps, residual_stream

    m = _model()
    ids = np.array([5, 17, 60, 3, 9, 42, 7, 11, 2])
    stream = residual_stream(m, ids)
    maps = attention_maps(m, ids, stream=stream)
    T, H, D = len(ids), m.config.n_heads, m.config.emb_dim // m.config.n_heads
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-6)
    for layer in range(m.config.n_layers):
        packed = stream["qkv"][layer].reshape(T, 3, H, D)
        fused, _ = A.attention_forward(packed[None, :, 0], packed[None, :, 1], packed[None, :, 2], 1 / np.sqrt(D),
                                       slopes=alibi_slopes(H))
        mine = np.einsum("hij,jhd->ihd", maps[layer], packed[:, 2])      # maps @ V, per head
        np.testing.assert_allclose(mine, fused[0], atol=2e-6)
    np.testing.assert_allclose(stream["logits"], m(ids[None]).data[0], atol=1e-5)
