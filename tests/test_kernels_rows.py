"""Row kernels: bias add and column sums (linear layers), scatter-add of rows (embedding backward)."""
import numba
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minigpt  # noqa: F401
from minigpt import kernels
from minigpt.errors import MiniGPTError
from minigpt.kernels import bias as KB

BACKENDS = ["numba", "numpy"]


@pytest.mark.parametrize("backend", BACKENDS)
@given(n=st.integers(0, 300), c=st.integers(1, 70), seed=st.integers(0, 2**31))
def test_add_and_column_sums_float64(backend, n, c, seed):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((n, c)) * 3
    b = rng.standard_normal(c)
    with kernels.use_backend(backend):
        y = g.copy()
        assert KB.add_bias(y, b) is y
        np.testing.assert_allclose(y, g + b, rtol=1e-14, atol=0)
        db = KB.bias_grad(g)
    assert db.shape == (c,) and db.dtype == np.float64
    np.testing.assert_allclose(db, np.array([sum(map(float, col)) for col in g.T]).reshape(c), rtol=1e-10, atol=1e-10)


def test_float32_large_strided_and_thread_count_independent():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((4099, 2 * 385)).astype(np.float32)[:, ::2]   # strided: copied, same sums
    exact = g.astype(np.float64).sum(axis=0)
    db = KB.bias_grad_numba(g)
    assert db.dtype == np.float32
    np.testing.assert_allclose(db, exact, rtol=0, atol=2e-3)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one_thread = KB.bias_grad_numba(g)
    finally:
        numba.set_num_threads(old)
    assert np.array_equal(db, one_thread)
    y = np.ascontiguousarray(g)
    b = rng.standard_normal(385).astype(np.float32)
    ref = y + b
    np.testing.assert_array_equal(KB.add_bias_numba(y, b), ref)


def test_bad_arrays_are_refused():
    with pytest.raises(MiniGPTError, match=r"shape \(N, 3\)"):
        KB.add_bias_numba(np.zeros((2, 4)), np.zeros(3))
    with pytest.raises(MiniGPTError, match="C-contiguous"):
        KB.add_bias_numba(np.zeros((4, 6))[:, ::2], np.zeros(3))
    with pytest.raises(MiniGPTError, match="float32/float64"):
        KB.bias_grad_numba(np.zeros((2, 3), dtype=np.int64))


# ---- scatter-add of rows (embedding backward) -------------------------------------------------------
from minigpt.kernels import scatter as KS  # noqa: E402


@pytest.mark.parametrize("backend", BACKENDS)
@given(v=st.integers(1, 20), n=st.integers(0, 300), c=st.integers(1, 150), seed=st.integers(0, 2**31))
def test_add_rows_matches_add_at_with_repeats(backend, v, n, c, seed):
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal((v, c))
    index = rng.integers(0, v, n)
    rows = rng.standard_normal((n, c))
    ref = dense.copy()
    np.add.at(ref, index, rows)
    with kernels.use_backend(backend):
        out = KS.add_rows(dense, index, rows)
    assert out is dense
    np.testing.assert_allclose(dense, ref, rtol=1e-13, atol=1e-13)


def test_add_rows_float32_order_and_errors():
    rng = np.random.default_rng(1)
    index = rng.integers(0, 50, 5000)
    rows = rng.standard_normal((5000, 200)).astype(np.float32)
    serial = np.zeros((50, 200), np.float32)
    for i, r in zip(index, rows):  # the same order of additions, element by element
        serial[i] += r
    out = KS.add_rows_numba(np.zeros((50, 200), np.float32), index, rows)
    np.testing.assert_array_equal(out, serial)
    strided = np.zeros((50, 400))[:, ::2]
    KS.add_rows_numba(strided, index, rows)  # falls back to np.add.at
    np.testing.assert_allclose(strided, serial, rtol=1e-6, atol=1e-4)
    with pytest.raises(MiniGPTError, match="out of range"):
        KS.add_rows_numba(np.zeros((3, 2)), np.array([0, 3]), np.zeros((2, 2)))
    with pytest.raises(MiniGPTError, match="do not match"):
        KS.add_rows_numba(np.zeros((3, 2)), np.array([0, 1]), np.zeros((2, 3)))
