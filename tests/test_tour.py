"""docs/backprop-tour.md: every command of the tour runs exactly as written (on data/tour.txt, in a
scratch folder), its Python block prints what the page shows, and every number or claim the page states
holds on that run.

The tour's 300-step training run is the slow part (about a minute of CPU); it runs once per module.
"""
import contextlib
import io
import json
import math
import re
import shlex
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from minigpt.cli import main

ROOT = Path(__file__).resolve().parent.parent
TOUR = ROOT / "docs" / "backprop-tour.md"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_course import same_output  # noqa: E402  (the course pages' output comparison)

TEXT = TOUR.read_text(encoding="utf-8")


def blocks(kind):
    return re.findall(rf"```{kind}\n(.*?)```", TEXT, flags=re.S)


def commands():
    return [line for b in blocks("bash") for line in b.splitlines() if line.startswith("minigpt ")]


@pytest.fixture(scope="module")
def tour(tmp_path_factory):
    """Run every command of the tour in order, in a scratch folder holding a copy of data/tour.txt; returns
    (folder, {command: printed output})."""
    d = tmp_path_factory.mktemp("tour")
    (d / "data").mkdir()
    shutil.copy(ROOT / "data" / "tour.txt", d / "data" / "tour.txt")
    printed = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        for cmd in commands():
            argv = shlex.split(cmd)[1:]
            if argv[0] == "graph" and shutil.which("dot") is None:
                argv = [a.replace(".svg", ".dot") for a in argv]
            if argv[0] == "plot":
                pytest.importorskip("matplotlib")
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert main(argv) == 0, cmd
            printed[cmd] = out.getvalue()
    return d, printed


def _printed(tour, start):
    (out,) = [v for k, v in tour[1].items() if k.startswith(start)]
    return out


def test_the_tour_runs_every_instrument(tour):
    d, printed = tour
    assert {shlex.split(c)[1] for c in printed} == {"train", "graph", "gradcheck", "profile", "inspect", "plot"}
    assert (d / "tour" / "run" / "stats.jsonl").exists()
    assert (d / "tour" / "attn-before" / "attention.npy").exists()
    assert (d / "tour" / "attn-after" / "inspect.json").exists()
    if shutil.which("dot") is not None:
        assert "<svg" in (d / "tour" / "step-blocks.svg").read_text()
        assert "<svg" in (d / "tour" / "step-trained.svg").read_text()
    assert (d / "tour" / "run" / "dash-update-ratio.png").exists()
    # section 1: the same seed, so the same tokenizer and the same first step (same weights, same batch)
    before, run = d / "tour" / "before", d / "tour" / "run"
    assert (before / "checkpoints" / "step-000001" / "tokenizer.json").read_bytes() == \
        (run / "checkpoints" / "step-000300" / "tokenizer.json").read_bytes()
    first = [json.loads(f.read_text().splitlines()[0])["loss"] for f in (before / "log.jsonl", run / "log.jsonl")]
    assert first[0] == first[1]


