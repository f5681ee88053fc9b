"""The vectorised exp / expm1 / tanh of minigpt.kernels.fastmath against NumPy, and the backend switch."""
import os
import subprocess
import sys

import numpy as np
import pytest

import minigpt  # noqa: F401  (sets the threading layer before numba starts)
from minigpt import kernels
from minigpt.errors import MiniGPTError
from minigpt.kernels import fastmath as fm


def ulps32(a, b):
    """Distance in float32 units in the last place (both arrays finite or equal specials)."""
    ia = np.asarray(a, np.float32).view(np.int32).astype(np.int64)
    ib = np.asarray(b, np.float32).view(np.int32).astype(np.int64)
    ia = np.where(ia < 0, -(ia & 0x7FFFFFFF), ia)        # sign-magnitude to a monotone integer line
    ib = np.where(ib < 0, -(ib & 0x7FFFFFFF), ib)
    return np.abs(ia - ib)


SPECIALS = [np.inf, -np.inf, np.nan, 0.0, -0.0]


def test_exp_float32_whole_range_within_2_ulp():
    x = np.linspace(-110, 92, 1_000_003, dtype=np.float32)
    x = np.concatenate([x, np.float32([88.7228, 88.72284, -87.33655, -103.97, -103.98, 1e-30, -1e-30])])
    with np.errstate(over="ignore"):
        ref = np.exp(x.astype(np.float64)).astype(np.float32)     # correctly rounded reference
    got = fm.exp(x)
    assert got.dtype == np.float32
    finite = np.isfinite(ref)
    assert ulps32(got[finite], ref[finite]).max() <= 2
    np.testing.assert_array_equal(got[~finite], ref[~finite])     # overflow to inf exactly where it should
    np.testing.assert_array_equal(fm.exp(np.float32(SPECIALS)), np.exp(np.float32(SPECIALS)))


def test_exp_float64_relative_error():
    x = np.concatenate([np.linspace(-745, 709.7, 1_000_003), np.linspace(-1, 1, 10_001)])
    ref = np.exp(x)
    got = fm.exp(x)
    normal = ref > np.finfo(np.float64).tiny
    assert (np.abs(got[normal] - ref[normal]) / ref[normal]).max() < 1e-15
    assert np.abs(got[~normal] - ref[~normal]).max() <= 2 * 5e-324     # subnormal results: 2 ulp
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(fm.exp(np.array(SPECIALS + [710.0, -746.0, 1e300])),
                                      np.exp(np.array(SPECIALS + [710.0, -746.0, 1e300])))


@pytest.mark.parametrize("dtype,tol", [(np.float32, None), (np.float64, 1e-15)])
def test_expm1_and_tanh_keep_relative_accuracy_near_zero(dtype, tol):
    mags = np.logspace(-30, 1.5, 20_001)
    x = np.concatenate([mags, -mags, np.linspace(-60, 60, 20_001)]).astype(dtype)
    x64 = x.astype(np.float64)
    for ours, ref in [(fm.expm1, np.expm1), (fm.tanh, np.tanh)]:
        got = ours(x)
        assert got.dtype == dtype
        if dtype == np.float32:
            assert ulps32(got, ref(x64).astype(np.float32)).max() <= 3
        else:
            r = ref(x64)
            assert (np.abs(got - r) / np.maximum(np.abs(r), 1e-300)).max() < tol
    with np.errstate(over="ignore"):
        for v in SPECIALS + [800.0, -800.0, 1e30, -1e30]:
            np.testing.assert_array_equal(fm.tanh(np.array([v], dtype)), np.tanh(np.array([v], dtype)))
            np.testing.assert_array_equal(fm.expm1(np.array([v], dtype)), np.expm1(np.array([v], dtype)))


def test_backend_switch():
    assert kernels.backend() in kernels.BACKENDS
    old = kernels.set_backend("numpy")
    try:
        assert kernels.backend() == "numpy"
        with kernels.use_backend("numba"):
            assert kernels.backend() == "numba"
        assert kernels.backend() == "numpy"
    finally:
        kernels.set_backend(old)
    with pytest.raises(MiniGPTError, match="unknown kernel backend"):
        kernels.set_backend("cuda")
    assert kernels.backend() == old
    assert kernels.gelu_forward is kernels.gelu.gelu_forward     # the package exposes the public kernels


def test_backend_from_environment():
    code = "import minigpt.kernels as k; print(k.backend())"
    env = dict(os.environ, MINIGPT_KERNELS="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "numpy"
    env["MINIGPT_KERNELS"] = "fortran"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "MINIGPT_KERNELS" in bad.stderr


def test_non_float_arrays_are_refused_clearly():
    from minigpt.kernels import gelu, softmax

    with pytest.raises(MiniGPTError, match="float32 and float64"):
        gelu.gelu_forward_numba(np.arange(6).reshape(2, 3))
    with pytest.raises(MiniGPTError, match="float32 and float64"):
        softmax.softmax_forward_numba(np.ones((2, 3), np.float16))
