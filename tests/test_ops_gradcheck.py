"""Every op, gradchecked in float64 by central finite differences on hypothesis-drawn shapes.

Shapes include broadcasting pairs, size-1 axes, 0-d tensors (shape ``()``) and empty batches where the op
allows them, and non-contiguous (strided) inputs.
"""
import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import minigpt.functional as F
from minigpt import Tensor, gradcheck

RTOL = 1e-6
ATOL = 1e-7


def make(shape, seed, noncontig=False, low=None, high=None, requires_grad=True):
    """A float64 tensor of ``shape``; strided (every other element of a bigger array) when asked."""
    rng = np.random.default_rng(seed)
    big = tuple(2 * n for n in shape) if noncontig else shape
    if low is None:
        base = rng.standard_normal(big)
    else:
        base = rng.uniform(low, high, big)
    data = base[tuple(slice(None, None, 2) for _ in shape)] if noncontig else base
    if noncontig and data.size > 1:
        assert not data.flags.c_contiguous or data.ndim == 0 or min(shape) <= 1
    return Tensor(data, requires_grad=requires_grad)


def check(fn, *inputs):
    gradcheck(fn, *inputs, eps=1e-6, atol=ATOL, rtol=RTOL)


seeds = st.integers(0, 2**31 - 1)
small_shapes = array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=4)
maybe_empty = array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3)
scalar_or_maybe_empty = array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=3)  # () included
UNARY = ["exp", "log", "sqrt", "tanh", "relu", "gelu", "neg"]


# --- arithmetic -------------------------------------------------------------------------------------
@given(mutually_broadcastable_shapes(num_shapes=2, max_dims=3, max_side=4), seeds, st.booleans(),
       st.sampled_from(["add", "sub", "mul", "div"]))
def test_binary_broadcasting(shapes, seed, noncontig, op):
    sa, sb = shapes.input_shapes
    a = make(sa, seed, noncontig)
    b = make(sb, seed + 1, low=0.5, high=2.0) if op == "div" else make(sb, seed + 1)
    fn = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
          "div": lambda x, y: x / y}[op]
    check(fn, a, b)
    out = fn(a, b)
    assert out.shape == np.broadcast_shapes(sa, sb)


@example(shape=(), seed=2)
@given(scalar_or_maybe_empty, seeds)
def test_binary_empty_and_scalars(shape, seed):
    a = make(shape, seed)
    out = 2.0 * a - 1 + a / 3.0
    assert out.shape == shape
    if a.size:
        check(lambda x: 2.0 * x - 1 + x / 3.0 + (-x), a)


@example(shape=(), seed=4, p=3)
@given(small_shapes, seeds, st.sampled_from([2, 3, 0.5, -1.0, 0, 1.5]))
def test_pow(shape, seed, p):
    a = make(shape, seed, low=0.5, high=2.0)
    check(lambda x: x ** p, a)


@given(seeds, st.integers(1, 4), st.integers(1, 4), st.integers(1, 4),
       st.sampled_from(["2d", "batched", "broadcast_b", "broadcast_a", "vec_left", "vec_right", "bcast_batch"]),
       st.booleans())
def test_matmul(seed, n, k, m, kind, noncontig):
    shapes = {
        "2d": ((n, k), (k, m)),
        "batched": ((2, n, k), (2, k, m)),
        "broadcast_b": ((3, n, k), (k, m)),
        "broadcast_a": ((n, k), (2, k, m)),
        "vec_left": ((k,), (2, k, m)),
        "vec_right": ((2, n, k), (k,)),
        "bcast_batch": ((2, 1, n, k), (1, 3, k, m)),
    }[kind]
    a = make(shapes[0], seed, noncontig)
    b = make(shapes[1], seed + 1)
    check(lambda x, y: x @ y, a, b)
    np.testing.assert_allclose((a @ b).data, a.data @ b.data)


def test_matmul_shape_error_names_both_shapes():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4, 5\)"):
        a @ b


# --- elementwise --------------------------------------------------------------------------------------
def _0d_examples(ops):
    """A decorator adding one 0-d example per op: hypothesis may not draw ``()`` in a few examples."""
    def add(test):
        for op in ops:
            test = example(shape=(), seed=3, noncontig=False, op=op)(test)
        return test
    return add


