"""Llama 3- and Qwen 3-style models: the configuration, transformers' checkpoints (parity of logits, loss,
gradients and greedy tokens with tests/fixtures/llama_tiny, made by make_llama_fixture.py), saving back,
sharded and bfloat16 files, the KV cache, int8, LoRA and a training step."""
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import minigpt.functional as F
from minigpt.errors import MiniGPTError
from minigpt.model.config import GPTConfig
from minigpt.model.generation import generate
from minigpt.model.gpt import GPT
from minigpt.model.hf_llama import to_llama_tensors
from minigpt.nn import apply_lora

FIXTURES = Path(__file__).parent / "fixtures" / "llama_tiny"
CASES = ("llama", "qwen3")


def _ref(case):
    return load_file(str(FIXTURES / case / "reference.safetensors"))


@pytest.mark.parametrize("case", CASES)
def test_logits_loss_and_gradients_equal_transformers(case):
    ref = _ref(case)
    model = GPT.from_pretrained(FIXTURES / case)
    model.eval()
    assert model.config.qk_norm == (case == "qwen3")
    assert model.config.tie_weights == (case == "qwen3")
    logits = model(ref["input_ids"])
    np.testing.assert_allclose(logits.data, ref["logits"], atol=1e-5, rtol=0)
    loss = F.cross_entropy(logits.reshape(-1, model.config.vocab_size), ref["targets"].reshape(-1))
    np.testing.assert_allclose(float(loss.data), ref["loss"][0], rtol=1e-5)
    loss.backward()
    grads = to_llama_tensors(model.config, {n: p.grad for n, p in model.named_parameters()})
    # (a tied head: transformers lists the shared parameter once, as the embedding, like minigpt)
    stored = {k[len("grad."):] for k in ref if k.startswith("grad.")}
    assert stored == set(grads)
    for name in stored:
        np.testing.assert_allclose(grads[name], ref["grad." + name], atol=2e-5, rtol=1e-3, err_msg=name)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("use_cache", [True, False])
def test_greedy_generation_equals_transformers(case, use_cache):
    ref = _ref(case)
    model = GPT.from_pretrained(FIXTURES / case)
    prompt = ref["input_ids"][:1, :4]
    out = generate(model, prompt, max_new_tokens=ref["greedy"].shape[1] - 4, temperature=0, use_cache=use_cache)
    np.testing.assert_array_equal(out, ref["greedy"])


@pytest.mark.parametrize("case", CASES)
def test_save_pretrained_writes_what_transformers_wrote(case, tmp_path):
    model = GPT.from_pretrained(FIXTURES / case)
    model.save_pretrained(tmp_path)
    theirs = load_file(str(FIXTURES / case / "model.safetensors"))
    ours = load_file(str(tmp_path / "model.safetensors"))
    assert set(ours) == set(theirs)
    for k in theirs:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    cfg, ref_cfg = (json.loads((p / "config.json").read_text()) for p in (tmp_path, FIXTURES / case))
    for key in ("architectures", "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "rms_norm_eps", "tie_word_embeddings",
                "max_position_embeddings", "rope_parameters"):
        assert cfg[key] == ref_cfg[key], key
    again = GPT.from_pretrained(tmp_path)
    ids = _ref(case)["input_ids"]
    np.testing.assert_array_equal(again(ids).data, model(ids).data)


