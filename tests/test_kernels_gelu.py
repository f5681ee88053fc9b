"""GELU kernel (tanh approximation) vs NumPy and finite differences."""
import math

import numpy as np
import pytest
from hypothesis import given, strategies as st
from hypothesis.extra import numpy as hnp

import minigpt  # noqa: F401
from minigpt import kernels
from minigpt.errors import MiniGPTError
from minigpt.kernels import gelu as G

BACKENDS = ["numba", "numpy"]


def reference_gelu(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


arrays64 = hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=4, max_side=7),
                      elements=st.floats(-12, 12, allow_nan=False))


@pytest.mark.parametrize("backend", BACKENDS)
@given(x=arrays64)
def test_forward_backward_float64(backend, x):
    dy = np.cos(np.arange(x.size)).reshape(x.shape)
    with kernels.use_backend(backend):
        y = G.gelu_forward(x)
        dx = G.gelu_backward(dy, x)
    assert y.shape == x.shape and y.dtype == np.float64 and y.flags.c_contiguous
    np.testing.assert_allclose(y, reference_gelu(x), rtol=0, atol=1e-12)
    eps = 1e-6
    numeric = (reference_gelu(x + eps) - reference_gelu(x - eps)) / (2 * eps)
    np.testing.assert_allclose(dx, dy * numeric, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dx, G.gelu_backward_numpy(dy, x), rtol=0, atol=1e-12)


def test_float32_strided_large_and_special_values():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((64, 96)) * 5).astype(np.float32)[:, ::3]     # non-contiguous input
    x[0, :6] = [np.inf, -30.0, 1e4, -1e4, 0.0, 1e-30]
    y = G.gelu_forward_numba(x)
    ref = G.gelu_forward_numpy(x.astype(np.float64))
    assert y.dtype == np.float32
    ok = np.isfinite(ref)
    # relative accuracy even for negative x, where 1 + tanh(u) cancels in the textbook form
    np.testing.assert_allclose(y[ok], ref[ok], rtol=4e-6, atol=1e-12)
    assert y[0, 0] == np.inf and np.isfinite(y).sum() == y.size - 1
    dy = np.ones_like(x)
    dx = G.gelu_backward_numba(dy, x)
    dref = G.gelu_backward_numpy(dy.astype(np.float64), x.astype(np.float64))
    ok = np.isfinite(dref)
    np.testing.assert_allclose(dx[ok], dref[ok], rtol=4e-6, atol=2e-7)   # gelu' crosses 0 near x=-0.75


def test_out_argument_and_in_place():
    x = np.linspace(-4, 4, 50).reshape(5, 10)
    expect = reference_gelu(x)
    out = np.empty_like(x)
    assert G.gelu_forward(x, out=out) is out
    np.testing.assert_allclose(out, expect, atol=1e-12)
    xi = x.copy()
    G.gelu_forward(xi, out=xi)
    np.testing.assert_allclose(xi, expect, atol=1e-12)
    with pytest.raises(minigpt.MiniGPTError, match="out must be"):
        G.gelu_forward(x, out=np.empty((5, 9)))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@given(n=st.integers(0, 80), c=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_bias_gelu_equals_bias_then_gelu_float64(backend, n, c, seed):
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((n, c)) * 3
    b = rng.standard_normal(c)
    dy = rng.standard_normal((n, c))
    pre = h + b
    with kernels.use_backend(backend):
        y = G.bias_gelu_forward(h, b)
        np.testing.assert_allclose(h, pre, rtol=1e-15, atol=0)        # h now holds the pre-activation
        np.testing.assert_allclose(y, G.gelu_forward_numpy(pre), rtol=1e-10, atol=1e-12)
        dh, db = G.bias_gelu_backward(dy, h)
    np.testing.assert_allclose(dh, G.gelu_backward_numpy(dy, pre), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, dh.sum(axis=0), rtol=1e-12, atol=1e-12)


def test_bias_gelu_float32_large_in_place_and_errors():
    rng = np.random.default_rng(0)
    h = rng.standard_normal((2048, 300)).astype(np.float32)
    b = rng.standard_normal(300).astype(np.float32)
    dy = rng.standard_normal(h.shape).astype(np.float32)
    ref_y = G.gelu_forward_numba(h + b)
    ref_dh = G.gelu_backward_numba(dy, h + b)
    y = G.bias_gelu_forward_numba(h, b)
    np.testing.assert_array_equal(y, ref_y)                   # same kernel math, fused: bit-identical
    dy_copy = dy.copy()
    dh, db = G.bias_gelu_backward_numba(dy_copy, h, out=dy_copy)
    assert dh is dy_copy
    np.testing.assert_array_equal(dh, ref_dh)
    np.testing.assert_allclose(db, ref_dh.astype(np.float64).sum(axis=0), rtol=1e-4, atol=1e-3)
    with pytest.raises(MiniGPTError, match="C-contiguous"):
        G.bias_gelu_forward_numba(np.zeros((4, 6), np.float32)[:, ::2], np.zeros(3, np.float32))
    with pytest.raises(MiniGPTError, match=r"\(C,\) bias"):
        G.bias_gelu_forward_numba(np.zeros((4, 6), np.float32), np.zeros(5, np.float32))
    with pytest.raises(MiniGPTError, match="does not match"):
        G.bias_gelu_backward_numba(np.zeros((4, 5)), np.zeros((4, 6)))