@_0d_examples(UNARY)
@given(scalar_or_maybe_empty, seeds, st.booleans(), st.sampled_from(UNARY))
def test_unary(shape, seed, noncontig, op):
    if op in ("log", "sqrt"):
        a = make(shape, seed, noncontig, low=0.3, high=3.0)
    else:
        a = make(shape, seed, noncontig)
        if op == "relu":  # keep away from the kink
            a.data[np.abs(a.data) < 1e-3] += 0.01
    fn = {"exp": F.exp, "log": F.log, "sqrt": F.sqrt, "tanh": F.tanh, "relu": F.relu, "gelu": F.gelu,
          "neg": lambda x: -x}[op]
    out = fn(a)
    assert out.shape == shape
    if a.size:
        check(fn, a)


def test_gelu_values_match_formula():
    x = np.linspace(-6, 6, 101)
    expect = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    np.testing.assert_allclose(F.gelu(Tensor(x)).data, expect, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("optimized", [True, False])
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "where", "stack", "chain"])
def test_0d_inputs_of_binary_ops_and_reused_tensors(op, optimized):
    """0-d tensors through the binary ops, and a 0-d tensor used several times (its gradient contributions
    summed in place): with and without the gradient-buffer optimisations."""
    from minigpt.grad_buffers import grad_optimizations

    a, b = make((), 7), make((), 8, low=0.5, high=2.0)
    fn = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
          "div": lambda x, y: x / y, "where": lambda x, y: F.where(np.array(True), x, y),
          "stack": lambda x, y: F.stack([x, y, x * y]),
          "chain": lambda x, y: F.gelu(x * x * x + x + y * x) * y}[op]
    with grad_optimizations(optimized):
        check(fn, a, b)


def test_0d_gradient_sums_are_exact():
    """x^3 + x at x = 1.5 has the derivative 3 x^2 + 1 = 7.75: every contribution counted once."""
    x = Tensor(np.array(1.5), requires_grad=True)
    ((x * x) * x + x).backward()
    assert isinstance(x.grad, np.ndarray) and x.grad.shape == () and x.grad == 7.75


# --- reductions ----------------------------------------------------------------------------------------
@st.composite
def shape_and_axis(draw, min_dims=1):
    shape = draw(array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=4))
    if not shape:  # a 0-d tensor: the whole of it, or no axis at all
        return shape, draw(st.sampled_from([None, ()]))
    axis = draw(st.one_of(st.none(), st.integers(-len(shape), len(shape) - 1),
                          st.lists(st.integers(0, len(shape) - 1), min_size=1, max_size=len(shape),
                                   unique=True).map(tuple)))
    return shape, axis


@example(sa=((), None), seed=1, keepdims=False, noncontig=False, op="sum")
@example(sa=((), None), seed=1, keepdims=True, noncontig=False, op="mean")
@example(sa=((), None), seed=1, keepdims=False, noncontig=False, op="max")
@given(shape_and_axis(min_dims=0), seeds, st.booleans(), st.booleans(), st.sampled_from(["sum", "mean", "max"]))
def test_reductions(sa, seed, keepdims, noncontig, op):
    shape, axis = sa
    a = make(shape, seed, noncontig)
    fn = {"sum": F.sum, "mean": F.mean, "max": F.max}[op]
    out = fn(a, axis=axis, keepdims=keepdims)
    ref = getattr(np, {"sum": "sum", "mean": "mean", "max": "max"}[op])(a.data, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(out.data, ref)
    check(lambda x: fn(x, axis=axis, keepdims=keepdims), a)


def test_max_ties_share_gradient():
    a = Tensor(np.array([1.0, 3.0, 3.0]), requires_grad=True)
    a.max().backward()
    np.testing.assert_allclose(a.grad, [0, 0.5, 0.5])


@given(scalar_or_maybe_empty, seeds)
def test_sum_empty(shape, seed):
    a = make(shape, seed)
    s = a.sum()
    s.backward()
    assert a.grad.shape == shape


# --- shapes ------------------------------------------------------------------------------------------
@given(small_shapes, seeds, st.booleans(), st.data())
def test_reshape_transpose_permute(shape, seed, noncontig, data):
    a = make(shape, seed, noncontig)
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    check(lambda x: F.transpose(x, perm).reshape(-1), a)
    check(lambda x: x.permute(*perm) if perm else x, a)
    check(lambda x: x.T, a)
    assert a.T.shape == shape[::-1]


@given(array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5), seeds, st.booleans(), st.data())
def test_getitem_slices_and_int_arrays(shape, seed, noncontig, data):
    a = make(shape, seed, noncontig)
    n0 = shape[0]
    kind = data.draw(st.sampled_from(["slice", "step", "int", "intarray", "neg", "tuple"]))
    if kind == "slice":
        lo = data.draw(st.integers(0, n0 - 1))
        idx = slice(lo, None)
    elif kind == "step":
        idx = slice(None, None, data.draw(st.integers(1, 3)))
    elif kind == "int":
        idx = data.draw(st.integers(-n0, n0 - 1))
    elif kind == "neg":
        idx = slice(None, None, -1)
    elif kind == "intarray":  # with repeats: gradients must add up
        idx = np.array(data.draw(st.lists(st.integers(0, n0 - 1), min_size=1, max_size=6)))
    else:
        idx = (slice(None),) * (len(shape) - 1) + (data.draw(st.integers(0, shape[-1] - 1)),)
    np.testing.assert_array_equal(a[idx].data, a.data[idx])
    check(lambda x: x[idx], a)


