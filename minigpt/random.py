"""minigpt's global random generator (weight initialisation, dropout, sampling), seedable and resumable."""
from __future__ import annotations

import numpy as np

_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Re-seed the global generator: runs with the same seed draw the same numbers."""
    global _rng
    _rng = np.random.default_rng(seed)


def get_rng() -> np.random.Generator:
    return _rng


def as_generator(rng=None) -> np.random.Generator:
    """None -> the global generator; an int -> a new generator seeded with it; a Generator as is."""
    if rng is None:
        return _rng
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def get_state() -> dict:
    """The global generator's state (JSON-serialisable), for checkpoints."""
    return _rng.bit_generator.state


def set_state(state: dict) -> None:
    _rng.bit_generator.state = state
