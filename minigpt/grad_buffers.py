"""Gradient sums for ``Tensor.backward``, and the two memory optimisations behind them (switchable).

``Tensor.backward`` keeps, for each tensor reached so far, the sum of the gradient contributions it has
received: a :class:`GradSums`. Written plainly that is ``grads[x] = grads[x] + g`` and, at a leaf,
``x.grad = x.grad + g`` -- a new array for every addition. Two optimisations make a training step cheaper
without changing the math; both live here, and ``set_grad_optimizations(False)`` turns both off so the
plain version can be compared with them (same results, see below; speed in ``benchmarks/README.md``):

1. **Buffer ownership.** An array an op's backward has just allocated belongs to this backward pass alone
   (it is no view, not the incoming gradient, not handed to two inputs). Such an array is *owned*: later
   contributions are added into it in place (``+=``), it becomes a leaf's ``.grad`` without a copy, and
   the op that receives it as its incoming gradient may overwrite it (``Function.grad_is_scratch`` is
   True then: GELU's and dropout's backward write their result over it).
2. **Sparse row gradients.** An embedding lookup's gradient is zero but for the rows that were looked up.
   Its backward returns a :class:`RowGrad` (the rows and their indices) instead of a dense (vocab, dim)
   array of zeros; the rows are scatter-added straight into the other contribution (the tied LM head's
   gradient) or into the leaf's ``.grad``.

With the optimisations off, every sum is a new array, no incoming gradient is scratch, and
:func:`row_grad` returns the dense array. Results are bit-identical except where a sparse gradient meets a
dense one (a tied embedding table): the optimised path adds each looked-up row into the dense gradient one
after the other, the plain path first sums the rows into zeros and then adds the two arrays, so those
entries agree to float rounding (a few ulps).

The switch: ``minigpt.grad_buffers.set_grad_optimizations(False)`` (also ``minigpt.tensor.``), the
context manager ``grad_optimizations(False)``, or the environment variable ``MINIGPT_GRAD_OPTIMIZATIONS=0``.

    >>> from minigpt.grad_buffers import grad_optimizations
    >>> with grad_optimizations(False):
    ...     loss.backward()            # doctest: +SKIP   (the plain textbook accumulation)
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from .errors import MiniGPTError
from .kernels import scatter


def _initial() -> bool:
    value = os.environ.get("MINIGPT_GRAD_OPTIMIZATIONS", "1").strip().lower()
    if value not in ("0", "1", "false", "true", "off", "on", ""):
        raise MiniGPTError(f"environment variable MINIGPT_GRAD_OPTIMIZATIONS={value!r}: use 1 or 0")
    return value not in ("0", "false", "off")


_enabled = _initial()


def grad_optimizations_enabled() -> bool:
    """True when backward reuses gradient buffers and keeps embedding gradients sparse (the default)."""
    return _enabled


def set_grad_optimizations(on: bool) -> bool:
    """Turn buffer reuse and sparse row gradients on or off for the whole process; returns the old value."""
    global _enabled
    old, _enabled = _enabled, bool(on)
    return old


@contextlib.contextmanager
def grad_optimizations(on: bool):
    """``with grad_optimizations(False): loss.backward()`` runs the plain accumulation, then restores."""
    old = set_grad_optimizations(on)
    try:
        yield
    finally:
        set_grad_optimizations(old)


class RowGrad:
    """A gradient that is zero but for some rows: ``dense[index] += rows`` (repeated indices add up)."""

    __slots__ = ("index", "rows", "shape", "dtype")

    def __init__(self, index: np.ndarray, rows: np.ndarray, shape: tuple):
        self.index, self.rows, self.shape, self.dtype = index, rows, tuple(shape), rows.dtype

    def add_into(self, arr: np.ndarray) -> np.ndarray:
        return scatter.add_rows(arr, self.index, self.rows)

    def dense(self) -> np.ndarray:
        return self.add_into(np.zeros(self.shape, dtype=self.dtype))


def row_grad(index: np.ndarray, rows: np.ndarray, shape: tuple):
    """The gradient of a row lookup ``table[index]`` of a table of ``shape``, given the gradient ``rows``
    of the looked-up rows: ``dtable[index[i]] += rows[i]``. A :class:`RowGrad` when the optimisations are
    on, else the dense array."""
    g = RowGrad(index, rows, shape)
    return g if _enabled else g.dense()


class GradSums:
    """The running gradient sum of each tensor during one backward pass (keyed by tensor identity)."""

    def __init__(self, root, grad: np.ndarray):
        self.sums = {id(root): grad}
        self.owned = set()  # ids whose summed array was allocated during this pass (safe to overwrite)

    def pop(self, node):
        """The summed gradient of ``node`` (None if nothing reached it), removed from the table.
        A sparse sum reaching a non-leaf is made dense (ops take arrays)."""
        g = self.sums.pop(id(node), None)
        if isinstance(g, RowGrad) and node._op is not None:
            g = g.dense()
            self.owned.add(id(node))
        return g

    def is_scratch(self, node) -> bool:
        """Whether ``node``'s summed gradient may be overwritten by the op that receives it."""
        return _enabled and id(node) in self.owned

    def add(self, node, g, incoming, op_grads: tuple) -> None:
        """``sums[node] += g``. ``incoming`` (the gradient the op received) and ``op_grads`` (all it
        returned) tell whether ``g`` is a fresh array the op made for this input alone."""
        key = id(node)
        prev = self.sums.get(key)
        if not _enabled:
            self.sums[key] = g if prev is None else prev + g
        elif isinstance(g, RowGrad) or isinstance(prev, RowGrad):
            self.sums[key] = _add_sparse(prev, g, key in self.owned)
            if not isinstance(self.sums[key], RowGrad):
                self.owned.add(key)
        elif prev is None:
            self.sums[key] = g
            if g.base is None and g is not incoming and sum(x is g for x in op_grads) == 1:
                self.owned.add(key)
        elif key in self.owned:
            prev += g
        else:
            self.sums[key] = np.asarray(prev + g)  # 0-d operands add to a NumPy scalar: keep an array,
            self.owned.add(key)                    # which the next contribution is added into in place

    def add_to_leaf(self, node, g) -> None:
        """``node.grad += g`` (``node.grad = g`` the first time: a copy unless ``g`` is owned)."""
        if isinstance(g, RowGrad):
            if node.grad is None:
                node.grad = g.dense().astype(node.data.dtype, copy=False)
            else:
                g.add_into(node.grad)
            return
        owned = _enabled and id(node) in self.owned
        if g.dtype != node.data.dtype:
            g, owned = g.astype(node.data.dtype), True
        if node.grad is None:
            # Copy unless the array was made for this leaf alone: an op may hand the same array to
            # several inputs, and the user may later add into .grad in place.
            node.grad = g if owned and g.flags.c_contiguous else np.array(g, order="C", copy=True)
        else:
            node.grad += g


def _add_sparse(prev, g, prev_owned: bool):
    """Sum of two gradient contributions of which at least one is a RowGrad."""
    if prev is None:
        return g
    if isinstance(prev, RowGrad):
        prev, g = g, prev
        prev_owned = False
    if isinstance(prev, RowGrad):  # both sparse
        prev = prev.dense()
    elif not prev_owned:
        prev = prev.copy()
    return g.add_into(prev)