def test_getitem_repeated_ids_scatter_add():
    w = Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    w[np.array([0, 2, 0, 0])].sum().backward()
    np.testing.assert_array_equal(w.grad, [[3, 3], [0, 0], [1, 1]])


def test_getitem_out_of_range_is_clear():
    with pytest.raises(ValueError, match="out of bounds|invalid"):
        Tensor(np.ones(3))[5]


@given(array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3), seeds, st.integers(1, 3), st.data())
def test_concatenate_stack_split(shape, seed, n, data):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    ts = [make(shape, seed + i, noncontig=(i == 0)) for i in range(n)]
    check(lambda *xs: F.concatenate(xs, axis=axis), *ts)
    np.testing.assert_array_equal(F.concatenate(ts, axis=axis).data, np.concatenate([t.data for t in ts], axis=axis))
    check(lambda *xs: F.stack(xs, axis=axis), *ts)
    big = F.concatenate(ts, axis=axis)
    parts = F.split(big, n, axis=axis)
    assert len(parts) == n
    for p, t in zip(parts, ts):
        np.testing.assert_array_equal(p.data, t.data)
    check(lambda x: F.split(x, n, axis=axis)[-1] * 2.0 + F.split(x, n, axis=axis)[0], big.detach().requires_grad_())


def test_split_by_indices_and_errors():
    x = Tensor(np.arange(10.0), requires_grad=True)
    a, b, c = F.split(x, [2, 5])
    assert (a.shape, b.shape, c.shape) == ((2,), (3,), (5,))
    with pytest.raises(ValueError, match="equal parts"):
        F.split(x, 3)
    with pytest.raises(ValueError, match="differ"):
        F.concatenate([Tensor(np.ones((2, 3))), Tensor(np.ones((3, 2)))], axis=0)


# --- selection ---------------------------------------------------------------------------------------
@given(mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3), seeds)
def test_where(shapes, seed):
    sc, sa, sb = shapes.input_shapes
    cond = np.random.default_rng(seed).random(sc) > 0.5
    a, b = make(sa, seed), make(sb, seed + 1)
    check(lambda x, y: F.where(cond, x, y), a, b)


@example(shape=(), seed=5, noncontig=False)
@given(small_shapes, seeds, st.booleans())
def test_masked_fill(shape, seed, noncontig):
    a = make(shape, seed, noncontig)
    mask = np.random.default_rng(seed).random(shape) > 0.5
    check(lambda x: F.masked_fill(x, mask, -3.0), a)
    assert np.all(F.masked_fill(a, mask, -3.0).data[mask] == -3.0)


@given(seeds, st.integers(1, 6), st.integers(1, 4), array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=5))
def test_embedding_repeated_ids(seed, vocab, dim, ids_shape):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, ids_shape)
    w = make((vocab, dim), seed)
    check(lambda t: F.embedding(ids, t), w)
    assert F.embedding(ids, w).shape == (*ids_shape, dim)


def test_embedding_bad_ids():
    w = Tensor(np.ones((4, 2)))
    with pytest.raises(ValueError, match="id 4 is out of range"):
        F.embedding(np.array([1, 4]), w)


