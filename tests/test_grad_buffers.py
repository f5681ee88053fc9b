"""The gradient-buffer optimisations (buffer reuse, sparse embedding gradients) change no result.

``minigpt.grad_buffers.set_grad_optimizations(False)`` turns both off: every gradient sum is then a new
array and the embedding's gradient is dense. A training step's gradients must be bit-identical both ways,
except the tied embedding table's (its rows are summed in another order: equal to float rounding).
"""
import numpy as np
import pytest

import minigpt
from minigpt import grad_buffers
from minigpt.grad_buffers import RowGrad, grad_optimizations, set_grad_optimizations
from minigpt.model import GPT, GPTConfig
from minigpt.optim import AdamW


def _step_grads(on: bool, tie: bool, drop_rate: float):
    cfg = GPTConfig(vocab_size=37, context_length=12, emb_dim=16, n_heads=4, n_layers=2, drop_rate=drop_rate,
                    qkv_bias=True, tie_weights=tie)
    minigpt.random.manual_seed(11)
    model = GPT(cfg)
    model.train()
    opt = AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    rng = np.random.default_rng(0)
    grads = []
    with grad_optimizations(on):
        for _ in range(2):  # two steps: the second starts from the first's update
            ids = rng.integers(0, 37, size=(3, 12))
            ids[0, :6] = 5  # a repeated token: its rows add up in the embedding gradient
            minigpt.random.manual_seed(5)  # the same dropout masks both ways
            loss = model.loss(ids, np.roll(ids, -1, axis=1))
            opt.zero_grad()
            loss.backward()
            grads.append({n: p.grad.copy() for n, p in model.named_parameters()})
            opt.step()
    return loss.item(), grads


@pytest.mark.parametrize("tie", [True, False])
@pytest.mark.parametrize("drop_rate", [0.0, 0.1])
def test_training_step_gradients_equal_with_and_without_optimisations(tie, drop_rate):
    loss_on, grads_on = _step_grads(True, tie, drop_rate)
    loss_off, grads_off = _step_grads(False, tie, drop_rate)
    assert grad_buffers.grad_optimizations_enabled()  # the context manager restored the default
    tied = {n for n in grads_on[0] if tie and "tok_emb" in n}
    for step, (step_on, step_off) in enumerate(zip(grads_on, grads_off)):
        assert step_on.keys() == step_off.keys()
        for name in step_on:
            # a tied table's gradient differs by rounding, and so, after one update, does every parameter
            if name in tied or (tie and step > 0):
                np.testing.assert_allclose(step_on[name], step_off[name], rtol=1e-5, atol=1e-7, err_msg=name)
            else:
                np.testing.assert_array_equal(step_on[name], step_off[name], err_msg=name)
    if not tie:
        assert loss_on == loss_off


def test_switch_returns_old_value_and_embedding_gradient_form():
    from minigpt.ops.select import EmbeddingOp

    w = minigpt.Tensor(np.zeros((5, 3), dtype=np.float32), requires_grad=True)
    out = minigpt.functional.embedding(np.array([1, 1, 4]), w)
    op = out._op
    assert isinstance(op, EmbeddingOp)
    g = np.ones((3, 3), dtype=np.float32)
    assert isinstance(op.backward(g)[0], RowGrad)
    old = set_grad_optimizations(False)
    try:
        assert old is True
        dense = op.backward(g)[0]
        assert isinstance(dense, np.ndarray)
        np.testing.assert_array_equal(dense[:, 0], [0, 2, 0, 0, 1])
    finally:
        set_grad_optimizations(old)


def test_plain_mode_never_hands_out_scratch_or_shared_grad():
    """Without the optimisations a leaf's .grad is always a private copy (never an array an op returned)."""
    x = minigpt.Tensor(np.arange(6, dtype=np.float32).reshape(2, 3), requires_grad=True)
    with grad_optimizations(False):
        y = (x * 2.0).sum()
        y.backward()
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 2.0, dtype=np.float32))
    assert x.grad.base is None and x.grad.flags.c_contiguous
