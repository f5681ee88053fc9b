"""`minigpt train --stats-every N` -> stats.jsonl (numbers checked against a hand computation) and
`minigpt plot RUN` dashboards."""
import json
import math

import numpy as np
import pytest

import minigpt
from minigpt.cli import main
from minigpt.inspect.maps import causal_softmax_weights
from minigpt.inspect.stats import StatsRecorder
from minigpt.model import GPT, GPTConfig
from minigpt.optim import AdamW

TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i % 7}.\n" for i in range(400))


class FakeTrainer:  # what StatsRecorder reads from a Trainer
    def __init__(self, model, out_dir):
        self.model, self.out_dir, self.step = model, out_dir, 0


def test_recorded_numbers_match_a_hand_computation(tmp_path):
    minigpt.random.manual_seed(1)
    model = GPT(GPTConfig.preset("nano", vocab_size=64, context_length=16))
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    tr = FakeTrainer(model, tmp_path)
    rec = StatsRecorder(every=2)
    rec.begin(tr)
    rng = np.random.default_rng(0)
    seen = {}
    for _ in range(4):
        x, y = rng.integers(0, 64, (3, 16)), rng.integers(0, 64, (3, 16))
        rec.before_step(tr)
        before = {n: p.data.copy() for n, p in model.named_parameters()}
        captured = {}
        h = model.blocks[1].ff.register_forward_hook(lambda m, a, o: captured.update(ff_in=a[0].data.copy()))
        h2 = model.blocks[0].attn.register_forward_hook(lambda m, a, o: captured.update(attn_in=a[0].data.copy()))
        loss = model.loss(x, y)
        h.remove(), h2.remove()
        opt.zero_grad()
        loss.backward()
        opt.step()
        tr.step += 1
        rec.after_step(tr, {"loss": float(loss.item())})
        seen[tr.step] = (before, captured)
    lines = [json.loads(l) for l in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 4]  # the first step and every 2nd
    last = lines[-1]
    before, captured = seen[4]
    w = model.blocks[0].attn.qkv.weight
    p = last["params"]["blocks.0.attn.qkv.weight"]
    assert p["grad_norm"] == pytest.approx(np.linalg.norm(w.grad), rel=1e-5)
    assert p["weight_norm"] == pytest.approx(np.linalg.norm(w.data), rel=1e-5)
    upd = np.linalg.norm(w.data - before["blocks.0.attn.qkv.weight"]) / np.linalg.norm(before["blocks.0.attn.qkv.weight"])
    assert p["update_ratio"] == pytest.approx(math.log10(upd), abs=1e-3)
    assert set(last["params"]) == {n for n, _ in model.named_parameters()}
    # GELU tail of layer 1: first sequence's pre-activations below -3
    pre = captured["ff_in"][0] @ before["blocks.1.ff.fc.weight"] + before["blocks.1.ff.fc.bias"]  # pre-step weights
    lay1 = last["layers"][1]
    assert lay1["gelu_tail"] == pytest.approx(float((pre < -3).mean()))
    assert sum(lay1["gelu_hist"]["counts"]) == pre.size
    # attention entropy of layer 0, first sequence, per head
    attn = model.blocks[0].attn
    assert attn.qkv.bias is None
    qkv = (captured["attn_in"][0] @ before["blocks.0.attn.qkv.weight"]).reshape(16, 3, 4, 16)
    probs = causal_softmax_weights(qkv[:, 0], qkv[:, 1], 0.25).astype(np.float64)
    ent = -(probs * np.log(np.maximum(probs, 1e-30))).sum(-1).mean(-1)
    np.testing.assert_allclose(last["layers"][0]["attn_entropy"], ent, atol=1e-4)
    assert all(0 <= e <= math.log(16) for e in last["layers"][0]["attn_entropy"])
    assert [l["layer"] for l in last["layers"]] == [0, 1]
    assert all(l["resid_std"] > 0 for l in last["layers"]) and last["stats_seconds"] > 0
    assert not model.blocks[0]._forward_hooks  # the recorder's hooks are gone after the step
    # a restart from step 2 drops the later records
    tr.step = 2
    rec.begin(tr)
    assert [json.loads(l)["step"] for l in (tmp_path / "stats.jsonl").read_text().splitlines()] == [1, 2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("stats")
    text = d / "t.txt"
    text.write_text(TEXT)
    out = d / "run"
    assert main(["train", "--config", "nano", "--text", str(text), "--vocab-size", "280", "--context-length", "32",
                 "--steps", "6", "--batch-size", "2", "--stats-every", "3", "--eval-every", "0", "--sample-tokens",
                 "4", "--out", str(out), "--quiet"]) == 0
    return out


def test_train_cli_writes_stats_and_plot_draws(run, tmp_path, capsys):
    lines = [json.loads(l) for l in (run / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 3, 6]
    log = {r["step"]: r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())}
    assert all(r["loss"] == log[r["step"]] for r in lines)
    assert len(lines[0]["layers"]) == 2 and len(lines[0]["layers"][0]["attn_entropy"]) == 4
    pytest.importorskip("matplotlib")
    capsys.readouterr()
    assert main(["plot", str(run), "--out", str(tmp_path / "dash"), "--hist-steps", "1,6"]) == 0
    names = sorted(p.name for p in (tmp_path / "dash").iterdir())
    assert names == ["dash-activations.png", "dash-attention-entropy.png", "dash-grad-flow.png", "dash-grad-norm.png",
                     "dash-grad-ratio.png", "dash-loss.png", "dash-update-ratio.png"]
    assert all((tmp_path / "dash" / n).read_bytes()[:4] == b"\x89PNG" for n in names)


@pytest.mark.parametrize("what, message", [
    ("nostats", "has no stats.jsonl: train with `minigpt train --stats-every N`"),
    ("missing", "does not exist"),
    ("badstep", "--hist-steps 2: not a sampled step; stats.jsonl has steps 1, 3, 6"),
])
def test_plot_bad_input_one_line(run, tmp_path, capsys, what, message):
    if what == "nostats":
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "log.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
        argv = ["plot", str(tmp_path / "r")]
    elif what == "missing":
        argv = ["plot", str(tmp_path / "nothing")]
    else:
        pytest.importorskip("matplotlib")
        argv = ["plot", str(run), "--out", str(tmp_path / "d"), "--hist-steps", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigpt: error: ") and message in err and err.count("\n") == 1


def test_stats_every_must_be_positive(tmp_path, capsys):
    assert main(["train", "--config", "nano", "--steps", "1", "--stats-every", "-2", "--out", str(tmp_path / "x"),
                 "--quiet"]) == 2
    assert "--stats-every must be a positive number" in capsys.readouterr().err


def test_layer_stats_without_a_graph_are_recomputed_alike(tmp_path):
    """With a recorded graph the recorder reads q/k/v and GELU inputs from it; without one (no_grad) it
    recomputes them: the same numbers."""
    minigpt.random.manual_seed(2)
    model = GPT(GPTConfig.preset("nano", vocab_size=64, context_length=16))
    x = np.random.default_rng(1).integers(0, 64, (2, 16))
    layers = []
    for grad in (True, False):
        rec = StatsRecorder(1)
        tr = FakeTrainer(model, tmp_path / str(grad))
        tr.out_dir.mkdir()
        rec.before_step(tr)
        if grad:
            model.loss(x, x)
        else:
            with minigpt.no_grad():
                model.loss(x, x)
        tr.step = 1
        rec.after_step(tr, {})
        layers.append(json.loads((tr.out_dir / "stats.jsonl").read_text())["layers"])
    for a, b in zip(*layers):
        np.testing.assert_allclose(a["attn_entropy"], b["attn_entropy"], atol=1e-4)
        assert a["gelu_tail"] == pytest.approx(b["gelu_tail"], abs=1 / (16 * 256))
        assert a["resid_std"] == pytest.approx(b["resid_std"], rel=1e-5)


def test_plot_skips_a_torn_last_line_with_a_warning(run, tmp_path, capsys):
    """A run killed while appending to stats.jsonl leaves a cut last line: the dashboards draw the complete
    records and say what was skipped; a bad line elsewhere, or a line that is not an object, is refused."""
    pytest.importorskip("matplotlib")
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    good = (copy / "stats.jsonl").read_text()
    (copy / "stats.jsonl").write_text(good + '{"step": 9, "params": {"tok_emb.we')
    capsys.readouterr()
    assert main(["plot", str(copy), "--out", str(tmp_path / "d")]) == 0
    err = capsys.readouterr().err
    assert "stats.jsonl, line 4: skipped a torn last line" in err and err.startswith("minigpt: warning: ")
    for bad, message in (('[1, 2]\n', "line 4: expected a JSON object, got a list"),
                         ('{"step": 9, "params": {"tok_emb.we\n', "line 4: not valid JSON"),
                         ('{"step": "9", "params": {}, "layers": []}\n', "line 4: 'step' must be a number"),
                         ('{"step": 9}\n', "the record of step 9 lacks its 'params' object")):
        (copy / "stats.jsonl").write_text(good + bad)
        assert main(["plot", str(copy), "--out", str(tmp_path / "d")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("minigpt: error: ") and message in err and err.count("\n") == 1, err


def test_plot_of_a_file_says_it_is_a_file(tmp_path, capsys):
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert main(["plot", str(tmp_path / "passwd")]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a run folder" in err and "does not exist" not in err and err.count("\n") == 1
