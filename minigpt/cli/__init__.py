"""The `minigpt` command line: an argparse front over the library. Nothing in the library imports it.

One module per command group (``cli/train.py``, ``cli/generate.py``, ...), each with an ``add(sub)``
function that registers its sub-commands; the handler of a command is the ``func`` default of its parser.
Errors a user can cause (bad paths, bad options, bad data) print one line ``minigpt: error: ...`` and exit
with status 2. To add a command group: write ``cli/<group>.py`` with ``add(sub)`` and list it below.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import MiniGPTError

# The command groups, in the order `minigpt --help` lists them.
COMMANDS = (
    "train",
    "generate",
    "tokenizer",
    "download",
    "finetune",
    "classify",
    "chat",
)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minigpt", description="A GPT built from scratch on NumPy, trained on a CPU.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (MiniGPTError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"minigpt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minigpt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
