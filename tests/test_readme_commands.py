"""Every command and every Python block of README.md and docs/**/*.md runs (on tiny settings), so the guide
and the manual cannot rot.

How it works
------------
- Pages: README.md first, then every docs/**/*.md in path order, except the pages in `OWN_TEST` (another
  test runs them). Each page's items run in page order.
- Commands are collected from fenced shell blocks (```bash, ```sh, ```console or ``` with no language;
  ```text, ```python and others are not shell). A command is a line, with its `\\` continuation lines,
  or one `&&` / `;` / `|` part of it, whose first word is `minigpt` (after `VAR=value` prefixes, which
  are set in the environment). A `# comment` is dropped, except that `# prints "TEXT"` makes the test
  check that the command's standard output contains TEXT. Synopsis notation (`[--opt a|b]`) is not
  allowed in shell blocks: a reader pasting it runs a pipe (`test_no_synopsis_in_shell_blocks`).
- ```python blocks of a page run in order in one namespace per page (so a later block may use an earlier
  one's names), with standard output captured: `# prints "TEXT"` on any of its lines makes the test
  check that the block printed TEXT.
- Workspace: one scratch folder per page (README's is `README/`), with the cache (`MINIGPT_CACHE`) shared
  by all pages, `MINIGPT_DATA` set to the shared data folder, empty standard input (or the text of an
  `echo "TEXT" |` in front of the command), and small text files for the placeholder names pages use
  (`corpus.txt`, `more.txt`, ...). The README's quick start runs first (also when only a docs page is
  selected), and the folders the README makes under `runs/` are linked into every page's folder, so a
  page may use `runs/quickstart` as a reader who followed the README has it.
- `../shared/data` in a command or block is replaced by the real shared data folder; without that folder,
  what mentions it is skipped (with that reason). `minigpt download NAME` installs from the shared folder
  (`--from` is added: no test uses the network), and `~/.cache/minigpt` stands for the workspace's cache,
  so `fetch(NAME)` in a block finds what a download above installed. A data set given by name (`--data sms-spam`, `--text
  the-verdict`) is found through `MINIGPT_DATA`.
- Tiny settings: the flags in `TINY_FLAGS` for the command's sub-command are appended (argparse keeps the
  last value, so `--steps 2` wins over a page's `--steps 500`). A new sub-command whose examples are slow
  should get an entry there.
- Excluded: a command listed in `EXCLUDED` (exactly as the page writes it, whitespace collapsed) or a
  Python block listed in `EXCLUDED_PYTHON` (by its first line) is not run, and is reported as skipped with
  its reason (network, long runs, other programs). Lines in a shell block that call minigpt through
  another program (`mpiexec ... minigpt ...`) cannot run in process: they must be listed too, or the test
  fails. `test_exclusions_are_still_in_the_pages` keeps the lists honest.
- Every command must exit with status 0 and every block run without an exception. A command that fails
  here is either wrong on its page or needs an entry above.
"""
from __future__ import annotations

import io
import os
import re
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

# page -> the test that runs its commands and blocks instead
OWN_TEST = {
    "docs/backprop-tour.md": "tests/test_tour.py runs the tour's commands and its Python block",
    "docs/runtime.md": "tests/test_runtime_docs.py runs each block in a fresh interpreter (the runtime is "
                       "process-wide)",
    "docs/exercises.md": "tests/test_exercises_docs.py runs its commands and blocks and compares their output",
    **{f"docs/course/{name}.md": "tests/test_course.py runs the page's blocks and checks every number it prints"
       for name in ("index", "linear", "gelu", "layernorm", "cross-entropy", "attention", "embedding",
                    "residual", "lora", "adamw")},
}

