"""The `minigpt` command line: an argparse front over the library. Nothing imports this module.

Each command group has its own ``_add_<group>`` function that registers its sub-commands; the handler of
a command is the ``func`` default of its parser. Errors a user can cause (bad paths, bad options, bad
data) print one line ``minigpt: error: ...`` and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from .errors import MiniGPTError


# --- tokenizer -------------------------------------------------------------------------------------
def _add_tokenizer(sub):
    pass  # filled in by the tokenizer work (issue 3)


# --- model: generate ---------------------------------------------------------------------------------
def _add_generate(sub):
    pass  # issue 4


# --- training ------------------------------------------------------------------------------------
def _add_train(sub):
    pass  # issue 5


# --- downloads -------------------------------------------------------------------------------------
def _add_download(sub):
    pass  # issue 5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minigpt", description="A GPT built from scratch on NumPy, trained on a CPU.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_train, _add_generate, _add_tokenizer, _add_download):
        add(sub)
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
