"""Optimisers, clipping and the learning-rate schedule (AdamW parity against a committed torch fixture)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, strategies as st
from safetensors.numpy import load_file, safe_open

from minigpt.errors import MiniGPTError
from minigpt.kernels.adamw import adamw_update, sum_squares
from minigpt.optim import SGD, AdamW, CosineWithWarmup, clip_grad_norm, lr_at, split_decay_groups

FIXTURE = Path(__file__).parent / "fixtures" / "adamw_torch.safetensors"


class P:
    """Stand-in for minigpt.nn.Parameter: .data, .grad, .requires_grad."""

    def __init__(self, data, requires_grad=True):
        self.data = np.array(data)
        self.grad = None
        self.requires_grad = requires_grad


def _fixture():
    arrays = load_file(str(FIXTURE))
    with safe_open(str(FIXTURE), framework="numpy") as f:
        meta = json.loads(f.metadata()["config"])
    return arrays, meta


def _run_fixture(arrays, meta, steps=None, opt=None, params=None):
    n = len([k for k in arrays if k.startswith("init.")])
    if params is None:
        params = [P(arrays[f"init.{j}"].copy()) for j in range(n)]
    if opt is None:
        g0, g1 = meta["groups"]
        opt = AdamW([{"params": [params[j] for j in g0], "weight_decay": meta["weight_decay"]},
                     {"params": [params[j] for j in g1], "weight_decay": 0.0}],
                    lr=meta["lr"], betas=tuple(meta["betas"]), eps=meta["eps"])
    return params, opt


def _steps(arrays, params, opt, t_range):
    for t in t_range:
        for j, p in enumerate(params):
            key = f"grad.{t}.{j}"
            p.grad = arrays[key].copy() if key in arrays else None
        opt.step()


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_adamw_matches_torch_fixture(backend):
    from minigpt.kernels import use_backend

    with use_backend(backend):
        _check_fixture()


def _check_fixture():
    arrays, meta = _fixture()
    params, opt = _run_fixture(arrays, meta)
    before = [p.data for p in params]
    _steps(arrays, params, opt, range(meta["steps"]))
    # order in the optimizer: group 0 then group 1
    order = meta["groups"][0] + meta["groups"][1]
    for j, p in enumerate(params):
        assert p.data is before[j], "AdamW must update .data in place, never rebind it"
        assert p.data.dtype == np.float32
        np.testing.assert_allclose(p.data, arrays[f"final.{j}"], rtol=1e-6, atol=1e-7)
        st = opt.state[order.index(j)]
        assert st["exp_avg"].dtype == np.float32
        np.testing.assert_allclose(st["exp_avg"], arrays[f"exp_avg.{j}"], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(st["exp_avg_sq"], arrays[f"exp_avg_sq.{j}"], rtol=1e-6, atol=1e-12)
        assert st["step"] == meta["param_steps"][j]


def test_adamw_state_dict_roundtrip_continues_identically():
    arrays, meta = _fixture()
    params, opt = _run_fixture(arrays, meta)
    _steps(arrays, params, opt, range(3))
    sd = opt.state_dict()
    json.dumps(sd["meta"])  # JSON-able
    assert all(isinstance(a, np.ndarray) for a in sd["arrays"].values())
    # a fresh optimizer over copies of the parameters, loaded from the checkpoint
    params2 = [P(p.data.copy()) for p in params]
    _, opt2 = _run_fixture(arrays, meta, params=params2)
    opt2.load_state_dict(sd)
    _steps(arrays, params, opt, range(3, meta["steps"]))
    _steps(arrays, params2, opt2, range(3, meta["steps"]))
    for p, q in zip(params, params2):
        np.testing.assert_array_equal(p.data, q.data)
    for j in range(len(params)):
        np.testing.assert_allclose(params[j].data, arrays[f"final.{j}"], rtol=1e-6, atol=1e-7)


def test_state_dict_restores_hyperparameters_and_is_a_copy():
    p = P(np.ones((2, 3), np.float32))
    opt = AdamW([p], lr=0.5, weight_decay=0.0)
    p.grad = np.ones((2, 3), np.float32)
    opt.step()
    sd = opt.state_dict()
    sd["arrays"]["state.0.exp_avg"][...] = 123.0  # must not touch the optimizer
    assert opt.state[0]["exp_avg"][0, 0] != 123.0
    q = P(np.ones((2, 3), np.float32))
    opt2 = AdamW([q], lr=1e-3)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == 0.5 and opt2.param_groups[0]["weight_decay"] == 0.0
    assert opt2.param_groups[0]["betas"] == (0.9, 0.999)


def test_bad_state_dicts_are_clear_errors():
    p = P(np.ones((2, 3), np.float32))
    opt = AdamW([p])
    p.grad = np.ones((2, 3), np.float32)
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(MiniGPTError, match="parameters"):
        AdamW([P(np.ones((2, 3), np.float32)), P(np.ones(3, np.float32))]).load_state_dict(sd)
    with pytest.raises(MiniGPTError, match="shape"):
        AdamW([P(np.ones((3, 2), np.float32))]).load_state_dict(sd)
    with pytest.raises(MiniGPTError, match="SGD"):
        AdamW([P(np.ones((2, 3), np.float32))]).load_state_dict(SGD([P(np.ones((2, 3)))], lr=0.1).state_dict())
    broken = {"arrays": {}, "meta": sd["meta"]}
    with pytest.raises(MiniGPTError, match="missing array"):
        AdamW([P(np.ones((2, 3), np.float32))]).load_state_dict(broken)
    with pytest.raises(MiniGPTError, match="'arrays' and 'meta'"):
        AdamW([P(np.ones((2, 3), np.float32))]).load_state_dict({"foo": 1})
    two_groups = AdamW([{"params": [P(np.ones((2, 3), np.float32))]}, {"params": []}])
    with pytest.raises(MiniGPTError, match="param groups"):
        two_groups.load_state_dict(sd)


def test_adamw_skips_none_grads_frozen_params_and_checks_shapes():
    a, b, c = P(np.ones(4, np.float32)), P(np.ones(4, np.float32)), P(np.ones(4, np.float32), requires_grad=False)
    opt = AdamW([a, b, c], lr=0.1)
    a.grad = np.full(4, 0.5, np.float32)
    c.grad = np.full(4, 0.5, np.float32)
    opt.step()
    assert not np.array_equal(a.data, np.ones(4))
    np.testing.assert_array_equal(b.data, np.ones(4))
    np.testing.assert_array_equal(c.data, np.ones(4))
    assert opt.state[1] == {} and opt.state[2] == {}
    b.grad = np.ones(5, np.float32)
    with pytest.raises(MiniGPTError, match="gradient shape"):
        opt.step()


def test_adamw_float64_and_non_contiguous_views_update_in_place():
    buf = np.arange(12, dtype=np.float64).reshape(3, 4)
    p = P(buf)
    p.data = buf[:, 1:3]  # a strided view into a bigger buffer (the model may hold views)
    opt = AdamW([p], lr=0.1, weight_decay=0.0)
    p.grad = np.ones((3, 2))
    opt.step()
    assert opt.state[0]["exp_avg"].dtype == np.float64
    # first Adam step moves every element by ~lr against the gradient sign
    np.testing.assert_allclose(buf[:, 1:3], np.arange(12.0).reshape(3, 4)[:, 1:3] - 0.1, rtol=1e-6)
    np.testing.assert_array_equal(buf[:, 0], [0.0, 4.0, 8.0])


@given(st.integers(1, 300), st.sampled_from([np.float32, np.float64]), st.integers(1, 50))
def test_adamw_kernel_equals_numpy_formula(n, dtype, step):
    rng = np.random.default_rng(n * 7 + step)
    p = rng.standard_normal(n).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    m = rng.standard_normal(n).astype(dtype) * 0.1
    v = np.abs(rng.standard_normal(n)).astype(dtype) * 0.01
    lr, b1, b2, eps, wd = 1e-3, 0.9, 0.95, 1e-8, 0.1
    bc1, bc2 = 1 - b1 ** step, 1 - b2 ** step
    # reference in float64
    p64, g64, m64, v64 = (x.astype(np.float64) for x in (p, g, m, v))
    p64 = p64 * (1 - lr * wd)
    m64 = b1 * m64 + (1 - b1) * g64
    v64 = b2 * v64 + (1 - b2) * g64 * g64
    p64 = p64 - lr / bc1 * m64 / (np.sqrt(v64) / math.sqrt(bc2) + eps)
    adamw_update(p, g, m, v, lr, b1, b2, eps, wd, bc1, bc2)
    tol = 2e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(m, m64, rtol=tol, atol=tol * 1e-2)
    np.testing.assert_allclose(v, v64, rtol=tol, atol=tol * 1e-4)
    np.testing.assert_allclose(p, p64, rtol=tol, atol=tol)


def test_adamw_kernel_parallel_path_matches_serial():
    from minigpt.kernels import adamw as k

    rng = np.random.default_rng(0)
    n = k.PARALLEL_THRESHOLD + 17
    arrs = [rng.standard_normal(n).astype(np.float32) for _ in range(4)]
    arrs[3] = np.abs(arrs[3])
    a = [x.copy() for x in arrs]
    b = [x.copy() for x in arrs]
    adamw_update(*a, 1e-3, 0.9, 0.999, 1e-8, 0.01, 0.1, 0.001)  # parallel path
    for lo in range(0, n, 1000):  # serial path, chunk by chunk
        sl = slice(lo, min(lo + 1000, n))
        adamw_update(*(x[sl] for x in b), 1e-3, 0.9, 0.999, 1e-8, 0.01, 0.1, 0.001)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@given(st.integers(1, 200), st.sampled_from([np.float32, np.float64]))
def test_adamw_numba_kernel_equals_numpy_reference(n, dtype):
    from minigpt.kernels.adamw import adamw_update_numba, adamw_update_numpy

    rng = np.random.default_rng(n)
    arrs = [rng.standard_normal(n).astype(dtype) for _ in range(4)]
    arrs[3] = np.abs(arrs[3])
    a = [x.copy() for x in arrs]
    b = [x.copy() for x in arrs]
    args = (3e-4, 0.9, 0.95, 1e-8, 0.1, 1 - 0.9 ** 3, 1 - 0.95 ** 3)
    adamw_update_numba(*a, *args)
    adamw_update_numpy(*b, *args)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=tol, atol=tol * 1e-3)


def test_adamw_kernel_rejects_bad_arrays():
    p = np.zeros(4, np.float32)
    with pytest.raises(MiniGPTError, match="dtype"):
        adamw_update(p, np.zeros(4), np.zeros(4, np.float32), np.zeros(4, np.float32), 1e-3, 0.9, 0.999,
                     1e-8, 0.0, 0.1, 0.001)
    with pytest.raises(MiniGPTError, match="elements"):
        adamw_update(p, np.zeros(5, np.float32), np.zeros(4, np.float32), np.zeros(4, np.float32), 1e-3, 0.9,
                     0.999, 1e-8, 0.0, 0.1, 0.001)
    with pytest.raises(MiniGPTError, match="flat contiguous"):
        adamw_update(np.zeros((2, 2), np.float32), *(np.zeros(4, np.float32),) * 3, 1e-3, 0.9, 0.999, 1e-8,
                     0.0, 0.1, 0.001)


def test_optimizer_constructor_errors():
    with pytest.raises(MiniGPTError, match="empty"):
        AdamW([])
    p = P(np.ones(3, np.float32))
    with pytest.raises(MiniGPTError, match="more than once"):
        AdamW([p, p])
    with pytest.raises(MiniGPTError, match="betas"):
        AdamW([P(np.ones(3))], betas=(0.9, 1.5))
    with pytest.raises(MiniGPTError, match="lr"):
        AdamW([P(np.ones(3))], lr=-1.0)
    with pytest.raises(MiniGPTError, match="float32 or float64"):
        AdamW([P(np.ones(3, np.int64))])
    with pytest.raises(MiniGPTError, match="unknown option"):
        AdamW([{"params": [P(np.ones(3))], "momentum": 0.9}])
    with pytest.raises(MiniGPTError, match="not a parameter"):
        SGD([np.ones(3)], lr=0.1)


def test_zero_grad():
    a, b = P(np.ones(3)), P(np.ones(2))
    a.grad = np.ones(3)
    opt = SGD([a, b], lr=0.1)
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(a.grad, np.zeros(3))
    assert b.grad is None
    opt.zero_grad()
    assert a.grad is None


def test_sgd_momentum_and_weight_decay_by_hand():
    p = P(np.array([1.0, -2.0]))
    opt = SGD([p], lr=0.1, momentum=0.9, weight_decay=0.5)
    g = np.array([0.2, 0.4])
    p.grad = g.copy()
    opt.step()
    d1 = g + 0.5 * np.array([1.0, -2.0])
    x1 = np.array([1.0, -2.0]) - 0.1 * d1
    np.testing.assert_allclose(p.data, x1)
    p.grad = g.copy()
    opt.step()
    d2 = g + 0.5 * x1
    buf = 0.9 * d1 + d2
    np.testing.assert_allclose(p.data, x1 - 0.1 * buf)
    # plain SGD
    q = P(np.array([1.0]))
    sgd = SGD([q], lr=0.5)
    q.grad = np.array([2.0])
    sgd.step()
    np.testing.assert_allclose(q.data, [0.0])
    # checkpoint round trip keeps the momentum buffer
    r = P(p.data.copy())
    sgd2 = SGD([r], lr=0.1, momentum=0.9, weight_decay=0.5)
    sgd2.load_state_dict(opt.state_dict())
    p.grad = g.copy()
    r.grad = g.copy()
    opt.step()
    sgd2.step()
    np.testing.assert_array_equal(p.data, r.data)


@given(st.lists(st.integers(1, 40), min_size=1, max_size=5), st.floats(1e-3, 10.0), st.floats(1e-3, 100.0))
def test_clip_grad_norm_bound_holds(sizes, max_norm, scale):
    rng = np.random.default_rng(len(sizes))
    params = [P(np.zeros(n, np.float32)) for n in sizes]
    for p in params:
        p.grad = (rng.standard_normal(p.data.shape) * scale).astype(np.float32)
    expected = math.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in params))
    before = [p.grad.copy() for p in params]
    total = clip_grad_norm(params, max_norm)
    assert total == pytest.approx(expected, rel=1e-9)
    after = math.sqrt(sum(float(np.sum(p.grad.astype(np.float64) ** 2)) for p in params))
    assert after <= max_norm + 1e-5
    if expected <= max_norm:
        for p, b in zip(params, before):
            np.testing.assert_array_equal(p.grad, b)
    else:
        assert after == pytest.approx(max_norm * expected / (expected + 1e-6), rel=1e-5)


def test_clip_grad_norm_non_finite_returns_without_scaling_and_skips_frozen():
    a, b = P(np.zeros(3, np.float32)), P(np.zeros(2, np.float32), requires_grad=False)
    a.grad = np.array([1.0, np.inf, 2.0], np.float32)
    b.grad = np.array([100.0, 0.0], np.float32)
    assert math.isinf(clip_grad_norm([a, b], 1.0))
    np.testing.assert_array_equal(a.grad, [1.0, np.inf, 2.0])
    a.grad = np.array([3.0, 4.0, 0.0], np.float32)
    assert clip_grad_norm([a, b], 100.0) == pytest.approx(5.0)  # b (frozen) is not counted
    c = P(np.zeros(2))
    c.grad = np.array([np.nan, 1.0])
    assert math.isnan(clip_grad_norm([c], 1.0))
    assert np.isnan(c.grad[0]) and c.grad[1] == 1.0
    with pytest.raises(MiniGPTError, match="max_norm"):
        clip_grad_norm([a], 0.0)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_sum_squares_accumulates_in_float64(backend):
    from minigpt.kernels import use_backend

    x = np.full(1_000_001, 0.1, np.float32)
    with use_backend(backend):
        total = sum_squares(x)
    assert total == pytest.approx(1_000_001 * float(np.float32(0.1)) ** 2, rel=1e-10)  # float32 sums drift ~1e-4


def test_schedule_values_at_known_steps():
    kw = dict(peak_lr=1e-3, warmup_steps=10, total_steps=110, min_lr=1e-4)
    assert lr_at(0, **kw) == pytest.approx(1e-4)          # (0 + 1) / 10 of the peak
    assert lr_at(4, **kw) == pytest.approx(5e-4)
    assert lr_at(9, **kw) == pytest.approx(1e-3)          # last warmup step reaches the peak
    assert lr_at(10, **kw) == pytest.approx(1e-3)         # cosine starts at the peak
    assert lr_at(60, **kw) == pytest.approx(1e-4 + 0.5 * 9e-4)  # half way: the mean of peak and floor
    assert lr_at(35, **kw) == pytest.approx(1e-4 + 9e-4 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(110, **kw) == pytest.approx(1e-4)
    assert lr_at(5000, **kw) == pytest.approx(1e-4)
    assert lr_at(0, **kw, initial_lr=1e-5) == pytest.approx(1e-5 + 9.9e-4 / 10)
    assert lr_at(3, peak_lr=1.0, warmup_steps=0, total_steps=4) == pytest.approx(0.5 * (1 + math.cos(0.75 * math.pi)))
    lrs = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_scheduler_drives_optimizer_groups_and_resumes():
    a, b = P(np.ones(2)), P(np.ones(2))
    opt = AdamW([{"params": [a]}, {"params": [b], "lr_scale": 0.5}], lr=123.0)
    sched = CosineWithWarmup(opt, peak_lr=1e-3, warmup_steps=4, total_steps=20, min_lr=1e-5)
    assert opt.param_groups[0]["lr"] == pytest.approx(lr_at(0, peak_lr=1e-3, warmup_steps=4, total_steps=20,
                                                            min_lr=1e-5))
    seen = []
    for _ in range(7):
        seen.append(opt.param_groups[0]["lr"])
        assert opt.param_groups[1]["lr"] == pytest.approx(0.5 * seen[-1])
        sched.step()
    assert seen == pytest.approx([sched.lr_at(s) for s in range(7)])
    s2 = CosineWithWarmup(None, peak_lr=1.0, warmup_steps=1, total_steps=2)
    s2.load_state_dict(sched.state_dict())
    assert s2.get_lr() == pytest.approx(opt.param_groups[0]["lr"])
    with pytest.raises(MiniGPTError, match="warmup_steps"):
        CosineWithWarmup(None, peak_lr=1e-3, warmup_steps=30, total_steps=20)
    with pytest.raises(MiniGPTError, match="min_lr"):
        CosineWithWarmup(None, peak_lr=1e-3, warmup_steps=3, total_steps=20, min_lr=1e-2)


def test_split_decay_groups():
    w, bias, ln, frozen = P(np.ones((3, 2))), P(np.ones(2)), P(np.ones(2)), P(np.ones((2, 2)), requires_grad=False)
    groups = split_decay_groups([("w", w), ("b", bias), ("ln", ln), ("f", frozen)], 0.1)
    assert groups[0]["params"] == [w] and groups[0]["weight_decay"] == 0.1
    assert groups[1]["params"] == [bias, ln] and groups[1]["weight_decay"] == 0.0
    opt = AdamW(groups, lr=1e-3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]


def test_works_with_minigpt_parameters():
    from minigpt.nn import Parameter

    w = Parameter(np.ones((3, 2), np.float32))
    b = Parameter(np.zeros(2, np.float32))
    buf = w.data
    opt = AdamW(split_decay_groups([("w", w), ("b", b)], 0.1), lr=0.1)
    w.grad = np.ones((3, 2), np.float32)
    b.grad = -np.ones(2, np.float32)
    assert clip_grad_norm([w, b], 100.0) == pytest.approx(math.sqrt(8))
    opt.step()
    assert w.data is buf and w.data.dtype == np.float32
    np.testing.assert_allclose(w.data, (1 - 0.1 * 0.1) - 0.1, rtol=1e-5)
    np.testing.assert_allclose(b.data, 0.1, rtol=1e-5)
    opt.zero_grad()
    assert w.grad is None and b.grad is None
