"""nn layers, the GPT model, its configs, teaching attention versions and checkpoint loading errors."""

import numpy as np
import pytest

import minigpt
from minigpt import Tensor, gradcheck
from minigpt.model import GPT, GPTConfig, count_gpt2_parameters


def tiny_config(**kw):
    base = dict(vocab_size=37, context_length=12, emb_dim=16, n_heads=4, n_layers=2, drop_rate=0.0, qkv_bias=True)
    base.update(kw)
    return GPTConfig(**base)


def test_gpt2_small_parameter_count():
    cfg = GPTConfig.preset("gpt2-small")
    assert count_gpt2_parameters(cfg) == 124_439_808
    model = GPT(cfg)
    assert model.num_parameters() == 124_439_808
    est = model.memory_estimate(batch_size=2, context_length=256)
    assert est["parameters"] == 124_439_808 * 4 and est["total"] > 4 * est["parameters"]


@pytest.mark.parametrize("name,count", [("gpt2-medium", 354_823_168), ("gpt2-large", 774_030_080),
                                        ("gpt2-xl", 1_557_611_200)])
def test_preset_counts(name, count):
    assert count_gpt2_parameters(GPTConfig.preset(name)) == count


def test_invalid_configs_are_rejected():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(emb_dim=10, n_heads=3)
    with pytest.raises(ValueError, match="positive integer"):
        GPTConfig(n_layers=0)
    with pytest.raises(ValueError, match="drop_rate"):
        GPTConfig(drop_rate=1.5)
    with pytest.raises(ValueError, match="unknown config preset"):
        GPTConfig.preset("gpt5")


