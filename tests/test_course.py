"""docs/course/: every page's Python blocks run, in page order in one namespace, and print what the page
says they print.

The convention of the course pages: a ```python block may be followed by a ```text block, the output a
reader sees when pasting it. This test runs the blocks and compares each printed output with its text
block word by word, numbers to the last digit the page shows (one unit of it, so that a rounding on the
edge does not fail). Every page also names its NumPy reference and fused op as
``minigpt/<path>.py::<name>`` code spans; each of those must exist.
"""
import ast
import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COURSE = ROOT / "docs" / "course"
PAGES = sorted(p for p in COURSE.glob("*.md"))
BACKWARD_PAGES = [p for p in PAGES if p.name != "index.md"]

_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def page_blocks(path: Path):
    """[(code, expected_output_or_None)] for the page's python blocks, in order."""
    found = _BLOCK.findall(path.read_text(encoding="utf-8"))
    out = []
    for i, (kind, body) in enumerate(found):
        if kind != "python":
            continue
        expected = found[i + 1][1] if i + 1 < len(found) and found[i + 1][0] == "text" else None
        out.append((body, expected))
    return out


def _unit(token: str) -> float:
    """One unit in the last digit shown by a number token."""
    mant, _, exp = token.lower().partition("e")
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    return 10.0 ** (-decimals + (int(exp) if exp else 0))


def same_output(actual: str, expected: str) -> str | None:
    """None when ``actual`` reads as ``expected`` (numbers to one unit of the last digit shown), else why not."""
    a_lines, e_lines = actual.strip().splitlines(), expected.strip().splitlines()
    if len(a_lines) != len(e_lines):
        return f"{len(a_lines)} lines printed, the page shows {len(e_lines)}:\n{actual}"
    for a, e in zip(a_lines, e_lines):
        a_words, e_words = _NUMBER.split(a), _NUMBER.split(e)
        if [w.split() for w in a_words] != [w.split() for w in e_words]:
            return f"printed {a!r}, the page shows {e!r}"
        for x, y in zip(_NUMBER.findall(a), _NUMBER.findall(e)):
            if abs(float(x) - float(y)) > 1.0001 * _unit(y):
                return f"printed {a!r}, the page shows {e!r} ({x} vs {y})"
    return None


def run_page(path: Path) -> list:
    """Run the page's python blocks in one namespace; [(code, printed, expected)]."""
    ns = {"__name__": "__course__"}
    results = []
    for code, expected in page_blocks(path):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code, str(path), "exec"), ns)
        results.append((code, buf.getvalue(), expected))
    return results


def test_course_has_its_pages():
    names = {p.stem for p in PAGES}
    assert {"index", "linear", "gelu", "layernorm", "cross-entropy", "attention", "embedding", "residual",
            "lora", "adamw"} <= names, names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_page_runs_and_prints_what_it_says(page):
    results = run_page(page)
    if page in BACKWARD_PAGES:
        assert any(expected for _, _, expected in results), f"{page.name}: no python block with its output"
    for code, printed, expected in results:
        if expected is None:
            continue
        why = same_output(printed, expected)
        assert why is None, f"{page.name}, block starting {code.splitlines()[0]!r}: {why}"


@pytest.mark.parametrize("page", BACKWARD_PAGES, ids=lambda p: p.stem)
def test_page_runs_on_the_numpy_references(page):
    """What the pages say about MINIGPT_KERNELS=numpy: the same examples, every kernel its NumPy reference."""
    from minigpt import kernels

    with kernels.use_backend("numpy"):
        for code, printed, expected in run_page(page):
            if expected is not None:
                assert same_output(printed, expected) is None, f"{page.name} (numpy kernels): {printed}"


def _defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True
    return False


@pytest.mark.parametrize("page", BACKWARD_PAGES, ids=lambda p: p.stem)
def test_page_names_code_that_exists(page):
    text = page.read_text(encoding="utf-8")
    refs = re.findall(r"`(minigpt/[\w/]+\.py)::(\w+)(?:\.(\w+))?`", text)
    assert refs, f"{page.name} names no minigpt/<file>.py::<name> (the NumPy reference and the fused op)"
    for file, name, _method in refs:
        path = ROOT / file
        assert path.exists(), f"{page.name}: {file} does not exist"
        assert _defines(path, name), f"{page.name}: {file} defines no {name}"
    assert any("_numpy" in name for _, name, _ in refs) or page.stem in ("residual", "lora"), \
        f"{page.name} names no NumPy reference (a *_numpy function)"


def test_every_gradcheck_command_the_pages_name_passes():
    from minigpt.cli import main

    pages = [*PAGES, ROOT / "docs" / "backprop-tour.md"]
    cmds = sorted({c for p in pages for c in re.findall(r"`(minigpt gradcheck [a-z_]+ [^`]*)`", p.read_text())})
    assert len(cmds) >= 7, cmds
    for cmd in cmds:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(cmd.split()[1:]) == 0, cmd
        assert out.getvalue().strip().splitlines()[-1].startswith("PASS"), cmd


def test_links_stay_inside_docs_and_resolve():
    """MkDocs' strict build fails on a link to a file outside docs/: source files are named in code spans."""
    docs = ROOT / "docs"
    for page in [*PAGES, docs / "backprop-tour.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            path = (page.parent / target).resolve()
            assert path.is_relative_to(docs.resolve()) and path.exists(), f"{page.name}: link to {target}"


def test_index_links_every_page():
    index = (COURSE / "index.md").read_text(encoding="utf-8")
    for p in BACKWARD_PAGES:
        assert f"]({p.name})" in index, f"docs/course/index.md does not link {p.name}"


def test_same_output_compares_to_the_last_digit():
    assert same_output("a = 0.1234\n", "a = 0.1235") is None
    assert same_output("a = 0.1234\n", "a = 0.1237") is not None
    assert same_output("b 1.2e-04", "b 1.3e-04") is None
    assert same_output("b 1.2e-04", "b 1.5e-04") is not None
    assert same_output("x y", "x z") is not None