# --- softmax family ----------------------------------------------------------------------------------
@given(shape_and_axis(), seeds, st.booleans(), st.sampled_from(["softmax", "log_softmax"]))
def test_softmax_family(sa, seed, noncontig, op):
    shape, axis = sa
    axis = axis if isinstance(axis, int) else -1
    a = make(shape, seed, noncontig)
    fn = F.softmax if op == "softmax" else F.log_softmax
    x = a.data - a.data.max(axis=axis, keepdims=True)
    ref = np.exp(x) / np.exp(x).sum(axis=axis, keepdims=True)
    np.testing.assert_allclose(fn(a, axis=axis).data, ref if op == "softmax" else np.log(ref), rtol=1e-12, atol=1e-13)
    check(lambda t: fn(t, axis=axis), a)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_stable_for_huge_logits(dtype):
    x = Tensor(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype), requires_grad=True)
    y = F.softmax(x)
    ly = F.log_softmax(x)
    assert np.all(np.isfinite(y.data)) and np.all(np.isfinite(ly.data))
    np.testing.assert_allclose(y.data[0], [1, 0, 0], atol=1e-6)
    loss = F.cross_entropy(x, np.array([1, 2]))
    assert np.isfinite(loss.item())
    loss.backward()
    assert np.all(np.isfinite(x.grad))


@given(seeds, st.integers(1, 6), st.integers(1, 7), st.booleans(), st.sampled_from(["mean", "sum"]))
def test_cross_entropy(seed, n, v, with_ignored, reduction):
    rng = np.random.default_rng(seed)
    logits = make((n, v), seed)
    t = rng.integers(0, v, n)
    if with_ignored and n > 1:
        t[rng.random(n) < 0.4] = -100
        t[0] = rng.integers(0, v)
    check(lambda x: F.cross_entropy(x, t, reduction=reduction), logits)
    valid = t != -100
    lp = logits.data - logits.data.max(1, keepdims=True)
    lp = lp - np.log(np.exp(lp).sum(1, keepdims=True))
    nll = -lp[np.arange(n)[valid], t[valid]]
    ref = nll.mean() if reduction == "mean" else nll.sum()
    np.testing.assert_allclose(F.cross_entropy(logits, t, reduction=reduction).item(), ref, rtol=1e-12)


def test_cross_entropy_3d_and_errors():
    logits = make((2, 3, 5), 0)
    t = np.array([[1, 2, -100], [0, 4, 3]])
    check(lambda x: F.cross_entropy(x, t), logits)
    with pytest.raises(ValueError, match="every target is ignore_index"):
        F.cross_entropy(logits, np.full((2, 3), -100))
    with pytest.raises(ValueError, match="targets of shape"):
        F.cross_entropy(logits, np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="integers"):
        F.cross_entropy(logits, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="7"):
        F.cross_entropy(logits, np.full((2, 3), 7))


# --- fused layers -----------------------------------------------------------------------------------
@given(array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), st.integers(1, 5), seeds, st.booleans(),
       st.booleans())
def test_linear(xshape, n_out, seed, noncontig, bias):
    x = make(xshape, seed, noncontig)
    w = make((xshape[-1], n_out), seed + 1)
    b = make((n_out,), seed + 2) if bias else None
    args = (x, w, b) if bias else (x, w)
    check(lambda *a: F.linear(*a), *args)
    ref = x.data @ w.data + (b.data if bias else 0)
    np.testing.assert_allclose(F.linear(*args).data, ref, rtol=1e-12)


def test_linear_empty_batch():
    x = Tensor(np.zeros((0, 3)), requires_grad=True)
    w = Tensor(np.ones((3, 2)), requires_grad=True)
    F.linear(x, w).sum().backward()
    assert x.grad.shape == (0, 3) and np.all(w.grad == 0)


@given(array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5), seeds, st.booleans())
def test_layer_norm(shape, seed, noncontig):
    x = make(shape, seed, noncontig)
    g = make((shape[-1],), seed + 1)
    b = make((shape[-1],), seed + 2)
    check(lambda *a: F.layer_norm(*a), x, g, b)
    mu = x.data.mean(-1, keepdims=True)
    var = x.data.var(-1, keepdims=True)
    ref = (x.data - mu) / np.sqrt(var + 1e-5) * g.data + b.data
    np.testing.assert_allclose(F.layer_norm(x, g, b).data, ref, rtol=1e-10, atol=1e-12)


