"""The engine's edges beside PyTorch 2.13's behaviour (written down in each test's comments; torch is not
needed to run them): module backward hooks whose return value is honoured, tuple outputs, pre-hooks, the
post-accumulate-grad hook, grad_fn / retains_grad, the non-leaf .grad warning, an op returning too few
gradients, and NumPy interoperability (__array__, iteration, IndexError)."""
import warnings

import numpy as np
import pytest

import minigpt.functional as F
from minigpt.errors import MiniGPTError
from minigpt.gradcheck import GradcheckError, gradcheck
from minigpt.nn import Linear, Module
from minigpt.tensor import Function, Tensor


def t64(a, grad=True):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


class Pair(Module):
    """forward returns a tuple of two tensors."""

    def forward(self, x):
        return x * 2.0, x * 3.0


class Same(Module):
    """forward returns its input itself (like Dropout in eval mode)."""

    def forward(self, x):
        return x


class Mul2(Module):
    """two tensor inputs."""

    def forward(self, a, b):
        return a * b


def lin(seed=0):
    m = Linear(3, 2)
    m.to_dtype(np.float64)
    return m


# --- module backward hooks ------------------------------------------------------------------------------------
def test_a_full_backward_hook_s_returned_grad_input_is_honoured():
    # PyTorch: lin.register_full_backward_hook(lambda m, gi, go: (gi[0] * 2,)) doubles x.grad; the
    # parameters' gradients (computed inside the module) are unchanged.
    m = lin()
    x = t64(np.random.default_rng(0).standard_normal((4, 3)))
    F.sum(m(x) ** 2).backward()
    ref_x, ref_w = x.grad.copy(), m.weight.grad.copy()
    x.grad = None
    m.zero_grad()
    h = m.register_full_backward_hook(lambda mod, gi, go: (gi[0] * 2,))
    F.sum(m(x) ** 2).backward()
    np.testing.assert_allclose(x.grad, 2 * ref_x, rtol=1e-13)
    np.testing.assert_allclose(m.weight.grad, ref_w, rtol=1e-13)
    h.remove()


def test_a_returned_none_entry_zeroes_that_input_and_a_bad_return_is_an_error():
    # PyTorch: returning (None,) makes the input's gradient None (zero here: .grad becomes zeros);
    # returning a tuple of the wrong length raises "hook ... has returned an incorrect number of values".
    m = lin()
    x = t64(np.ones((2, 3)))
    m.register_full_backward_hook(lambda mod, gi, go: (None,))
    F.sum(m(x)).backward()
    np.testing.assert_array_equal(x.grad, np.zeros((2, 3)))
    m2 = lin()
    m2.register_full_backward_hook(lambda mod, gi, go: (gi[0], gi[0]))
    with pytest.raises(MiniGPTError, match="must return None or a tuple of 1 gradient"):
        F.sum(m2(t64(np.ones((2, 3))))).backward()
    m3 = lin()
    m3.register_full_backward_hook(lambda mod, gi, go: (np.ones((5, 5)),))
    with pytest.raises(MiniGPTError, match=r"shape \(5, 5\) for a tensor of shape \(2, 3\)"):
        F.sum(m3(t64(np.ones((2, 3))))).backward()


def test_two_inputs_get_their_gradients_together_and_both_can_be_replaced():
    # PyTorch: grad_input is (d/da, d/db), both known when the hook fires; returning (ga, 0 * gb) zeroes b's.
    a, b = t64([1.0, 2.0]), t64([3.0, 4.0])
    m = Mul2()
    seen = []

    def hook(mod, gi, go):
        seen.append(tuple(g.copy() for g in gi))
        return gi[0], np.zeros_like(gi[1])

    m.register_full_backward_hook(hook)
    F.sum(m(a, b)).backward()
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0][0], [3.0, 4.0])
    np.testing.assert_array_equal(seen[0][1], [1.0, 2.0])
    np.testing.assert_array_equal(a.grad, [3.0, 4.0])
    np.testing.assert_array_equal(b.grad, [0.0, 0.0])


def test_a_module_returning_a_tuple_fires_its_backward_hook_once():
    # PyTorch: the hook fires once, grad_output = (d/d out0, d/d out1), grad_input = (d/dx,).
    x = t64([1.0, -1.0])
    m = Pair()
    calls = []
    m.register_full_backward_hook(lambda mod, gi, go: calls.append((gi, go)))
    a, b = m(x)
    F.sum(a * 5.0 + b * 7.0).backward()
    assert len(calls) == 1
    gi, go = calls[0]
    np.testing.assert_array_equal(go[0], [5.0, 5.0])
    np.testing.assert_array_equal(go[1], [7.0, 7.0])
    np.testing.assert_array_equal(gi[0], [31.0, 31.0])      # 2 * 5 + 3 * 7
    np.testing.assert_array_equal(x.grad, [31.0, 31.0])


