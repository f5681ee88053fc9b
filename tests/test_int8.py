"""int8 weight-only quantization: kernels against the NumPy reference, the quantizer's error bound, the
quantized model (save -> load round trip, generation), refusal to train, and checkpoint loading that maps
the safetensors file instead of reading it whole."""
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigpt.random import manual_seed
from minigpt import kernels
from minigpt.cli import main
from minigpt.errors import MiniGPTError
from minigpt.kernels import int8 as K
from minigpt.model import GPT, GPTConfig, generate
from minigpt.nn import Int8Linear
from minigpt.tensor import Tensor, no_grad


def _weights(rng, n_out, n_in):
    w = rng.normal(0.0, 0.05, (n_out, n_in)).astype(np.float32)
    w[rng.random(n_out) < 0.1] = 0.0  # some all-zero rows: scale 0
    return w


@given(m=st.integers(1, 9), n_out=st.integers(1, 40), groups=st.integers(1, 4), gs=st.sampled_from([4, 8, 16, 32]),
       seed=st.integers(0, 2**31 - 1))
def test_int8_matmul_equals_the_reference(m, n_out, groups, gs, seed):
    rng = np.random.default_rng(seed)
    n_in = groups * gs
    q, s = K.quantize_int8(_weights(rng, n_out, n_in), 0 if groups == 1 else gs)
    x = rng.normal(size=(m, n_in)).astype(np.float32)
    ref = K.int8_matmul_numpy(x.astype(np.float64), q, s)  # dequantize, then matmul (float64)
    bound = np.abs(x).astype(np.float64) @ np.abs(K.dequantize_int8(q, s).astype(np.float64)).T
    with kernels.use_backend("numba"):
        y = K.int8_matmul(x, q, s)
    assert y.dtype == np.float32 and y.shape == (m, n_out)
    # float32 rounding of a sum of n_in products: well within n_in * eps32 of the sum of magnitudes
    assert np.all(np.abs(y - ref) <= 2 * n_in * np.finfo(np.float32).eps * bound + 1e-30)
    with kernels.use_backend("numpy"):
        assert np.allclose(K.int8_matmul(x, q, s), ref, rtol=1e-5, atol=1e-6)


def test_int8_matmul_large_shapes_parallel_paths():
    rng = np.random.default_rng(1)
    for m, n_out, n_in, gs in [(1, 3000, 256, 0), (1, 700, 512, 128), (5, 1500, 256, 0), (16, 600, 384, 64)]:
        q, s = K.quantize_int8(_weights(rng, n_out, n_in), gs)
        x = rng.normal(size=(m, n_in)).astype(np.float32)
        ref = K.int8_matmul_numpy(x.astype(np.float64), q, s)
        bound = np.abs(x) @ np.abs(K.dequantize_int8(q, s)).T
        assert np.all(np.abs(K.int8_matmul_numba(x, q, s) - ref) <= 2 * n_in * 1.2e-7 * bound + 1e-30)


