"""The fused KV-cache decode step (model/decode.py, kernels/decode.py) against the model's own forward."""
import numpy as np
import pytest

from minigpt import kernels
from minigpt.kernels import decode as kd
from minigpt.model import GPT, GPTConfig, generate
from minigpt.model.decode import _fused_decoder, _fused_prefill, decoder, prefiller
from minigpt.nn.lora import apply_lora
from minigpt.random import manual_seed
from minigpt.tensor import no_grad


def _model(quantize=None, group_size=0, **kw):
    manual_seed(4)
    cfg = dict(vocab_size=53, context_length=24, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.1, qkv_bias=True)
    cfg.update(kw)
    m = GPT(GPTConfig(**cfg))
    m.eval()
    return m.quantize(quantize, group_size) if quantize else m


def _steps(model, step, prompt, ids):
    """Logits of each id in ``ids`` fed one position at a time after ``prompt`` (B, T), through ``step``."""
    caches = model.new_caches(prompt.shape[0])
    with no_grad():
        model(prompt, caches=caches, last_only=True)
        return [step(col, caches) for col in ids.T], caches


@pytest.mark.parametrize("quantize,group_size,tie", [(None, 0, True), (None, 0, False), ("int8", 0, True),
                                                     ("int8", 8, False)])
def test_fused_step_equals_the_forward(quantize, group_size, tie):
    model = _model(quantize, group_size, tie_weights=tie, qkv_bias=tie)
    rng = np.random.default_rng(0)
    prompt, ids = rng.integers(0, 53, (3, 5)), rng.integers(0, 53, (3, 6))
    fused = _fused_decoder(model)
    assert fused is not None

    def generic(i, caches):
        return model(i[:, None], caches=caches, last_only=True).data[:, -1]

    got, c1 = _steps(model, fused, prompt, ids)
    want, c2 = _steps(model, generic, prompt, ids)
    for g, w in zip(got, want):
        assert g.shape == w.shape == (3, 53) and g.dtype == np.float32
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)
    assert c1[0].length == c2[0].length == 11
    for a, b in zip(c1, c2):
        np.testing.assert_allclose(a.k[:, :11], b.k[:, :11], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a.v[:, :11], b.v[:, :11], rtol=1e-5, atol=1e-5)


def test_numpy_backend_runs_the_references():
    model = _model()
    rng = np.random.default_rng(1)
    prompt, ids = rng.integers(0, 53, (2, 4)), rng.integers(0, 53, (2, 3))
    got, _ = _steps(model, decoder(model), prompt, ids)
    with kernels.use_backend("numpy"):
        ref, _ = _steps(model, decoder(model), prompt, ids)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_layouts_it_does_not_know_use_the_forward():
    model = _model()
    apply_lora(model, rank=2, alpha=4.0)
    assert _fused_decoder(model) is None
    model = _model()
    handle = model.blocks[0].attn.register_forward_hook(lambda m, out: None)
    assert _fused_decoder(model) is None  # a hook must see every call
    handle.remove()
    assert _fused_decoder(model) is not None
    f64 = GPT(GPTConfig(vocab_size=11, context_length=8, emb_dim=8, n_heads=2, n_layers=1), dtype=np.float64)
    assert _fused_decoder(f64) is None


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_greedy_generation_with_the_fused_step_equals_without_cache(quantize):
    model = _model(quantize)
    prompt = np.random.default_rng(2).integers(0, 53, (2, 6))
    a = generate(model, prompt, 25, temperature=0.0, use_cache=True)   # crosses the 24-token window
    b = generate(model, prompt, 25, temperature=0.0, use_cache=False)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("quantize,group_size", [(None, 0), ("int8", 0), ("int8", 8)])
@pytest.mark.parametrize("batch,T", [(1, 1), (3, 7), (2, 24)])
def test_fused_prefill_equals_the_forward_bit_for_bit(batch, T, quantize, group_size):
    model = _model(quantize, group_size, tie_weights=False)
    prompt = np.random.default_rng(3).integers(0, 53, (batch, T))
    fused = _fused_prefill(model)
    assert fused is not None
    c1, c2 = model.new_caches(batch), model.new_caches(batch)
    with no_grad():
        got = fused(prompt, c1)
        want = model(prompt, caches=c2, last_only=True).data[:, -1]
    assert got.shape == (batch, 53) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)  # same kernels and products in the same order
    for a, b in zip(c1, c2):
        assert a.length == b.length == T
        np.testing.assert_array_equal(a.k[:, :T], b.k[:, :T])
        np.testing.assert_array_equal(a.v[:, :T], b.v[:, :T])