@example(shape=(), seed=6, p=0.5)
@given(small_shapes, seeds, st.sampled_from([0.0, 0.1, 0.5, 0.9]))
def test_dropout(shape, seed, p):
    x = make(shape, seed)
    check(lambda t: F.dropout(t, p, training=True, rng=seed), x)  # same seed -> same mask
    y = F.dropout(x, p, training=True, rng=seed).data
    kept = y != 0
    np.testing.assert_allclose(y[kept], x.data[kept] / (1 - p))
    assert F.dropout(x, p, training=False) is x


def test_dropout_rate_and_errors():
    x = Tensor(np.ones(100_000, dtype=np.float32))
    y = F.dropout(x, 0.3, rng=1).data
    assert abs((y == 0).mean() - 0.3) < 0.01
    assert abs(y.mean() - 1.0) < 0.02
    with pytest.raises(ValueError, match="p must be"):
        F.dropout(x, 1.0)


@given(seeds, st.integers(1, 2), st.integers(1, 5), st.sampled_from([(1, 2), (2, 2), (2, 3)]),
       st.sampled_from([0.0, 0.3]))
def test_causal_attention(seed, B, T, hd, p):
    H, D = hd
    qkv = make((B, T, 3 * H * D), seed)
    check(lambda t: F.causal_attention(t, H, dropout_p=p, rng=seed), qkv)
    if p == 0:
        q, k, v = np.split(qkv.data, 3, axis=-1)
        q = q.reshape(B, T, H, D).transpose(0, 2, 1, 3)
        k = k.reshape(B, T, H, D).transpose(0, 2, 1, 3)
        v = v.reshape(B, T, H, D).transpose(0, 2, 1, 3)
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D)
        s = np.where(np.triu(np.ones((T, T), bool), 1), -np.inf, s)
        pr = np.exp(s - s.max(-1, keepdims=True))
        pr /= pr.sum(-1, keepdims=True)
        ref = (pr @ v).transpose(0, 2, 1, 3).reshape(B, T, H * D)
        np.testing.assert_allclose(F.causal_attention(qkv, H).data, ref, rtol=1e-10, atol=1e-12)


# --- composite -------------------------------------------------------------------------------------
def test_two_layer_mlp_with_layernorm_gelu_cross_entropy():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((4, 3, 5)), requires_grad=True)
    w1 = Tensor(rng.standard_normal((5, 8)) * 0.5, requires_grad=True)
    b1 = Tensor(rng.standard_normal(8) * 0.1, requires_grad=True)
    g = Tensor(1 + rng.standard_normal(8) * 0.1, requires_grad=True)
    beta = Tensor(rng.standard_normal(8) * 0.1, requires_grad=True)
    w2 = Tensor(rng.standard_normal((8, 6)) * 0.5, requires_grad=True)
    b2 = Tensor(rng.standard_normal(6) * 0.1, requires_grad=True)
    targets = rng.integers(0, 6, (4, 3))
    targets[0, 0] = -100

    def mlp(x, w1, b1, g, beta, w2, b2):
        h = F.gelu(F.layer_norm(F.linear(x, w1, b1), g, beta))
        return F.cross_entropy(F.linear(h, w2, b2), targets)

    check(mlp, x, w1, b1, g, beta, w2, b2)


def test_float32_matches_float64():
    rng = np.random.default_rng(1)
    arrs = [rng.standard_normal(s) for s in [(2, 4, 6), (6, 6), (6,), (6,), (6,)]]

    def f(x, w, b, g, beta):
        h = F.gelu(F.layer_norm(F.linear(x, w, b), g, beta))
        return F.softmax(h @ w.T, axis=-1).sum(axis=1) + F.log_softmax(h, axis=1).mean()

    out64 = f(*[Tensor(a) for a in arrs]).data
    out32 = f(*[Tensor(a.astype(np.float32)) for a in arrs]).data
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)


@given(seeds, st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(2, 7), st.booleans())
def test_linear_cross_entropy_fused(seed, B, T, C, V, with_ignored):
    rng = np.random.default_rng(seed)
    x = make((B, T, C), seed, noncontig=True)
    w = make((V, C), seed + 1)
    t = rng.integers(0, V, (B, T))
    if with_ignored:
        t[rng.random((B, T)) < 0.3] = -100
        t[0, 0] = 1
    check(lambda a, b: F.linear_cross_entropy(a, b, t), x, w)
    np.testing.assert_allclose(F.linear_cross_entropy(x, w, t).item(), F.cross_entropy(F.linear_t(x, w), t).item(),
                               rtol=1e-12)
    check(lambda a, b: F.linear_t(a, b), x, w)


