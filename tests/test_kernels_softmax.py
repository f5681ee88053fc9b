"""Softmax, log-softmax and fused cross-entropy kernels vs NumPy and finite differences."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minigpt  # noqa: F401
from minigpt import kernels
from minigpt.gradcheck import numeric_gradient
from minigpt.errors import MiniGPTError
from minigpt.kernels import softmax as S

BACKENDS = ["numba", "numpy"]


def ref_softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ref_log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))


rows = st.tuples(st.integers(1, 40), st.integers(1, 90), st.integers(0, 2**31), st.sampled_from([1.0, 30.0]))


@pytest.mark.parametrize("backend", BACKENDS)
@given(shape=rows)
def test_softmax_and_log_softmax_float64(backend, shape):
    n, v, seed, spread = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, v)) * spread
    dy = rng.standard_normal((n, v))
    with kernels.use_backend(backend):
        y = S.softmax_forward(x)
        dx = S.softmax_backward(y, dy)
        ly = S.log_softmax_forward(x)
        ldx = S.log_softmax_backward(ly, dy)
    p = ref_softmax(x)
    np.testing.assert_allclose(y, p, rtol=0, atol=1e-10)
    np.testing.assert_allclose(ly, ref_log_softmax(x), rtol=0, atol=1e-10)
    # Jacobian-vector products written out: J = diag(p) - p p^T ; log-softmax J = I - 1 p^T
    np.testing.assert_allclose(dx, p * dy - p * (p * dy).sum(1, keepdims=True), rtol=0, atol=1e-10)
    np.testing.assert_allclose(ldx, dy - p * dy.sum(1, keepdims=True), rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@given(shape=rows, n_ignored=st.integers(0, 5))
def test_cross_entropy_float64(backend, shape, n_ignored):
    n, v, seed, spread = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, v)) * spread
    t = rng.integers(0, v, n)
    t[rng.permutation(n)[:n_ignored]] = -100
    valid = t != -100
    with kernels.use_backend(backend):
        loss_sum, n_valid, lse = S.cross_entropy_forward(x, t)
        scale = 1.0 / max(n_valid, 1)
        d = S.cross_entropy_backward(x, t, lse, scale)
        xi = x.copy()
        d_inplace = S.cross_entropy_backward(xi, t, lse, scale, out=xi)
    logp = ref_log_softmax(x)
    expected = -logp[np.flatnonzero(valid), t[valid]].sum()
    assert isinstance(loss_sum, float) and isinstance(n_valid, int)
    assert n_valid == valid.sum()
    assert abs(loss_sum - expected) <= 1e-10 * max(1.0, abs(expected))
    np.testing.assert_allclose(lse[valid], (x - logp)[valid, 0], rtol=0, atol=1e-10)
    onehot = np.zeros_like(x)
    onehot[np.flatnonzero(valid), t[valid]] = 1
    ref_d = scale * (np.exp(logp) - onehot) * valid[:, None]
    np.testing.assert_allclose(d, ref_d, rtol=0, atol=1e-10)
    assert d_inplace is xi
    np.testing.assert_allclose(xi, ref_d, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_entropy_finite_differences(backend):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6))
    t = np.array([1, -100, 5, 0])
    with kernels.use_backend(backend):
        def loss():
            s, nv, _ = S.cross_entropy_forward(x, t)
            return s / nv

        _, nv, lse = S.cross_entropy_forward(x, t)
        d = S.cross_entropy_backward(x, t, lse, 1.0 / nv)
        (num,) = numeric_gradient(loss, [x])
    np.testing.assert_allclose(d, num, rtol=1e-6, atol=1e-9)
    assert np.all(d[1] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_stay_finite(backend, dtype):
    x = np.array([[1e4, -1e4, 0.0, 1e4 - 1], [-1e4, -1e4, -1e4, -1e4], [3.0, -1e4, 2.0, 1.0]], dtype)
    t = np.array([1, 2, 0])
    with kernels.use_backend(backend):
        y = S.softmax_forward(x)
        ly = S.log_softmax_forward(x)
        loss_sum, n_valid, lse = S.cross_entropy_forward(x, t)
        d = S.cross_entropy_backward(x, t, lse, 1.0)
        dx = S.softmax_backward(y, np.ones_like(y))
        ldx = S.log_softmax_backward(ly, np.ones_like(ly))
    for a in (y, ly, lse, d, dx, ldx):
        assert a.dtype == dtype and np.isfinite(a).all()
    np.testing.assert_allclose(y.sum(1), 1, rtol=1e-6)
    expected = 2e4 + np.log1p(np.exp(-1.0)) + np.log(4) + (np.log(np.exp([0, -1, -2]).sum()))
    assert abs(loss_sum - expected) < 1e-6 * 2e4
    np.testing.assert_allclose(ly[1], -np.log(4), rtol=1e-6)


def test_float32_matches_float64_and_masked_minus_inf():
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((33, 1000)) * 4).astype(np.float32)
    x[0, 10:] = -np.inf                                  # top-k style masking in generation
    y = S.softmax_forward_numba(x)
    np.testing.assert_allclose(y, ref_softmax(x.astype(np.float64)), rtol=2e-5, atol=1e-8)
    assert np.all(y[0, 10:] == 0)
    t = rng.integers(0, 1000, 33)
    t[0] = 3
    s32, n32, lse32 = S.cross_entropy_forward_numba(x, t)
    s64, n64, lse64 = S.cross_entropy_forward_numpy(x.astype(np.float64), t)
    assert n32 == n64 and abs(s32 - s64) < 1e-5 * abs(s64)
    d32 = S.cross_entropy_backward_numba(x, t, lse32, 1 / 33)
    d64 = S.cross_entropy_backward_numpy(x.astype(np.float64), t, lse64, 1 / 33)
    np.testing.assert_allclose(d32, d64, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_targets_name_the_value(backend):
    x = np.zeros((3, 5))
    with kernels.use_backend(backend):
        with pytest.raises(MiniGPTError, match=r"target 5 \(row 1\)"):
            S.cross_entropy_forward(x, np.array([0, 5, 1]))
        with pytest.raises(MiniGPTError, match="target -3"):
            S.cross_entropy_forward(x, np.array([0, -3, 1]))
        with pytest.raises(MiniGPTError, match="shape"):
            S.cross_entropy_forward(x, np.array([0, 1]))
        # ignore_index is not out of range, whatever its value
        assert S.cross_entropy_forward(x, np.array([7, 7, 7]), ignore_index=7)[:2] == (0.0, 0)


def test_cross_entropy_backward_in_place_has_the_same_bits_float32():
    """The in-place gradient (read through a tile per row) equals the two-buffer one bit for bit, over
    rows wider than the tile, with a partial last tile and an ignored row: model.loss and the book's
    loss path rely on it."""
    from minigpt.kernels.softmax import _TILE

    rng = np.random.default_rng(3)
    v = 2 * _TILE + 77
    x = (rng.standard_normal((5, v)) * 4).astype(np.float32)
    t = rng.integers(0, v, 5)
    t[2] = -100
    _, n_valid, lse = S.cross_entropy_forward(x, t)
    d = S.cross_entropy_backward(x, t, lse, 1.0 / n_valid)
    xi = x.copy()
    S.cross_entropy_backward(xi, t, lse, 1.0 / n_valid, out=xi)
    np.testing.assert_array_equal(xi, d)
    assert not xi[2].any()
