"""Every `minigpt ...` command shown in README.md runs (on tiny settings), so the manual cannot rot.

How it works
------------
- Commands are collected from the README's fenced code blocks (```bash, ```sh, ```console or ``` with
  no language; ```python and others are not shell). A command is a line, with its `\\` continuation
  lines, or one `&&` / `;` / `|` part of it, whose first word is `minigpt` (after `VAR=value`
  prefixes, which are set in the environment). Optional parts in `[brackets]` (synopsis notation) are
  left out; a `# comment` is dropped, except that `# prints "TEXT"` makes the test check that the
  command's standard output contains TEXT.
- They run in README order, in process (`minigpt.cli.main`), inside one scratch folder shared by all of
  them (so `train --out runs/quickstart` makes the run a later `generate --model runs/quickstart`
  uses), with the cache (`MINIGPT_CACHE`) in that folder, empty standard input (or the text of an
  `echo "TEXT" |` in front of the command), and small text files
  for the names the README uses as placeholders (`corpus.txt`, `more.txt`, `input.txt`, `notes.txt`,
  `book.txt`). `../shared/data` is replaced by the real shared data folder; without it, the commands
  that mention it are skipped (with that reason).
- Tiny settings: the flags in `TINY_FLAGS` for the command's sub-command are appended (argparse keeps
  the last value, so `--steps 2` wins over the README's `--steps 500`). A new sub-command whose README
  examples are slow should get an entry there.
- Excluded: a command listed in `EXCLUDED` (exactly as the README writes it, whitespace collapsed and
  `[optional]` parts removed) is not run, and is reported as skipped with its reason (network, long
  runs, other programs). Lines in a shell block that call minigpt through another program
  (`mpiexec ... minigpt ...`) cannot run in process: they must be listed there too, or the test fails.
- Every command must exit with status 0. A README command that fails here is either wrong in the
  README or needs an entry above; `test_exclusions_are_still_in_the_readme` keeps the list honest.
"""
from __future__ import annotations

import io
import re
import shlex
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"

# README command (normalised) -> why it is not run by this test
EXCLUDED = {
    "minigpt download the-verdict": "downloads from the network",
    "minigpt download gpt2 --size 124M": "downloads 500 MB from the network",
    "minigpt download gpt2 --size 355M --no-verify": "downloads 1.4 GB from the network",
    # started by mpiexec: tests/test_distributed.py runs `mpiexec -n 2 ... minigpt train` on tiny settings
    "mpiexec -n 2 minigpt train --out runs/ddp --text ../shared/data/the-verdict/the-verdict.txt --config tiny "
    "--batch-size 4 --steps 500": "an MPI launch (covered by tests/test_distributed.py)",
    "mpiexec -f hosts -n 8 minigpt train --out runs/ddp8 --text corpus.txt --config small --batch-size 4":
        "needs a host file of several machines",
    "minigpt finetune classify ... --train lora --merge": "a fragment: the flags to add to the command above it",
    "minigpt finetune instruct --init ~/.cache/minigpt/gpt2/355M --data instruction-data.json --out "
    "runs/gpt2-355m-ins --lr 5e-5 --epochs 2 --max-length 256": "needs GPT-2 355M's weights (a 1.4 GB download)",
    "minigpt chat --model runs/gpt2-355m-ins": "needs the GPT-2 355M run of the command above it",
}

# sub-command words -> flags appended to make a README example quick
TINY_FLAGS = {
    ("train",): ["--config", "nano", "--context-length", "32", "--steps", "2", "--batch-size", "2",
                 "--vocab-size", "300", "--eval-every", "1", "--eval-batches", "1", "--sample-tokens", "4",
                 "--quiet"],
    ("generate",): ["--max-new-tokens", "4"],
    ("tokenizer", "train"): ["--vocab-size", "300", "--quiet"],
    ("finetune", "classify"): ["--epochs", "0.01", "--quiet"],
    ("finetune", "instruct"): ["--epochs", "0.01", "--eval-limit", "2", "--max-new-tokens", "4", "--quiet"],
}