# command (normalised) -> why it is not run by this test
EXCLUDED = {
    "minigpt download gpt2 --size 124M": "downloads 500 MB from the network",
    "minigpt download gpt2 --size 355M --no-verify": "downloads 1.4 GB from the network",
    # started by mpiexec: tests/test_distributed.py runs `mpiexec -n 2 ... minigpt train` on tiny settings
    "mpiexec -n 2 minigpt train --out runs/ddp --text the-verdict --config tiny --batch-size 4 --steps 500":
        "an MPI launch (covered by tests/test_distributed.py)",
    "mpiexec -n 2 minigpt train --out runs/ddp --text the-verdict --config tiny --batch-size 4 --steps 600 "
    "--resume": "an MPI launch (covered by tests/test_distributed.py)",
    "mpiexec -f hosts -n 8 minigpt train --out runs/ddp8 --text corpus.txt --config small --batch-size 4":
        "needs a host file of several machines",
    "minigpt finetune instruct --init ~/.cache/minigpt/gpt2/355M --data instruction-data --out "
    "runs/gpt2-355m-ins --lr 5e-5 --epochs 2 --max-length 256": "needs GPT-2 355M's weights (a 1.4 GB download)",
    "minigpt chat --model runs/gpt2-355m-ins": "needs the GPT-2 355M run of the command above it",
    "minigpt generate --model ~/.cache/minigpt/gpt2/124M --prompt \"Every effort moves you\" "
    "--max-new-tokens 25 --temperature 0": "needs GPT-2 124M's weights (a 500 MB download)",
}

# a Python block's first line -> why it is not run by this test
EXCLUDED_PYTHON: dict[str, str] = {}

# sub-command words -> flags appended to make an example quick
TINY_FLAGS = {
    ("train",): ["--config", "nano", "--context-length", "32", "--steps", "2", "--batch-size", "2",
                 "--vocab-size", "300", "--eval-every", "1", "--eval-batches", "1", "--sample-tokens", "4",
                 "--quiet"],
    ("generate",): ["--max-new-tokens", "4"],
    ("tokenizer", "train"): ["--vocab-size", "300", "--quiet"],
    ("finetune", "classify"): ["--epochs", "0.01", "--quiet"],
    ("finetune", "instruct"): ["--epochs", "0.01", "--eval-limit", "2", "--max-new-tokens", "4", "--quiet"],
    ("profile",): ["--config", "nano", "--steps", "1", "--batch-size", "1", "--seq-len", "16"],
}

