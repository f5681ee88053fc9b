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

from pathlib import Path

from ..errors import MiniGPTError
from ..io import atomic_write_text
from .catalog import EXERCISES
from . import checker  # noqa: F401
from .checker import CheckReport, GradResult, blanks, check, exercise, setup, solution, template

__all__ = ["list_exercises", "start", "check", "solution", "template", "setup", "blanks", "solution_backward",
           "CheckReport", "GradResult"]


def list_exercises() -> dict:
    """``{name: one-line description}`` of every exercise, in the order to do them."""
    return {name: ex.title for name, ex in EXERCISES.items()}


def start(name: str, dir=".", force: bool = False) -> Path:
    """Write a fresh template of exercise ``name`` to ``DIR/NAME.py`` and return its path. An existing
    file is never replaced unless ``force`` (your answers in it would be lost)."""
    exercise(name)
    d = Path(dir)
    if d.exists() and not d.is_dir():
        raise MiniGPTError(f"--dir {d}: not a folder")
    path = d / f"{name}.py"
    if path.exists() and not force:
        raise MiniGPTError(f"{path} exists: it may hold your answers; check it with `minigpt exercises check "
                           f"{name} {path}`, or pass --force to replace it with a fresh template")
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, template(name))
    return path


def solution_backward(name: str):
    """The solution's ``backward`` function (for tests and for comparing with your own)."""
    ns = {"__name__": f"minigpt_solution_{name}"}
    exec(compile(solution(name), f"<solution of {name}>", "exec"), ns)  # noqa: S102 - our own source
    return ns["backward"]
