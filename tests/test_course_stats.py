"""Gradient flow you can see: the per-block dL/d(residual) norms, gradient histograms and grad:data ratios
that --stats-every records (checked against hand computations), and the dashboards' elements."""
import json
import math

import numpy as np
import pytest

import minigpt
from minigpt.inspect import stats as stats_mod
from minigpt.inspect.stats import StatsRecorder, dashboards
from minigpt.model import GPT, GPTConfig
from minigpt.optim import AdamW


class FakeTrainer:  # what StatsRecorder reads from a Trainer
    def __init__(self, model, out_dir):
        self.model, self.out_dir, self.step = model, out_dir, 0


def _run(tmp_path, steps=3):
    minigpt.random.manual_seed(2)
    model = GPT(GPTConfig.preset("nano", vocab_size=64, context_length=16))
    opt = AdamW(model.parameters(), lr=1e-2)
    tr = FakeTrainer(model, tmp_path)
    rec = StatsRecorder(every=1)
    rec.begin(tr)
    rng = np.random.default_rng(0)
    seen = []
    for _ in range(steps):
        x, y = rng.integers(0, 64, (3, 16)), rng.integers(0, 64, (3, 16))
        rec.before_step(tr)
        outs = []

        def keep(m, a, o):
            o.retain_grad()
            outs.append(o)                 # returns None: the output is not replaced

        hs = [blk.register_forward_hook(keep) for blk in model.blocks]
        weights = {n: p.data.copy() for n, p in model.named_parameters()}
        loss = model.loss(x, y)
        for h in hs:
            h.remove()
        opt.zero_grad()
        loss.backward()
        grads = {n: p.grad.copy() for n, p in model.named_parameters()}
        opt.step()
        tr.step += 1
        rec.after_step(tr, {"loss": float(loss.item())})
        seen.append(([np.asarray(o.grad).copy() for o in outs], weights, grads))
    lines = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    return lines, seen


def test_gradient_flow_numbers_match_a_hand_computation(tmp_path):
    lines, seen = _run(tmp_path)
    for rec, (out_grads, weights, grads) in zip(lines, seen):
        layers = rec["layers"]
        for lay, g in zip(layers, out_grads):
            assert lay["grad_out_norm"] == pytest.approx(np.linalg.norm(g), rel=1e-5)
            h = lay["grad_hist"]
            assert sum(h["counts"]) == math.ceil(g.size / h["stride"]) and len(h["edges"]) == len(h["counts"]) + 1
        # block 1's input is block 0's output: the gradient leaving block 1 is the one entering block 0
        assert layers[1]["grad_in_norm"] == pytest.approx(layers[0]["grad_out_norm"], rel=1e-5)
        assert layers[0]["grad_in_norm"] > 0
        n = "blocks.1.ff.fc.weight"
        ratio = np.linalg.norm(grads[n]) / np.linalg.norm(weights[n])
        assert rec["params"][n]["grad_ratio"] == pytest.approx(math.log10(ratio), abs=1e-3)
        T = 16
        for lay in layers:
            assert lay["attn_uniform"] == pytest.approx(np.mean(np.log(np.arange(1, T + 1))), abs=1e-5)


def test_dashboards_show_gradient_flow_and_reference_lines(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    _run(tmp_path)
    figs = {}
    real_save = stats_mod._save

    def keep(fig, path):
        figs[path.name] = [(ax.get_title(), [line.get_label() for line in ax.get_lines()],
                            ax.get_legend() is not None) for ax in fig.axes]
        figs[path.name + ":suptitle"] = fig._suptitle.get_text() if fig._suptitle else ""
        return real_save(fig, path)

    monkeypatch.setattr(stats_mod, "_save", keep)
    paths = dashboards(tmp_path)
    names = {p.name for p in paths}
    assert {"dash-grad-flow.png", "dash-grad-ratio.png", "dash-attention-entropy.png"} <= names
    for name in names:
        assert (tmp_path / name).stat().st_size > 1000
    (left, right) = figs["dash-grad-flow.png"]
    assert "each block" in left[0] and left[2] and {"block 0, after", "block 1, before"} <= set(left[1])
    assert "dL/d" in right[0] and right[2]
    entropy = figs["dash-attention-entropy.png"]
    assert all("uniform attention" in labels for _, labels, _ in entropy)
    assert "entropy" in figs["dash-attention-entropy.png:suptitle"]
    (ratio,) = figs["dash-grad-ratio.png"]
    assert "grad:data" in ratio[0] and "blocks.0.attn.qkv.weight" in ratio[1]


def test_attention_grid_labels_only_the_outer_maps(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from minigpt.inspect import plots

    got = {}
    real_save = plots._save

    def keep(fig, path):
        got["axes"] = [ax for ax in fig.axes if ax.get_title().startswith("layer")]
        got["labels"] = [([t.get_text() for t in ax.get_xticklabels()], [t.get_text() for t in ax.get_yticklabels()])
                         for ax in got["axes"]]
        got["width"] = fig.get_size_inches()[0]
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    maps = np.tril(np.ones((2, 3, 6, 6))) / np.arange(1, 7)[:, None]
    tokens = ["alpha", "beta", "gamma", "delta", "eps", "zeta"]
    plots.attention_grid(maps, tokens, tmp_path / "a.png")
    labels = got["labels"]                      # row-major: layer 0 heads 0..2, layer 1 heads 0..2
    assert [any(x[0]) for x in labels] == [False, False, False, True, True, True]   # x labels: bottom row
    assert [any(y[1]) for y in labels] == [True, False, False, True, False, False]   # y labels: left column
    assert labels[3][0] == tokens


def test_residual_norm_picture_has_title_and_legend(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from minigpt.inspect import plots

    got = {}
    real_save = plots._save

    def keep(fig, path):
        ax = fig.axes[0]
        got.update(title=ax.get_title(), legend=ax.get_legend())
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", keep)
    T = 20                                       # more positions than the old 12-line limit for a legend
    lens = {"residual_norm": np.ones((3, T)), "layers": ["embeddings", "block 0", "block 1"]}
    plots.residual_norm_picture(lens, [f"t{i}" for i in range(T)], tmp_path / "r.png")
    assert "residual stream norm" in got["title"]
    assert got["legend"] is not None and len(got["legend"].get_texts()) == T
