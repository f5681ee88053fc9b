"""Tensor.retain_grad / register_hook and Module forward / backward hooks, each removable by its handle."""
import numpy as np
import pytest

import minigpt
import minigpt.functional as F
from minigpt import Tensor
from minigpt.model import GPT, GPTConfig
from minigpt.nn import Linear, Module


def t64(a, grad=True):
    return Tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def test_retain_grad_keeps_an_intermediate_gradient():
    x = t64([1.0, 2.0, 3.0])
    h = x * 2.0
    h.retain_grad()
    y = F.sum(h * h)
    y.backward()
    np.testing.assert_allclose(h.grad, 2 * h.data)           # d/dh sum(h^2) = 2h
    np.testing.assert_allclose(x.grad, 8 * x.data)
    z = x * 3.0                                               # not retained: no .grad
    F.sum(z).backward()
    with pytest.warns(UserWarning, match="retain_grad"):      # reading it warns, as in PyTorch
        assert z.grad is None


def test_retain_grad_sums_every_use_and_accumulates_over_backwards():
    x = t64([1.0, -2.0])
    h = F.tanh(x)
    h.retain_grad()
    (F.sum(h) + F.sum(h * h)).backward(retain_graph=True)     # h used twice: contributions summed
    np.testing.assert_allclose(h.grad, 1 + 2 * h.data)
    F.sum(h * 3.0).backward()                                 # a second backward through h adds, like a leaf
    np.testing.assert_allclose(h.grad, 4 + 2 * h.data)


def test_register_hook_sees_and_replaces_the_gradient():
    x = t64([1.0, 2.0])
    h = x * x
    seen = []
    handle = h.register_hook(lambda g: seen.append(g.copy()))
    F.sum(h * 3.0).backward()
    np.testing.assert_allclose(seen[0], [3.0, 3.0])
    np.testing.assert_allclose(x.grad, 3 * 2 * x.data)
    # a hook returning an array replaces the gradient from there on
    x2 = t64([1.0, 2.0])
    h2 = x2 * x2
    h2.register_hook(lambda g: g * 0.5)
    F.sum(h2).backward()
    np.testing.assert_allclose(x2.grad, 0.5 * 2 * x2.data)
    # removed: not called again
    handle.remove()
    handle.remove()  # harmless
    x.grad = None
    h = x * x
    F.sum(h).backward()
    assert len(seen) == 1


def test_hook_on_a_leaf_runs_before_accumulation():
    w = t64([1.0, 1.0])
    w.register_hook(lambda g: g * 10.0)
    F.sum(w * 2.0).backward()
    np.testing.assert_allclose(w.grad, [20.0, 20.0])


def test_hook_must_keep_the_shape():
    x = t64([1.0, 2.0])
    h = x * 1.0
    h.register_hook(lambda g: g[:1])
    with pytest.raises(minigpt.MiniGPTError, match="hook returned a gradient of shape"):
        F.sum(h).backward()


class Twice(Module):
    def __init__(self):
        super().__init__()
        self.lin = Linear(3, 3, dtype=np.float64)

    def forward(self, x):
        return self.lin(x) * 2.0


def test_module_forward_hook_sees_and_replaces_output():
    m = Twice()
    x = t64(np.ones((2, 3)))
    got = []
    h = m.register_forward_hook(lambda mod, args, out: got.append((mod, args[0], out.data.copy())))
    out = m(x)
    assert got[0][0] is m and got[0][1] is x
    np.testing.assert_allclose(got[0][2], out.data)
    h2 = m.register_forward_hook(lambda mod, args, out: out * 0.0)
    assert np.all(m(x).data == 0)
    h.remove(), h2.remove()
    assert not m._forward_hooks and np.all(m(x).data == out.data)


def test_module_backward_hook_gives_gradients_through_the_module_only():
    m = Twice()
    x = t64(np.arange(6.0).reshape(2, 3))
    calls = []
    handle = m.register_backward_hook(lambda mod, gin, gout: calls.append((gin, gout)))
    y = m(x)
    # x is also used outside the module: its total gradient is larger than the module's share
    loss = F.sum(y * y) + F.sum(x * 5.0)
    loss.backward()
    (gin,), (gout,) = calls[0]
    np.testing.assert_allclose(gout, 2 * y.data)
    np.testing.assert_allclose(gin, (gout * 2.0) @ m.lin.weight.data.T)   # through the module only
    np.testing.assert_allclose(x.grad, gin + 5.0)
    handle.remove()
    m(x)
    assert len(calls) == 1


def test_backward_hook_on_gpt_blocks_and_no_hook_results_unchanged():
    minigpt.random.manual_seed(0)
    model = GPT(GPTConfig.preset("nano"))
    x = np.random.default_rng(0).integers(0, 512, (2, 8))
    model.loss(x, x).backward()
    ref = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()
    seen = {}
    hs = [blk.register_backward_hook(lambda m, gi, go, i=i: seen.update({i: (gi[0].shape, go[0].shape)}))
          for i, blk in enumerate(model.blocks)]
    hs += [blk.register_forward_hook(lambda m, a, o: None) for blk in model.blocks]
    model.loss(x, x).backward()
    assert seen == {0: ((2, 8, 64), (2, 8, 64)), 1: ((2, 8, 64), (2, 8, 64))}
    for n, p in model.named_parameters():  # hooks that return nothing change nothing
        np.testing.assert_allclose(p.grad, ref[n], rtol=1e-6, atol=1e-8)
    for h in hs:
        h.remove()
    assert all(not blk._forward_hooks and not blk._backward_hooks for blk in model.blocks)


def test_handle_is_a_context_manager():
    x = t64([1.0])
    with (x * 1.0).register_hook(lambda g: None) as h:
        assert h.id >= 0
    m = Twice()
    with m.register_forward_hook(lambda *a: None):
        assert m._forward_hooks
    assert not m._forward_hooks