def test_prefill_falls_back_to_the_forward_where_it_is_not_written_out():
    for model in (_model(qkv_bias=False), _model("int8", qkv_bias=False)):
        assert _fused_prefill(model) is None
        prompt = np.random.default_rng(4).integers(0, 53, (2, 5))
        c1, c2 = model.new_caches(2), model.new_caches(2)
        with no_grad():
            np.testing.assert_array_equal(prefiller(model)(prompt, c1),
                                          model(prompt, caches=c2, last_only=True).data[:, -1])
    lora = _model()
    apply_lora(lora, rank=2, alpha=4.0)
    assert _fused_prefill(lora) is None


def test_the_one_call_step_equals_the_block_by_block_step():
    # decode_step (every block, final norm and head in one Numba call) against decode_block per block
    model = _model(tie_weights=False)
    step = _fused_decoder(model)
    rng = np.random.default_rng(5)
    prompt, ids = rng.integers(0, 53, (2, 4)), rng.integers(0, 53, (2, 5))
    got, c1 = _steps(model, step, prompt, ids)
    blocks = [a for _, a in (__import__("minigpt.model.decode", fromlist=["_block_args"])._block_args(b)
                             for b in model.blocks)]
    fn = model.final_norm

    def by_block(i, caches):
        pos = caches[0].length
        x = np.ascontiguousarray(model.tok_emb.weight.data[i] + model.pos_emb.weight.data[pos])
        for args, c in zip(blocks, caches):
            kd.decode_block(x, *args, c.k, c.v, pos, 1e-5)
            c.length = pos + 1
        h = kernels.layer_norm_forward(x, fn.weight.data, fn.bias.data, fn.eps)[0]
        return kd.matvec_rows(h, model.head_weight.data)

    want, c2 = _steps(model, by_block, prompt, ids)
    for g, w in zip(got, want):
        # the same kernels, called from Numba (compiled together: float32 sums may round differently)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    for a, b in zip(c1, c2):
        np.testing.assert_allclose(a.k[:, :9], b.k[:, :9], rtol=1e-5, atol=1e-6)
    # caches it cannot take in one call (not C-contiguous) go block by block, same numbers
    x = np.ascontiguousarray(model.tok_emb.weight.data[ids[:, 0]])
    ks = [np.asfortranarray(c.k) for c in c2]
    vs = [np.asfortranarray(c.v) for c in c2]
    prepared = kd.StepArgs.make(blocks, fn.weight.data, fn.bias.data, model.head_weight.data)
    a = kd.decode_step(x.copy(), blocks, ks, vs, 9, [1e-5] * 2, fn.weight.data, fn.bias.data, fn.eps,
                       model.head_weight.data, prepared=prepared)
    b = kd.decode_step(x.copy(), blocks, [c.k for c in c1], [c.v for c in c1], 9, [1e-5] * 2, fn.weight.data,
                       fn.bias.data, fn.eps, model.head_weight.data, prepared=prepared)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_decode_block_checks_its_arguments():
    from minigpt.errors import MiniGPTError

    x = np.zeros((1, 8), np.float32)
    k = np.zeros((1, 4, 2, 4), np.float32)
    w = np.zeros((8, 24), np.float32)
    args = (x, np.ones(8, np.float32), np.zeros(8, np.float32), w, np.zeros(24, np.float32),
            np.zeros((8, 8), np.float32), np.zeros(8, np.float32), np.ones(8, np.float32), np.zeros(8, np.float32),
            np.zeros((8, 32), np.float32), np.zeros(32, np.float32), np.zeros((32, 8), np.float32),
            np.zeros(8, np.float32))
    with pytest.raises(MiniGPTError, match="outside the cache"):
        kd.decode_block(*args, k, k.copy(), 4)
    with pytest.raises(MiniGPTError, match="do not fit"):
        kd.decode_block(*args, k[:, :, :1], k[:, :, :1].copy(), 0)
