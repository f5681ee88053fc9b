"""minigpt.profile(): per-op counts, times, bytes; nothing stays wrapped afterwards."""
import json

import numpy as np
import pytest

import minigpt
from minigpt.cli import main
from minigpt.model import GPT, GPTConfig
from minigpt.tensor import Function


def test_profile_counts_ops_of_a_training_step():
    minigpt.random.manual_seed(0)
    cfg = GPTConfig.preset("nano")
    model = GPT(cfg)
    x = np.random.default_rng(0).integers(0, 512, (2, 16))
    model.loss(x, x).backward()  # warm up the kernels
    before = {c: (c.__dict__.get("forward"), c.__dict__.get("backward")) for c in Function.__subclasses__()}
    with minigpt.profile() as prof:
        for _ in range(2):
            model.loss(x, x).backward()
    rows = {(r["op"], r["phase"]): r for r in prof.rows()}
    L = cfg.n_layers
    ln = rows[("LayerNormOp", "forward")]
    assert ln["calls"] == 2 * (2 * L + 1)                      # two per block and the final one, twice
    assert ln["bytes"] == ln["calls"] * 2 * 16 * 64 * 4          # (B, T, C) float32 outputs
    assert rows[("LayerNormOp", "backward")]["calls"] == ln["calls"]
    assert rows[("CausalAttentionOp", "forward")]["calls"] == 2 * L
    assert rows[("LinearCrossEntropyOp", "backward")]["calls"] == 2
    assert all(r["seconds"] >= 0 for r in rows.values())
    assert sum(r["share"] for r in prof.rows()) == pytest.approx(1.0, abs=1e-6)
    assert list(rows)[-1] == ("(outside ops)", "")
    table = prof.table()
    assert table.splitlines()[0].split() == ["op", "phase", "calls", "total", "ms", "mean", "ms", "share", "out", "MB"]
    assert "LayerNormOp" in table and table.splitlines()[-2].startswith("total")
    # the runtime the block ran with: the tuned one users get (no MINIGPT_RUNTIME=0 in the test process)
    assert prof.runtime["configured"] is True
    assert table.splitlines()[-1].startswith("runtime: tuned (applied by ")
    # every class has its own methods back
    after = {c: (c.__dict__.get("forward"), c.__dict__.get("backward")) for c in Function.__subclasses__()}
    assert after == before
    assert not any(getattr(f, "__minigpt_profiled__", False) for pair in after.values() for f in pair if f)


def test_profile_cannot_nest():
    with minigpt.profile():
        with pytest.raises(minigpt.MiniGPTError, match="cannot be nested"):
            with minigpt.profile():
                pass


def test_profile_cli(tmp_path, capsys):
    out = tmp_path / "prof.json"
    assert main(["profile", "--config", "nano", "--steps", "2", "--batch-size", "1", "--seq-len", "16",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "nano: 2 training step(s) of batch 1 x 16 tokens" in text and "LinearCrossEntropyOp" in text
    assert "runtime: tuned" in text
    data = json.loads(out.read_text())
    assert data["runtime"]["configured"] is True
    assert {(r["op"], r["phase"]) for r in data["rows"]} >= {("LinearOp", "forward"), ("LinearOp", "backward")}
    assert main(["profile", "--config", "nano", "--seq-len", "65"]) == 2


def test_profile_says_when_the_process_is_untuned():
    # a fresh interpreter with the runtime opted out: the report says its times are not the default's
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, MINIGPT_RUNTIME="0", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-m", "minigpt", "profile", "--config", "nano", "--steps", "1",
                          "--batch-size", "1", "--seq-len", "8"], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("runtime: untuned (MINIGPT_RUNTIME=0): the untouched process, slower than minigpt's default")