def test_linear_cross_entropy_second_backward_is_an_error():
    x = make((2, 3), 0)
    w = make((4, 3), 1)
    loss = F.linear_cross_entropy(x, w, np.array([1, 2]))
    loss.backward()
    with pytest.raises(ValueError, match="already back-propagated"):
        loss.backward()
    loss = F.linear_cross_entropy(x, w, np.array([1, 2]))
    loss.backward(retain_graph=True)  # its logits buffer cannot be kept: still refused, saying so
    with pytest.raises(ValueError, match="even with retain_graph=True"):
        loss.backward()


def test_embedding_sparse_gradient_mixes_with_dense_ones():
    """The embedding's row gradient (RowGrad) adds into dense contributions, leaf or not, tied or not."""
    ids = np.array([[0, 2, 2], [1, 0, 3]])
    w = make((4, 3), 0)
    check(lambda t: F.embedding(ids, t).sum() + (t * t).sum(), w)            # dense + sparse into a leaf
    check(lambda t: F.embedding(ids, t * 2.0).sum(), w)                     # sparse into a non-leaf
    check(lambda t: F.embedding(ids, t).sum() + F.embedding(ids[:, :1], t).sum(), w)  # sparse + sparse
    check(lambda t: F.linear_t(F.embedding(ids, t), t).sum(), w)            # tied table, as in GPT
    w.grad = np.ones_like(w.data)
    F.embedding(ids, w).sum().backward()                                    # accumulates into .grad
    expect = 1 + np.bincount(ids.ravel(), minlength=4)[:, None]
    np.testing.assert_array_equal(w.grad, np.broadcast_to(expect, (4, 3)))


@given(array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), st.integers(1, 6), seeds, st.booleans(),
       st.sampled_from(["numba", "numpy"]))
def test_linear_gelu_fused(xshape, n_out, seed, noncontig, backend):
    from minigpt import kernels

    x = make(xshape, seed, noncontig)
    w = make((xshape[-1], n_out), seed + 1)
    b = make((n_out,), seed + 2)
    with kernels.use_backend(backend):
        check(lambda *a: F.linear_gelu(*a), x, w, b)
        fused = F.linear_gelu(x, w, b)
        composed = F.gelu(F.linear(x, w, b))
    np.testing.assert_allclose(fused.data, composed.data, rtol=1e-13, atol=1e-15)


def test_linear_gelu_errors_and_no_bias():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    w = Tensor(np.ones((3, 4)) * 0.1, requires_grad=True)
    np.testing.assert_array_equal(F.linear_gelu(x, w, None).data, F.gelu(F.linear(x, w)).data)
    with pytest.raises(ValueError, match="linear_gelu: input of shape"):
        F.linear_gelu(x, Tensor(np.ones((4, 4))), np.zeros(4))
    with pytest.raises(ValueError, match=r"linear_gelu: bias must have shape \(4,\)"):
        F.linear_gelu(x, w, np.zeros(3))
    with pytest.raises(ValueError, match="linear_gelu: input is float32"):
        F.linear_gelu(x.astype(np.float32), w, np.zeros(4))


@given(array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), st.integers(1, 6), st.integers(1, 5), seeds,
       st.booleans(), st.sampled_from(["numba", "numpy"]))
