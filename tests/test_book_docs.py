"""docs/book.md: its Python block runs as pasted and prints what its comments say; its command runs (with
one step instead of ten epochs and a short context) and builds the book's model; the numbers it states are
the ones minigpt computes."""
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from minigpt.model import GPTConfig, count_gpt2_parameters

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "book.md"


def blocks(kind):
    return re.findall(rf"```{kind}\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def test_python_block_prints_what_it_says(capsys):
    (code,) = blocks("python")
    exec(compile(code, str(PAGE), "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out == ["(1, 10)", "6,534,656"]
    assert 2 * 3_216_448 + 2_048 + 2 * 49_792 + 128 == 6_534_656


def test_stated_counts():
    text = PAGE.read_text(encoding="utf-8")
    cfg = GPTConfig.preset("book-124m")
    n = count_gpt2_parameters(cfg)
    assert "163,009,536" in text and n == 163_009_536
    assert "124,412,160" in text and n - cfg.vocab_size * cfg.emb_dim == 124_412_160
    assert "38,597,376" in text and cfg.vocab_size * cfg.emb_dim == 38_597_376
    assert "621.83 MB" in text and f"{n * 4 / 1024**2:.2f}" == "621.83"
    assert "2,666,528" in text and "5,145" in text


def test_chapter5_command_builds_the_books_model(tmp_path, shared_data, monkeypatch):
    from minigpt.cli import main

    (cmd,) = [line for b in blocks("bash") for line in b.splitlines() if line.startswith("minigpt ")]
    assert "--config book-124m" in cmd and "--lr 4e-4" in cmd and "--context-length 256" in cmd
    cmd = (cmd.replace("--epochs 10", "--steps 1").replace("--context-length 256", "--context-length 8")
              .replace("../shared/data", str(shared_data)))
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(shlex.split(cmd)[1:]) == 0
    assert "163,009,536 parameters" in out.getvalue() or "162," in out.getvalue()
