"""Causal attention kernels vs a plain NumPy composition (mask + softmax + matmul) and finite differences."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minigpt  # noqa: F401  (sets the threading layer before numba starts)
from minigpt import kernels
from minigpt.gradcheck import numeric_gradient
from minigpt.errors import MiniGPTError
from minigpt.kernels import attention as A

BACKENDS = ["numba", "numpy"]


def reference_attention(q, k, v, scale, keep=None):
    """Straightforward per (batch, head) loops: masked scores, softmax, (dropout), weighted values."""
    B, Tq, H, D = q.shape
    Tk = k.shape[1]
    out = np.zeros((B, Tq, H, D))
    lse = np.zeros((B, H, Tq))
    mask = np.tril(np.ones((Tk, Tk), dtype=bool))[Tk - Tq:]      # rows of the absolute positions
    for b in range(B):
        for h in range(H):
            scores = q[b, :, h, :] @ k[b, :, h, :].T * scale
            scores = np.where(mask, scores, -np.inf)
            m = scores.max(axis=1, keepdims=True)
            w = np.exp(scores - m)
            lse[b, h] = np.log(w.sum(axis=1)) + m[:, 0]
            w = w / w.sum(axis=1, keepdims=True)
            if keep is not None:
                w = w * keep[b, h]
            out[b, :, h, :] = w @ v[b, :, h, :]
    return out, lse


def packed_qkv(rng, B, T, H, D, dtype=np.float64):
    """q, k, v as strided views of one fused (B, T, 3, H, D) buffer, as the model makes them."""
    qkv = rng.standard_normal((B, T, 3, H, D)).astype(dtype)
    return qkv, qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]


shapes = st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 3), st.integers(1, 6),
                   st.integers(0, 8), st.integers(0, 2**31))


@pytest.mark.parametrize("backend", BACKENDS)
@given(shape=shapes)
def test_forward_matches_reference(backend, shape):
    B, T, H, D, cut, seed = shape
    rng = np.random.default_rng(seed)
    _, q, k, v = packed_qkv(rng, B, T, H, D)
    q = q[:, min(cut, T - 1):]                       # Tq <= Tk: the last queries against all keys
    scale = 1.0 / np.sqrt(D)
    with kernels.use_backend(backend):
        out, lse = A.attention_forward(q, k, v, scale)
    ref_out, ref_lse = reference_attention(q, k, v, scale)
    assert out.shape == q.shape and out.flags.c_contiguous and out.dtype == np.float64
    assert lse.shape == (B, H, q.shape[1])
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=1e-10)
    np.testing.assert_allclose(lse, ref_lse, rtol=0, atol=1e-10)


@given(shape=shapes)
def test_backward_backends_agree_and_fill_views_of_one_buffer(shape):
    B, T, H, D, cut, seed = shape
    rng = np.random.default_rng(seed)
    _, q, k, v = packed_qkv(rng, B, T, H, D)
    q = q[:, min(cut, T - 1):]
    scale = 0.7
    dout = rng.standard_normal(q.shape)
    grads = {}
    for backend in BACKENDS:
        with kernels.use_backend(backend):
            out, lse = A.attention_forward(q, k, v, scale)
            if q.shape[1] == T:  # training layout: write into views of one (B, T, 3, H, D) buffer
                buf = np.full((B, T, 3, H, D), np.nan)
                res = A.attention_backward(dout, q, k, v, out, lse, scale, dq=buf[:, :, 0], dk=buf[:, :, 1],
                                           dv=buf[:, :, 2])
                assert res[0].base is buf or np.shares_memory(res[0], buf)
                assert not np.isnan(buf).any()
                grads[backend] = (buf[:, :, 0], buf[:, :, 1], buf[:, :, 2])
            else:
                grads[backend] = A.attention_backward(dout, q, k, v, out, lse, scale)
    for a, b in zip(grads["numba"], grads["numpy"]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dropout_p,tq", [(0.0, 5), (0.0, 2), (0.4, 5), (0.4, 3)])
def test_backward_matches_finite_differences(backend, dropout_p, tq):
    rng = np.random.default_rng(7)
    B, T, H, D = 2, 5, 2, 3
    q = rng.standard_normal((B, tq, H, D))
    k = rng.standard_normal((B, T, H, D))
    v = rng.standard_normal((B, T, H, D))
    w = rng.standard_normal((B, tq, H, D))
    scale, seed = 0.6, 1234
    with kernels.use_backend(backend):
        def loss():
            return float((A.attention_forward(q, k, v, scale, dropout_p, seed)[0] * w).sum())

        out, lse = A.attention_forward(q, k, v, scale, dropout_p, seed)
        dq, dk, dv = A.attention_backward(w, q, k, v, out, lse, scale, dropout_p, seed)
        nq, nk, nv = numeric_gradient(loss, [q, k, v])
    np.testing.assert_allclose(dq, nq, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dk, nk, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dv, nv, rtol=1e-6, atol=1e-8)


@given(shape=shapes, p=st.sampled_from([0.1, 0.5, 0.9]))
def test_dropout_backends_agree_exactly_and_match_reference(shape, p):
    B, T, H, D, cut, seed = shape
    rng = np.random.default_rng(seed)
    _, q, k, v = packed_qkv(rng, B, T, H, D)
    q = q[:, min(cut, T - 1):]
    Tq = q.shape[1]
    res = {}
    for backend in BACKENDS:
        with kernels.use_backend(backend):
            res[backend] = A.attention_forward(q, k, v, 0.5, p, seed)
    np.testing.assert_allclose(res["numba"][0], res["numpy"][0], rtol=0, atol=1e-12)
    keep = A.dropout_keep_mask(seed, p, B, H, Tq, T) / (1 - p)
    ref_out, ref_lse = reference_attention(q, k, v, 0.5, keep)
    np.testing.assert_allclose(res["numba"][0], ref_out, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res["numba"][1], ref_lse, rtol=0, atol=1e-10)   # lse ignores dropout


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_mask_statistics(p):
    B, H, T = 2, 3, 128
    keep = A.dropout_keep_mask(99, p, B, H, T, T)
    lower = np.tril(np.ones((T, T), dtype=bool))
    dropped = 1.0 - keep[:, :, lower].mean()
    n = B * H * lower.sum()
    assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / n)
    other = A.dropout_keep_mask(100, p, B, H, T, T)
    assert (keep != other).mean() > 0.5 * 2 * p * (1 - p)          # another seed, another mask
    # heads and batch entries get different masks
    assert (keep[0, 0] != keep[0, 1]).any() and (keep[0, 0] != keep[1, 0]).any()
    # statistically: the kernel's output is the reference with that mask (checked elsewhere); here the
    # scaled kept probabilities of a row average to the undropped ones
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, T, 1, 4)) * 0.0      # uniform attention: each row's weights are 1/(i+1)
    v = np.ones((1, T, 1, 4))
    out, _ = A.attention_forward(q, q.copy(), v, 1.0, p, 5)
    assert abs(out.mean() - 1.0) < 0.05


def test_dropout_chunk_matches_full_rows_and_p1_gives_zeros():
    rng = np.random.default_rng(3)
    _, q, k, v = packed_qkv(rng, 2, 10, 2, 4)
    full, _ = A.attention_forward(q, k, v, 0.5, 0.3, 77)
    part, _ = A.attention_forward(q[:, 6:], k, v, 0.5, 0.3, 77)
    np.testing.assert_allclose(part, full[:, 6:], rtol=0, atol=1e-14)
    out, lse = A.attention_forward(q, k, v, 0.5, 1.0, 77)
    assert np.all(out == 0) and np.isfinite(lse).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_and_large_scores(backend):
    rng = np.random.default_rng(1)
    _, q, k, v = packed_qkv(rng, 2, 16, 2, 8, np.float32)
    with kernels.use_backend(backend):
        out, lse = A.attention_forward(q, k, v, 0.35)
        assert out.dtype == np.float32 and lse.dtype == np.float32
        ref, ref_lse = reference_attention(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64), 0.35)
        np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5)
        dq, dk, dv = A.attention_backward(np.ones_like(out), q, k, v, out, lse, 0.35)
        assert dq.dtype == np.float32 and np.isfinite(dq).all()
        # scores of +-1e4: the row max shift keeps everything finite
        big = (q * 1e3).astype(np.float32)
        out, lse = A.attention_forward(big, k * 1e3, v, 1.0)
        assert np.isfinite(out).all() and np.isfinite(lse).all()
        grads = A.attention_backward(np.ones_like(out), big, k * 1e3, v, out, lse, 1.0)
        assert all(np.isfinite(g).all() for g in grads)


def test_kv_cache_rows_equal_full_forward():
    """Generation: one query at a time against a growing cache gives the rows of the full forward."""
    rng = np.random.default_rng(5)
    _, q, k, v = packed_qkv(rng, 1, 12, 3, 8, np.float32)
    full, _ = A.attention_forward(q, k, v, 0.3)
    cache_k = np.zeros((1, 16, 3, 8), np.float32)
    cache_v = np.zeros((1, 16, 3, 8), np.float32)
    for t in range(12):
        cache_k[:, t], cache_v[:, t] = k[:, t], v[:, t]
        row, _ = A.attention_forward(q[:, t:t + 1], cache_k[:, :t + 1], cache_v[:, :t + 1], 0.3)
        np.testing.assert_allclose(row[:, 0], full[:, t], rtol=1e-5, atol=1e-6)


def test_bad_arguments_raise_minigpt_error():
    q = np.zeros((1, 4, 2, 3))
    k = np.zeros((1, 3, 2, 3))
    with pytest.raises(MiniGPTError, match="at least as many keys"):
        A.attention_forward(q, k, k, 1.0)
    with pytest.raises(MiniGPTError, match="dropout_p"):
        A.attention_forward(q, q, q, 1.0, dropout_p=1.5)
    with pytest.raises(MiniGPTError, match="expects q"):
        A.attention_forward(q[0], q, q, 1.0)


@pytest.mark.parametrize("B,T,H,D,tq", [(2, 37, 2, 5, 37), (1, 50, 3, 8, 23), (1, 33, 1, 3, 17), (1, 64, 2, 4, 64)])
@pytest.mark.parametrize("dropout_p", [0.0, 0.3])
def test_several_row_blocks_match_numpy(B, T, H, D, tq, dropout_p):
    """Lengths past the kernels' 16-row blocks and 4-row groups, odd head sizes, fewer queries than keys."""
    rng = np.random.default_rng(T * 100 + D)
    _, q, k, v = packed_qkv(rng, B, T, H, D)
    q = q[:, T - tq:]
    dout = rng.standard_normal(q.shape)
    res = {}
    for backend in BACKENDS:
        with kernels.use_backend(backend):
            out, lse = A.attention_forward(q, k, v, 0.4, dropout_p, 11)
            res[backend] = (out, lse) + A.attention_backward(dout, q, k, v, out, lse, 0.4, dropout_p, 11)
    for a, b in zip(res["numba"], res["numpy"]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)


