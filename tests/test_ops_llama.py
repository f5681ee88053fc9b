"""The ops of Llama- and Qwen-style blocks: rms_norm, swiglu (and its gate silu / silu_mul), rope.

Each is gradchecked in float64 over hypothesis shapes (0-d where the op allows it), with both kernel
backends, and compared with its textbook formula written out here in NumPy.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

import minigpt.functional as F
from minigpt import Tensor, gradcheck, kernels
from minigpt.errors import MiniGPTError
from minigpt.kernels.rope import inv_frequencies

seeds = st.integers(0, 2**31 - 1)
backends = st.sampled_from(["numba", "numpy"])


def make(shape, seed, scale=1.0):
    return Tensor(np.random.default_rng(seed).standard_normal(shape) * scale, requires_grad=True)


def check(fn, *inputs):
    """gradcheck of sum(fn(...) * G) for a fixed random G (so every output element's gradient counts)."""
    out = fn(*inputs)
    g = Tensor(np.random.default_rng(99).standard_normal(out.shape))
    gradcheck(lambda *t: (fn(*t) * g).sum(), *inputs, eps=1e-6, atol=1e-7, rtol=1e-6)


@given(array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5), seeds, backends)
def test_rms_norm_gradcheck_and_formula(shape, seed, backend):
    x, w = make(shape, seed), make(shape[-1:], seed + 1)
    with kernels.use_backend(backend):
        check(lambda a, b: F.rms_norm(a, b, eps=1e-6), x, w)
        y = F.rms_norm(x, w, eps=1e-6).data
    xd = x.data
    expect = xd / np.sqrt((xd * xd).mean(axis=-1, keepdims=True) + 1e-6) * w.data
    np.testing.assert_allclose(y, expect, rtol=1e-12, atol=1e-12)


def test_rms_norm_refuses_bad_input():
    with pytest.raises(MiniGPTError, match="weight must have shape"):
        F.rms_norm(Tensor(np.ones((2, 3))), Tensor(np.ones(4)))
    with pytest.raises(MiniGPTError, match="weight must have shape"):
        F.rms_norm(Tensor(np.array(1.0)), Tensor(np.ones(1)))
    with pytest.raises(MiniGPTError, match="eps"):
        F.rms_norm(Tensor(np.ones((2, 3))), Tensor(np.ones(3)), eps=float("nan"))


@given(array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4), seeds, backends)
def test_silu_and_silu_mul_gradcheck_including_0d(shape, seed, backend):
    a, b = make(shape, seed, 3.0), make(shape, seed + 1)
    with kernels.use_backend(backend):
        check(F.silu, a)
        check(F.silu_mul, a, b)
        y = F.silu_mul(a, b).data
    assert y.shape == shape
    np.testing.assert_allclose(y, a.data / (1 + np.exp(-a.data)) * b.data, rtol=1e-12, atol=1e-14)


def test_silu_is_finite_at_the_extremes():
    x = Tensor(np.array([-1e4, -100.0, -88.0, 0.0, 88.0, 1e4], dtype=np.float32), requires_grad=True)
    y = F.silu(x)
    y.sum().backward()
    assert np.all(np.isfinite(y.data)) and np.all(np.isfinite(x.grad))
    np.testing.assert_allclose(y.data[[0, 3, 5]], [0.0, 0.0, 1e4], atol=1e-30)
    np.testing.assert_allclose(x.grad[[0, 3, 5]], [0.0, 0.5, 1.0], atol=1e-20)


@given(st.integers(1, 3), st.integers(1, 4), st.sampled_from([2, 4, 6]), st.integers(1, 7), seeds, backends,
       st.booleans())
def test_swiglu_gradcheck_and_formula(B, T, C, H, seed, backend, with_residual):
    x, wg, wu, wd = make((B, T, C), seed), make((C, H), seed + 1), make((C, H), seed + 2), make((H, C), seed + 3)
    inputs = [x, wg, wu, wd]
    if with_residual:
        inputs.append(make((B, T, C), seed + 4))
    with kernels.use_backend(backend):
        check(lambda *t: F.swiglu(*t[:4], residual=t[4] if len(t) > 4 else None), *inputs)
        y = F.swiglu(*inputs[:4]).data
    a, b = x.data @ wg.data, x.data @ wu.data
    np.testing.assert_allclose(y, (a / (1 + np.exp(-a)) * b) @ wd.data, rtol=1e-12, atol=1e-12)