def test_sharded_and_bfloat16_checkpoints(tmp_path):
    src = FIXTURES / "llama"
    tensors = load_file(str(src / "model.safetensors"))
    # bfloat16: keep the top 16 bits of each float32 (exactly representable), store them as BF16 words
    bf = {k: (v.view(np.uint32) >> 16).astype(np.uint16) for k, v in tensors.items()}
    widened = {k: (b.astype(np.uint32) << 16).view(np.float32) for k, b in bf.items()}
    names = sorted(tensors)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    for i, part in enumerate(halves):
        save_file({k: widened[k] for k in part}, str(tmp_path / f"model-0000{i + 1}-of-00002.safetensors"))
    index = {"metadata": {}, "weight_map": {k: f"model-0000{i + 1}-of-00002.safetensors"
                                           for i, part in enumerate(halves) for k in part}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    (tmp_path / "config.json").write_text((src / "config.json").read_text())
    sharded = GPT.from_pretrained(tmp_path)
    # the same weights in one bfloat16 file (written by hand: NumPy has no bfloat16 dtype)
    bdir = tmp_path / "bf16"
    bdir.mkdir()
    (bdir / "config.json").write_text((src / "config.json").read_text())
    header, blobs, off = {}, [], 0
    for k in names:
        raw = bf[k].astype("<u2").tobytes()
        header[k] = {"dtype": "BF16", "shape": list(bf[k].shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    (bdir / "model.safetensors").write_bytes(len(h).to_bytes(8, "little") + h + b"".join(blobs))
    bf16 = GPT.from_pretrained(bdir)
    for (n, a), (_, b) in zip(sharded.named_parameters(), bf16.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)
    assert np.array_equal(bf16.tok_emb.weight.data, widened["model.embed_tokens.weight"])


def test_damaged_checkpoints_are_refused(tmp_path):
    src = FIXTURES / "qwen3"
    cfg = json.loads((src / "config.json").read_text())
    tensors = load_file(str(src / "model.safetensors"))
    cases = {
        "layers": ({**cfg, "num_hidden_layers": 3}, tensors, "3 layers"),
        "act": ({**cfg, "hidden_act": "gelu"}, tensors, "hidden_act"),
        "shape": ({**cfg, "intermediate_size": 40}, tensors, "shape"),
        "missing": (cfg, {k: v for k, v in tensors.items() if "k_proj" not in k}, "q/k/v"),
        "extra": (cfg, {**tensors, "model.layers.0.mlp.extra.weight": tensors["model.norm.weight"]}, "not parameters"),
        "nan": (cfg, {**tensors, "model.norm.weight": np.full_like(tensors["model.norm.weight"], np.nan)}, "NaN"),
    }
    for name, (c, t, msg) in cases.items():
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(c))
        save_file(t, str(d / "model.safetensors"))
        with pytest.raises(MiniGPTError, match=msg):
            GPT.from_pretrained(d)


@pytest.mark.parametrize("preset", ["llama-nano", "qwen-tiny"])
def test_kv_cache_equals_full_forward(preset):
    model = GPT(GPTConfig.preset(preset))
    model.eval()
    ids = np.random.default_rng(0).integers(0, 512, (2, 20))
    full = model(ids).data
    caches = model.new_caches(2)
    parts = [model(ids[:, a:b], caches=caches).data for a, b in ((0, 7), (7, 8), (8, 20))]
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=2e-5, rtol=0)
    assert caches[0].k.shape[2] == model.config.kv_heads  # the cache keeps the key/value heads only


@pytest.mark.parametrize("case", CASES)
def test_int8_generation_and_round_trip(case, tmp_path):
    ref = _ref(case)
    model = GPT.from_pretrained(FIXTURES / case)
    float_logits = model(ref["input_ids"]).data
    model.quantize("int8")
    q_logits = model(ref["input_ids"]).data
    assert np.abs(q_logits - float_logits).max() < 0.05 * np.abs(float_logits).max()
    out = generate(model, ref["input_ids"][:1, :4], max_new_tokens=4, temperature=0)
    model.save_pretrained(tmp_path)
    again = GPT.from_pretrained(tmp_path)
    assert again.quantization == {"scheme": "int8", "group_size": 0}
    np.testing.assert_array_equal(again(ref["input_ids"]).data, q_logits)
    np.testing.assert_array_equal(generate(again, ref["input_ids"][:1, :4], max_new_tokens=4, temperature=0), out)


def test_lora_on_a_llama_model_wraps_gate_up_down_and_trains():
    model = GPT.from_pretrained(FIXTURES / "llama")
    n = apply_lora(model, rank=2, alpha=4.0)
    names = [k for k, _ in model.named_parameters() if k.endswith("lora_A")]
    assert {k.split(".")[-2] for k in names} == {"qkv", "proj", "gate", "up", "down"}
    assert n > 0
    ref = _ref("llama")
    loss = model.loss(ref["input_ids"], ref["targets"])
    loss.backward()
    assert all(p.grad is not None for k, p in model.named_parameters() if "lora_" in k)
    assert all(p.grad is None for k, p in model.named_parameters() if "lora_" not in k)


@pytest.mark.parametrize("preset", ["llama-nano", "qwen-tiny"])
def test_a_small_llama_model_learns(preset):
    from minigpt.optim import AdamW

    model = GPT(GPTConfig.preset(preset, vocab_size=64, context_length=32))
    rng = np.random.default_rng(0)
    seq = np.tile(rng.integers(0, 64, 16), 4)  # a repeating pattern: learnable
    x, y = seq[None, :31].repeat(4, 0), seq[None, 1:32].repeat(4, 0)
    opt = AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = model.loss(x, y)
        first = first or float(loss.data)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.data) < 0.5 * first