def test_module_tree_state_dict_and_freezing():
    minigpt.random.manual_seed(0)
    model = GPT(tiny_config())
    names = [n for n, _ in model.named_parameters()]
    assert names[0] == "tok_emb.weight" and "blocks.1.attn.qkv.weight" in names and "out_head" not in names
    sd = {k: v.copy() for k, v in model.state_dict().items()}
    other = GPT(tiny_config())
    other.load_state_dict(sd)
    ids = np.array([[1, 2, 3]])
    np.testing.assert_array_equal(model(ids).data, other(ids).data)
    bad = dict(sd)
    bad["tok_emb.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match="shape mismatch.*tok_emb.weight"):
        other.load_state_dict(bad)
    del bad["tok_emb.weight"]
    with pytest.raises(ValueError, match="missing 1: tok_emb.weight"):
        other.load_state_dict(bad)
    with pytest.raises(ValueError, match="unexpected 1: nope"):
        other.load_state_dict({**sd, "nope": np.zeros(1)})
    model.blocks[0].requires_grad_(False)
    assert model.num_parameters(trainable_only=True) < model.num_parameters()
    model.loss(ids, np.array([[2, 3, 4]])).backward()
    assert model.blocks[0].attn.qkv.weight.grad is None and model.blocks[1].attn.qkv.weight.grad is not None
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    r = repr(model)
    assert "GPT(" in r and "MultiHeadAttention" in r and "params=" in r


def test_train_eval_modes_and_dropout():
    model = GPT(tiny_config(drop_rate=0.5))
    ids = np.array([[1, 2, 3, 4]])
    model.eval()
    assert not model.blocks[0].drop.training
    a, b = model(ids).data, model(ids).data
    np.testing.assert_array_equal(a, b)
    model.train()
    assert not np.array_equal(model(ids).data, a)


def test_input_errors():
    model = GPT(tiny_config())
    with pytest.raises(ValueError, match="exceeds the model's context_length 12"):
        model(np.zeros((1, 13), dtype=np.int64))
    with pytest.raises(ValueError, match="token id 37 is out of range"):
        model(np.array([[1, 37]]))
    with pytest.raises(ValueError, match="integer token ids"):
        model(np.array([[1.0, 2.0]]))


def _swap(model, name, value):
    """Put ``value`` where parameter ``name`` sits (bypassing registration); return the old one."""
    *path, attr = name.split(".")
    owner = model
    for part in path:
        owner = getattr(owner, part) if not part.isdigit() else owner[int(part)]
    old = getattr(owner, attr)
    object.__setattr__(owner, attr, value)
    return old


@pytest.mark.parametrize("tie", [True, False])
def test_whole_model_gradcheck_float64(tie):
    minigpt.random.manual_seed(3)
    model = GPT(tiny_config(n_layers=1, context_length=5, vocab_size=11, emb_dim=8, n_heads=2, tie_weights=tie),
                dtype=np.float64)
    ids = np.array([[1, 2, 3, 4], [4, 3, 2, 10]])
    targets = np.array([[2, 3, 4, 5], [3, 2, 1, -100]])
    for name, p in list(model.named_parameters()):
        def loss_fn(x, name=name):
            old = _swap(model, name, x)
            try:
                return model.loss(ids, targets)
            finally:
                _swap(model, name, old)

        gradcheck(loss_fn, Tensor(p.data.copy(), requires_grad=True), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("drop_rate", [0.0, 0.2])
def test_numba_and_numpy_backends_agree_on_the_whole_model(drop_rate):
    """MINIGPT_KERNELS=numpy (or kernels.use_backend) runs the plain NumPy reference of every kernel."""
    from minigpt import kernels

    ids = np.array([[1, 2, 3, 4, 5], [6, 7, 8, 9, 0]])
    targets = np.roll(ids, -1, axis=1)
    results = []
    for name in ("numba", "numpy"):
        minigpt.random.manual_seed(11)
        model = GPT(tiny_config(drop_rate=drop_rate), dtype=np.float64)
        with kernels.use_backend(name):
            minigpt.random.manual_seed(5)  # same dropout masks on both backends
            loss = model.loss(ids, targets)
            loss.backward()
        results.append((loss.item(), {n: p.grad.copy() for n, p in model.named_parameters()}))
    (l1, g1), (l2, g2) = results
    assert l1 == pytest.approx(l2, rel=1e-12)
    for n in g1:
        np.testing.assert_allclose(g1[n], g2[n], rtol=1e-9, atol=1e-12, err_msg=n)


def test_summary_table_shapes_params_and_frozen_layers():
    from minigpt.model import GPT, GPTConfig

    cfg = GPTConfig.preset("nano")
    model = GPT(cfg)
    C, V = cfg.emb_dim, cfg.vocab_size
    model.blocks[0].requires_grad_(False)
    model.train()
    s = model.summary(batch_size=2, seq_len=16)
    assert model.training  # mode restored
    rows = {r["name"]: r for r in s.rows}
    assert rows["tok_emb"]["output_shape"] == (2, 16, C) and rows["pos_emb"]["output_shape"] == (16, C)
    assert rows["blocks.0.attn.qkv"]["output_shape"] == (2, 16, 3 * C)
    assert rows["blocks.1.ff.fc"]["output_shape"] == (2, 16, 4 * C)  # run inside the fused linear_gelu
    assert rows["blocks.0.attn"]["params"] == C * 3 * C + (3 * C if cfg.qkv_bias else 0) + C * C + C
    assert rows["blocks.0"]["trainable"] == 0 and rows["blocks.1"]["trainable"] == rows["blocks.1"]["params"]
    assert s.params == model.num_parameters() == sum(r["params"] for r in s.rows if r["depth"] == 1)
    assert s.frozen == rows["blocks.0"]["params"] and s.trainable == s.params - s.frozen
    assert s.input_shape == (2, 16) and s.output_shape == (2, 16, V)
    text = str(s)
    assert "blocks.0.attn.qkv (Linear)" in text and "(2, 16, 192)" in text
    assert f"parameters: {s.params:,} (trainable {s.trainable:,}, frozen {s.frozen:,}" in text
    assert "blocks.0 (TransformerBlock)" in text and "frozen" in text.split("blocks.0 (TransformerBlock)")[1].split("\n")[0]
    top = model.summary(max_depth=1)
    assert [r["name"] for r in top.rows] == ["tok_emb", "pos_emb", "drop_emb", "blocks", "final_norm"]
    assert top.output_shape == (1, cfg.context_length, V)
    assert model.blocks[0].norm1.summary().rows == []  # a leaf layer, no input: just the totals


def test_loading_a_float_checkpoint_reads_tensor_by_tensor(tmp_path, monkeypatch):
    """GPT.from_pretrained reads each tensor from the mapped file, never the whole file as one object."""
    import safetensors.numpy as stnp

    import minigpt.model.checkpoint as ck

    model = GPT(GPTConfig.preset("nano", vocab_size=64, context_length=16))
    model.save_pretrained(tmp_path)

    def refuse(*a, **k):
        raise AssertionError("the whole file was read into memory")

    for mod, name in ((stnp, "load_file"), (stnp, "load"), (ck, "load_file")):
        monkeypatch.setattr(mod, name, refuse)
    back = GPT.from_pretrained(tmp_path)
    for (na, a), (nb, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert na == nb and np.array_equal(a, b)


def test_blocks_add_residuals_inside_their_ops_with_the_same_bits():
    """Without dropout, a block adds its skip connections inside attention's projection and the fused
    feed-forward op (the sub-layers' outputs are never kept): the same loss and gradients, bit for bit, as
    the plain additions (taken when a hook watches a sub-layer)."""
    import minigpt

    minigpt.random.manual_seed(0)
    model = GPT(GPTConfig.preset("nano"), drop_rate=0.0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 512, (2, 8)), rng.integers(0, 512, (2, 8))
    assert all(blk._fused_residuals() for blk in model.blocks)
    runs = []
    for hooked in (False, True):
        handles = [blk.ff.register_forward_hook(lambda m, a, o: None) for blk in model.blocks] if hooked else []
        assert all(blk._fused_residuals() != hooked for blk in model.blocks)
        for p in model.parameters():
            p.grad = None
        loss = model.loss(x, y)
        loss.backward()
        runs.append([loss.data] + [p.grad.copy() for p in model.parameters()])
        for h in handles:
            h.remove()
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
