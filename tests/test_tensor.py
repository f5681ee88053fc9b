"""The Tensor API and the autograd engine: construction, dtypes, errors, accumulation, no_grad."""
import numpy as np
import pytest

import minigpt
from minigpt import MiniGPTError, Tensor, no_grad, tensor


def test_construction_dtypes():
    assert tensor([1.0, 2.0]).dtype == np.float32  # float32 by default
    assert tensor([1, 2]).dtype == np.int64
    assert tensor(np.zeros(3)).dtype == np.float64  # NumPy arrays keep their dtype
    assert tensor([1.0], dtype=np.float64).dtype == np.float64
    a = np.ones(3)
    t = tensor(a)
    a[0] = 5
    assert t.data[0] == 1  # tensor() copies
    assert Tensor(a).data is a  # Tensor() wraps


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(ValueError, match="float32/float64"):
        tensor([1, 2], requires_grad=True)
    with pytest.raises(ValueError, match="float32/float64"):
        tensor([1, 2]).requires_grad_()


def test_mixed_float_dtypes_is_an_error():
    a = tensor([1.0], dtype=np.float32)
    b = tensor([1.0], dtype=np.float64)
    with pytest.raises(ValueError, match="different float dtypes"):
        a + b
    with pytest.raises(ValueError, match="different float dtypes"):
        a @ b
    assert (a + a.astype(np.float32)).dtype == np.float32
    assert (a.astype(np.float64) + b).dtype == np.float64


def test_scalars_and_ints_take_the_float_dtype():
    a = tensor([1.0, 2.0])
    assert (a * 2).dtype == np.float32
    assert (2.5 - a).dtype == np.float32
    assert (a + np.arange(2)).dtype == np.float32
    assert (a + tensor([1, 2])).dtype == np.float32
    assert (np.float64(3.0) * a).dtype == np.float32


def test_operators_match_numpy():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    a, b = Tensor(x), Tensor(y)
    for got, want in [(a + b, x + y), (a - b, x - y), (a * b, x * y), (a / b, x / y), (-a, -x),
                      (a ** 2, x ** 2), (a @ b.T, x @ y.T), (1 - a, 1 - x), (2 / b, 2 / y),
                      (x + a, x + x), (a.sum(axis=1), x.sum(1)), (a.mean(), x.mean()),
                      (a.max(axis=0, keepdims=True), x.max(0, keepdims=True)),
                      (a.reshape(2, 6), x.reshape(2, 6)), (a.reshape((4, 3)), x.reshape(4, 3)),
                      (a.T, x.T), (a.transpose(1, 0), x.T), (a[1:, ::2], x[1:, ::2])]:
        assert isinstance(got, Tensor)
        np.testing.assert_allclose(got.data, want)
    assert isinstance(a > 0, np.ndarray) and (a > 0).dtype == np.bool_
    np.testing.assert_array_equal(a <= b, x <= y)


def test_backward_accumulates_and_handles_reuse():
    a = tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = a * a + a  # a used three times
    y.sum().backward()
    np.testing.assert_allclose(a.grad, 2 * a.data + 1)
    (a * 3).sum().backward()  # a second backward adds into .grad
    np.testing.assert_allclose(a.grad, 2 * a.data + 1 + 3)
    a.zero_grad()
    assert a.grad is None


def test_backward_twice_through_same_graph_needs_retain_graph():
    a = tensor([1.0, 2.0], requires_grad=True)
    loss = (a * a).sum()
    loss.backward()
    with pytest.raises(MiniGPTError, match="already back-propagated") as e:
        loss.backward()
    assert "retain_graph=True" in str(e.value) and "zero_grad()" in str(e.value)  # how to do it on purpose
    np.testing.assert_allclose(a.grad, 2 * a.data)  # the refused call added nothing

    a.zero_grad()
    loss = (a * a).sum()
    loss.backward(retain_graph=True)
    loss.backward()  # allowed: the graph was retained; gradients add up
    np.testing.assert_allclose(a.grad, 4 * a.data)
    with pytest.raises(MiniGPTError, match="already back-propagated"):
        loss.backward()  # the second call did not retain it


def test_a_released_subgraph_is_refused_from_another_loss():
    a = tensor([1.0, 2.0], requires_grad=True)
    h = a * 3.0
    h.sum().backward()
    with pytest.raises(MiniGPTError, match="already back-propagated"):
        (h * h).sum().backward()  # goes through h's released op
    a.zero_grad()
    h = a * 3.0
    h.sum().backward(retain_graph=True)
    (h * h).sum().backward()
    np.testing.assert_allclose(a.grad, 3.0 + 18.0 * a.data)