def test_an_output_without_a_gradient_is_none_in_grad_output():
    # PyTorch: an output that does not reach the loss has None in grad_output.
    x = t64([1.0, 2.0])
    m = Pair()
    calls = []
    m.register_full_backward_hook(lambda mod, gi, go: calls.append(go))
    a, _ = m(x)
    F.sum(a).backward()
    assert len(calls) == 1 and calls[0][1] is None
    np.testing.assert_array_equal(calls[0][0], [1.0, 1.0])
    np.testing.assert_array_equal(x.grad, [2.0, 2.0])


def test_a_module_returning_its_input_fires_with_equal_gradients():
    # PyTorch: for an identity forward, grad_input equals grad_output.
    x = t64([1.0, 2.0])
    calls = []
    m = Same()
    m.register_full_backward_hook(lambda mod, gi, go: calls.append((gi[0].copy(), go[0].copy())))
    F.sum(m(x) * 3.0).backward()
    assert len(calls) == 1
    np.testing.assert_array_equal(calls[0][0], [3.0, 3.0])
    np.testing.assert_array_equal(calls[0][1], [3.0, 3.0])


def test_register_backward_hook_is_the_full_backward_hook():
    # PyTorch has two: the deprecated register_backward_hook (grad_input of the last op only) and
    # register_full_backward_hook. minigpt's register_backward_hook is the full one, under both names.
    assert Module.register_backward_hook is Module.register_full_backward_hook
    assert "register_full_backward_hook" in Module.register_full_backward_hook.__doc__


def test_backward_pre_hook_replaces_grad_output():
    # PyTorch: register_full_backward_pre_hook(hook(module, grad_output) -> tuple | None) runs before the
    # module's backward; the returned tuple replaces grad_output for the module and for the full hooks.
    m = lin()
    x = t64(np.ones((2, 3)))
    order = []
    m.register_full_backward_pre_hook(lambda mod, go: (order.append("pre"), (go[0] * 0.0,))[1])
    m.register_full_backward_hook(lambda mod, gi, go: order.append(("full", float(np.abs(go[0]).sum()))))
    F.sum(m(x)).backward()
    assert order == ["pre", ("full", 0.0)]
    np.testing.assert_array_equal(x.grad, np.zeros((2, 3)))
    np.testing.assert_array_equal(m.weight.grad, np.zeros_like(m.weight.data))


def test_forward_pre_hook_sees_and_replaces_the_arguments():
    # PyTorch: register_forward_pre_hook(hook(module, args) -> None | new args); a non-tuple is wrapped.
    m = lin()
    x = t64(np.ones((2, 3)), grad=False)
    seen = []
    h = m.register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    y1 = m(x)
    h.remove()
    m.register_forward_pre_hook(lambda mod, args: args[0] * 0.0)
    y2 = m(x)
    assert seen == [(2, 3)]
    np.testing.assert_allclose(y2.data, np.broadcast_to(m.bias.data, (2, 2)))
    assert not np.allclose(y1.data, y2.data)


def test_a_pre_hook_alone_switches_the_fused_paths_off():
    # a hook must see every call: registering any hook on a sub-module makes its parent call it
    from minigpt.model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=11, context_length=8, emb_dim=8, n_heads=2, n_layers=1))
    calls = []
    model.blocks[0].ff.register_forward_pre_hook(lambda mod, args: calls.append(1))
    model.blocks[0].attn.register_full_backward_pre_hook(lambda mod, go: calls.append(2))
    ids = np.zeros((1, 4), dtype=np.int64)
    model.loss(ids, ids).backward()
    assert calls == [1, 2]


def test_hook_arguments_are_read_only():
    # PyTorch allows g.fill_(0) inside a hook and it silently corrupts every branch sharing the array (an
    # ablation that way zeroes every gradient below it). minigpt hands hooks read-only arrays: return a
    # new array instead.
    x = t64([1.0, 2.0])
    y = x * 2.0
    y.register_hook(lambda g: g.fill(0))
    with pytest.raises(ValueError, match="read-only"):
        F.sum(y * y).backward()
    m = lin()
    m.register_full_backward_hook(lambda mod, gi, go: go[0].fill(0))
    with pytest.raises(ValueError, match="read-only"):
        F.sum(m(t64(np.ones((2, 3))))).backward()


# --- tensor hooks and attributes -------------------------------------------------------------------------------
def test_post_accumulate_grad_hook_runs_after_accumulation():
    # PyTorch: t.register_post_accumulate_grad_hook(hook(tensor)) runs after .grad was accumulated;
    # only leaves may register one ("post accumulate grad hooks cannot be registered on non-leaf tensors").
    x = t64([1.0, 2.0])
    seen = []
    h = x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.copy()))
    F.sum(x * 3.0).backward()
    F.sum(x * 3.0).backward()
    np.testing.assert_array_equal(seen[0], [3.0, 3.0])
    np.testing.assert_array_equal(seen[1], [6.0, 6.0])      # the second sees the accumulated sum
    h.remove()
    F.sum(x).backward()
    assert len(seen) == 2
    with pytest.raises(MiniGPTError, match="not a leaf"):
        (x * 2.0).register_post_accumulate_grad_hook(print)


