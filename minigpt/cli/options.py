"""Command-line options generated from a settings dataclass, so a setting is declared once: its field
(name, type, default, ``metadata["help"]``) makes the option, and the parsed arguments make the dataclass.

    >>> from dataclasses import dataclass, field
    >>> @dataclass
    ... class Cfg:
    ...     lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    ...     sample_prompt: str = "The"
    >>> p = argparse.ArgumentParser()
    >>> dests = add_dataclass_options(p, Cfg, rename={"sample_prompt": "prompt"})
    >>> dataclass_from_args(Cfg, p.parse_args(["--lr", "0.01", "--prompt", "Hi"]), dests)
    Cfg(lr=0.01, sample_prompt='Hi')

``--lr`` and ``--prompt`` show their defaults in ``--help``. Field types: int, float, str, bool (a
``--flag`` / ``--no-flag`` pair) and ``X | None`` (an X, default None).
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from ..errors import MiniGPTError

__all__ = ["add_dataclass_options", "dataclass_from_args", "seed_value"]


def seed_value(text: str) -> int:
    """The argparse type of a hand-written ``--seed``: an integer >= 0 (what NumPy's generators accept).
    A bad value is argparse's one-line error: ``argument --seed: expected an integer >= 0, got '-1'``."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _option_type(hint):
    """(argparse type, is bool) for a field's resolved type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"unsupported option type {hint!r}")
        hint = args[0]
    if hint is bool:
        return None, True
    if hint in (int, float, str):
        return hint, False
    raise TypeError(f"unsupported option type {hint!r}")


def add_dataclass_options(parser, cls, *, exclude=(), rename=None, group=None) -> dict:
    """Add one ``--option`` per field of dataclass ``cls`` (``snake_case`` -> ``--snake-case``) to
    ``parser`` (or to ``group``, an argument group of it), with the field's type, default and
    ``metadata["help"]``. ``exclude``: fields left out (write those options by hand); ``rename``:
    ``{field: option name without dashes}``. Returns ``{field: args attribute}`` for
    :func:`dataclass_from_args`."""
    rename = rename or {}
    hints = typing.get_type_hints(cls)
    target = group if group is not None else parser
    dests = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        name = rename.get(f.name, f.name.replace("_", "-"))
        dest = name.replace("-", "_")
        typ, is_bool = _option_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", "")
        if is_bool:  # a --flag / --no-flag pair: on or off
            help_text = f"{help_text} (default: {'on' if default else 'off'})".strip()
        elif default is not None:  # a None default is described by the help text itself
            help_text = f"{help_text} (default: %(default)s)".strip()
        if is_bool:
            target.add_argument(f"--{name}", dest=dest, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)
        else:
            metavar = {int: "N", float: "X", str: "TEXT"}[typ]
            target.add_argument(f"--{name}", dest=dest, type=typ, default=default, metavar=metavar,
                                help=help_text)
        dests[f.name] = dest
    return dests


def dataclass_from_args(cls, args, dests: dict, **values):
    """Build ``cls`` from the parsed ``args`` (the attributes ``dests`` names) and ``values`` (fields set
    by hand, e.g. from options written separately). Invalid values raise the dataclass's MiniGPTError."""
    kwargs = {field: getattr(args, dest) for field, dest in dests.items()}
    kwargs.update(values)
    try:
        return cls(**kwargs)
    except TypeError as e:  # pragma: no cover - a programming error, not a user's
        raise MiniGPTError(f"{cls.__name__}: {e}") from None