def test_gpt2_models_are_unchanged():
    cfg = GPTConfig.preset("nano")
    assert cfg.is_gpt2_block and cfg.pos_encoding == "learned"
    model = GPT(cfg)
    assert [n for n, _ in model.named_parameters()][:3] == ["tok_emb.weight", "pos_emb.weight", "blocks.0.norm1.weight"]


def test_config_errors_are_one_line():
    for kw, msg in ((dict(norm="batchnorm"), "norm must be one of"), (dict(n_kv_groups=3), "multiple of n_kv_groups"),
                    (dict(pos_encoding="xpos"), "pos_encoding must be one of"),
                    (dict(pos_encoding="rope", rope_theta=float("nan")), "rope_theta"),
                    (dict(hidden_dim=0), "hidden_dim"), (dict(qk_norm=1), "qk_norm")):
        with pytest.raises(MiniGPTError, match=msg):
            GPTConfig.preset("nano", **kw)


def test_sinusoidal_positions():
    from minigpt.model.gpt import sinusoidal_table

    t = sinusoidal_table(50, 8)
    np.testing.assert_allclose(t[7, 2], np.sin(7 / 10000 ** (2 / 8)), rtol=1e-6)
    np.testing.assert_allclose(t[7, 3], np.cos(7 / 10000 ** (2 / 8)), rtol=1e-6)
    model = GPT(GPTConfig.preset("nano", pos_encoding="sinusoidal"))
    assert model.pos_emb is None and "pos_emb.weight" not in dict(model.named_parameters())
    ids = np.arange(10)[None]
    h = model.hidden(ids).data
    assert np.isfinite(h).all()


def _qwen_folder(tmp_path):
    """A small Qwen 3 model in transformers' layout with the Qwen-style tokenizer.json beside it."""
    from minigpt.tokenizer.hf_files import from_tokenizer_json

    d = tmp_path / "qwen"
    tok_json = Path(__file__).parent / "fixtures" / "hf_tokenizer" / "qwen_style" / "tokenizer.json"
    n = from_tokenizer_json(tok_json).vocab_size
    GPT(GPTConfig.preset("qwen-tiny", vocab_size=n, context_length=64, emb_dim=32, hidden_dim=48, head_dim=16,
                         n_layers=2)).save_pretrained(d)
    (d / "tokenizer.json").write_bytes(tok_json.read_bytes())
    return d


def test_command_line_on_a_hugging_face_folder(tmp_path, capsys, monkeypatch):
    from minigpt.cli import main

    d = _qwen_folder(tmp_path)
    assert main(["generate", "--model", str(d), "--prompt", "the model", "--max-new-tokens", "5",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("the model")
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("What is a gradient?\n"))
    assert main(["chat", "--model", str(d), "--template", "qwen", "--max-new-tokens", "5"]) == 0
    from minigpt.loading import load_model_and_tokenizer
    from minigpt.train.instruct import respond

    model, tok = load_model_and_tokenizer(d)
    expect = respond(model, tok, {"instruction": "What is a gradient?", "input": ""}, "qwen", 5)
    assert capsys.readouterr().out.strip() == expect
    ids = tok.encode("<|im_start|>user\nWhat is a gradient?<|im_end|>\n<|im_start|>assistant\n", allowed_special="all")
    assert ids[0] == 1 and ids.count(2) == 1  # the chat tokens as the tokenizer file numbers them
    text = tmp_path / "corpus.txt"
    text.write_text("the gradient of the loss with respect to the weights. " * 200)
    out = tmp_path / "run"
    assert main(["train", "--init", str(d), "--text", str(text), "--out", str(out), "--steps", "2", "--batch-size", "2",
                 "--context-length", "16", "--eval-every", "1", "--eval-batches", "1", "--sample-tokens", "2",
                 "--quiet"]) == 0
    trained = GPT.from_pretrained(out)
    assert trained.config.qk_norm and trained.config.n_kv_groups == 2
    saved = json.loads(next(out.rglob("config.json")).read_text())
    assert saved["architectures"] == ["Qwen3ForCausalLM"]
