"""Arithmetic ops with NumPy broadcasting: add, sub, mul, div, neg, pow (scalar exponent), matmul.

Each backward sums the gradient back to its input's shape (``unbroadcast``).
"""
from __future__ import annotations

import numbers

import numpy as np

from ..errors import MiniGPTError
from ..tensor import Function, Tensor
from ._util import as_tensor, binary_operands, unbroadcast


def _broadcast_check(a: np.ndarray, b: np.ndarray, opname: str) -> None:
    if a.shape != b.shape:
        try:
            np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise MiniGPTError(f"{opname}: shapes {a.shape} and {b.shape} cannot be broadcast together") from None


class Add(Function):
    def forward(self, a, b):
        _broadcast_check(a, b, "add")
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        sa, sb = self.shapes
        return (unbroadcast(g, sa) if self.needs[0] else None, unbroadcast(g, sb) if self.needs[1] else None)


class Sub(Function):
    def forward(self, a, b):
        _broadcast_check(a, b, "sub")
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        sa, sb = self.shapes
        return (unbroadcast(g, sa) if self.needs[0] else None, unbroadcast(-g, sb) if self.needs[1] else None)


class Mul(Function):
    def forward(self, a, b):
        _broadcast_check(a, b, "mul")
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        a, b = self.a, self.b
        return (unbroadcast(g * b, a.shape) if self.needs[0] else None,
                unbroadcast(g * a, b.shape) if self.needs[1] else None)


class Div(Function):
    def forward(self, a, b):
        _broadcast_check(a, b, "div")
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        a, b = self.a, self.b
        ga = g / b
        da = unbroadcast(ga, a.shape) if self.needs[0] else None
        db = unbroadcast(-ga * a / b, b.shape) if self.needs[1] else None
        return da, db


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Pow(Function):
    """x ** p for a constant scalar exponent p."""

    def forward(self, a, exponent):
        self.a, self.p = a, exponent
        return a ** exponent

    def backward(self, g):
        a, p = self.a, self.p
        if p == 0:
            return (np.zeros_like(a),)
        return (g * (p * a ** (p - 1)),)


class MatMul(Function):
    """a @ b with NumPy semantics: batched, broadcasting over leading axes, 1-D operands promoted."""

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise MiniGPTError(f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}")
        ka = a.shape[-1]
        kb = b.shape[-2] if b.ndim >= 2 else b.shape[0]
        if ka != kb:
            raise MiniGPTError(
                f"matmul: shapes {a.shape} and {b.shape} do not match: "
                f"the last axis of the first ({ka}) must equal the {'second-to-last' if b.ndim >= 2 else 'only'} "
                f"axis of the second ({kb})"
            )
        if a.ndim > 2 and b.ndim > 2:
            try:
                np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
            except ValueError:
                raise MiniGPTError(
                    f"matmul: batch dimensions of shapes {a.shape} and {b.shape} cannot be broadcast"
                ) from None
        self.a, self.b = a, b
        return np.matmul(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        if a.ndim == 1:
            g = np.expand_dims(g, -2)
        if b.ndim == 1:
            g = np.expand_dims(g, -1)
        da = db = None
        if self.needs[0]:
            if a2.ndim == 2 and g.ndim > 2:  # a (n, k) shared across a batch of b
                gb = np.matmul(g, np.swapaxes(b2, -1, -2))  # (..., n, k)
                da = gb.reshape(-1, *a2.shape).sum(axis=0)
            else:
                da = unbroadcast(np.matmul(g, np.swapaxes(b2, -1, -2)), a2.shape)
            da = da.reshape(a.shape)
        if self.needs[1]:
            if b2.ndim == 2 and a2.ndim > 2:  # b (k, m) shared across a batch of a: one big GEMM
                k, m = b2.shape
                db = a2.reshape(-1, k).T @ g.reshape(-1, m)
            elif b2.ndim == 2 and g.ndim > 2:
                db = np.matmul(np.swapaxes(a2, -1, -2), g).reshape(-1, *b2.shape).sum(axis=0)
            else:
                db = unbroadcast(np.matmul(np.swapaxes(a2, -1, -2), g), b2.shape)
            db = db.reshape(b.shape)
        return da, db


# --- public functions ----------------------------------------------------------------------------
def add(a, b) -> Tensor:
    return Add.apply(*binary_operands(a, b, "add"))


def sub(a, b) -> Tensor:
    return Sub.apply(*binary_operands(a, b, "sub"))


def mul(a, b) -> Tensor:
    return Mul.apply(*binary_operands(a, b, "mul"))


def div(a, b) -> Tensor:
    return Div.apply(*binary_operands(a, b, "div"))


def neg(a) -> Tensor:
    return Neg.apply(as_tensor(a))


def pow(a, exponent) -> Tensor:  # noqa: A001 - the op's name
    """``a ** exponent`` for a constant scalar exponent."""
    if isinstance(exponent, Tensor) or not isinstance(exponent, numbers.Real):
        raise MiniGPTError(f"pow: the exponent must be a Python number, got {type(exponent).__name__}")
    return Pow.apply(as_tensor(a), exponent=exponent)


def matmul(a, b) -> Tensor:
    a, b = binary_operands(a, b, "matmul")
    return MatMul.apply(a, b)