PLACEHOLDER_TEXTS = ("corpus.txt", "more.txt", "input.txt", "notes.txt", "book.txt")
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "zsh"}


def _blocks(text: str):
    """(language, [lines]) of every fenced code block."""
    lang, lines = None, []
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\S*)", line)
        if fence and lang is None:
            lang, lines = fence.group(1).lower(), []
        elif fence:
            yield lang, lines
            lang = None
        elif lang is not None:
            lines.append(line)


def _logical_lines(lines):
    buf = ""
    for line in lines:
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        yield buf + line
        buf = ""
    if buf:
        yield buf


def _split_comment(line: str) -> tuple[str, str]:
    """(command, comment): the first `#` outside quotes starts the comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i], line[i + 1:]
    return line, ""


def _split_chain(body: str) -> list[str]:
    """The parts of a shell line between `&&`, `||`, `;` and `|`, outside quotes and [brackets]."""
    parts, cur, quote, depth, i = [], "", None, 0, 0
    while i < len(body):
        ch = body[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        elif depth == 0 and (body.startswith("&&", i) or body.startswith("||", i)):
            parts.append(cur)
            cur, i = "", i + 2
            continue
        elif depth == 0 and ch in ";|":
            parts.append(cur)
            cur, i = "", i + 1
            continue
        cur += ch
        i += 1
    return parts + [cur]


def normalise(cmd: str) -> str:
    cmd = re.sub(r"\s*\[[^\]]*\]", "", cmd)  # [--optional parts]
    return " ".join(cmd.split())


STDIN = {}  # README command -> the text that an `echo "..." |` in front of it pipes in


def readme_commands(text: str | None = None):
    """[(command, expected stdout text or None)] in README order, and [lines calling minigpt indirectly]."""
    text = README.read_text(encoding="utf-8") if text is None else text
    found, indirect = [], []
    for lang, lines in _blocks(text):
        if lang not in SHELL_LANGS:
            continue
        for line in _logical_lines(lines):
            body, comment = _split_comment(line)
            expect = re.search(r'prints "([^"]+)"', comment)
            prev = ""
            for part in _split_chain(body):
                cmd = normalise(part)
                piped = re.match(r"""^echo\s+(["'])(.*)\1$""", prev)
                prev = cmd
                words = cmd.split()
                while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                    words = words[1:]
                if words[:1] == ["minigpt"] or words[:3] == ["python", "-m", "minigpt"]:
                    found.append((cmd, expect.group(1) if expect else None))
                    if piped:  # `echo "text" | minigpt ...`: the test pipes the same text in
                        STDIN[cmd] = piped.group(2) + "\n"
                elif re.search(r"\bminigpt\s+[a-z]", cmd) and not re.search(r"pip install|pytest", cmd):
                    indirect.append(cmd)
    return found, indirect


COMMANDS, INDIRECT = readme_commands()


def test_the_readme_has_commands_to_check():
    names = [c for c, _ in COMMANDS]
    assert any(c.startswith("minigpt train --out runs/quickstart") for c in names)  # the quick start
    assert any(c.startswith("minigpt generate") for c in names)
    assert any(c.startswith("minigpt tokenizer decode") for c in names)


def test_exclusions_are_still_in_the_readme():
    names = {c for c, _ in COMMANDS} | set(INDIRECT)
    stale = [c for c in EXCLUDED if c not in names]
    assert not stale, f"EXCLUDED lists commands the README no longer has: {stale}"


def test_indirect_calls_are_excluded_with_a_reason():
    missing = [c for c in INDIRECT if c not in EXCLUDED]
    assert not missing, (f"README lines run minigpt through another program, which this test cannot run in "
                         f"process: {missing}; add them to EXCLUDED with the reason")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from minigpt.data.shared import shared_data_dir

    root = tmp_path_factory.mktemp("readme")
    text = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, and the function returns a value. "
                   f"Hello world, this is sentence {i % 7} of a small corpus.\n" for i in range(300))
    for name in PLACEHOLDER_TEXTS:
        (root / name).write_text(text, encoding="utf-8")
    # not_made: output folders of commands that were skipped -> why (the commands that use them skip too)
    return {"root": root, "shared": shared_data_dir(), "not_made": {}}