def test_grad_fn_and_retains_grad():
    # PyTorch: a leaf's grad_fn is None; a result's names its op; retains_grad is True only for a non-leaf
    # after retain_grad() (False for leaves).
    x = t64([1.0, 2.0])
    y = x @ x
    assert x.grad_fn is None and type(y.grad_fn).__name__ == "MatMul" and y.grad_fn.inputs == (x, x)
    assert not x.retains_grad and not y.retains_grad
    y.retain_grad()
    assert y.retains_grad


def test_reading_a_non_leaf_grad_without_retain_grad_warns():
    # PyTorch: "UserWarning: The .grad attribute of a Tensor that is not a leaf Tensor is being accessed.
    # Its .grad attribute won't be populated during autograd.backward()..."; leaves and retained ones: no warning.
    x = t64([1.0, 2.0])
    y = x * 2.0
    z = x * 3.0
    z.retain_grad()
    F.sum(y * z).backward()
    with pytest.warns(UserWarning, match="retain_grad"):
        assert y.grad is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert x.grad is not None and z.grad is not None


# --- ops that return the wrong number of gradients ------------------------------------------------------------
class TooFew(Function):
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return (g * self.b,)          # forgot b's gradient


def test_an_op_returning_too_few_gradients_is_an_error():
    # PyTorch: "RuntimeError: function TooFewBackward returned an incorrect number of gradients (expected 2, got 1)"
    a, b = t64([1.0, 2.0]), t64([3.0, 4.0])
    with pytest.raises(RuntimeError, match=r"TooFew.backward returned an incorrect number of gradients \(expected 2, got 1\)"):
        F.sum(TooFew.apply(a, b)).backward()


def test_gradcheck_reports_the_cause_not_a_misleading_difference():
    # before: "analytic 0 vs numeric 1.70"; now the cause
    a, b = t64([1.0, 2.0]), t64([3.0, 4.0])
    with pytest.raises(GradcheckError, match="incorrect number of gradients"):
        gradcheck(TooFew.apply, a, b)
    rep = gradcheck(TooFew, a, b, raise_on_failure=False)      # a Function class works as fn too
    assert not rep["ok"] and "incorrect number of gradients (expected 2, got 1)" in rep["error"]


# --- NumPy interoperability ---------------------------------------------------------------------------------------
def test_numpy_functions_read_a_tensor():
    # PyTorch: np.asarray(t) works (for requires_grad tensors it asks for .detach()); np.linalg.norm(t) works.
    t = t64([[3.0, 4.0], [0.0, 0.0]])
    a = np.asarray(t)
    assert a is t.data
    assert np.linalg.norm(t) == 5.0
    assert np.asarray(t, dtype=np.float32).dtype == np.float32
    assert np.array(t) is not t.data and np.array_equal(np.array(t), t.data)


def test_iteration_and_index_errors():
    # PyTorch: `for row in t` yields t[0], t[1], ...; t[2] on 2 rows raises IndexError; a 0-d tensor is not
    # iterable ("TypeError: iteration over a 0-d tensor").
    t = t64([[1.0, 2.0], [3.0, 4.0]])
    rows = list(t)
    assert len(rows) == 2 and all(isinstance(r, Tensor) for r in rows)
    np.testing.assert_array_equal(rows[1].data, [3.0, 4.0])
    F.sum(rows[1] * 2.0).backward()
    np.testing.assert_array_equal(t.grad, [[0.0, 0.0], [2.0, 2.0]])
    with pytest.raises(IndexError, match="index 2 is out of bounds for axis 0 with size 2"):
        t[2]
    with pytest.raises(IndexError, match="axis 1"):
        t[0, -3]
    with pytest.raises(MiniGPTError):          # also a MiniGPTError: one line on the command line
        t[5]
    with pytest.raises(TypeError, match="iteration over a 0-d tensor"):
        iter(t64(1.0)).__next__()
    assert [float(r.data) for r in t64([1.0, 2.0, 3.0])] == [1.0, 2.0, 3.0]


def test_a_namedtuple_output_keeps_its_type():
    from collections import namedtuple
    Out = namedtuple("Out", "a b")

    class Named(Module):
        def forward(self, x):
            return Out(x * 2.0, x * 3.0)

    m = Named()
    calls = []
    m.register_full_backward_hook(lambda mod, gi, go: calls.append(len(go)))
    out = m(t64([1.0]))
    assert isinstance(out, Out)
    F.sum(out.a + out.b).backward()
    assert calls == [2]


def test_a_module_ignoring_its_input_still_fires_with_none():
    # PyTorch: the full backward hook fires once with grad_input (None,) when the input gets no gradient.
    class Ignore(Module):
        def __init__(self):
            super().__init__()
            self.w = Parameter(np.ones(2))

        def forward(self, x):
            return self.w * 2.0

    from minigpt.nn import Parameter
    m = Ignore()
    calls = []
    m.register_full_backward_hook(lambda mod, gi, go: calls.append((gi, go[0].copy())))
    F.sum(m(t64([1.0, 2.0]))).backward()
    assert len(calls) == 1 and calls[0][0] == (None,)
    np.testing.assert_array_equal(calls[0][1], [1.0, 1.0])
