"""docs/backprop-tour.md: every command of the tour runs (on tiny settings), and its Python block too."""
import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest

from minigpt.cli import main

ROOT = Path(__file__).resolve().parent.parent
TOUR = ROOT / "docs" / "backprop-tour.md"

# the tour's settings -> tiny ones (same commands, fewer steps, a shorter text)
TINY = [("--steps 300", "--steps 4"), ("--stats-every 20", "--stats-every 2"), ("--vocab-size 512", "--vocab-size 300"),
        ("profile --config nano --steps 3", "profile --config nano --steps 1 --seq-len 16 --batch-size 1")]


def blocks(kind):
    return re.findall(rf"```{kind}\n(.*?)```", TOUR.read_text(), flags=re.S)


def test_tour_commands_run(tmp_path, monkeypatch):
    text = tmp_path / "README.md"
    text.write_text((ROOT / "README.md").read_text()[:12000])  # the tour trains on the README; a part will do
    monkeypatch.chdir(tmp_path)
    commands = [line for b in blocks("bash") for line in b.splitlines() if line.startswith("minigpt ")]
    assert len(commands) >= 9
    kinds = set()
    for cmd in commands:
        for a, b in TINY:
            cmd = cmd.replace(a, b)
        argv = shlex.split(cmd)[1:]
        if argv[0] == "graph" and shutil.which("dot") is None:
            argv = [a.replace(".svg", ".dot") for a in argv]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(argv) == 0, cmd
        kinds.add(argv[0])
        if argv[0] == "gradcheck":
            assert out.getvalue().strip().splitlines()[-1].startswith("PASS")
    assert kinds == {"train", "graph", "gradcheck", "profile", "inspect", "plot"}
    assert (tmp_path / "tour" / "run" / "stats.jsonl").exists()
    assert (tmp_path / "tour" / "attn-before" / "attention.npy").exists()
    assert (tmp_path / "tour" / "attn-after" / "inspect.json").exists()
    if shutil.which("dot") is not None:
        assert "<svg" in (tmp_path / "tour" / "step-blocks.svg").read_text()
    pytest.importorskip("matplotlib")
    assert (tmp_path / "tour" / "run" / "dash-update-ratio.png").exists()


def test_tour_python_block_runs(capsys):
    (code,) = blocks("python")
    exec(compile(code, str(TOUR), "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split(":")[0] for l in lines] == ["block 1", "block 0"]
    for l in lines:
        gout, gin = (float(v) for v in re.findall(r"= ([0-9.]+)", l))
        assert gin > 0 and gout > 0
