"""Parity with Hugging Face transformers' GPT2LMHeadModel through the committed fixture
(tests/fixtures/gpt2_tiny, made by tests/fixtures/make_gpt2_fixture.py): same weights -> same logits,
same loss, same gradient for every parameter."""
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

import minigpt.functional as F
from minigpt.model import GPT
from minigpt.model.checkpoint import to_hf_name

FIXTURES = Path(__file__).parent / "fixtures" / "gpt2_tiny"


def _run(folder, dtype):
    model = GPT.from_pretrained(FIXTURES / folder, dtype=dtype)
    ref = load_file(str(FIXTURES / folder / "reference.safetensors"))
    logits = model(ref["input_ids"])
    loss = F.cross_entropy(logits, ref["targets"])
    loss.backward()
    return model, ref, logits, loss


@pytest.mark.parametrize("folder", ["base", "full_context"])
def test_logits_loss_and_grads_float32(folder):
    model, ref, logits, loss = _run(folder, np.float32)
    assert logits.dtype == np.float32
    np.testing.assert_allclose(logits.data, ref["logits"], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(loss.item(), ref["loss"][0], rtol=1e-5)
    stored = load_file(str(FIXTURES / folder / "model.safetensors"))
    prefix = "transformer." if any(k.startswith("transformer.") for k in stored) else ""
    n = 0
    for name, p in model.named_parameters():
        g_ref = ref["grad." + prefix + to_hf_name(name)]
        scale = np.abs(g_ref).max() + 1e-12
        np.testing.assert_allclose(p.grad / scale, g_ref / scale, atol=1e-4, err_msg=name)
        n += 1
    assert n == len(stored)


@pytest.mark.parametrize("folder", ["base", "full_context"])
def test_logits_and_grads_float64_tight(folder):
    model, ref, logits, loss = _run(folder, np.float64)
    np.testing.assert_allclose(logits.data, ref["logits_f64"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(loss.item(), ref["loss_f64"][0], rtol=1e-10)
    stored = load_file(str(FIXTURES / folder / "model.safetensors"))
    prefix = "transformer." if any(k.startswith("transformer.") for k in stored) else ""
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, ref["grad64." + prefix + to_hf_name(name)], rtol=1e-7, atol=1e-10,
                                   err_msg=name)


def test_save_pretrained_round_trip(tmp_path):
    model = GPT.from_pretrained(FIXTURES / "base")
    model.save_pretrained(tmp_path / "out")
    again = GPT.from_pretrained(tmp_path / "out")
    ids = np.arange(10)[None] % model.config.vocab_size
    np.testing.assert_array_equal(model(ids).data, again(ids).data)
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert "transformer.h.0.attn.c_attn.weight" in saved and "lm_head.weight" not in saved
