"""Small helpers shared by the ops: input conversion, dtype rules, un-broadcasting of gradients."""
from __future__ import annotations

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
