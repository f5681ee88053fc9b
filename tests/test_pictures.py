"""What the pictures must let a reader see: every line of a crowded dashboard told apart by its legend, the
GELU tail's share, the prompt of next_token.png, whole-epoch ticks, a classifier's loss curve that is not
per-batch noise. Each figure is caught as it is closed after saving, and its artists are checked."""
import json

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from minigpt.inspect import plots  # noqa: E402
from minigpt.inspect.stats import dashboards  # noqa: E402
from minigpt.train.loop import loss_figure, running_mean  # noqa: E402


@pytest.fixture
def figures(monkeypatch):
    """The figures the code saves and closes, by the file name they were saved to."""
    saved, real_close = {}, plt.close

    def keep(fig=None):
        saved[getattr(fig, "_saved_to", f"figure {len(saved)}")] = fig

    real_savefig = matplotlib.figure.Figure.savefig

    def savefig(self, fname, *a, **k):
        self._saved_to = str(fname).rsplit("/", 1)[-1].lstrip(".").removesuffix(".tmp")
        return real_savefig(self, fname, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    monkeypatch.setattr(plt, "close", keep)
    yield saved
    for f in saved.values():
        real_close(f)


def _pairs(ax):
    return [(line.get_color(), line.get_linestyle()) for line in ax.get_lines() if not line.get_label().startswith("_")]


def _assert_whole_ticks(fig):
    fig.canvas.draw()
    for ax in fig.axes:
        if not ax.get_lines():  # a colour bar
            continue
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_line_styles_are_distinct_pairs():
    styles = plots.line_styles(40)
    assert len({(s["color"], s["linestyle"]) for s in styles}) == 40
    assert styles[0] == {"color": "C0", "linestyle": "-"} and styles[10] == {"color": "C0", "linestyle": "--"}


def _stats_run(folder, n_params=18, n_layers=2):
    names = [f"blocks.{i // 4}.w{i % 4}.weight" for i in range(n_params)]
    hist = {"edges": list(np.linspace(-5, 5, 11)), "counts": [1] * 10, "stride": 1}
    recs = []
    for step in (1, 2, 3):
        recs.append({"step": step, "loss": 5.0 - step,
                     "params": {n: {"grad_norm": 0.1 * (k + 1) * step, "weight_norm": 1.0, "update_ratio": -3.0 + k / 100}
                                for k, n in enumerate(names)},
                     "layers": [{"layer": l, "gelu_tail": 0.0125 * (l + 1), "attn_entropy": [1.0, 1.5],
                                 "resid_hist": hist, "gelu_hist": hist} for l in range(n_layers)]})
    folder.mkdir()
    (folder / "stats.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return names


def test_crowded_dashboards_tell_every_line_apart(tmp_path, figures):
    names = _stats_run(tmp_path / "run")
    dashboards(tmp_path / "run", tmp_path / "out")
    for fname in ("dash-grad-norm.png", "dash-update-ratio.png"):
        ax = figures[fname].axes[0]
        pairs = [(line.get_color(), line.get_linestyle()) for line in ax.get_lines()
                 if line.get_label() in names]
        assert len(pairs) == 18 and len(set(pairs)) == 18, fname
        assert [t.get_text() for t in ax.get_legend().get_texts()][:18] == names
    for fname in ("dash-loss.png", "dash-grad-norm.png", "dash-update-ratio.png", "dash-attention-entropy.png"):
        _assert_whole_ticks(figures[fname])  # steps 1, 2, 3: no tick at 1.5
    resid, gelu = figures["dash-activations.png"].axes[:2]
    assert len(set(_pairs(resid))) == len(_pairs(resid)) == 6  # 3 steps x 2 layers
    labels = [t.get_text() for t in gelu.get_legend().get_texts()]
    assert "step 1, layer 0: 1.2% < -3" in labels and "step 3, layer 1: 2.5% < -3" in labels


def test_next_token_picture_names_its_prompt(tmp_path, figures):
    plots.next_token_picture([("a", 0.5), ("b", 0.25)], tmp_path / "next_token.png", prompt="Every effort moves")
    assert figures["next_token.png"].axes[0].get_title() == "next token after 'Every effort moves'"
    long = "x" * 100 + "the end"
    plots.next_token_picture([("a", 0.5)], tmp_path / "n2.png", prompt=long)
    title = figures["n2.png"].axes[0].get_title()
    assert title.endswith("the end'") and len(title) < 90


def test_classifier_epoch_axis_ticks_at_whole_epochs(tmp_path, figures):
    from minigpt.train.classify import plot_accuracy

    recs = [{"step": 7 * e, "epoch": e, **{f"{s}_{m}": 0.5 for s in ("train", "val", "test") for m in ("loss", "acc")}}
            for e in (1, 2)]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    plot_accuracy(tmp_path)
    _assert_whole_ticks(figures["accuracy.png"])


def test_running_mean_by_hand():
    np.testing.assert_allclose(running_mean([1, 2, 3, 4], 2), [1, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(running_mean([4.0], 3), [4.0])


def test_smoothed_loss_figure_draws_the_epoch_mean_over_the_batches():
    rng = np.random.default_rng(0)
    losses = list(0.7 + 0.3 * rng.standard_normal(20))
    history = [(s + 1, 8 * (s + 1), losses[s], 0.4 if (s + 1) % 5 == 0 else None) for s in range(20)]
    fig = loss_figure(plt, history, smoothing=5)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert set(lines) == {"train (one batch)", "train (mean of the last 5 batches)", "validation"}
    mean = lines["train (mean of the last 5 batches)"].get_ydata()
    assert mean[9] == pytest.approx(np.mean(losses[5:10]))
    assert np.std(np.diff(mean)) < np.std(np.diff(losses)) / 2  # the smoothed curve is not the noise
    plt.close(fig)
    plain = loss_figure(plt, history)
    assert [line.get_label() for line in plain.axes[0].get_lines()] == ["train", "validation"]
    plt.close(plain)