def test_feed_forward_fused(xshape, n_hidden, n_out, seed, noncontig, backend):
    """The whole feed-forward layer as one op (GELU output recomputed in backward): gradcheck, and the same
    bits as linear(linear_gelu(...)) forward and backward."""
    from minigpt import kernels

    x = make(xshape, seed, noncontig)
    w1, b1 = make((xshape[-1], n_hidden), seed + 1), make((n_hidden,), seed + 2)
    w2, b2 = make((n_hidden, n_out), seed + 3), make((n_out,), seed + 4)
    args = (x, w1, b1, w2, b2)
    with kernels.use_backend(backend):
        check(lambda *a: F.feed_forward(*a), *args)
        grads = []
        for f in (lambda: F.feed_forward(*args), lambda: F.linear(F.linear_gelu(x, w1, b1), w2, b2)):
            for t in args:
                t.grad = None
            y = f()
            (y * y).sum().backward()
            grads.append([y.data] + [t.grad for t in args])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_feed_forward_float32_bits_and_errors():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 5, 8), dtype=np.float32), requires_grad=True)
    w1, b1 = (Tensor(rng.standard_normal(s, dtype=np.float32), requires_grad=True) for s in ((8, 32), (32,)))
    w2, b2 = (Tensor(rng.standard_normal(s, dtype=np.float32), requires_grad=True) for s in ((32, 8), (8,)))
    out = []
    for f in (F.feed_forward, lambda x, w1, b1, w2, b2: F.linear(F.linear_gelu(x, w1, b1), w2, b2)):
        for t in (x, w1, b1, w2, b2):
            t.grad = None
        y = f(x, w1, b1, w2, b2)
        y.sum().backward()
        out.append([y.data] + [t.grad for t in (x, w1, b1, w2, b2)])
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="feed_forward: second weight of shape"):
        F.feed_forward(x, w1, b1, Tensor(np.ones((31, 8), np.float32)), b2)
    with pytest.raises(ValueError, match=r"feed_forward: second bias must have shape \(8,\)"):
        F.feed_forward(x, w1, b1, w2, np.zeros(7, np.float32))
    with pytest.raises(ValueError, match="feed_forward: both biases"):
        F.feed_forward(x, w1, None, w2, b2)
    with pytest.raises(ValueError, match="feed_forward: input is float32"):
        F.feed_forward(x, w1, b1, w2.astype(np.float64), b2)


@given(array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), st.integers(1, 5), st.integers(1, 5), seeds,
       st.booleans())
def test_residual_inside_linear_and_feed_forward(xshape, n_hidden, n_out, seed, noncontig):
    """``residual=`` adds a skip connection inside the op: gradcheck, and the same bits as adding it after."""
    x = make(xshape, seed, noncontig)
    w, b = make((xshape[-1], n_out), seed + 1), make((n_out,), seed + 2)
    w1, b1 = make((xshape[-1], n_hidden), seed + 3), make((n_hidden,), seed + 4)
    w2 = make((n_hidden, n_out), seed + 5)
    r = make((*xshape[:-1], n_out), seed + 6, noncontig)
    check(lambda *a: F.linear(a[0], a[1], a[2], residual=a[3]), x, w, b, r)
    check(lambda *a: F.feed_forward(*a[:5], residual=a[5]), x, w1, b1, w2, b, r)
    pairs = [((x, w, b, r), lambda: F.linear(x, w, b, residual=r), lambda: F.linear(x, w, b) + r),
             ((x, w1, b1, w2, b, r), lambda: F.feed_forward(x, w1, b1, w2, b, residual=r),
              lambda: r + F.linear(F.linear_gelu(x, w1, b1), w2, b))]
    for args, fused, plain in pairs:
        got = []
        for f in (fused, plain):
            for t in args:
                t.grad = None
            y = f()
            (y * y).sum().backward()
            got.append([y.data] + [t.grad for t in args])
        for a, c in zip(*got):
            np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError, match="linear: residual must be"):
        F.linear(x, w, b, residual=np.zeros((*xshape[:-1], n_out + 1)))


def test_0d_inputs_of_ops_that_take_them_and_clear_errors_from_those_that_do_not():
    """Every op either handles a 0-d input (gradchecked) or refuses it with a message saying so."""
    import re

    from minigpt import MiniGPTError

    s = make((), 11)
    w, b = make((1, 1), 12), make((1,), 13)
    check(lambda x: x[()] * 2.0, s)
    check(lambda x: x.reshape(1, 1).sum(), s)
    check(lambda t: F.embedding(np.array(0), t), make((3, 2), 14))  # a 0-d id: one row
    refused = {
        "matmul": (lambda: F.matmul(s, s), "at least 1-D"),
        "linear": (lambda: F.linear(s, w, b), "input of shape () does not match"),
        "layer_norm": (lambda: F.layer_norm(s, b, b), "at least 1 axis"),
        "softmax": (lambda: F.softmax(s), "out of range for a 0-D tensor"),
        "log_softmax": (lambda: F.log_softmax(s), "out of range for a 0-D tensor"),
        "cross_entropy": (lambda: F.cross_entropy(s, np.array(0)), "at least 1 axis (the classes, last)"),
        "concatenate": (lambda: F.concatenate([s, s]), "out of range for 0-D tensors"),
        "sum axis 0": (lambda: F.sum(s, axis=0), "out of range for a tensor with 0 dimensions"),
    }
    for name, (fn, message) in refused.items():
        with pytest.raises(MiniGPTError, match=re.escape(message)):
            fn()
