"""Finding the shared real-data folder (the-verdict, SMS spam, instruction data, GPT-2 vocabulary, ...).

Looked up in this order: the ``MINIGPT_DATA`` environment variable, then ``../shared/data`` beside the
repository checkout. The files are never copied into the repository.
"""
from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path | None:
    """The shared data folder, or None when it cannot be found."""
    env = os.environ.get("MINIGPT_DATA")
    candidates = [Path(env)] if env else []
    candidates += [_REPO_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def shared_file(relpath: str) -> Path | None:
    """A file inside the shared data folder (e.g. ``"gpt2/encoder.json"``), or None when absent."""
    root = shared_data_dir()
    if root is None:
        return None
    p = root / relpath
    return p if p.exists() else None