def test_section_2_graph_claims(tour):
    unfused = _printed(tour, "minigpt graph --config nano --out tour/step.svg")
    trained = _printed(tour, "minigpt graph --config nano --as-trained")
    assert "unfused" in unfused and "23 op nodes" in unfused and "batch 2 x 8 tokens" in unfused
    assert "as trained" in trained and "17 op nodes" in trained
    assert "step.svg` shows 23 ops" in TEXT and "17 ops, because" in TEXT
    # the op names of each drawing, and the tied embedding's two outgoing edges
    import minigpt
    from minigpt.inspect.graph import graph, retain_all, trace
    from minigpt.model import GPT, GPTConfig

    for fused, expected in ((False, {"EmbeddingOp": 2, "Add": 5, "LayerNormOp": 5, "LinearOp": 6,
                                     "CausalAttentionOp": 2, "LinearGELUOp": 2, "LinearCrossEntropyOp": 1}),
                            (True, {"EmbeddingOp": 2, "Add": 1, "LayerNormOp": 5, "LinearOp": 4,
                                    "CausalAttentionOp": 2, "FeedForwardOp": 2, "LinearCrossEntropyOp": 1})):
        minigpt.random.manual_seed(0)
        model = GPT(GPTConfig.preset("nano"))
        x = np.random.default_rng(0).integers(0, 512, (2, 8))
        with trace(model, fused=fused):
            loss = model.loss(x, np.roll(x, -1, axis=1))
        retain_all(loss)
        loss.backward()
        g = graph(loss, modules=model, grads=True)
        ops = {}
        for n in g.nodes:
            if n["kind"] == "op":
                ops[n["label"]] = ops.get(n["label"], 0) + 1
        assert ops == expected
        for name in expected:
            assert f"`{name}`" in TEXT, name
        (emb,) = [n["id"] for n in g.nodes if n["label"] == "tok_emb.weight"]
        assert sum(a == emb for a, _ in g.edges) == 2
        loss_node = [n for n in g.nodes if n["label"] == "LinearCrossEntropyOp"][0]
        assert loss_node["grad_norm"] == 1.0
    collapsed = _printed(tour, "minigpt graph --config nano --out tour/step-blocks.svg --collapse 2")
    assert "op nodes" in collapsed
    # the residual path of the collapsed drawing, and the model the tour describes
    minigpt.random.manual_seed(0)
    model = GPT(GPTConfig.preset("nano"))
    x = np.random.default_rng(0).integers(0, 512, (2, 8))
    with trace(model):
        loss = model.loss(x, np.roll(x, -1, axis=1))
    g = graph(loss, modules=model, collapse=2)
    label = {n["id"]: n["label"] for n in g.nodes}
    assert [(label[a], label[b]) for a, b in g.edges if "blocks" in a + b] == [
        ("Add", "blocks.0"), ("blocks.0", "blocks.1"), ("blocks.1", "LayerNormOp")]
    assert "(`Add -> blocks.0 -> blocks.1 -> LayerNormOp`)" in TEXT
    c = model.config
    n_params = sum(p.size for p in model.parameters())
    assert (c.n_layers, c.n_heads, c.emb_dim) == (2, 4, 64) and round(n_params / 1000) == 137
    assert "(2 blocks, 4 heads, 64-dimensional, 137k\nparameters)" in TEXT


def test_section_3_python_block_prints_what_the_page_shows(capsys):
    (code,) = blocks("python")
    expected = TEXT.split(code, 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    exec(compile(code, str(TOUR), "exec"), {"__name__": "__tour__"})
    out = capsys.readouterr().out
    assert same_output(out, expected) is None, same_output(out, expected)
    # the numbers the prose repeats, read from the output
    rows = re.findall(r"block (\d): \|dL/d output\| = ([\d.]+)  \|dL/d input\| = ([\d.]+)  .*= ([\d.]+)  "
                      r"cos = ([-+][\d.]+)  ln1 gain = (\d+)x", out)
    assert [r[0] for r in rows] == ["1", "0"]
    (b1, b0) = [tuple(float(v) for v in r[1:]) for r in rows]
    assert b1[1] == b0[0]                                               # block 1's input = block 0's output
    shares = [round(100 * b[2]) for b in (b1, b0)]
    assert f"{shares[0]}% and {shares[1]}%" in TEXT
    assert all(0.45 <= b[2] <= 0.75 and abs(b[3]) < 0.15 for b in (b1, b0))
    assert f"cosines of {b1[3]:.2f} and {b0[3]:+.2f}" in TEXT
    assert f"{int(b1[4])} and {int(b0[4])} times" in TEXT and all(25 <= b[4] <= 60 for b in (b1, b0))
    assert f"`sqrt(1 + {b1[2]:.2f}**2)` is\nonly {math.sqrt(1 + b1[2] ** 2):.2f}" in TEXT
    assert f"({b0[0]:.3f} against\n{b1[0]:.3f}, {b0[1]:.3f} against {b0[0]:.3f})" in TEXT


def test_section_4_gradcheck_claims(tour):
    out = _printed(tour, "minigpt gradcheck layer_norm")
    last = out.strip().splitlines()[-1]
    assert last.startswith("PASS")
    assert float(re.search(r"max abs err ([\d.e+-]+)", last).group(1)) < 1e-8
    assert "better than 1e-8" in TEXT
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["gradcheck", "layer_norm", "--shape", "3,1"]) == 0


