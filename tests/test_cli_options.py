"""The options generated from config dataclasses (minigpt/cli/options.py) and the train command's use of them."""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

import pytest

from minigpt.cli import build_parser
from minigpt.cli.options import add_dataclass_options, dataclass_from_args
from minigpt.train import TrainConfig

HAND_WRITTEN = {"steps"}  # shares a group with --epochs (cli/train.py)


def train_parser():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_every_train_config_field_has_an_option_with_its_default_and_help():
    p = train_parser()
    dests = p.get_default("train_config_dests")
    fields = {f.name: f for f in dataclasses.fields(TrainConfig) if f.init}
    assert set(dests) == set(fields) - HAND_WRITTEN
    by_dest = {a.dest: a for a in p._actions}
    for name, dest in dests.items():
        f = fields[name]
        action = by_dest[dest]
        assert action.option_strings, name
        assert action.default == f.default, name
        assert f.metadata.get("help"), f"TrainConfig.{name} has no help text"
        assert action.help.startswith(f.metadata["help"]), name
    # the defaults of a fresh parse make the default TrainConfig
    args = p.parse_args(["--out", "x"])
    assert dataclass_from_args(TrainConfig, args, dests) == TrainConfig()


def test_steps_is_written_by_hand_with_the_same_default_style():
    p = train_parser()
    steps = next(a for a in p._actions if a.dest == "steps")
    default = next(f.default for f in dataclasses.fields(TrainConfig) if f.name == "steps")
    assert f"(default: {default})" in steps.help
    text = " ".join(p.format_help().split())
    assert "(default " not in text.replace("(default: ", "")


@dataclass
class Made:
    n: int = field(default=3, metadata={"help": "a count"})
    rate: float = field(default=0.5, metadata={"help": "a rate"})
    name: str = field(default="x", metadata={"help": "a name"})
    flag: bool = field(default=False, metadata={"help": "a flag"})
    on: bool = True
    maybe: int | None = field(default=None, metadata={"help": "an optional count"})
    sample_prompt: str = "The"
    hidden: int = field(default=7, init=False)


def made_parser(**kw):
    p = argparse.ArgumentParser()
    return p, add_dataclass_options(p, Made, rename={"sample_prompt": "prompt"}, **kw)


def test_a_dataclass_round_trips_through_its_options():
    p, dests = made_parser()
    assert set(dests) == {"n", "rate", "name", "flag", "on", "maybe", "sample_prompt"}  # init=False left out
    assert dataclass_from_args(Made, p.parse_args([]), dests) == Made()
    argv = ["--n", "5", "--rate", "0.25", "--name", "y", "--flag", "--no-on", "--maybe", "4", "--prompt", "Hi"]
    got = dataclass_from_args(Made, p.parse_args(argv), dests)
    assert got == Made(n=5, rate=0.25, name="y", flag=True, on=False, maybe=4, sample_prompt="Hi")
    assert type(got.n) is int and type(got.rate) is float and type(got.maybe) is int


def test_generated_options_check_types_and_take_values_set_by_hand():
    p, dests = made_parser(exclude=("n",))
    assert "n" not in dests
    with pytest.raises(SystemExit):
        p.parse_args(["--maybe", "four"])
    assert dataclass_from_args(Made, p.parse_args([]), dests, n=9) == Made(n=9)


def test_generated_help_shows_defaults_but_not_none():
    p, _ = made_parser()
    text = " ".join(p.format_help().split())
    assert "--n N a count (default: 3)" in text
    assert "--rate X a rate (default: 0.5)" in text
    assert "--maybe N an optional count" in text and "(default: None)" not in text


def test_unsupported_field_types_are_refused():
    @dataclass
    class Bad:
        xs: list = field(default_factory=list)

    with pytest.raises(TypeError, match="unsupported option type"):
        add_dataclass_options(argparse.ArgumentParser(), Bad)


@pytest.mark.parametrize("task, module, cls_name, by_hand", [
    ("classify", "minigpt.train.classify", "ClassifyConfig", {"split": (0.7, 0.1, 0.2)}),
    ("instruct", "minigpt.train.instruct", "InstructConfig", {}),
])
def test_every_finetuning_setting_has_an_option_with_its_default_and_help(task, module, cls_name, by_hand):
    import importlib

    cls = getattr(importlib.import_module(module), cls_name)
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    fsub = next(a for a in sub.choices["finetune"]._actions if isinstance(a, argparse._SubParsersAction))
    p = fsub.choices[task]
    dests = p.get_default("settings")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    assert set(dests) == set(fields) - set(by_hand)
    by_dest = {a.dest: a for a in p._actions}
    for name, dest in dests.items():
        f = fields[name]
        assert by_dest[dest].default == f.default, name
        assert f.metadata.get("help") and by_dest[dest].help.startswith(f.metadata["help"]), name
    args = p.parse_args(["--out", "x"])
    assert dataclass_from_args(cls, args, dests, **by_hand) == cls()
