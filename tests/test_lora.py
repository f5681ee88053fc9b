"""LoRA: the op's gradient (float64 finite differences), zero-init equivalence, merge equivalence,
trainable counts, adapter-only saving, bad ranks, and `--train lora` end to end."""
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigpt.functional as F
from minigpt import MiniGPTError, Tensor, gradcheck
from minigpt import random as mrandom
from minigpt.model import GPT, GPTClassifier, GPTConfig
from minigpt.model.folders import load_model, save_adapters, save_model
from minigpt.nn import Linear, LoRALinear, apply_lora, merge_lora


@given(lead=st.lists(st.integers(1, 3), min_size=0, max_size=2), n_in=st.integers(1, 5), r=st.integers(1, 3),
       n_out=st.integers(1, 5), scale=st.floats(0.25, 4.0), seed=st.integers(0, 2**31 - 1))
def test_lora_op_gradcheck(lead, n_in, r, n_out, scale, seed):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((*lead, n_in)), requires_grad=True)
    a = Tensor(rng.standard_normal((n_in, r)), requires_grad=True)
    b = Tensor(rng.standard_normal((r, n_out)), requires_grad=True)
    gradcheck(lambda x, a, b: F.lora(x, a, b, scale), x, a, b, eps=1e-6, atol=1e-7, rtol=1e-6)
    np.testing.assert_allclose(F.lora(x, a, b, scale).data, scale * (x.data @ a.data @ b.data), rtol=1e-12)


def test_lora_op_skips_frozen_inputs():
    x = Tensor(np.ones((2, 3)))  # no grad wanted for x (frozen embedding output)
    a = Tensor(np.ones((3, 1)), requires_grad=True)
    b = Tensor(np.ones((1, 2)), requires_grad=True)
    F.lora(x, a, b, 2.0).sum().backward()
    assert x.grad is None and a.grad.shape == (3, 1) and b.grad.shape == (1, 2)


def nano(seed=0, **kw):
    mrandom.manual_seed(seed)
    return GPT(GPTConfig.preset("nano", vocab_size=100, context_length=16, **kw))


def test_zero_init_equivalence_count_and_merge():
    m = nano()
    ids = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    before = m(ids).data.copy()
    n = apply_lora(m, rank=4, alpha=8)
    C = 64
    per_block = 4 * (C + 3 * C) + 4 * (C + C) + 4 * (C + 4 * C) + 4 * (4 * C + C)
    assert n == 2 * per_block
    assert all(p.requires_grad == (name.endswith(("lora_A", "lora_B"))) for name, p in m.named_parameters())
    np.testing.assert_array_equal(m(ids).data, before)  # B = 0: unchanged at the start
    # train-like change to B, then merge: same logits
    rng = np.random.default_rng(1)
    for name, p in m.named_parameters():
        if name.endswith("lora_B"):
            p.data[...] = rng.normal(0, 0.05, p.shape).astype(p.dtype)
    with_lora = m(ids).data.copy()
    assert not np.allclose(with_lora, before)
    loss = F.cross_entropy(m(ids), np.array([[2, 3, 4, 5, 6], [7, 8, 9, 10, 11]]))
    loss.backward()
    assert m.blocks[0].attn.qkv.lora_A.grad is not None and m.blocks[0].attn.qkv.weight.grad is None
    assert m.tok_emb.weight.grad is None
    merge_lora(m)
    assert not any(isinstance(x, LoRALinear) for x in m.modules())
    np.testing.assert_allclose(m(ids).data, with_lora, atol=1e-5)


def test_bad_ranks_and_targets():
    with pytest.raises(MiniGPTError, match="rank must be an integer >= 1"):
        apply_lora(nano(), rank=0, alpha=1)
    with pytest.warns(UserWarning, match="larger than the width"):  # allowed (the book's 768 -> 2 head), with a note
        apply_lora(nano(), rank=65, alpha=1)
    with pytest.raises(MiniGPTError, match="unknown LoRA target"):
        apply_lora(nano(), rank=2, alpha=1, targets=("nope",))
    with pytest.warns(UserWarning, match="larger than the width"):
        LoRALinear(Linear(4, 3), rank=4, alpha=1)


def test_adapter_only_folder_round_trip(tmp_path):
    base = nano()
    base.save_pretrained(tmp_path / "base")
    clf = GPTClassifier.from_gpt(base, ["a", "b"])
    n = apply_lora(clf, rank=2, alpha=4, train_also=("score",))
    assert n == 2 * (2 * (64 + 192) + 2 * (64 + 64) + 2 * (64 + 256) + 2 * (256 + 64)) + 64 * 2 + 2
    for name, p in clf.named_parameters():
        if p.requires_grad:
            p.data += 0.01 * np.arange(p.size, dtype=p.dtype).reshape(p.shape) / p.size
    ids = np.array([[1, 2, 3]])
    want = clf(ids).data
    save_adapters(clf, tmp_path / "ad", tmp_path / "base")
    files = {p.name for p in (tmp_path / "ad").iterdir()}
    assert files == {"adapter.safetensors", "adapter_config.json"}
    size = (tmp_path / "ad" / "adapter.safetensors").stat().st_size
    assert size < 0.2 * (tmp_path / "base" / "model.safetensors").stat().st_size
    acfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert acfg["rank"] == 2 and acfg["alpha"] == 4 and acfg["kind"] == "classifier"
    back = load_model(tmp_path / "ad")
    np.testing.assert_allclose(back(ids).data, want, rtol=1e-6, atol=1e-7)
    # a full checkpoint of a LoRA model keeps the adapters beside the weights
    with pytest.raises(MiniGPTError, match="carries LoRA adapters"):
        clf.save_pretrained(tmp_path / "plain")
    save_model(clf, tmp_path / "full")
    assert (tmp_path / "full" / "adapter.safetensors").exists()
    np.testing.assert_allclose(load_model(tmp_path / "full")(ids).data, want, rtol=1e-6, atol=1e-7)
