"""Elementwise ops: exp, log, sqrt, tanh, relu, gelu (GPT-2's tanh approximation), and dtype casts."""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..tensor import FLOAT_DTYPES, Function, Tensor
from ._util import as_tensor, check_float


class Exp(Function):
    def forward(self, x):
        self.y = np.exp(x)
        return self.y

    def backward(self, g):
        return (g * self.y,)


class Log(Function):
    def forward(self, x):
        self.x = x
        return np.log(x)

    def backward(self, g):
        return (g / self.x,)


class Sqrt(Function):
    def forward(self, x):
        self.y = np.sqrt(x)
        return self.y

    def backward(self, g):
        return (g / (2.0 * self.y),)


class Tanh(Function):
    def forward(self, x):
        self.y = np.tanh(x)
        return self.y

    def backward(self, g):
        return (g * (1.0 - self.y * self.y),)


class ReLU(Function):
    def forward(self, x):
        self.mask = x > 0
        return np.where(self.mask, x, x.dtype.type(0))

    def backward(self, g):
        return (np.where(self.mask, g, g.dtype.type(0)),)


class GELU(Function):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), GPT-2's approximation.

    The math (forward and derivative) lives in ``minigpt.kernels.gelu``: a Numba kernel with a plain
    NumPy reference beside it.
    """

    def forward(self, x):
        from ..kernels.gelu import gelu_forward

        self.x = x
        return gelu_forward(x)

    def backward(self, g):
        from ..kernels.gelu import gelu_backward

        return (gelu_backward(g, self.x, out=g if self.grad_is_scratch and g.flags.c_contiguous else None),)


class Cast(Function):
    def forward(self, x, dtype):
        self.src = x.dtype
        return x.astype(dtype)

    def backward(self, g):
        return (g.astype(self.src),)


def _float_unary(op, name):
    def fn(x) -> Tensor:
        x = as_tensor(x)
        check_float(x, name)
        return op.apply(x)

    fn.__name__ = name
    fn.__doc__ = f"Elementwise {name} (differentiable); see ``{op.__name__}`` for forward and backward."
    return fn


exp = _float_unary(Exp, "exp")
log = _float_unary(Log, "log")
sqrt = _float_unary(Sqrt, "sqrt")
tanh = _float_unary(Tanh, "tanh")
relu = _float_unary(ReLU, "relu")
gelu = _float_unary(GELU, "gelu")


def cast(x, dtype) -> Tensor:
    dtype = np.dtype(dtype)
    x = as_tensor(x)
    if x.requires_grad and dtype not in FLOAT_DTYPES:
        raise MiniGPTError(f"cannot cast a tensor that requires grad to the non-float dtype {dtype}")
    if x.dtype == dtype:
        return x
    return Cast.apply(x, dtype=dtype)
