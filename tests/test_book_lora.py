"""LoRA as the book uses it: separate q, k, v adapters on the fused projection (apply_lora targets "q",
"k", "v"), exact against the merged weights, gradients only into the adapters, saved and loaded as
adapters; a rank above a layer's width works with a warning."""
import warnings

import numpy as np
import pytest

import minigpt.functional as F
from minigpt import MiniGPTError, gradcheck
from minigpt import random as mrandom
from minigpt.model import GPT, GPTClassifier, GPTConfig
from minigpt.model.folders import load_model, save_adapters
from minigpt.nn import Linear, LoRALinear, apply_lora, merge_lora
from minigpt.nn.lora import LoRAQKV


def nano():
    mrandom.manual_seed(0)
    return GPT(GPTConfig.preset("nano", vocab_size=64))


def _perturb(model):
    rng = np.random.default_rng(1)
    for name, p in model.named_parameters():
        if name.endswith("lora_B"):
            p.data[...] = rng.normal(0, 0.05, p.shape).astype(p.dtype)


def test_separate_qkv_adapters_count_merge_and_gradients():
    m = nano()
    ids = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    before = m(ids).data.copy()
    n = apply_lora(m, rank=4, alpha=8, targets=("q", "k", "v", "attn_proj", "ff_fc", "ff_proj"))
    C = 64  # 2 blocks x (3 x 4 x (64 + 64) q/k/v + 4 x (64 + 64) + 4 x (64 + 256) + 4 x (256 + 64))
    assert n == 2 * (3 * 4 * (C + C) + 4 * (C + C) + 4 * (C + 4 * C) + 4 * (4 * C + C))
    qkv = m.blocks[0].attn.qkv
    assert isinstance(qkv, LoRAQKV) and qkv.parts == ("q", "k", "v") and qkv.q.lora_A.shape == (64, 4)
    np.testing.assert_allclose(m(ids).data, before, atol=1e-6)  # B = 0: the model is unchanged
    _perturb(m)
    with_lora = m(ids).data.copy()
    assert not np.allclose(with_lora, before)
    loss = F.cross_entropy(m(ids), (ids + 1) % 64)
    loss.backward()
    assert qkv.q.lora_A.grad is not None and qkv.v.lora_B.grad is not None and qkv.weight.grad is None
    merge_lora(m)
    assert not any(isinstance(x, LoRALinear) for x in m.modules())
    np.testing.assert_allclose(m(ids).data, with_lora, atol=1e-5)


def test_only_some_parts_and_part_isolation():
    m = nano()
    n = apply_lora(m, rank=2, alpha=2, targets=("q", "v"))  # the LoRA paper's choice
    assert n == 2 * 2 * 2 * (64 + 64)
    qkv = m.blocks[0].attn.qkv
    assert not hasattr(qkv, "k") or "k" not in qkv._modules
    x = np.random.default_rng(0).normal(size=(2, 3, 64)).astype(np.float32)
    base = F.linear(x, qkv.weight, qkv.bias).data
    qkv.v.lora_B.data[...] = 1.0
    out = qkv(x).data
    np.testing.assert_allclose(out[..., :128], base[..., :128], atol=1e-6)  # q and k untouched by v's adapter
    np.testing.assert_allclose(out[..., 128:], base[..., 128:] + qkv.scale * (x @ qkv.v.lora_A.data @ qkv.v.lora_B.data),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(MiniGPTError, match="either the fused 'qkv' or its parts"):
        apply_lora(nano(), rank=2, alpha=2, targets=("qkv", "q"))


def test_qkv_adapter_gradcheck_float64():
    mrandom.manual_seed(3)
    base = Linear(5, 9, dtype=np.float64)
    layer = LoRAQKV(base, rank=2, alpha=3.0, parts=("q", "k", "v"))
    for p in ("q", "k", "v"):
        getattr(layer, p).lora_B.data[...] = np.random.default_rng(4).normal(size=(2, 3))
    x = np.random.default_rng(5).normal(size=(2, 4, 5))
    a, b = layer.k.lora_A, layer.k.lora_B

    def f(a_, b_):
        layer.k.lora_A, layer.k.lora_B = a_, b_
        return layer(x)

    gradcheck(f, a, b, eps=1e-6, atol=1e-7, rtol=1e-6)


def test_separate_adapters_save_and_load(tmp_path):
    base = nano()
    base.save_pretrained(tmp_path / "base")
    clf = GPTClassifier.from_gpt(base, ["a", "b"])
    apply_lora(clf, rank=2, alpha=4, targets=("q", "k", "v"), train_also=("score",))
    _perturb(clf)
    ids = np.array([[1, 2, 3]])
    want = clf(ids).data
    save_adapters(clf, tmp_path / "ad", tmp_path / "base")
    back = load_model(tmp_path / "ad")
    assert isinstance(back.blocks[1].attn.qkv, LoRAQKV)
    np.testing.assert_allclose(back(ids).data, want, rtol=1e-6, atol=1e-7)


def test_rank_above_width_warns_and_works():
    mrandom.manual_seed(0)
    clf = GPTClassifier(GPTConfig.preset("nano", vocab_size=64), ["ham", "spam"])
    with pytest.warns(UserWarning, match="rank 16 is larger than the width of 1 layer"):
        n = apply_lora(clf, rank=16, alpha=16, targets=("head",))  # 64 -> 2 head, rank 16: as the book's
    assert n == 16 * (64 + 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        apply_lora(nano(), rank=4, alpha=8)  # within every width: no warning
