"""The book's loss path, ``F.cross_entropy(model(x).reshape(-1, V), y.reshape(-1))``: the same loss and
gradients as the fused ``model.loss(x, y)``, with the (N, vocab) logits and gradient buffers reused from
step to step (never while someone still holds them)."""
import numpy as np

from minigpt import functional as F
from minigpt.model import GPT, GPTConfig
from minigpt.ops._util import LOGITS_POOL, BufferPool
from minigpt.random import manual_seed


def _model():
    manual_seed(0)
    return GPT(GPTConfig.preset("nano", vocab_size=4096, drop_rate=0.0))  # 8 x 64 x 4096: a pooled size


def _batch(seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4096, (8, 64)), rng.integers(0, 4096, (8, 64))


def _grads(model):
    return {n: p.grad.copy() for n, p in model.named_parameters()}


def test_book_path_equals_fused_loss_exactly():
    model = _model()
    x, y = _batch(1)
    fused = model.loss(x, y)
    fused.backward()
    g_fused = _grads(model)
    model.zero_grad()
    for _ in range(2):  # the second time through, the pooled buffers are reused
        model.zero_grad()
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
        assert loss.item() == fused.item()
        for n, g in _grads(model).items():
            assert np.array_equal(g, g_fused[n]), n


def test_logits_buffer_is_reused_but_never_while_held():
    model = _model()
    x, y = _batch(2)
    LOGITS_POOL.clear()
    first = model(x)
    addr = first.data.__array_interface__["data"][0]
    kept = first.data.copy()
    second = model(_batch(3)[0])  # `first` is still held: a different buffer
    assert second.data.__array_interface__["data"][0] != addr
    assert np.array_equal(first.data, kept)
    del first
    third = model(x)  # now the first buffer is free again
    assert third.data.__array_interface__["data"][0] == addr
    assert np.array_equal(third.data, kept)


def test_buffer_pool_limits():
    pool = BufferPool(keep=1, shapes=1, min_size=10)
    a = pool.take((4, 4), np.float32)
    b = pool.take((4, 4), np.float32)  # `a` is held: a new array, not kept (keep=1)
    assert a is not b
    del a
    c = pool.take((4, 4), np.float32)
    assert c is not b and c.shape == (4, 4)
    assert pool.take((2, 2), np.float32).shape == (2, 2)  # below min_size: never pooled
    pool.take((5, 4), np.float32)  # a second shape evicts the first (shapes=1)
    assert list(pool.bufs) == [((5, 4), np.dtype(np.float32))]
