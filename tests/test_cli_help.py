"""The command line's self-description: --version, a one-line help for every sub-command, every option's
default in --help, and bad settings rejected before any slow work starts."""
import argparse

import pytest

import minigpt
from minigpt.cli import HelpFormatter, _subcommands, build_parser, main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"minigpt {minigpt.__version__}"


def test_every_subcommand_has_a_one_line_description():
    subs = list(_subcommands(build_parser()))
    assert {"train", "generate", "tokenizer", "download", "encode", "decode"} <= {n for n, _, _ in subs}
    for name, helptext, parser in subs:
        assert helptext and "\n" not in helptext and len(helptext) <= 60, (name, helptext)
        assert parser.description, name  # `minigpt NAME --help` says what NAME does


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["finetune", "classify", "--help"]])
def test_help_loads_no_numerical_stack(argv):
    """Building the parser imports only the settings (minigpt/settings.py): no NumPy, Numba or training code."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, runpy; sys.argv = ['minigpt', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('minigpt', run_name='__main__')\n"
            "except SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('numpy', 'numba', 'minigpt.train', 'minigpt.tensor') if m in sys.modules)\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    repo = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code, *argv], cwd=repo, capture_output=True, text=True, timeout=60)
    assert "usage: minigpt" in r.stdout and "HEAVY []" in r.stderr, r.stderr


def _options(parser):
    return [a for a in parser._actions if a.option_strings]


def test_help_shows_every_default():
    parser = build_parser()
    checked = 0
    for name, _, sp in _subcommands(parser):
        fmt = HelpFormatter(sp.prog)
        for action in _options(sp):
            if HelpFormatter._shows_default(action):
                rendered = " ".join(fmt._format_action(action).split())
                assert "default" in rendered, (name, action.option_strings, rendered)
                checked += 1
    assert checked >= 20
    text = " ".join(parser._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "--batch-size N windows per micro-batch on each rank (default: 8)" in text  # generated from TrainConfig
    assert "--lr X peak learning rate (default: 0.001)" in text
    assert "--vocab-size VOCAB_SIZE vocabulary size of a trained BPE (default: 2048)" in text
    assert "(default: None)" not in text and "(default: False)" not in text


def test_top_level_listing_keeps_each_description_on_its_line():
    listing = build_parser().format_help()
    for name in ("train", "generate", "tokenizer", "download"):
        line = next(ln for ln in listing.splitlines() if ln.strip().startswith(name))
        assert len(line.split()) > 1, line  # the help is on the command's own line


@pytest.mark.parametrize("argv, message", [
    (["--config", "nope"], "unknown config preset 'nope'"),
    (["--config", "nano", "--context-length", "0"], "context_length"),
    (["--dropout", "1.5"], "drop_rate"),
    (["--vocab-size", "100"], "--vocab-size must be an integer of at least 257"),
    (["--tokenizer", "missing-tok.json"], "no such file or folder"),
    (["--epochs", "0"], "--epochs must be a positive number"),
    (["--val-fraction", "1.5"], "--val-fraction must be a number in [0, 1)"),
])
def test_bad_settings_are_reported_before_the_corpus_is_read(tmp_path, capsys, monkeypatch, argv, message):
    import minigpt.train.run as run

    def no_corpus(*a, **k):
        raise AssertionError("the corpus was loaded before the settings were checked")

    monkeypatch.setattr(run, "load_corpus", no_corpus)
    assert main(["train", "--out", str(tmp_path / "o"), "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigpt: error: ") and message in err, err
    assert not (tmp_path / "o").exists()


def test_formatter_leaves_flags_and_none_alone():
    p = argparse.ArgumentParser(formatter_class=HelpFormatter)
    p.add_argument("--flag", action="store_true", help="a flag")
    p.add_argument("--maybe", default=None, help="unset")
    p.add_argument("--n", type=int, default=3)
    p.add_argument("--m", type=int, default=4, help="m (default: four)")
    text = " ".join(p.format_help().split())
    assert "--flag a flag --maybe MAYBE unset --n N (default: 3) --m M m (default: four)" in text
