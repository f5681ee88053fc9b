"""Layer-norm kernels vs a NumPy reference and finite differences."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minigpt  # noqa: F401
from minigpt import kernels
from minigpt.gradcheck import numeric_gradient
from minigpt.kernels import layernorm as LN

BACKENDS = ["numba", "numpy"]


def reference(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=1, keepdims=True)       # biased, as GPT-2 / PyTorch
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


@pytest.mark.parametrize("backend", BACKENDS)
@given(n=st.integers(1, 70), c=st.integers(1, 40), seed=st.integers(0, 2**31), shift=st.sampled_from([0.0, 50.0]))
def test_forward_and_backward_float64(backend, n, c, seed, shift):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c)) * 2 + shift
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    dy = rng.standard_normal((n, c))
    with kernels.use_backend(backend):
        y, mean, rstd = LN.layer_norm_forward(x, gamma, beta)
        dx, dgamma, dbeta = LN.layer_norm_backward(dy, x, gamma, mean, rstd)
    np.testing.assert_allclose(y, reference(x, gamma, beta), rtol=0, atol=1e-10)
    np.testing.assert_allclose(mean, x.mean(axis=1), rtol=0, atol=1e-10)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(x.var(axis=1) + 1e-5), rtol=1e-12)
    # the NumPy reference of the backward, written directly
    xhat = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + 1e-5)
    g = dy * gamma
    ref_dx = (g - g.mean(1, keepdims=True) - xhat * (g * xhat).mean(1, keepdims=True)) / np.sqrt(
        x.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(dx, ref_dx, rtol=0, atol=1e-10)
    np.testing.assert_allclose(dgamma, (dy * xhat).sum(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(dbeta, dy.sum(0), rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_matches_finite_differences(backend):
    rng = np.random.default_rng(2)
    n, c = 5, 7
    x, gamma, beta = rng.standard_normal((n, c)), rng.standard_normal(c), rng.standard_normal(c)
    w = rng.standard_normal((n, c))
    with kernels.use_backend(backend):
        y, mean, rstd = LN.layer_norm_forward(x, gamma, beta, 1e-3)
        dx, dgamma, dbeta = LN.layer_norm_backward(w, x, gamma, mean, rstd)

        def loss():
            return float((LN.layer_norm_forward(x, gamma, beta, 1e-3)[0] * w).sum())

        numeric = numeric_gradient(loss, [x, gamma, beta])
    for grad, num in zip((dx, dgamma, dbeta), numeric):
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-8)


def test_float32_strided_and_many_rows():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((300, 2 * 96)).astype(np.float32)[:, ::2]       # strided input
    gamma = rng.standard_normal(96).astype(np.float32)
    beta = rng.standard_normal(96).astype(np.float32)
    y, mean, rstd = LN.layer_norm_forward(x, gamma, beta)
    assert y.dtype == mean.dtype == rstd.dtype == np.float32
    np.testing.assert_allclose(y, reference(x.astype(np.float64), gamma, beta), rtol=0, atol=2e-5)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    got = LN.layer_norm_backward(dy, x, gamma, mean, rstd)
    ref = LN.layer_norm_backward_numpy(dy.astype(np.float64), x.astype(np.float64), gamma.astype(np.float64),
                                       mean.astype(np.float64), rstd.astype(np.float64))
    for a, b in zip(got, ref):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # a constant row: variance 0, eps keeps it finite
    y, _, rstd = LN.layer_norm_forward(np.full((2, 8), 3.0, np.float32), gamma[:8], beta[:8])
    assert np.isfinite(y).all() and np.isfinite(rstd).all()
