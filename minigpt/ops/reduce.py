"""Reductions: sum, mean, max over an axis (or several, or all), with or without keepdims."""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..tensor import Function, Tensor
from ._util import as_tensor, check_float, normalize_axis


def _expand(g: np.ndarray, shape: tuple, axes, keepdims: bool) -> np.ndarray:
    """Re-insert the reduced axes of ``g`` (size 1) so it broadcasts against the input's ``shape``."""
    if axes is None:
        return g.reshape((1,) * len(shape))
    if not keepdims:
        g = np.expand_dims(g, axes)
    return g


class Sum(Function):
    def forward(self, x, axis, keepdims):
        self.shape, self.axis, self.keepdims = x.shape, axis, keepdims
        return np.asarray(x.sum(axis=axis, keepdims=keepdims))

    def backward(self, g):
        g = _expand(g, self.shape, self.axis, self.keepdims)
        return (np.broadcast_to(g, self.shape),)


class Mean(Function):
    def forward(self, x, axis, keepdims):
        self.shape, self.axis, self.keepdims = x.shape, axis, keepdims
        n = x.size if axis is None else int(np.prod([x.shape[a] for a in axis]))
        self.n = n
        return np.asarray(x.mean(axis=axis, keepdims=keepdims))

    def backward(self, g):
        g = _expand(g, self.shape, self.axis, self.keepdims) / g.dtype.type(self.n)
        return (np.broadcast_to(g, self.shape),)


class Max(Function):
    """Maximum; the gradient is shared equally among tied maxima."""

    def forward(self, x, axis, keepdims):
        self.x, self.axis, self.keepdims = x, axis, keepdims
        self.y = np.asarray(x.max(axis=axis, keepdims=True))
        return self.y if keepdims else np.asarray(self.y.reshape(
            () if axis is None else tuple(n for i, n in enumerate(x.shape) if i not in axis)))

    def backward(self, g):
        g = _expand(g, self.x.shape, self.axis, self.keepdims)
        mask = self.x == self.y
        count = mask.sum(axis=self.axis, keepdims=True)
        return (np.where(mask, g / count.astype(g.dtype), g.dtype.type(0)),)


def _reduce(op, name, x, axis, keepdims):
    x = as_tensor(x)
    axis = normalize_axis(axis, x.ndim, name)
    if x.requires_grad:
        check_float(x, name)
    return op.apply(x, axis=axis, keepdims=bool(keepdims))


def sum(x, axis=None, keepdims=False) -> Tensor:  # noqa: A001 - the op's name
    return _reduce(Sum, "sum", x, axis, keepdims)


def mean(x, axis=None, keepdims=False) -> Tensor:
    return _reduce(Mean, "mean", x, axis, keepdims)


def max(x, axis=None, keepdims=False) -> Tensor:  # noqa: A001 - the op's name
    x = as_tensor(x)
    if x.size == 0:
        raise MiniGPTError("max of an empty tensor")
    return _reduce(Max, "max", x, axis, keepdims)