def test_swiglu_refuses_mismatched_weights():
    x = Tensor(np.ones((2, 4)))
    with pytest.raises(MiniGPTError, match="w_up"):
        F.swiglu(x, np.ones((4, 6)), np.ones((4, 5)), np.ones((6, 4)))
    with pytest.raises(MiniGPTError, match="w_down"):
        F.swiglu(x, np.ones((4, 6)), np.ones((4, 6)), np.ones((5, 4)))


def _rope_reference(x, theta, start):
    """The rotation written out pair by pair, as in the RoPE paper with GPT-NeoX's pairing (j, j + D/2)."""
    T, D = x.shape[-2:]
    y = np.empty_like(x)
    for p in range(T):
        for j in range(D // 2):
            ang = (start + p) * theta ** (-2 * j / D)
            a, b = x[..., p, j], x[..., p, j + D // 2]
            y[..., p, j] = a * math.cos(ang) - b * math.sin(ang)
            y[..., p, j + D // 2] = b * math.cos(ang) + a * math.sin(ang)
    return y


@given(array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3), st.integers(1, 6),
       st.sampled_from([2, 4, 8]), st.integers(0, 50), st.sampled_from([10.0, 10000.0, 500000.0]), seeds, backends)
def test_rope_gradcheck_and_formula(lead, T, D, start, theta, seed, backend):
    x = make((*lead, T, D), seed)
    with kernels.use_backend(backend):
        check(lambda t: F.rope(t, theta=theta, start=start), x)
        y = F.rope(x, theta=theta, start=start).data
    np.testing.assert_allclose(y, _rope_reference(x.data, theta, start), rtol=1e-10, atol=1e-12)


def test_rope_scores_depend_only_on_the_distance():
    r = np.random.default_rng(0)
    q, k = r.standard_normal((2, 7, 8)), r.standard_normal((2, 7, 8))
    scores = [F.rope(Tensor(q), start=s).data @ F.rope(Tensor(k), start=s).data.transpose(0, 2, 1) for s in (0, 13)]
    np.testing.assert_allclose(scores[0], scores[1], rtol=1e-10, atol=1e-10)


def test_rope_llama3_scaling():
    """Llama 3.2's frequency scaling: long wavelengths divided by the factor, short ones kept, a blend between."""
    s = {"factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
    base = inv_frequencies(64, 500000.0)
    scaled = inv_frequencies(64, 500000.0, s)
    wavelen = 2 * np.pi / base
    high = wavelen < 8192 / 4.0
    low = wavelen > 8192 / 1.0
    assert high.any() and low.any() and (~high & ~low).any()
    np.testing.assert_array_equal(scaled[high], base[high])
    np.testing.assert_allclose(scaled[low], base[low] / 32.0)
    mid = ~high & ~low
    smooth = (8192 / wavelen[mid] - 1.0) / 3.0
    np.testing.assert_allclose(scaled[mid], (1 - smooth) * base[mid] / 32.0 + smooth * base[mid])
    x = make((1, 5, 64), 0)
    check(lambda t: F.rope(t, theta=500000.0, scaling=s), x)


def test_rope_refuses_bad_input():
    with pytest.raises(MiniGPTError, match="even"):
        F.rope(Tensor(np.ones((3, 5))))
    with pytest.raises(MiniGPTError, match=r"\(\.\.\., T, D\)"):
        F.rope(Tensor(np.ones(4)))
    with pytest.raises(MiniGPTError, match="theta"):
        F.rope(Tensor(np.ones((3, 4))), theta=float("nan"))
    with pytest.raises(MiniGPTError, match="start"):
        F.rope(Tensor(np.ones((3, 4))), start=-1)
    with pytest.raises(MiniGPTError, match="scaling"):
        F.rope(Tensor(np.ones((3, 4))), scaling={"factor": 2})


def test_float32_kernels_match_float64():
    r = np.random.default_rng(1)
    x = r.standard_normal((4, 9, 16))
    w = r.standard_normal(16)
    for fn in (lambda t: F.rms_norm(t, w.astype(t.dtype)), F.silu, lambda t: F.rope(t, start=3)):
        y64 = fn(Tensor(x)).data
        y32 = fn(Tensor(x.astype(np.float32))).data
        assert y32.dtype == np.float32
        np.testing.assert_allclose(y32, y64, rtol=1e-5, atol=1e-5)
