"""The `minigpt` command line: an argparse front over the library. Nothing in the library imports it.

One module per command group (``cli/train.py``, ``cli/generate.py``, ...), each with an ``add(sub)``
function that registers its sub-commands; the handler of a command is the ``func`` default of its parser.
Errors a user can cause (bad paths, bad options, bad data, a file that cannot be read or written, a size
too large for memory) print one line ``minigpt: error: ...`` and exit with status 2; any other exception is
an internal error: one line saying so, exit status 3 (``minigpt --debug ...`` prints the traceback too).
To add a command group: write ``cli/<group>.py`` with ``add(sub)`` and list it below.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from pathlib import Path

from .. import runtime
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
    p.add_argument("--debug", action="store_true", help="print the traceback of an error (also accepted after "
                   "the command)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add(sub)
    return p


def _user_error(e: BaseException) -> str | None:
    """The one-line message of an error caused by a file, an argument or the machine, else None (a bug)."""
    if isinstance(e, MiniGPTError):
        return str(e)
    if isinstance(e, MemoryError):
        return "out of memory (a size in the arguments or in a file is too large for this machine)"
    if isinstance(e, OSError):  # a file that cannot be read or written: name it
        name = e.filename if e.filename is not None else ""
        what = e.strerror or str(e)
        return f"{name}: {what}" if name else what
    return None


def main(argv=None) -> int:
    runtime.configure()  # first, before NumPy loads OpenBLAS: the tuned runtime (results are the same without)
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv  # accepted anywhere on the line, also after the command
    parser = build_parser()
    args = parser.parse_args([a for a in argv if a != "--debug"])
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("minigpt: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place that turns every failure into one line
        if debug:
            traceback.print_exc()
        msg = _user_error(e)
        if msg is not None:
            print(f"minigpt: error: {msg}", file=sys.stderr)
            return 2
        where = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
        at = f" at {Path(where.filename).name}:{where.lineno}" if where else ""
        text = (str(e).splitlines() or [""])[0]
        print(f"minigpt: internal error ({type(e).__name__}: {text}{at}); please report it. `minigpt --debug ...` "
              "shows the traceback", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
