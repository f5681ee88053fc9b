"""Shape ops: reshape, transpose / permute, indexing (slices and integer arrays), concatenate, stack, split."""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..tensor import Function, Tensor
from ._util import as_tensor


class Reshape(Function):
    def forward(self, x, shape):
        self.shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise MiniGPTError(f"reshape: cannot reshape a tensor of shape {x.shape} into {shape}") from None

    def backward(self, g):
        return (g.reshape(self.shape),)


class Transpose(Function):
    def forward(self, x, axes):
        if axes is not None:
            if sorted(a % x.ndim if -x.ndim <= a < x.ndim else a for a in axes) != list(range(x.ndim)):
                raise MiniGPTError(f"transpose: axes {axes} are not a permutation of a {x.ndim}-D tensor's axes")
            axes = tuple(a % x.ndim for a in axes)
        self.axes = axes
        return np.transpose(x, axes)

    def backward(self, g):
        inv = None if self.axes is None else tuple(np.argsort(self.axes))
        return (np.transpose(g, inv),)


def _is_advanced(index) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, (np.ndarray, list)) for i in items)


class GetItem(Function):
    """``x[index]``. Backward scatters the gradient back; for integer-array indices with repeats the
    contributions are summed (``np.add.at``), which is what an embedding lookup needs."""

    def forward(self, x, index):
        self.shape, self.dtype, self.index = x.shape, x.dtype, index
        self.advanced = _is_advanced(index)
        try:
            return x[index]
        except IndexError as e:
            raise MiniGPTError(f"index {_describe(index)} is invalid for a tensor of shape {x.shape}: {e}") from None

    def backward(self, g):
        dx = np.zeros(self.shape, dtype=g.dtype)
        if self.advanced:
            np.add.at(dx, self.index, g)
        else:
            dx[self.index] = g
        return (dx,)


def _describe(index) -> str:
    items = index if isinstance(index, tuple) else (index,)
    return "[" + ", ".join(f"array{i.shape}" if isinstance(i, np.ndarray) else repr(i) for i in items) + "]"


def _convert_index(index):
    def conv(i):
        if isinstance(i, Tensor):
            i = i.data
        if isinstance(i, list):
            i = np.asarray(i)
        if isinstance(i, np.ndarray) and i.dtype.kind not in "iub":
            raise MiniGPTError(f"index arrays must hold integers or booleans, got {i.dtype}")
        return i

    if isinstance(index, tuple):
        return tuple(conv(i) for i in index)
    return conv(index)


class Concatenate(Function):
    def forward(self, *arrays, axis):
        self.sizes = [a.shape[axis] for a in arrays]
        self.axis = axis
        return np.concatenate(arrays, axis=axis)

    def backward(self, g):
        cuts = np.cumsum(self.sizes)[:-1]
        return tuple(np.split(g, cuts, axis=self.axis))


class Stack(Function):
    def forward(self, *arrays, axis):
        self.axis = axis
        return np.stack(arrays, axis=axis)

    def backward(self, g):
        return tuple(np.take(g, i, axis=self.axis) for i in range(g.shape[self.axis]))


# --- public functions ----------------------------------------------------------------------------
def reshape(x, shape) -> Tensor:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    return Reshape.apply(as_tensor(x), shape=tuple(int(s) for s in shape))


def transpose(x, axes=None) -> Tensor:
    return Transpose.apply(as_tensor(x), axes=None if axes is None else tuple(int(a) for a in axes))


def permute(x, *axes) -> Tensor:
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return transpose(x, axes)


def getitem(x, index) -> Tensor:
    return GetItem.apply(as_tensor(x), index=_convert_index(index))


def _check_same(tensors, opname):
    if len(tensors) == 0:
        raise MiniGPTError(f"{opname}: needs at least one tensor")
    tensors = [as_tensor(t) for t in tensors]
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        raise MiniGPTError(f"{opname}: tensors have different dtypes {sorted(map(str, dtypes))}")
    return tensors


def concatenate(tensors, axis=0) -> Tensor:
    tensors = _check_same(list(tensors), "concatenate")
    nd = tensors[0].ndim
    if nd == 0 or not -nd <= axis < nd:
        raise MiniGPTError(f"concatenate: axis {axis} is out of range for {nd}-D tensors")
    axis %= nd
    for t in tensors:
        if t.ndim != nd or any(a != b for i, (a, b) in enumerate(zip(t.shape, tensors[0].shape)) if i != axis):
            raise MiniGPTError(
                f"concatenate: shapes {[t.shape for t in tensors]} differ outside axis {axis}"
            )
    return Concatenate.apply(*tensors, axis=axis)


cat = concatenate


def stack(tensors, axis=0) -> Tensor:
    tensors = _check_same(list(tensors), "stack")
    if any(t.shape != tensors[0].shape for t in tensors):
        raise MiniGPTError(f"stack: all tensors must have the same shape, got {[t.shape for t in tensors]}")
    nd = tensors[0].ndim + 1
    if not -nd <= axis < nd:
        raise MiniGPTError(f"stack: axis {axis} is out of range for the {nd}-D result")
    return Stack.apply(*tensors, axis=axis % nd)


def split(x, sections, axis=0) -> list:
    """Split along ``axis`` into equal parts (an int that divides the axis) or at the given indices
    (a list, as ``np.split``). Each part is a differentiable slice of ``x``."""
    x = as_tensor(x)
    if not -x.ndim <= axis < x.ndim:
        raise MiniGPTError(f"split: axis {axis} is out of range for a {x.ndim}-D tensor")
    axis %= x.ndim
    n = x.shape[axis]
    if isinstance(sections, (int, np.integer)):
        if sections <= 0 or n % sections:
            raise MiniGPTError(f"split: an axis of size {n} cannot be split into {sections} equal parts")
        step = n // sections
        bounds = [(i * step, (i + 1) * step) for i in range(sections)]
    else:
        cuts = [0, *[int(c) for c in sections], n]
        if any(a > b for a, b in zip(cuts, cuts[1:])):
            raise MiniGPTError(f"split: indices {list(sections)} must be increasing and within 0..{n}")
        bounds = list(zip(cuts, cuts[1:]))
    pre = (slice(None),) * axis
    return [getitem(x, pre + (slice(a, b),)) for a, b in bounds]
