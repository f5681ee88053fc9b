"""The graph drawing as trained (fused ops) beside the traced, unfused one, and |grad| on every op."""
import collections

import numpy as np
import pytest

import minigpt
from minigpt.cli import main
from minigpt.errors import MiniGPTError
from minigpt.inspect.graph import graph, retain_all, trace
from minigpt.model import GPT, GPTConfig


def _step(fused):
    minigpt.random.manual_seed(0)
    model = GPT(GPTConfig.preset("nano"))
    x = np.random.default_rng(0).integers(0, 512, (2, 8))
    with trace(model, fused=fused):
        loss = model.loss(x, np.roll(x, -1, axis=1))
    return model, loss


def _ops(g):
    return collections.Counter(n["label"] for n in g.nodes if n["kind"] == "op")


def test_trace_with_hooks_draws_the_unfused_ops_and_fused_true_the_trained_ones():
    model, loss = _step(fused=False)
    unfused = _ops(graph(loss, modules=model))
    model, loss2 = _step(fused=True)
    fused = _ops(graph(loss2, modules=model))
    assert unfused == {"EmbeddingOp": 2, "Add": 5, "LayerNormOp": 5, "LinearOp": 6, "CausalAttentionOp": 2,
                       "LinearGELUOp": 2, "LinearCrossEntropyOp": 1}
    assert fused == {"EmbeddingOp": 2, "Add": 1, "LayerNormOp": 5, "LinearOp": 4, "CausalAttentionOp": 2,
                     "FeedForwardOp": 2, "LinearCrossEntropyOp": 1}
    assert loss.item() == pytest.approx(loss2.item(), rel=1e-6)        # the same arithmetic
    # the fused ops still sit in their modules' boxes, and no hook is left behind on any module
    g = graph(loss2, modules=model)
    scopes = {n["label"]: n["module"] for n in g.nodes if n["kind"] == "op"}
    assert scopes["FeedForwardOp"].endswith(".ff") and scopes["CausalAttentionOp"].endswith(".attn")
    assert all("forward" not in vars(m) and not m._forward_hooks for m in model.modules())


def test_retain_all_annotates_every_op():
    model, loss = _step(fused=True)
    n = retain_all(loss)
    loss.backward()
    g = graph(loss, modules=model, grads=True)
    ops = [nd for nd in g.nodes if nd["kind"] == "op"]
    assert n == len(ops) and all(nd["grad_norm"] > 0 for nd in ops)
    assert "|grad| = 1" in g.source            # the loss itself: d loss / d loss = 1
    with pytest.raises(MiniGPTError):
        retain_all(np.zeros(2))


def test_graph_command_flags(tmp_path, capsys):
    assert main(["graph", "--out", str(tmp_path / "a.dot"), "--as-trained", "--op-grads"]) == 0
    out = capsys.readouterr().out
    assert "as trained (fused ops)" in out and "17 op nodes" in out
    text = (tmp_path / "a.dot").read_text()
    assert "FeedForwardOp" in text and "LinearGELUOp" not in text and text.count("|grad|") == 17 + 26
    assert main(["graph", "--out", str(tmp_path / "b.dot")]) == 0
    assert "unfused (traced with hooks)" in capsys.readouterr().out
    assert "LinearGELUOp" in (tmp_path / "b.dot").read_text()
    assert main(["graph", "--out", str(tmp_path / "c.dot"), "--no-grads", "--op-grads"]) == 2
    assert "--op-grads" in capsys.readouterr().err


def test_only_a_hook_on_ff_proj_unfuses_the_feed_forward_op():
    def ops_with_hook_on(path):
        minigpt.random.manual_seed(0)
        model = GPT(GPTConfig.preset("nano"))
        mod = model
        for part in path.split("."):
            mod = getattr(mod, part) if not part.isdigit() else mod[int(part)]
        h = mod.register_forward_hook(lambda m, a, o: None)
        x = np.random.default_rng(0).integers(0, 512, (2, 8))
        loss = model.loss(x, np.roll(x, -1, axis=1))
        h.remove()
        return _ops(graph(loss))

    on_proj = ops_with_hook_on("blocks.0.ff.proj")
    assert on_proj["LinearGELUOp"] == 1 and on_proj["FeedForwardOp"] == 1
    on_attn = ops_with_hook_on("blocks.1.attn")
    assert on_attn["Add"] == 3 and on_attn["FeedForwardOp"] == 2
    on_ff = ops_with_hook_on("blocks.0.ff")
    assert "LinearGELUOp" not in on_ff and on_ff["FeedForwardOp"] == 2 and on_ff["Add"] == 3