# data sets a command may name instead of a path (`--data sms-spam`)
DATA_NAMES = ("the-verdict", "sms-spam", "instruction-data", "tiny-shakespeare")
QUICKSTART = "minigpt train --out runs/quickstart"
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
    """The parts of a shell line between `&&`, `||`, `;` and `|`, outside quotes."""
    parts, cur, quote, i = [], "", None, 0
    while i < len(body):
        ch = body[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif body.startswith("&&", i) or body.startswith("||", i):
            parts.append(cur)
            cur, i = "", i + 2
            continue
        elif ch in ";|":
            parts.append(cur)
            cur, i = "", i + 1
            continue
        cur += ch
        i += 1
    return parts + [cur]


def normalise(cmd: str) -> str:
    return " ".join(cmd.split())


def page_items(text: str):
    """The page's runnable items in page order: ("cmd", command, expected text or None, piped stdin or None),
    ("python", code, [expected texts], None); and the lines that call minigpt through another program."""
    items, indirect = [], []
    for lang, lines in _blocks(text):
        if lang == "python":
            code = "\n".join(lines)
            items.append(("python", code, re.findall(r'#.*?prints "([^"]+)"', code), None))
            continue
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
                    items.append(("cmd", cmd, expect.group(1) if expect else None,
                                  piped.group(2) + "\n" if piped else None))
                elif re.search(r"\bminigpt\s+[a-z]", cmd) and not re.search(r"pip install|pytest", cmd):
                    indirect.append(cmd)
    return items, indirect


def pages() -> list[str]:
    found = ["README.md"] + sorted(p.relative_to(ROOT).as_posix() for p in DOCS.rglob("*.md"))
    return [p for p in found if p not in OWN_TEST]


def _collect():
    cases, indirect, per_page = [], [], {}
    for page in pages():
        items, ind = page_items((ROOT / page).read_text(encoding="utf-8"))
        per_page[page] = items
        indirect += ind
        for k, item in enumerate(items):
            label = item[1] if item[0] == "cmd" else "python: " + (item[1].strip().splitlines() or [""])[0]
            cases.append(pytest.param(page, k, id=f"{page}::{k}::{label[:80]}"))
    return cases, indirect, per_page


CASES, INDIRECT, ITEMS = _collect()


def test_the_pages_have_commands_to_check():
    readme = [item[1] for item in ITEMS["README.md"] if item[0] == "cmd"]
    assert QUICKSTART in readme  # the quick start
    everything = [item[1] for items in ITEMS.values() for item in items if item[0] == "cmd"]
    for sub in ("generate", "tokenizer decode", "finetune classify", "classify", "inspect", "gradcheck"):
        assert any(c.startswith(f"minigpt {sub} ") for c in everything), sub
    assert sum(item[0] == "python" for items in ITEMS.values() for item in items) >= 10


def test_no_synopsis_in_shell_blocks():
    bad = []
    for page in pages() + list(OWN_TEST):
        for lang, lines in _blocks((ROOT / page).read_text(encoding="utf-8")):
            if lang in SHELL_LANGS:
                bad += [f"{page}: {ln.strip()}" for ln in lines
                        if re.search(r"\[--?[a-z]|\b[a-z0-9]+\|[a-z0-9]+\b", _split_comment(ln)[0])]
    assert not bad, ("synopsis notation in shell blocks runs as a pipe when pasted; write the example as a "
                     "real command and put the synopsis in a table or a ```text block: " + "; ".join(bad))


def test_exclusions_are_still_in_the_pages():
    names = {item[1] for items in ITEMS.values() for item in items if item[0] == "cmd"} | set(INDIRECT)
    stale = [c for c in EXCLUDED if c not in names]
    assert not stale, f"EXCLUDED lists commands no page has any more: {stale}"
    firsts = {item[1].strip().splitlines()[0] for items in ITEMS.values() for item in items if item[0] == "python"}
    stale = [c for c in EXCLUDED_PYTHON if c not in firsts]
    assert not stale, f"EXCLUDED_PYTHON lists blocks no page has any more: {stale}"


def test_indirect_calls_are_excluded_with_a_reason():
    missing = [c for c in INDIRECT if c not in EXCLUDED]
    assert not missing, (f"pages run minigpt through another program, which this test cannot run in "
                         f"process: {missing}; add them to EXCLUDED with the reason")


def _names_resolve(shared) -> bool:
    """Whether this checkout finds a data set given by name (`--data sms-spam`) through MINIGPT_DATA."""
    from minigpt.data import load_texts
    from minigpt.data.classification import read_labelled
    from minigpt.data.instruct import read_instructions
    from minigpt.errors import MiniGPTError

    old = os.environ.get("MINIGPT_DATA")
    os.environ["MINIGPT_DATA"] = str(shared)
    try:
        for read, name in ((read_labelled, "sms-spam"), (read_instructions, "instruction-data"),
                           (lambda n: load_texts([n]), "the-verdict")):
            try:
                read(name)
                return True
            except (MiniGPTError, OSError):
                pass
        return False
    finally:
        if old is None:
            del os.environ["MINIGPT_DATA"]
        else:
            os.environ["MINIGPT_DATA"] = old


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from minigpt.data.shared import shared_data_dir

    root = tmp_path_factory.mktemp("docs")
    shared = shared_data_dir()
    return {"root": root, "shared": shared, "names": shared is not None and _names_resolve(shared),
            "pages": {}}


def _page_state(workspace, page: str, monkeypatch, capsys) -> dict:
    """The page's folder, namespace and not-made outputs; README's quick start is run first when needed."""
    pages_ = workspace["pages"]
    if page in pages_:
        return pages_[page]
    if page != "README.md" and "README.md" not in pages_:
        readme = _page_state(workspace, "README.md", monkeypatch, capsys)
        _run_command(QUICKSTART, None, readme, workspace, monkeypatch)
        capsys.readouterr()
    folder = workspace["root"] / re.sub(r"[^A-Za-z0-9]+", "-", page)
    folder.mkdir()
    text = "".join(f"Line {i}: the quick brown fox jumps over the lazy dog, and the function returns a value. "
                   f"Hello world, this is sentence {i % 7} of a small corpus.\n" for i in range(300))
    for name in PLACEHOLDER_TEXTS:
        (folder / name).write_text(text, encoding="utf-8")
    state = {"folder": folder, "ns": {"__name__": "__main__"}, "not_made": {}}
    if page != "README.md":
        readme = pages_["README.md"]
        (folder / "runs").mkdir()
        for run in sorted((readme["folder"] / "runs").glob("*")):
            (folder / "runs" / run.name).symlink_to(run, target_is_directory=True)
        state["not_made"].update(readme["not_made"])
    pages_[page] = state
    return state


def _outputs(words: list[str], why: str = "skipped") -> dict:
    """The folders a command writes (the value of its --out), each with the reason it was not made."""
    return {words[i + 1]: why for i, w in enumerate(words[:-1]) if w == "--out"}


def _tiny(argv: list[str]) -> list[str]:
    for words, flags in sorted(TINY_FLAGS.items(), key=lambda kv: -len(kv[0])):
        if tuple(argv[:len(words)]) == words:
            if "--epochs" in argv and "--steps" in flags:  # --steps and --epochs exclude each other
                i = flags.index("--steps")
                flags = flags[:i] + flags[i + 2:] + ["--epochs", "0.01"]
            if "--init" in argv and "--config" in flags:  # a model from --init keeps its own shape
                i = flags.index("--config")
                flags = flags[:i] + flags[i + 2:]
                i = flags.index("--vocab-size")
                flags = flags[:i] + flags[i + 2:]
            return argv + flags
    return argv


def _environment(state, workspace, monkeypatch):
    monkeypatch.chdir(state["folder"])
    monkeypatch.setenv("MINIGPT_CACHE", str(workspace["root"] / "cache"))
    if workspace["shared"] is not None:
        monkeypatch.setenv("MINIGPT_DATA", str(workspace["shared"]))


def _run_command(command, stdin, state, workspace, monkeypatch) -> tuple[int, str]:
    """Run one command in process in the page's folder; returns (exit status, why it was skipped or '')."""
    from minigpt.cli import main

    if command in EXCLUDED:
        state["not_made"].update(_outputs(shlex.split(command), "excluded: " + EXCLUDED[command]))
        return 0, f"excluded from the docs check: {EXCLUDED[command]}"
    words = shlex.split(command)
    missing = [d for w in words for d in state["not_made"] if w == d or w.startswith(d.rstrip("/") + "/")]
    if missing:  # e.g. `classify --model runs/spam` after the finetuning that makes runs/spam was skipped
        state["not_made"].update(_outputs(words))
        return 0, f"needs {missing[0]}, which a skipped command above makes ({state['not_made'][missing[0]]})"
    named = [w for i, w in enumerate(words) if w in DATA_NAMES and i and words[i - 1] in ("--data", "--text")]
    downloads = words[:2] == ["minigpt", "download"] and "--from" not in words and "--list" not in words
    if "~/.cache/minigpt" in command:  # the reader's cache is the workspace's
        command = command.replace("~/.cache/minigpt", shlex.quote(str(workspace["root"] / "cache")))
    if "../shared/data" in command or named or downloads:
        if workspace["shared"] is None:
            state["not_made"].update(_outputs(words, "it needs the shared data folder"))
            if downloads:  # what it would install is missing too
                state["not_made"][f"~/.cache/minigpt/{words[2]}"] = "its download needs the shared data folder"
            return 0, "needs the shared data folder (MINIGPT_DATA or ../shared/data)"
        if named and not workspace["names"]:
            state["not_made"].update(_outputs(words, "data sets by name are not resolved in this checkout"))
            return 0, f"this checkout does not find the data set {named[0]} by name"
        command = command.replace("../shared/data", str(workspace["shared"]))
        if downloads:
            command += f" --from {shlex.quote(str(workspace['shared']))}"
    _environment(state, workspace, monkeypatch)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin or ""))
    words = shlex.split(command)  # again: the shared data's path is in it now
    while re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        name, _, value = words.pop(0).partition("=")
        monkeypatch.setenv(name, value)
    argv = words[3:] if words[:3] == ["python", "-m", "minigpt"] else words[1:]
    try:
        rc = main(_tiny(argv))
    except SystemExit as e:  # argparse: bad usage (2) or --help / --version (0)
        rc = e.code
    return rc, ""


