"""Backprop exercises, checked against autograd: write every gradient of a small network by hand.

Each exercise is a file whose forward pass is given and whose ``backward(p, c)`` you fill in, one
intermediate gradient at a time (``dh`` is d loss / d h, with the shape of ``h``). The checker runs the same
forward in minigpt with ``retain_grad()`` on every intermediate, back-propagates, and compares each of
your gradients with autograd's: it says which one is wrong, where, by how much, and names the mistake when
it recognises it (a forgotten 1/N, a wrong axis, a missed branch, a transpose).

    >>> from minigpt import exercises
    >>> list(exercises.list_exercises())[:3]
    ['mlp', 'layernorm', 'cross_entropy']
    >>> exercises.check("mlp", exercises.solution_backward("mlp")).ok
    True

The command line does the same: ``minigpt exercises list | start NAME | check NAME FILE | solution NAME``.
A front like the CLI: nothing else in minigpt imports this package.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import MiniGPTError
from ..io import atomic_write_text
from .catalog import EXERCISES
from . import checker  # noqa: F401
from .checker import CheckReport, GradResult, answer, blanks, check, exercise, setup, solution, template

__all__ = ["list_exercises", "start", "check", "solution", "answer", "template", "notebook", "inputs", "setup", "blanks",
           "notebook_json", "solution_backward", "CheckReport", "GradResult"]

# Set to 1 in the environment, a notebook fills in the solutions before checking (how the tests run them).
SOLVE_ENV = "MINIGPT_EXERCISES_SOLVE"


def list_exercises() -> dict:
    """``{name: one-line description}`` of every exercise, in the order to do them."""
    return {name: ex.title for name, ex in EXERCISES.items()}


def start(name: str, dir=".", force: bool = False, notebook: bool = False) -> Path:
    """Write a fresh template of exercise ``name`` to ``DIR/NAME.py`` (``DIR/NAME.ipynb`` with ``notebook``)
    and return its path. An existing file is never replaced unless ``force`` (your answers in it would be
    lost)."""
    exercise(name)
    d = Path(dir)
    if d.exists() and not d.is_dir():
        raise MiniGPTError(f"--dir {d}: not a folder")
    path = d / f"{name}.{'ipynb' if notebook else 'py'}"
    if path.exists() and not force:
        how = "run its last cell" if notebook else f"check it with `minigpt exercises check {name} {path}`"
        raise MiniGPTError(f"{path} exists: it may hold your answers; {how}, or pass --force to replace it with a "
                           "fresh template")
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, notebook_json(name) if notebook else template(name))
    return path


def inputs(name: str):
    """``(p, c)``: the exercise's inputs and every intermediate of its forward (NumPy arrays), the ones the
    checker passes to ``backward(p, c)``."""
    p, c, _ = setup(name)
    return p, c


def _cell(kind, text, n):
    lines = text.strip("\n").split("\n")
    src = [line + "\n" for line in lines[:-1]] + lines[-1:]
    cell = {"cell_type": kind, "id": f"cell-{n}", "metadata": {}, "source": src}
    if kind == "code":
        cell.update(execution_count=None, outputs=[])
    return cell


def notebook(name: str) -> dict:
    """Exercise ``name`` as a Jupyter notebook (nbformat 4, no outputs): the text, the given forward, a
    cell with ``backward`` to fill in, and a cell that checks it with the same checker. Run with the
    environment variable MINIGPT_EXERCISES_SOLVE=1, the last cell checks the solution instead."""
    text = template(name)
    doc_end = text.index('"""', 3) + 3
    doc, code = text[3:doc_end - 3].strip(), text[doc_end:].strip("\n")
    lines = code.split("\n")
    first_todo = next(i for i, line in enumerate(lines) if "# TODO" in line)
    split = max(i for i in range(first_todo) if lines[i].startswith("def "))
    given, yours = "\n".join(lines[:split]).strip("\n"), "\n".join(lines[split:]).strip("\n")
    title, _, body = doc.partition("\n")
    body = body.replace(f"Check your answers with:  minigpt exercises check {name} {name}.py",
                        "Fill in the cell under *Your part*, then run the last cell to check it.")
    cells = [
        ("markdown", f"# {title}\n\n{body.strip()}"),
        ("code", f'import os\n\nfrom minigpt import exercises\n\np, c = exercises.inputs("{name}")   # the inputs '
                 f'and every intermediate of the forward\nprint({{k: v.shape for k, v in p.items()}})'),
        ("markdown", "## Given: the forward pass"),
        ("code", given),
        ("markdown", "## Your part: every gradient marked TODO\n\nEach `None` becomes the gradient of the loss "
                     "with respect to the variable of that name without its `d`, with that variable's shape."),
        ("code", yours),
        ("markdown", "## Check\n\nEvery gradient against minigpt's autograd: which one is wrong, where, by how "
                     "much, and the mistake when the checker recognises it."),
        ("code", f'if os.environ.get("{SOLVE_ENV}") == "1":   # how the tests run this notebook: with the solution\n'
                 f'    exec(exercises.solution("{name}"))\n'
                 f'report = exercises.check("{name}", backward, forward)\nprint(report)'),
    ]
    return {"cells": [_cell(k, t, i) for i, (k, t) in enumerate(cells)],
            "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                         "language_info": {"name": "python"}},
            "nbformat": 4, "nbformat_minor": 5}


def notebook_json(name: str) -> str:
    """``notebook(name)`` as the text of an .ipynb file."""
    return json.dumps(notebook(name), indent=1, ensure_ascii=False) + "\n"


def solution_backward(name: str):
    """The solution's ``backward`` function (for tests and for comparing with your own)."""
    ns = {"__name__": f"minigpt_solution_{name}"}
    exec(compile(solution(name), f"<solution of {name}>", "exec"), ns)  # noqa: S102 - our own source
    return ns["backward"]
