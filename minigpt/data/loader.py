"""Batching with seeded, per-epoch shuffling and a resumable position.

``DataLoader(dataset, batch_size, shuffle=False, seed=0, drop_last=True)`` yields ``(inputs, targets)``
pairs of NumPy int64 arrays of shape (batch_size, T).

* Epoch ``e`` visits the windows in the order ``np.random.default_rng((seed, e)).permutation(n)`` when
  shuffling (``arange(n)`` otherwise), so any epoch's order can be recomputed from (seed, epoch) alone.
* ``for x, y in loader:`` is one epoch, like torch: the next loop is the next epoch. Leaving a loop early
  drops the rest of that epoch's pass (the next loop starts the same epoch over), so an evaluation that
  reads the first k batches reads the same k batches every time.
* ``loader.batches()`` is an endless stream for training by steps: it rolls over epochs and its position
  survives interruptions (break, islice, a new ``batches()`` call continue where the last one stopped).
* ``state_dict()`` -> ``{"epoch": e, "position": p}`` (JSON-able; p = batches of epoch e already handed
  out) and ``load_state_dict(d)``: a loader restored from it yields exactly the batches an uninterrupted
  run would have yielded next.

A dataset needs ``__len__`` and either ``get_batch(indices) -> tuple of arrays`` (fast path, used by
:class:`SlidingWindowDataset`) or ``__getitem__(i) -> tuple of arrays`` (items are stacked).
"""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError

__all__ = ["DataLoader"]


class DataLoader:
    def __init__(self, dataset, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = True):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise MiniGPTError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise MiniGPTError(f"seed must be an integer >= 0, got {seed!r}")
        if not hasattr(dataset, "__len__"):
            raise MiniGPTError(f"DataLoader needs a dataset with a length, got {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        n = len(dataset)
        if n == 0:
            raise MiniGPTError("DataLoader got an empty dataset")
        if self.drop_last and n < self.batch_size:
            raise MiniGPTError(
                f"the dataset has {n} windows, fewer than batch_size={self.batch_size}, and drop_last=True "
                f"leaves no batch at all; lower the batch size or the context length, add text, or use "
                f"drop_last=False")
        self.epoch = 0
        self.position = 0

    # --- sizes and order ---------------------------------------------------------------------------
    def __len__(self) -> int:
        """Batches per epoch."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """The window order of an epoch (a permutation when shuffling)."""
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng((self.seed, int(epoch))).permutation(n)

    def _batch(self, idx: np.ndarray):
        get_batch = getattr(self.dataset, "get_batch", None)
        if get_batch is not None:
            return get_batch(idx)
        items = [self.dataset[int(i)] for i in idx]
        if isinstance(items[0], tuple):
            return tuple(np.stack([np.asarray(it[k]) for it in items]) for k in range(len(items[0])))
        return np.stack([np.asarray(it) for it in items])

    def _epoch_batches(self, epoch: int, start: int):
        order = self.order(epoch)
        B = self.batch_size
        for b in range(start, len(self)):
            yield b, self._batch(order[b * B:(b + 1) * B])

    # --- iteration ---------------------------------------------------------------------------------
    def __iter__(self):
        """One epoch (the rest of it, after ``load_state_dict`` of a mid-epoch state)."""
        if self.position >= len(self):
            self.epoch, self.position = self.epoch + 1, 0
        epoch, finished = self.epoch, False
        try:
            for b, batch in self._epoch_batches(epoch, self.position):
                self.position = b + 1  # the state now says "next batch is b + 1": save it after this step
                yield batch
            finished = True
        finally:
            if finished:
                self.epoch, self.position = epoch + 1, 0
            elif self.epoch == epoch:
                self.position = 0  # left early: this epoch's pass is dropped, like a fresh torch iterator

    def batches(self):
        """Endless stream of batches across epochs; the position is kept whatever interrupts it.

        The state is read afresh for every batch, so ``load_state_dict`` between two batches takes effect
        on the next one."""
        B = self.batch_size
        cached_epoch, order = None, None
        while True:
            if self.position >= len(self):
                self.epoch, self.position = self.epoch + 1, 0
            if self.epoch != cached_epoch:
                cached_epoch, order = self.epoch, self.order(self.epoch)
            b = self.position
            batch = self._batch(order[b * B:(b + 1) * B])
            self.position = b + 1
            yield batch

    iterate_forever = batches

    def iter_epoch(self, epoch: int = 0, max_batches: int | None = None):
        """The batches of one given epoch, from its start, without touching the loader's state."""
        for b, batch in self._epoch_batches(epoch, 0):
            if max_batches is not None and b >= max_batches:
                return
            yield batch

    # --- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"epoch": int(self.epoch), "position": int(self.position), "seed": self.seed,
                "batch_size": self.batch_size, "shuffle": self.shuffle, "num_windows": len(self.dataset)}

    def load_state_dict(self, d: dict) -> None:
        try:
            epoch, position = int(d["epoch"]), int(d["position"])
        except (KeyError, TypeError, ValueError):
            raise MiniGPTError("DataLoader.load_state_dict: expected a dict with integer 'epoch' and "
                               "'position'") from None
        if epoch < 0 or not 0 <= position <= len(self):
            raise MiniGPTError(f"DataLoader.load_state_dict: epoch {epoch}, position {position} out of range "
                               f"(an epoch has {len(self)} batches)")
        for key, mine in (("seed", self.seed), ("batch_size", self.batch_size), ("shuffle", self.shuffle),
                          ("num_windows", len(self.dataset))):
            if key in d and d[key] != mine:
                raise MiniGPTError(f"DataLoader.load_state_dict: the saved loader had {key}={d[key]!r}, this "
                                   f"one has {mine!r}; resuming would not replay the same batches")
        self.epoch, self.position = epoch, position

    def __repr__(self) -> str:
        return (f"DataLoader({len(self.dataset)} windows, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"seed={self.seed}, drop_last={self.drop_last}, {len(self)} batches/epoch)")
