"""Elementwise ops: exp, log, sqrt, tanh, relu, gelu (GPT-2's tanh approximation), and dtype casts."""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..kernels import gelu as gelu_kernels
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


class GELUOp(Function):
    """y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3): GPT-2's approximation.
    math: kernels/gelu.py::gelu_forward_numpy, gelu_backward_numpy"""

    def forward(self, x):
        self.x = x
        return gelu_kernels.gelu_forward(x)     # elementwise: x.shape -> x.shape

    def backward(self, g):
        # dx = g * (term 1 + term 2), elementwise, x.shape (product rule on 0.5 x * (1 + tanh u)):
        #   term 1 = 0.5 (1 + tanh u)                 through the factor x
        #   term 2 = 0.5 x (1 - tanh^2 u) du/dx       through tanh, du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        out = g if self.grad_is_scratch and g.flags.c_contiguous else None  # write over g if it is ours
        return (gelu_kernels.gelu_backward(g, self.x, out=out),)


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
gelu = _float_unary(GELUOp, "gelu")


def cast(x, dtype) -> Tensor:
    dtype = np.dtype(dtype)
    x = as_tensor(x)
    if x.requires_grad and dtype not in FLOAT_DTYPES:
        raise MiniGPTError(f"cannot cast a tensor that requires grad to the non-float dtype {dtype}")
    if x.dtype == dtype:
        return x
    return Cast.apply(x, dtype=dtype)
