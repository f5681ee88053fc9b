"""minigpt.viz.graph: DOT content checked as text (no Graphviz needed); rendering skips without `dot`."""
import re
import shutil

import numpy as np
import pytest

import minigpt
import minigpt.functional as F
from minigpt import Tensor
from minigpt.cli import main
from minigpt.model import GPT, GPTConfig
from minigpt.viz import graph, trace

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")


def test_small_expression_nodes_edges_in_data_flow_order():
    a = Tensor(np.ones((2, 3), np.float32), requires_grad=True, name="a")
    b = Tensor(np.full((3,), 2.0, np.float32), requires_grad=True, name="b")
    out = F.sum(F.mul(a, b) + a)
    g = graph(out)
    labels = [n["label"] for n in g.nodes]
    assert labels == ["a", "b", "Mul", "Add", "Sum"]  # topological: inputs first
    assert [n["kind"] for n in g.nodes] == ["input", "input", "op", "op", "op"]
    mul = g.nodes[2]
    assert mul["shape"] == (2, 3) and mul["dtype"] == "float32"
    ids = {n["label"]: n["id"] for n in g.nodes}
    assert g.edges == [(ids["a"], ids["Mul"]), (ids["b"], ids["Mul"]), (ids["Mul"], ids["Add"]),
                       (ids["a"], ids["Add"]), (ids["Add"], ids["Sum"])]
    src = g.source
    assert src.startswith("digraph autograd {") and src.rstrip().endswith("}")
    assert '[label="Mul\\n(2, 3) float32"' in src
    assert '"a\\n(2, 3) float32\\nrequires_grad"' in src.replace("[label=", "")
    assert f'"{ids["Add"]}" -> "{ids["Sum"]}";' in src
    # every edge line appears after every node line
    lines = src.splitlines()
    last_node = max(i for i, l in enumerate(lines) if "[label=" in l)
    assert min(i for i, l in enumerate(lines) if "->" in l) > last_node


def test_grad_norms_after_backward():
    a = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    out = F.sum(a * a)
    out.backward()
    g = graph(out, grads=True)
    leaf = g.nodes[0]
    assert leaf["grad_norm"] == pytest.approx(10.0)  # |2a| = |(6, 8)|
    assert "|grad| = 10" in g.source


def _nano_step():
    minigpt.random.manual_seed(0)
    model = GPT(GPTConfig.preset("nano"))
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 512, (2, 8)), rng.integers(0, 512, (2, 8))
    with trace(model):
        loss = model.loss(x, y)
    loss.backward()
    return model, loss


def test_model_graph_names_parameters_and_boxes_modules():
    model, loss = _nano_step()
    g = graph(loss, modules=model, grads=True)
    params = {n["label"] for n in g.nodes if n["kind"] == "parameter"}
    assert params == {name for name, _ in model.named_parameters()}
    ops = [n for n in g.nodes if n["kind"] == "op"]
    assert ops[-1]["label"] == "LinearCrossEntropyOp" and ops[-1]["module"] == ""
    by_module = {}
    for n in ops:
        by_module.setdefault(n["module"], []).append(n["label"])
    assert by_module["blocks.0.attn"] == ["CausalAttentionOp"]
    assert by_module["blocks.1.norm2"] == ["LayerNormOp"]
    assert by_module["blocks.0"] == ["Add", "Add"]  # the two residual additions
    assert 'subgraph "cluster_blocks.0.attn" {' in g.source
    qkv = next(n for n in g.nodes if n["label"] == "blocks.0.attn.qkv.weight")
    assert qkv["grad_norm"] == pytest.approx(np.linalg.norm(model.blocks[0].attn.qkv.weight.grad), rel=1e-5)


def test_collapse_draws_each_block_as_one_node():
    model, loss = _nano_step()
    g = graph(loss, modules=model, collapse=2)
    mods = [n for n in g.nodes if n["kind"] == "module"]
    assert [m["label"] for m in mods] == ["blocks.0", "blocks.1"]
    assert mods[0]["class"] == "TransformerBlock" and mods[0]["ops"] == 9
    assert mods[0]["parameters"] == sum(p.size for p in model.blocks[0].parameters())
    assert ("m:blocks.0", "m:blocks.1") in g.edges
    assert "blocks.0 (TransformerBlock)" in g.source


def test_graph_cli_writes_dot_without_graphviz(tmp_path, capsys):
    out = tmp_path / "step.dot"
    assert main(["graph", "--config", "nano", "--out", str(out)]) == 0
    src = out.read_text()
    assert src.startswith("digraph autograd {")
    assert len(re.findall(r"LayerNormOp\\n\(2, 8, 64\) float32", src)) == 5
    assert "tok_emb.weight" in src and "|grad| =" in src
    assert "op nodes" in capsys.readouterr().out


def test_missing_dot_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["graph", "--config", "nano", "--out", str(tmp_path / "g.svg")]) == 2
    err = capsys.readouterr().err
    assert "`dot` is not installed" in err and "apt-get install graphviz" in err and err.count("\n") == 1
    with pytest.raises(minigpt.MiniGPTError, match="apt-get install graphviz"):
        graph(F.sum(Tensor(np.ones(2), requires_grad=True))).render(tmp_path / "x.png")


@needs_dot
def test_render_svg_and_png(tmp_path):
    model, loss = _nano_step()
    g = graph(loss, modules=model, collapse=2)
    svg = g.render(tmp_path / "g.svg").read_text()
    assert "<svg" in svg and "blocks.0 (TransformerBlock)" in svg
    assert g.render(tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["graph", "--config", "nano", "--out", str(tmp_path / "cli.svg"), "--collapse", "2"]) == 0
    assert "<svg" in (tmp_path / "cli.svg").read_text()
