"""docs/book.md: its Python block runs as pasted and prints what its comments say; its command runs (with
one step instead of ten epochs and a short context) and builds the book's model; the numbers it states are
the ones minigpt computes."""
import re
import shlex
from pathlib import Path


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
    # the chapter 5 table's other models, at the chapter's context of 256
    native = GPTConfig.preset("book-124m", context_length=256, tie_weights=True, init="gpt2")
    assert "123,822,336" in text and count_gpt2_parameters(native) == 123_822_336
    untied = GPTConfig.preset("book-124m", context_length=256, init="gpt2")
    assert "162,419,712" in text and count_gpt2_parameters(untied) == 162_419_712


def test_chapter5_command_sets_up_the_books_run(shared_data, monkeypatch):
    """The page's command, parsed and handed to the training run exactly as typed: the book's model and
    settings. (The run itself, a 163M-parameter model for 90 steps, is too long for the test suite; the
    notebooks and tests/test_book.py train the same model at small sizes.)"""
    import minigpt.train
    from minigpt.cli import main
    from minigpt.errors import MiniGPTError

    (cmd,) = [line for b in blocks("bash") for line in b.splitlines() if line.startswith("minigpt ")]
    seen = {}

    def fake_pretrain(out_dir, **kw):
        seen.update(kw, out_dir=out_dir)
        raise MiniGPTError("stopped by the test before training")

    monkeypatch.setattr(minigpt.train, "pretrain", fake_pretrain)
    assert main(shlex.split(cmd.replace("../shared/data", str(shared_data)))[1:]) == 2
    cfg = GPTConfig.preset(seen["config"], **{**seen["config_overrides"], "vocab_size": 50257})
    assert (cfg.tie_weights, cfg.init, cfg.qkv_bias, cfg.context_length, cfg.drop_rate) == (False, "torch", False, 256, 0.1)
    assert count_gpt2_parameters(cfg) == 163_009_536 - (1024 - 256) * 768
    t = seen["train_cfg"]
    assert (t.lr, t.min_lr, t.warmup, t.grad_clip, t.batch_size, t.weight_decay, t.eval_every) == (
        4e-4, 4e-4, 0, 0.0, 2, 0.1, 5)
    assert seen["epochs"] == 10 and seen["tokenizer"] == "gpt2" and seen["val_fraction"] == 0.1
