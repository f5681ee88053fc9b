"""Every declared kernel: its Numba version equals its NumPy reference on a small example.

A new kernel (``name = kernel(name_numpy, name_numba)``) needs one line in ``EXAMPLES`` (its arguments),
else ``test_every_declared_kernel_has_an_example`` fails. Detailed tests (edge cases, strided inputs,
thread-count independence) stay in the per-module test files.
"""
import importlib

import numpy as np
import pytest

import minigpt  # noqa: F401
from minigpt import kernels
from minigpt.kernels import attention, softmax

MODULES = ("attention", "gelu", "bias", "layernorm", "softmax", "adamw", "scatter", "int8", "decode", "rmsnorm",
           "swiglu", "rope")
for _m in MODULES:
    importlib.import_module(f"minigpt.kernels.{_m}")
from minigpt.tokenizer.bpe import BPETokenizer  # noqa: E402  (declares the BPE encoder)

TEXT = "the cat sat on the mat; the cats sat on the mats, cafés and naïve ones 123 4567!\n  x"


def _bpe(r, dt):
    tok = BPETokenizer.train([TEXT * 3], vocab_size=290)
    return (tok, TEXT + " unseen wörds")


def _attn_bwd(r, dt):
    q, k, v = (r.standard_normal((2, 5, 2, 4)).astype(dt) for _ in range(3))
    out, lse = attention.attention_forward_numpy(q, k, v, 0.5)
    return (r.standard_normal(out.shape).astype(dt), q, k, v, out, lse, 0.5)


def _int8(r, dt):
    from minigpt.kernels.int8 import quantize_int8

    q, s = quantize_int8(r.standard_normal((11, 16)), 8)
    return (_n(r, dt, 3, 16), q, s)


