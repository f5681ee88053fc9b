"""docs/beyond-gpt2.md runs as a reader would paste it: every ```python block (each on its own, in a scratch
folder; a ```text block right after one is the output it must print) and every `minigpt` line of its
```bash blocks (in process, exit status 0)."""
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from minigpt.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "beyond-gpt2.md"
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def _python_blocks():
    """(index, code, expected output or None) of each python block."""
    out = []
    for i, (lang, code) in enumerate(BLOCKS):
        if lang == "python":
            nxt = BLOCKS[i + 1] if i + 1 < len(BLOCKS) else None
            out.append((i, code, nxt[1] if nxt and nxt[0] == "text" else None))
    return out


def _bash_lines():
    return [line.strip() for lang, code in BLOCKS if lang == "bash" for line in code.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_the_page_has_blocks_to_run():
    assert len(_python_blocks()) >= 4 and len(_bash_lines()) >= 4


@pytest.mark.parametrize("index,code,expect", _python_blocks(), ids=lambda x: str(x) if isinstance(x, int) else "")
def test_python_block_runs(index, code, expect, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(compile(code, f"{DOC.name}[block {index}]", "exec"), {"__name__": "__main__"})
    if expect is not None:
        assert buf.getvalue() == expect
    else:
        assert "False" not in buf.getvalue()   # the blocks print checks that must hold


@pytest.mark.parametrize("line", _bash_lines())
def test_bash_line_runs(line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(line)
    assert argv[0] == "minigpt"
    assert main(argv[1:]) == 0
    if argv[1] == "gradcheck":
        assert "PASS" in capsys.readouterr().out
