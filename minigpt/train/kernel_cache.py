"""Is Numba's on-disk cache warm for training? (So the first run can say that it compiles first.)

Numba compiles each kernel the first time a process calls it and, with ``cache=True``, saves the machine
code beside the kernel module (``minigpt/kernels/__pycache__``). A first training run therefore spends
tens of seconds in its first step; later runs load the code in about a second.

Numba cannot be asked "is this signature cached?" without compiling, so the trainer keeps a small stamp
file, ``.minigpt-train-warm.json``, in the same cache folder: written after a first training step
completed, it records what that step ran against (the Python and Numba versions, the CPU, and the size
and modification time of every kernel module, which is what Numba's own cache checks) and how long the
step took. How the interpreter was spelled (``python`` in a test run, ``python3`` in the console
script's first line) does not count: the same interpreter shares the same cache. The cache counts as warm while the stamp matches; any change to the kernel modules, a new Numba,
or a cache folder emptied by hand makes it cold again.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import llvmlite.binding as llvm
import numba
from numba.core import config as numba_config

from ..errors import MiniGPTError
from ..io import atomic_write_json, cache_dir, read_json
from ..kernels import backend

STAMP_NAME = ".minigpt-train-warm.json"
DEFAULT_COMPILE_SECONDS = 60  # a guess for 2 idle cores, until this machine has measured its own (mark_warm)


def _kernels_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "kernels"


def stamp_path() -> Path:
    """Where the stamp lives: Numba's cache folder for the kernels (``$NUMBA_CACHE_DIR`` when set, else
    ``minigpt/kernels/__pycache__``), or minigpt's own cache folder when that one is not writable."""
    env = os.environ.get("NUMBA_CACHE_DIR")
    folder = Path(env) if env else _kernels_dir() / "__pycache__"
    if (folder.is_dir() and os.access(folder, os.W_OK)) or (not folder.exists() and os.access(folder.parent, os.W_OK)):
        return folder / STAMP_NAME
    return cache_dir() / STAMP_NAME


def _cpu_name() -> str:
    """The CPU Numba compiles for (``NUMBA_CPU_NAME``, else the host's): part of its cache's key."""
    try:
        return numba_config.CPU_NAME or llvm.get_host_cpu_name()
    except (AttributeError, RuntimeError):
        return platform.machine()


def _fingerprint() -> dict:
    """What Numba's on-disk cache depends on, and nothing else: the kernel modules (size and modification
    time, which Numba's index checks), the Python implementation and version (cache files are per
    version), the Numba version and the CPU the code is compiled for. Not the path the interpreter was
    started by: ``python``, ``python3`` and the ``minigpt`` console script run one interpreter and share
    one cache."""
    sources = {}
    for f in sorted(_kernels_dir().glob("*.py")):
        st = f.stat()
        sources[f.name] = [st.st_size, st.st_mtime_ns]
    return {"python": f"{sys.implementation.cache_tag} {platform.python_version()}", "numba": numba.__version__,
            "cpu": _cpu_name(), "sources": sources}


def _read(path: Path) -> dict:
    try:  # bounded: a FIFO or /dev/zero in its place is refused, not read forever
        return read_json(path, "kernel cache stamp", max_bytes=1 << 20, max_depth=8) if path.exists() else {}
    except MiniGPTError:
        return {}


def numba_in_use() -> bool:
    return backend() == "numba"


def is_warm(path: Path | None = None) -> bool:
    """True when a training step already ran against the current kernels and its cache is still there."""
    path = path or stamp_path()
    stamp = _read(path)
    if stamp.get("fingerprint") != _fingerprint():
        return False
    return any(path.parent.glob("*.nbi")) or path.parent != _kernels_dir() / "__pycache__"


def expected_compile_seconds(path: Path | None = None) -> int:
    """The last measured first-step time on this machine, else a default."""
    seconds = _read(path or stamp_path()).get("first_step_seconds")
    return int(round(seconds)) if isinstance(seconds, (int, float)) and seconds > 0 else DEFAULT_COMPILE_SECONDS


def compile_note(path: Path | None = None) -> str:
    return f"compiling kernels (first run only, ~{expected_compile_seconds(path)} s)"


def mark_warm(first_step_seconds: float | None, path: Path | None = None) -> None:
    """Record that the kernels are compiled and cached (``first_step_seconds``: how long a cold start
    took up to the end of the first step, kept for the next estimate; None keeps the previous figure). Best effort: a read-only
    location only means the note will show again."""
    path = path or stamp_path()
    previous = _read(path).get("first_step_seconds")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, {"fingerprint": _fingerprint(),
                                 "first_step_seconds": round(first_step_seconds, 1) if first_step_seconds
                                 else previous})
    except OSError:
        pass