@pytest.mark.parametrize("page, k", CASES)
def test_page_item_runs(page, k, workspace, monkeypatch, capsys):
    kind, text, expect, stdin = ITEMS[page][k]
    state = _page_state(workspace, page, monkeypatch, capsys)
    capsys.readouterr()
    if kind == "cmd":
        rc, skipped = _run_command(text, stdin, state, workspace, monkeypatch)
        if skipped:
            pytest.skip(skipped)
        out, err = capsys.readouterr()
        assert rc == 0, (f"{page}: command failed (exit {rc}): {text}\n{err[-2000:]}\nFix the page, or add tiny "
                         "settings (TINY_FLAGS) or an exclusion with its reason (EXCLUDED) in this file")
        if expect is not None:
            assert expect in out, f"{page}: {text}: the page says it prints {expect!r}; it printed {out[-500:]!r}"
        return
    first = text.strip().splitlines()[0]
    if first in EXCLUDED_PYTHON:
        pytest.skip(f"excluded from the docs check: {EXCLUDED_PYTHON[first]}")
    needs = [d for d in state["not_made"] if re.search(rf"""["']{re.escape(d)}""", text)]
    if needs:
        pytest.skip(f"needs {needs[0]}, which a skipped command above makes ({state['not_made'][needs[0]]})")
    if "../shared/data" in text or "fetch(" in text:
        if workspace["shared"] is None:  # fetch() would download what the page's downloads install
            pytest.skip("needs the shared data folder (MINIGPT_DATA or ../shared/data)")
        text = text.replace("../shared/data", str(workspace["shared"]))
    _environment(state, workspace, monkeypatch)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    exec(compile(text, f"{page} (python block {k})", "exec"), state["ns"])
    out = capsys.readouterr().out
    for e in expect:
        assert e in out, f"{page}: the block starting {first!r} says it prints {e!r}; it printed {out[-500:]!r}"


def test_parser_rules():
    text = """
```bash
pip install -e ".[plot]" && minigpt train --out runs/x   # trains
FOO=1 minigpt generate --model m \\
    --seed 1 --top-k 40
echo "hi" | minigpt tokenizer encode --text "a<|x|>b"   # prints "hi"
mpiexec -n 2 minigpt train --out r
```

```python
x = 1
print(x)   # prints "1"
```

```text
minigpt generate --model DIR [--seed N]
```
"""
    found, indirect = page_items(text)
    assert found == [("cmd", "minigpt train --out runs/x", None, None),
                     ("cmd", "FOO=1 minigpt generate --model m --seed 1 --top-k 40", None, None),
                     ("cmd", "minigpt tokenizer encode --text \"a<|x|>b\"", "hi", "hi\n"),
                     ("python", "x = 1\nprint(x)   # prints \"1\"", ["1"], None)]
    assert indirect == ["mpiexec -n 2 minigpt train --out r"]
