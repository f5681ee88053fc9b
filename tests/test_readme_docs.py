"""The manual's reference tables cover the API: every function of minigpt.functional is in the functional
API table of docs/autograd.md, and every key of gradcheck's report is explained there."""
import re
from pathlib import Path

import numpy as np

import minigpt
import minigpt.functional as F

AUTOGRAD = (Path(__file__).resolve().parents[1] / "docs" / "autograd.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    start = AUTOGRAD.index(f"## {title}\n")
    end = AUTOGRAD.find("\n## ", start + 1)
    return AUTOGRAD[start:end if end > 0 else None]


def test_functional_table_lists_every_function():
    table = "\n".join(ln for ln in _section("The functional API").splitlines() if ln.startswith("|"))
    named = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", " ".join(re.findall(r"`([^`]*)`", table))))
    missing = [name for name in F.__all__ if name not in named]
    assert not missing, f"functions of minigpt.functional missing from the table of docs/autograd.md: {missing}"


def test_gradcheck_report_fields_are_documented():
    x = minigpt.tensor(np.linspace(-1, 1, 4), dtype=np.float64, requires_grad=True)
    report = minigpt.gradcheck(lambda t: (t * t).sum(), x)
    text = _section("Writing and checking your own op")
    for key in report:
        assert re.search(rf"\| `{key}` \| \S", text), f"gradcheck's report key {key!r} is not explained"
    for key in report["worst"]:
        assert f'"{key}"' in text, key