@pytest.mark.parametrize("gs", [0, 8])
def test_quantize_error_is_half_a_step(gs):
    rng = np.random.default_rng(2)
    w = _weights(rng, 30, 64)
    w[3, 5] = 1.0  # an outlier only affects its own row (or group)
    q, s = K.quantize_int8(w, gs)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (30, 1 if gs == 0 else 64 // gs)
    assert np.abs(q).max() <= 127
    step = np.repeat(s, 64 // s.shape[1], axis=1)
    assert np.all(np.abs(K.dequantize_int8(q, s) - w) <= step / 2 * (1 + 1e-6) + 1e-12)
    nonzero = s[:, 0] > 0
    assert np.all(np.abs(q[nonzero]).max(axis=1) == 127)  # the range is used
    assert not np.any(q[~nonzero])
    with pytest.raises(MiniGPTError, match="divide"):
        K.quantize_int8(w, 24)
    with pytest.raises(MiniGPTError, match="NaN"):
        K.quantize_int8(np.full((2, 4), np.nan, np.float32))


@pytest.fixture
def model():
    manual_seed(0)
    return GPT(GPTConfig.preset("nano", qkv_bias=True))


def _ids(n=2, t=12, vocab=512, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, (n, t))


def test_quantized_model_is_close_and_generates(model):
    x = _ids()
    with no_grad():
        ref = model(x).data
    model.quantize("int8")
    assert model.quantization == {"scheme": "int8", "group_size": 0}
    with no_grad():
        out = model(x).data
    assert out.dtype == np.float32
    assert np.abs(out - ref).max() < 0.02 * np.abs(ref).max()
    # the head and every block linear are int8; the KV cache is float32
    assert all(isinstance(getattr(getattr(b, p.split(".")[0]), p.split(".")[1]), Int8Linear)
               for b in model.blocks for p in ("attn.qkv", "attn.proj", "ff.fc", "ff.proj"))
    assert model.new_caches(1)[0].k.dtype == np.float32
    a = generate(model, x[:1, :5], 12, temperature=0.0, use_cache=True)
    b = generate(model, x[:1, :5], 12, temperature=0.0, use_cache=False)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("tied,gs", [(True, 0), (False, 16)])
def test_quantize_save_load_round_trip_is_exact(tmp_path, tied, gs):
    manual_seed(3)
    m = GPT(GPTConfig.preset("nano", tie_weights=tied, qkv_bias=not tied)).quantize("int8", group_size=gs)
    m.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["quantization"] == {"scheme": "int8", "group_size": gs, "layout": "out_in"}
    from safetensors.numpy import load_file

    stored = load_file(str(tmp_path / "model.safetensors"))
    assert stored["transformer.h.0.mlp.c_fc.weight"].dtype == np.int8
    assert stored["transformer.h.0.mlp.c_fc.weight_scale"].dtype == np.float32
    back = GPT.from_pretrained(tmp_path)
    assert back.quantization == m.quantization and back.config == m.config
    for (na, a), (nb, b) in zip(sorted((n, mod) for n, mod in m.named_modules() if isinstance(mod, Int8Linear)),
                                sorted((n, mod) for n, mod in back.named_modules() if isinstance(mod, Int8Linear))):
        assert na == nb and np.array_equal(a.q, b.q) and np.array_equal(a.scales, b.scales)
    for (na, a), (nb, b) in zip(m.state_dict().items(), back.state_dict().items()):
        assert na == nb and np.array_equal(a, b)
    x = _ids()
    with no_grad():
        assert np.array_equal(m(x).data, back(x).data)


def test_loading_a_quantized_folder_never_builds_float32_weights(tmp_path, model, monkeypatch):
    model.quantize("int8").save_pretrained(tmp_path)
    import minigpt.model.gpt as gpt_module

    def refuse(*a, **k):
        pytest.fail("loading must not re-quantize")

    monkeypatch.setattr(K, "quantize_int8", refuse)
    monkeypatch.setattr(gpt_module, "quantize_int8", refuse)
    back = GPT.from_pretrained(tmp_path)
    # the only float matrix left is the position embedding; the rest is int8 plus small vectors
    big = [n for n, p in back.named_parameters() if p.data.ndim == 2]
    assert big == ["pos_emb.weight"]
    assert back.weight_bytes() < 0.35 * GPT(GPTConfig.preset("nano", qkv_bias=True)).weight_bytes()


def test_quantized_model_refuses_training(model):
    from minigpt.train import TrainConfig, Trainer

    model.quantize("int8")
    x = _ids()
    with pytest.raises(MiniGPTError, match="inference only"):
        model.loss(x, x)
    with no_grad():  # evaluation is fine
        assert np.isfinite(model.loss(x, x).item())
    with pytest.raises(MiniGPTError, match="inference only"):
        Trainer(model, None, None, None, TrainConfig(steps=1), "unused", progress=False)
    with pytest.raises(MiniGPTError, match="inference only"):
        _ = model.head_weight
    with pytest.raises(MiniGPTError, match="already quantized"):
        model.quantize("int8")
    h = Tensor(np.ones((2, 64), np.float32), requires_grad=True)
    y = model.blocks[0].attn.qkv(h)
    with pytest.raises(MiniGPTError, match="inference only"):
        y.sum().backward()


def test_quantize_argument_errors(model):
    with pytest.raises(MiniGPTError, match="unknown quantization scheme"):
        model.quantize("int4")
    with pytest.raises(MiniGPTError, match="group_size"):
        model.quantize("int8", group_size=-1)
    with pytest.raises(MiniGPTError, match="does not divide"):
        model.quantize("int8", group_size=48)


def test_bad_quantized_folder_is_a_clear_error(tmp_path, model):
    model.quantize("int8").save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["quantization"] = {"scheme": "int3"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MiniGPTError, match="unknown quantization"):
        GPT.from_pretrained(tmp_path)


def test_loading_an_int8_folder_maps_the_file_instead_of_reading_it(tmp_path, model, monkeypatch):
    model.quantize("int8").save_pretrained(tmp_path)
    import safetensors.numpy as stnp

    import minigpt.model.checkpoint as ck

    def refuse(*a, **k):
        raise AssertionError("the whole file was read into memory")

    monkeypatch.setattr(stnp, "load_file", refuse)
    monkeypatch.setattr(stnp, "load", refuse)
    monkeypatch.setattr(ck, "load_file", refuse)
    back = GPT.from_pretrained(tmp_path)
    for (na, a), (nb, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert na == nb and np.array_equal(a, b)
    assert np.array_equal(back.head_int8.q, model.head_int8.q)


def test_cli_quantize_and_generate(tmp_path, model, capsys):
    from minigpt.tokenizer import BPETokenizer

    src, dst = tmp_path / "f32", tmp_path / "int8"
    model.save_pretrained(src)
    tok = BPETokenizer.train("hello world, hello int8 world. " * 20, vocab_size=265)
    tok.save(src / "tokenizer.json")
    assert main(["quantize", "--model", str(src), "--out", str(dst)]) == 0
    assert "MB" in capsys.readouterr().out
    assert json.loads((dst / "config.json").read_text())["quantization"]["scheme"] == "int8"
    assert (dst / "tokenizer.json").exists()
    args = ["--prompt", "hello", "--max-new-tokens", "6", "--temperature", "0"]
    assert main(["generate", "--model", str(dst), *args]) == 0
    from_folder = capsys.readouterr().out
    assert main(["generate", "--model", str(src), "--quantize", "int8", *args]) == 0
    assert capsys.readouterr().out == from_folder  # same int8 weights, same greedy text
    assert main(["quantize", "--model", str(dst), "--out", str(tmp_path / "again")]) == 2
    assert "already quantized" in capsys.readouterr().err