def test_section_5_profile_claims(tour):
    d, _ = tour
    prof = json.loads((d / "tour" / "profile.json").read_text())
    steps = prof["steps"]
    per_step = {"LinearOp": 4, "FeedForwardOp": 2, "CausalAttentionOp": 2, "LayerNormOp": 5, "EmbeddingOp": 2,
                "Add": 1, "LinearCrossEntropyOp": 1}
    rows = [r for r in prof["rows"] if r["op"] != "(outside ops)"]
    assert {r["op"] for r in rows} == set(per_step)
    for r in rows:
        assert r["calls"] == steps * per_step[r["op"]], r
        assert r["phase"] in ("forward", "backward")
    for name, n in per_step.items():
        assert f"{n}\n`{name}`" in TEXT or f"{n} `{name}`" in TEXT, name
    assert "`LinearGELUOp` does not appear" in TEXT
    share = {}
    for r in rows:
        share[r["op"]] = share.get(r["op"], 0.0) + r["share"]
    assert max(share, key=share.get) == "FeedForwardOp", share
    # two thirds of the blocks' multiply-adds with weight matrices: 8 C^2 (fc, proj) of 12 C^2 (+ qkv 3, proj 1)
    C = 64
    assert (C * 4 * C + 4 * C * C) / (C * 3 * C + C * C + C * 4 * C + 4 * C * C) == pytest.approx(2 / 3)


def _shares(a):
    L, H, T, _ = a.shape
    prev = np.array([[np.mean([a[l, h, i, i - 1] for i in range(1, T)]) for h in range(H)] for l in range(L)])
    first = np.array([[np.mean([a[l, h, i, 0] for i in range(1, T)]) for h in range(H)] for l in range(L)])
    uniform = np.mean([1 / (i + 1) for i in range(1, T)])
    dev = max(abs(a[l, h, i, j] - 1 / (i + 1)) for l in range(L) for h in range(H) for i in range(T)
              for j in range(i + 1))
    return prev, first, uniform, dev


def test_section_6_attention_claims(tour):
    d, _ = tour
    before = np.load(d / "tour" / "attn-before" / "attention.npy")
    after = np.load(d / "tour" / "attn-after" / "attention.npy")
    _, _, _, dev0 = _shares(before)
    prev, first, uniform, dev1 = _shares(after)
    assert dev0 < 0.02 and "within 0.02 of\n`1/(t+1)`" in TEXT
    assert prev.max() < 0.25 and "even\na quarter of its attention" in TEXT   # no previous-token head yet
    assert first[1].max() > uniform + 0.01 and "more\nthan its uniform share on the first token" in TEXT
    assert dev1 > 0.1 and "more than 0.1" in TEXT
    info = json.loads((d / "tour" / "attn-after" / "inspect.json").read_text())
    assert "logit_lens" in info


def test_section_7_dashboard_claims(tour):
    d, _ = tour
    stats = [json.loads(line) for line in (d / "tour" / "run" / "stats.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in stats]
    assert steps[0] == 1 and steps[-1] == 300 and all(s % 20 == 0 for s in steps[1:])

    def median_ratio(r):
        return float(np.median([v["update_ratio"] for n, v in r["params"].items()
                                if n.endswith("weight") and "norm" not in n and v["update_ratio"] is not None]))

    med = [median_ratio(r) for r in stats]
    peak = int(np.argmax(med))
    assert -3.0 <= med[0] <= -2.4 and "starts near -2.7" in TEXT
    assert -2.3 <= med[peak] <= -1.2 and steps[peak] <= 120 and "between -2.3 and -1.2" in TEXT
    assert med[-1] < med[peak] - 0.5 and "by more than 0.5 by step 300" in TEXT
    assert all(lay["gelu_tail"] == 0 for r in stats for lay in r["layers"])
    uniform = sum(math.log(t + 1) for t in range(64)) / 64
    assert f"{uniform:.2f} nats" in TEXT
    assert all(abs(e - uniform) < 0.02 for lay in stats[0]["layers"] for e in lay["attn_entropy"])
    assert min(e for lay in stats[-1]["layers"] for e in lay["attn_entropy"]) < uniform - 0.08
    assert "more than 0.08 nats below" in TEXT
    for r in stats:                              # the gradient leaving block 1 is the one entering block 0
        lay = r["layers"]
        assert lay[1]["grad_in_norm"] == pytest.approx(lay[0]["grad_out_norm"], rel=1e-5)
        assert all(v["grad_ratio"] is not None for n, v in r["params"].items() if n.endswith("weight"))
        assert all(abs(la["attn_uniform"] - uniform) < 1e-4 for la in lay)
    assert "their two lines\ncoincide" in TEXT
    for name in ("dash-update-ratio.png", "dash-grad-norm.png", "dash-activations.png",
                 "dash-attention-entropy.png", "dash-grad-flow.png", "dash-grad-ratio.png"):
        assert (d / "tour" / "run" / name).exists() and name in TEXT
