"""Small helpers shared by the ops: input conversion, dtype rules, un-broadcasting of gradients."""
from __future__ import annotations

import sys
from collections import OrderedDict

import numpy as np

from ..errors import MiniGPTError
from ..tensor import FLOAT_DTYPES, Tensor


def as_tensor(x, like: Tensor | None = None) -> Tensor:
    """Tensors pass through; scalars and arrays become constant tensors (in ``like``'s float dtype)."""
    if isinstance(x, Tensor):
        return x
    if like is not None and like.dtype in FLOAT_DTYPES:
        arr = np.asarray(x)
        if arr.dtype.kind in "biuf":
            return Tensor._wrap(arr.astype(like.dtype, copy=False))
    return Tensor(x)


def binary_operands(a, b, opname: str) -> tuple[Tensor, Tensor]:
    """Convert the operands of a binary op and apply the dtype rules.

    Python numbers and arrays take the float dtype of the tensor operand. Two float tensors of
    different dtypes are an error (cast one explicitly); an integer tensor meets a float one in the
    float dtype.
    """
    if not isinstance(a, Tensor):
        a = as_tensor(a, like=b if isinstance(b, Tensor) else None)
    if not isinstance(b, Tensor):
        b = as_tensor(b, like=a)
    da, db = a.data.dtype, b.data.dtype
    if da != db:
        fa, fb = da in FLOAT_DTYPES, db in FLOAT_DTYPES
        if fa and fb:
            raise MiniGPTError(
                f"{opname}: operands have different float dtypes ({da} and {db}); cast one with .astype()"
            )
        if fa and not fb:
            b = Tensor._wrap(b.data.astype(da))
        elif fb and not fa:
            a = Tensor._wrap(a.data.astype(db))
    return a, b


def check_float(t: Tensor, opname: str) -> None:
    if t.data.dtype not in FLOAT_DTYPES:
        raise MiniGPTError(f"{opname} needs a float32/float64 tensor, got {t.data.dtype}")


def unbroadcast(grad: np.ndarray, shape: tuple) -> np.ndarray:
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast."""
    if grad.shape == shape:
        return grad
    ndiff = grad.ndim - len(shape)
    axes = tuple(range(ndiff)) + tuple(
        i + ndiff for i, n in enumerate(shape) if n == 1 and grad.shape[i + ndiff] != 1
    )
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def normalize_axis(axis, ndim: int, opname: str):
    """Validate ``axis`` (None, int or tuple of ints) against ``ndim``; returns a sorted tuple or None."""
    if axis is None:
        return None
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise MiniGPTError(f"{opname}: axis {ax} is out of range for a tensor with {ndim} dimensions")
        out.append(int(ax) % ndim)
    if len(set(out)) != len(out):
        raise MiniGPTError(f"{opname}: repeated axis in {axis}")
    return tuple(sorted(out))


class BufferPool:
    """Large scratch arrays reused from step to step: the (N, vocab) logits of the LM head. A buffer of hundreds of MB is mapped fresh by the operating system at each allocation,
    and faulting its pages in costs about as much as a pass over it; handing out last step's buffer
    avoids that.

    A buffer is handed out again only once nothing but the pool refers to it: its reference count
    (which counts every view of it too, through their ``base``) shows whether the caller, a graph or a
    user still holds it. So a result taken from here can be kept, returned or stored as long as anyone
    likes: the pool then simply allocates another. At most ``keep`` buffers per shape and ``shapes``
    shapes are remembered; arrays below ``min_size`` elements are not worth it and are never pooled.
    """

    _IDLE = 3  # references to a free buffer seen in take(): the pool's list, the loop variable, the call

    def __init__(self, keep: int = 2, shapes: int = 2, min_size: int = 1 << 20):
        self.keep, self.shapes, self.min_size = keep, shapes, min_size
        self.bufs = OrderedDict()

    def take(self, shape, dtype) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype`` that nobody else holds."""
        shape, dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        if int(np.prod(shape)) < self.min_size:
            return np.empty(shape, dtype=dtype)
        key = (shape, dtype)
        bufs = self.bufs.get(key)
        if bufs is None:
            bufs = self.bufs[key] = []
            while len(self.bufs) > self.shapes:
                self.bufs.popitem(last=False)
        else:
            self.bufs.move_to_end(key)
        for b in bufs:
            if sys.getrefcount(b) <= self._IDLE:
                return b
        b = np.empty(shape, dtype=dtype)
        if len(bufs) < self.keep:
            bufs.append(b)
        return b

    def clear(self) -> None:
        self.bufs.clear()


# The pool of the LM head's logits (ops/nn.py LinearTOp, ops/softmax.py). The fused loss
# (linear_cross_entropy) writes its gradient over its logits and uses one buffer. The book's loss path needs
# a second (N, vocab) array for the gradient while the caller still holds the logits; the pool keeps that
# one too: a fresh 400 MB array each step cost the book path ~20% of `small`'s step in page faults, and
# keeping it costs one buffer of memory on that path only.
LOGITS_POOL = BufferPool(keep=2)
