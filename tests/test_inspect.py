"""minigpt.inspect: attention maps and the logit lens (numbers checked against the model and the fused
kernel), `minigpt inspect` output and its bad-input errors."""
import json

import numpy as np
import pytest

import minigpt  # noqa: F401
from minigpt.cli import main
from minigpt.inspect import attention_maps, logit_lens, residual_stream
from minigpt.model import GPT, GPTConfig

TEXT = ("The cat sat on the mat. The dog sat on the log. A cat and a dog met on the mat by the log.\n" * 40)


@pytest.fixture(scope="module")
def model():
    minigpt.random.manual_seed(3)
    return GPT(GPTConfig.preset("nano", vocab_size=300, context_length=16))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, model):
    from minigpt.tokenizer import BPETokenizer

    d = tmp_path_factory.mktemp("model")
    tok = BPETokenizer.train(TEXT, 280, special_tokens=("<|endoftext|>",))
    model.save_pretrained(d)
    tok.save(d / "tokenizer.json")
    return d


def test_attention_maps_are_causal_distributions_equal_to_the_kernel(model):
    from minigpt.kernels.attention import attention_forward

    ids = np.array([5, 17, 200, 3, 99, 42, 7])
    stream = residual_stream(model, ids)
    maps = attention_maps(model, ids, stream=stream)
    L, H, T = model.config.n_layers, model.config.n_heads, len(ids)
    assert maps.shape == (L, H, T, T)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-6)
    assert np.all(maps >= 0)
    assert np.all(maps[..., np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0)
    assert maps[0, 0, 0, 0] == pytest.approx(1.0)  # the first token can only look at itself
    D = model.config.emb_dim // H
    for layer in range(L):
        packed = stream["qkv"][layer].reshape(T, 3, H, D)
        fused, _ = attention_forward(packed[None, :, 0], packed[None, :, 1], packed[None, :, 2], 1 / np.sqrt(D))
        mine = np.einsum("hij,jhd->ihd", maps[layer], packed[:, 2])      # maps @ V, per head
        np.testing.assert_allclose(mine, fused[0], atol=2e-6)
    # the residual stream's last entry is what the final LayerNorm + head turn into the model's logits
    logits = model.forward(ids[None]).data[0]
    np.testing.assert_allclose(stream["logits"], logits, atol=1e-5)


def test_logit_lens_last_layer_is_the_models_prediction(model):
    ids = np.array([1, 2, 3, 4, 5])
    lens = logit_lens(model, ids, k=3)
    L = model.config.n_layers
    assert lens["layers"] == ["embeddings"] + [f"block {i}" for i in range(L)]
    assert lens["top_ids"].shape == (L + 1, 5, 3) and lens["top_probs"].shape == (L + 1, 5, 3)
    assert np.all(np.diff(lens["top_probs"], axis=-1) <= 0)  # likeliest first
    logits = model.forward(ids[None]).data[0].astype(np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_array_equal(lens["top_ids"][-1, :, 0], p.argmax(-1))
    np.testing.assert_allclose(lens["next_token_probs"], p[-1], atol=1e-5)
    res = residual_stream(model, ids)["residual"]
    np.testing.assert_allclose(lens["residual_norm"], np.linalg.norm(res.astype(np.float64), axis=-1), rtol=1e-6)


def test_prompt_longer_than_context_is_a_clear_error(model):
    with pytest.raises(minigpt.MiniGPTError, match="longer than the model's context of 16"):
        attention_maps(model, np.arange(17))


def test_inspect_cli_writes_numbers_and_pictures(model_dir, tmp_path, capsys):
    out = tmp_path / "insp"
    assert main(["inspect", "--model", str(model_dir), "--prompt", "The cat sat", "--out", str(out),
                 "--top-k", "3"]) == 0
    rep = json.loads((out / "inspect.json").read_text())
    maps = np.load(out / "attention.npy")
    T = len(rep["ids"])
    assert maps.shape == (2, 4, T, T) and rep["attention_shape"] == [2, 4, T, T]
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-6)
    assert len(rep["logit_lens"]["top"]) == 3 and len(rep["logit_lens"]["top"][0][0]) == 3
    assert len(rep["residual_norm"]) == 3 and len(rep["residual_norm"][0]) == T
    assert abs(sum(d["prob"] for d in rep["next_token"]) - 1) < 1  # top-20 of a distribution
    assert "logit lens" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    for name in ("attention.png", "logit_lens.png", "residual_norm.png", "next_token.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["inspect", "--model", str(model_dir), "--prompt", "The cat", "--out", str(out),
                 "--layer", "1", "--head", "2"]) == 0
    assert (out / "attention-layer1-head2.png").exists()


@pytest.mark.parametrize("extra, message", [
    (["--layer", "2"], "--layer 2 is out of range: the model has 2 layers (0..1)"),
    (["--head", "-1"], "--head -1 is out of range: the model has 4 heads (0..3)"),
    (["--prompt", "The cat sat on the mat. " * 10], "longer than the model's context of 16 tokens"),
])
def test_inspect_bad_input_one_line(model_dir, tmp_path, capsys, extra, message):
    argv = ["inspect", "--model", str(model_dir), "--prompt", "The cat", "--out", str(tmp_path / "o")] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigpt: error: ") and message in err and err.count("\n") == 1