def test_backward_releases_what_the_ops_saved():
    import minigpt.functional as F

    def arrays(op):
        vals = [v for k, v in vars(op).items() if k not in ("inputs", "needs")]
        flat = [x for v in vals for x in (v if isinstance(v, tuple) else (v,))]
        return [x for x in flat if isinstance(x, np.ndarray)]

    x = tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    w = tensor(np.ones((3, 3)), requires_grad=True)
    y = F.gelu(F.layer_norm(x @ w, tensor(np.ones(3)), tensor(np.zeros(3))))
    ops = [y._op, y._op.inputs[0]._op]
    assert all(arrays(op) for op in ops)  # forward saved arrays for backward
    y.sum().backward()
    assert not any(arrays(op) for op in ops) and all(op.released for op in ops)
    assert y._op.inputs[0]._op is ops[1]  # the graph's links stay (for tools that walk it)


def test_leaf_grad_not_aliased_between_inputs():
    a = tensor([1.0, 2.0], requires_grad=True)
    b = tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad += 10
    np.testing.assert_allclose(b.grad, [1, 1])


def test_backward_non_scalar_needs_gradient():
    a = tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(ValueError, match="non-scalar"):
        (a * 2).backward()
    (a * 2).backward(np.array([1.0, -1.0]))
    np.testing.assert_allclose(a.grad, [2, -2])
    with pytest.raises(ValueError, match="shape"):
        (a * 2).backward(np.ones(3))


def test_backward_without_graph_is_an_error():
    with pytest.raises(ValueError, match="does not require grad"):
        tensor([1.0]).sum().backward()


def test_deep_graph_has_no_recursion_limit():
    a = tensor([1.0], requires_grad=True, dtype=np.float64)
    x = a
    for _ in range(20_000):
        x = x * 1.0001
    x.sum().backward()
    np.testing.assert_allclose(a.grad, [1.0001 ** 20_000], rtol=1e-9)


def test_no_grad_records_nothing():
    a = tensor([1.0, 2.0], requires_grad=True)
    with no_grad():
        assert not minigpt.is_grad_enabled()
        y = (a * 2).sum()
    assert minigpt.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf and y._op is None
    with pytest.raises(ValueError):
        y.backward()


def test_detach_and_numpy():
    a = tensor([1.0, 2.0], requires_grad=True)
    d = (a * 2).detach()
    assert not d.requires_grad and d.is_leaf
    assert isinstance(d.numpy(), np.ndarray)
    assert a.numpy() is a.data


def test_constants_get_no_gradient():
    a = tensor([1.0, 2.0], requires_grad=True)
    c = tensor([5.0, 6.0])
    (a * c).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(a.grad, c.data)


def test_repr_and_len():
    a = tensor([[1.0, 2.0]], requires_grad=True)
    assert "requires_grad=True" in repr(a) and "float32" in repr(a)
    assert "op=Mul" in repr(a * 2)
    assert len(a) == 1 and a.shape == (1, 2) and a.ndim == 2 and a.size == 2


def test_reduction_axis_errors():
    a = tensor(np.ones((2, 3)))
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        a.sum(axis=2)
    with pytest.raises(ValueError, match="cannot reshape"):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        a + tensor(np.ones((3, 2)))


def test_writing_your_own_op():
    """The README's example: a new op is a Function subclass with forward and backward side by side."""
    from minigpt.tensor import Function

    class Softplus(Function):
        def forward(self, x):
            self.x = x
            return np.logaddexp(0.0, x)

        def backward(self, g):
            return (g / (1.0 + np.exp(-self.x)),)

    x = tensor(np.linspace(-3, 3, 7), dtype=np.float64, requires_grad=True)
    report = minigpt.gradcheck(lambda t: Softplus.apply(t), x)
    assert report["ok"] and report["max_abs_err"] < 1e-8

    class Broken(Function):
        def forward(self, x):
            self.x = x
            return x ** 2

        def backward(self, g):
            return (g * self.x,)  # wrong: should be 2x

    with pytest.raises(minigpt.GradcheckError, match="analytic .* numeric"):
        minigpt.gradcheck(lambda t: Broken.apply(t), x)


def test_gradcheck_rejects_bad_use():
    with pytest.raises(ValueError, match="requires grad"):
        minigpt.gradcheck(lambda t: t * 2, tensor([1.0]))