def test_any_memory_layout_and_gradient_buffers():
    """Inputs whose head rows are not contiguous (or reversed), gradient buffers of any layout, no queries."""
    rng = np.random.default_rng(21)
    B, T, H, D = 2, 20, 2, 6
    base = rng.standard_normal((3, D, H, T, B))
    q, k, v = (x.transpose(3, 2, 1, 0) for x in base)          # last axis strided
    k = k[:, :, :, ::-1]                                         # negative strides
    dout = rng.standard_normal((B, T, H, D))
    res = {}
    for backend in BACKENDS:
        with kernels.use_backend(backend):
            out, lse = A.attention_forward(q, k, v, 0.5)
            buf = np.full((D, H, T, B, 3), np.nan)                # gradient views with a strided last axis
            dq, dk, dv = (buf[..., i].transpose(3, 2, 1, 0) for i in range(3))
            A.attention_backward(dout, q, k, v, out, lse, 0.5, dq=dq, dk=dk, dv=dv)
            assert not np.isnan(buf).any()
            res[backend] = (out, lse, dq, dk, dv)
    for a, b in zip(res["numba"], res["numpy"]):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    # no queries at all: empty output, zero gradients for the keys and values
    out, lse = A.attention_forward(q[:, :0], k, v, 0.5)
    assert out.shape == (B, 0, H, D) and lse.shape == (B, H, 0)
    dq, dk, dv = A.attention_backward(out, q[:, :0], k, v, out, lse, 0.5)
    assert dq.shape == (B, 0, H, D) and not dk.any() and not dv.any()