def _outputs(words: list[str], why: str = "skipped") -> dict:
    """The folders a command writes (the value of its --out), each with the reason it was not made."""
    return {words[i + 1]: why for i, w in enumerate(words[:-1]) if w == "--out"}


def _tiny(argv: list[str]) -> list[str]:
    for words, flags in sorted(TINY_FLAGS.items(), key=lambda kv: -len(kv[0])):
        if tuple(argv[:len(words)]) == words:
            if "--epochs" in argv and "--steps" in flags:  # --steps and --epochs exclude each other
                i = flags.index("--steps")
                flags = flags[:i] + flags[i + 2:] + ["--epochs", "0.01"]
            return argv + flags
    return argv


@pytest.mark.parametrize("command, expect", COMMANDS, ids=[c for c, _ in COMMANDS])
def test_readme_command_runs(command, expect, workspace, monkeypatch, capsys):
    if command in EXCLUDED:
        workspace["not_made"].update(_outputs(shlex.split(command), "excluded: " + EXCLUDED[command]))
        pytest.skip(f"excluded from the README check: {EXCLUDED[command]}")
    from minigpt.cli import main

    stdin = STDIN.get(command, "")
    words = shlex.split(command)
    missing = [d for w in words for d in workspace["not_made"] if w == d or w.startswith(d.rstrip("/") + "/")]
    if missing:  # e.g. `classify --model runs/spam` after the finetuning that makes runs/spam was skipped
        workspace["not_made"].update(_outputs(words))
        pytest.skip(f"needs {missing[0]}, which a skipped command above makes ({workspace['not_made'][missing[0]]})")
    if "../shared/data" in command:
        if workspace["shared"] is None:
            workspace["not_made"].update(_outputs(words, "it needs the shared data folder"))
            pytest.skip("needs the shared data folder (MINIGPT_DATA or ../shared/data)")
        command = command.replace("../shared/data", str(workspace["shared"]))
    root = workspace["root"]
    monkeypatch.chdir(root)
    monkeypatch.setenv("MINIGPT_CACHE", str(root / "cache"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    words = shlex.split(command)  # again: the shared data's path is in it now
    while re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        monkeypatch.setenv(name, value)
    argv = words[3:] if words[:3] == ["python", "-m", "minigpt"] else words[1:]
    try:
        rc = main(_tiny(argv))
    except SystemExit as e:  # argparse: bad usage (2) or --help / --version (0)
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 0, (f"README command failed (exit {rc}): {command}\n{err[-2000:]}\nFix the README, or add "
                     "tiny settings (TINY_FLAGS) or an exclusion with its reason (EXCLUDED) in this file")
    if expect is not None:
        assert expect in out, f"{command}: the README says it prints {expect!r}; it printed {out[-500:]!r}"


def test_parser_rules():
    text = """
```bash
pip install -e ".[plot]" && minigpt train --out runs/x   # trains
FOO=1 minigpt generate --model m \\
    [--seed 1] [--top-k 40]
echo hi | minigpt tokenizer encode --text "a<|x|>b" [--special "<|y|>"]   # prints "hi"
mpiexec -n 2 minigpt train --out r
```

```python
minigpt.train.pretrain("x")
```
"""
    found, indirect = readme_commands(text)
    assert found == [("minigpt train --out runs/x", None), ("FOO=1 minigpt generate --model m", None),
                     ("minigpt tokenizer encode --text \"a<|x|>b\"", "hi")]
    assert indirect == ["mpiexec -n 2 minigpt train --out r"]
