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
import copy
import importlib
import sys
import traceback
from pathlib import Path

from .. import __version__, runtime
from ..errors import MiniGPTError

# The command groups, in the order `minigpt --help` lists them.
COMMANDS = (
    "train",
    "generate",
    "quantize",
    "tokenizer",
    "download",
    "inspect",
    "finetune",
    "classify",
    "chat",
    "exercises",
)


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default ("(default: 8)"), unless the help already speaks of its
    default or there is none to show (None, a flag); options without a help text get the default alone.
    Options generated from a config dataclass get the same treatment as hand-written ones."""

    def __init__(self, prog, indent_increment=2, max_help_position=30, width=None):
        super().__init__(prog, indent_increment, max_help_position, width)

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):  # argparse undercounts their indent: names
            for sub in action._get_subactions():            # such as "tokenizer" would wrap their help
                width = len(self._format_action_invocation(sub)) + self._current_indent + 2 * self._indent_increment
                self._action_max_length = max(self._action_max_length, width)

    @staticmethod
    def _shows_default(action) -> bool:
        return (bool(action.option_strings) and action.nargs != 0 and action.default is not None
                and action.default is not argparse.SUPPRESS and action.default is not False)

    def _get_help_string(self, action):
        text = action.help or ""
        if not self._shows_default(action) or "default" in text.lower():
            return text
        return (text + " " if text else "") + "(default: %(default)s)"

    def _format_action(self, action):
        if not (action.help or "").strip() and self._shows_default(action):
            action = copy.copy(action)
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


class ArgumentParser(argparse.ArgumentParser):
    """minigpt's parser: the defaults-showing help formatter, for every sub-command too (sub-parsers are
    made with the class of their parent)."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message):
        """A bad option or value: one line ``minigpt: error: ...`` naming the command's ``--help``, exit
        status 2 (argparse's default prints the whole usage block first)."""
        self.exit(2, f"minigpt: error: {message} (see `{self.prog} --help`)\n")


def _subcommands(parser):
    """(name, one-line help, sub-parser) of every sub-command of ``parser``, recursively."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sp in action.choices.items():
                yield name, helps.get(name), sp
                yield from _subcommands(sp)


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="minigpt", description="A GPT built from scratch on NumPy, trained on a CPU.")
    p.add_argument("--version", action="version", version=f"minigpt {__version__}")
    p.add_argument("--debug", action="store_true", help="print the traceback of an error (also accepted after "
                   "the command)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add(sub)
    for _name, helptext, sp in _subcommands(p):  # `minigpt X --help` opens with the line `minigpt --help` shows
        if sp.description is None and helptext:
            sp.description = helptext[0].upper() + helptext[1:] + "."
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
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv  # accepted anywhere on the line, also after the command
    try:
        runtime.configure()  # first, before NumPy loads OpenBLAS: the tuned runtime (same results without)
        parser = build_parser()  # light: each command loads NumPy and the rest when it runs (below)
        try:
            args = parser.parse_args([a for a in argv if a != "--debug"])
        except SystemExit as e:  # a usage error, printed on one line by ArgumentParser.error: its status
            if e.code == 2:
                return 2
            raise                # --help and --version end the program as argparse does
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
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