def _block_common(r, dt, B=2, C=8, H=2, L=6, pos=3):
    """x, the two layer norms' weights and the caches (positions < pos filled) of a decode_block call."""
    x = _n(r, dt, B, C)
    ln1, ln2 = (_n(r, dt, C) + 1, _n(r, dt, C)), (_n(r, dt, C) + 1, _n(r, dt, C))
    kc, vc = _n(r, dt, B, L, H, C // H), _n(r, dt, B, L, H, C // H)
    return x, ln1, ln2, kc, vc, pos


def _decode_block(r, dt):
    x, ln1, ln2, kc, vc, pos = _block_common(r, dt)
    C = x.shape[1]
    w = [(_n(r, dt, C, m) * 0.3, _n(r, dt, m)) for m in (3 * C, C, 4 * C)]
    out = (_n(r, dt, 4 * C, C) * 0.3, _n(r, dt, C))
    return (x, *ln1, *w[0], *w[1], *ln2, *w[2], *out, kc, vc, pos, 1e-5)


def _decode_block_int8(r, dt):
    from minigpt.kernels.int8 import quantize_int8

    x, ln1, ln2, kc, vc, pos = _block_common(r, dt)
    C = x.shape[1]
    w = [(*quantize_int8(r.standard_normal((m, k)) * 0.3, 4), _n(r, dt, m))
         for m, k in ((3 * C, C), (C, C), (4 * C, C), (C, 4 * C))]
    return (x, *ln1, *w[0], *w[1], *ln2, *w[2], *w[3], kc, vc, pos, 1e-5)


def _decode_step(r, dt):
    x, blocks, ks, vs = None, [], [], []
    for _ in range(2):
        x, *rest = _decode_block(r, dt)
        blocks.append(tuple(rest[:12]))
        ks.append(rest[12])
        vs.append(rest[13])
    C = x.shape[1]
    return (x, blocks, ks, vs, 3, [1e-5, 1e-5], _n(r, dt, C) + 1, _n(r, dt, C), 1e-5, _n(r, dt, 11, C))


def _ce(r, dt):
    return (r.standard_normal((6, 9)).astype(dt), np.array([0, 3, -100, 8, 1, 1]), -100)


def _ce_bwd(r, dt):
    logits, t, ignore = _ce(r, dt)
    lse = softmax.cross_entropy_forward_numpy(logits, t, ignore)[2]
    return (logits, t, lse, 0.25, ignore)


def _adamw(r, dt):
    p, g, m = (r.standard_normal(50).astype(dt) for _ in range(3))
    v = r.random(50).astype(dt)
    return (p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.1, 1 - 0.9**3, 1 - 0.95**3)


def _n(r, dt, *shape):
    return r.standard_normal(shape).astype(dt)


EXAMPLES = {
    "attention.attention_forward": lambda r, dt: (_n(r, dt, 2, 5, 2, 4), _n(r, dt, 2, 5, 2, 4),
                                                  _n(r, dt, 2, 5, 2, 4), 0.5, 0.2, 7),
    "attention.attention_backward": _attn_bwd,
    "gelu.gelu_forward": lambda r, dt: (_n(r, dt, 6, 7),),
    "gelu.gelu_backward": lambda r, dt: (_n(r, dt, 6, 7), _n(r, dt, 6, 7)),
    "gelu.bias_gelu_forward": lambda r, dt: (_n(r, dt, 6, 7), _n(r, dt, 7)),
    "gelu.bias_gelu_backward": lambda r, dt: (_n(r, dt, 6, 7), _n(r, dt, 6, 7)),
    "bias.add_bias": lambda r, dt: (_n(r, dt, 6, 7), _n(r, dt, 7)),
    "bias.bias_grad": lambda r, dt: (_n(r, dt, 6, 7),),
    "layernorm.layer_norm_forward": lambda r, dt: (_n(r, dt, 6, 7), _n(r, dt, 7), _n(r, dt, 7)),
    "layernorm.layer_norm_backward": lambda r, dt: (_n(r, dt, 6, 7), _n(r, dt, 6, 7), _n(r, dt, 7),
                                                    _n(r, dt, 6), np.abs(_n(r, dt, 6)) + 0.5),
    "softmax.softmax_forward": lambda r, dt: (_n(r, dt, 6, 9),),
    "softmax.softmax_backward": lambda r, dt: (softmax.softmax_forward_numpy(_n(r, dt, 6, 9)), _n(r, dt, 6, 9)),
    "softmax.log_softmax_forward": lambda r, dt: (_n(r, dt, 6, 9),),
    "softmax.log_softmax_backward": lambda r, dt: (softmax.log_softmax_forward_numpy(_n(r, dt, 6, 9)),
                                                   _n(r, dt, 6, 9)),
    "softmax.cross_entropy_forward": _ce,
    "softmax.cross_entropy_backward": _ce_bwd,
    "adamw.adamw_update": _adamw,
    "adamw.sum_squares": lambda r, dt: (_n(r, dt, 100),),
    "scatter.add_rows": lambda r, dt: (_n(r, dt, 5, 3), np.array([4, 0, 4, 2]), _n(r, dt, 4, 3)),
    "int8.int8_matmul": _int8,
    "decode.decode_block": _decode_block,
    "decode.decode_block_int8": _decode_block_int8,
    "decode.decode_step": _decode_step,
    "decode.matvec_rows": lambda r, dt: (_n(r, dt, 2, 9), _n(r, dt, 7, 9)),
    "rmsnorm.rms_norm_forward": lambda r, dt: (_n(r, dt, 6, 7), _n(r, dt, 7)),
    "rmsnorm.rms_norm_backward": lambda r, dt: (_n(r, dt, 6, 7), _n(r, dt, 6, 7), _n(r, dt, 7),
                                                np.abs(_n(r, dt, 6)) + 0.5),
    "swiglu.silu_mul_forward": lambda r, dt: (_n(r, dt, 6, 7), _n(r, dt, 6, 7)),
    "swiglu.silu_mul_backward": lambda r, dt: (_n(r, dt, 6, 7), _n(r, dt, 6, 7), _n(r, dt, 6, 7)),
    "rope.rope_apply": lambda r, dt: (_n(r, dt, 2, 3, 5, 8), _n(r, dt, 5, 4), _n(r, dt, 5, 4)),
    "tokenizer.bpe.BPETokenizer._encode_ordinary": _bpe,  # dtype unused: token ids
}


def test_every_declared_kernel_has_an_example():
    assert set(kernels.KERNELS) == set(EXAMPLES)


def _arrays(x):
    """The arrays in a kernel's result (nested tuples, scalars as 0-d arrays)."""
    if isinstance(x, tuple):
        return [a for item in x for a in _arrays(item)]
    return [] if x is None else [np.asarray(x)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_fast_version_equals_reference(name, dtype):
    k = kernels.KERNELS[name]
    args = EXAMPLES[name](np.random.default_rng(0), dtype)
    results = []
    for fn in (k.reference, k.fast):
        call_args = [a.copy() if isinstance(a, np.ndarray) else a for a in args]  # some kernels work in place
        out = fn(*call_args)
        results.append(_arrays(out) + [a for a in call_args if isinstance(a, np.ndarray)])
        if isinstance(args[0], BPETokenizer):  # a fresh tokenizer for the second run: no shared cache
            args = EXAMPLES[name](np.random.default_rng(0), dtype)
    tol = dict(rtol=2e-4, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-9, atol=1e-11)
    assert len(results[0]) == len(results[1])
    for ref, fast in zip(*results):
        np.testing.assert_allclose(fast, ref, **tol, err_msg=name)


def test_declaration_dispatches_on_the_backend():
    k = kernels.KERNELS["bias.bias_grad"]
    g = np.ones((3, 2), dtype=np.float32)
    calls = []
    real = (k.reference, k.fast)
    try:
        k.reference = lambda a: calls.append("numpy") or real[0](a)
        k.fast = lambda a: calls.append("numba") or real[1](a)
        with kernels.use_backend("numpy"):
            k(g)
        with kernels.use_backend("numba"):
            k(g)
    finally:
        k.reference, k.fast = real
    assert calls == ["numpy", "numba"]
    assert k.__doc__ and "bias_grad_numpy" in repr(k)
