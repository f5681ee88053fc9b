"""Fused layer ops: linear (x @ W + b), layer_norm, dropout.

``linear`` keeps W as (in, out) — GPT-2's Conv1D layout — and works on (..., in) inputs as one GEMM over
all leading axes flattened, so the weight gradient is a single (in, N) @ (N, out) product.
"""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..random import as_generator
from ..tensor import FLOAT_DTYPES, Function, Tensor
from ._util import LazyModule, as_tensor, check_float
from .elementwise import gelu

KLN = LazyModule("minigpt.kernels.layernorm")  # loaded on first use
KB = LazyModule("minigpt.kernels.bias")
KG = LazyModule("minigpt.kernels.gelu")


class Linear(Function):
    def forward(self, x, w, b=None):
        n_in, n_out = w.shape
        x2 = x.reshape(-1, n_in)
        y = x2 @ w
        if b is not None:
            KB.add_bias(y, b)
        self.x2, self.w, self.xshape = x2, w, x.shape
        return y.reshape(*x.shape[:-1], n_out)

    def backward(self, g):
        w = self.w
        g2 = g.reshape(-1, w.shape[1])
        dx = (g2 @ w.T).reshape(self.xshape) if self.needs[0] else None
        dw = self.x2.T @ g2 if self.needs[1] else None
        db = KB.bias_grad(g2) if len(self.needs) > 2 and self.needs[2] else None
        return (dx, dw, db)


class LinearGELU(Function):
    """gelu(x @ W + b): the feed-forward layer's first half, fused.

    The bias is added to the GEMM's output in the same pass that applies GELU, and in the backward the
    bias gradient is summed in the pass that applies GELU's derivative (``minigpt.kernels.gelu``
    ``bias_gelu_forward/backward``): one pass over the (N, 4C) activations each way instead of two. The
    math is exactly ``gelu(linear(x, W, b))``.
    """

    def forward(self, x, w, b):
        n_in, n_out = w.shape
        x2 = x.reshape(-1, n_in)
        h = x2 @ w
        y = KG.bias_gelu_forward(h, b)           # h += b in place: the pre-activation, kept for backward
        self.x2, self.w, self.h, self.xshape = x2, w, h, x.shape
        return y.reshape(*x.shape[:-1], n_out)

    def backward(self, g):
        w = self.w
        g2 = g.reshape(-1, w.shape[1])
        scratch = self.grad_is_scratch and g2.flags.c_contiguous and g2.dtype == self.h.dtype
        dh, db = KG.bias_gelu_backward(g2, self.h, out=g2 if scratch else None)
        dx = (dh @ w.T).reshape(self.xshape) if self.needs[0] else None
        dw = self.x2.T @ dh if self.needs[1] else None
        return (dx, dw, db if self.needs[2] else None)


class LinearT(Function):
    """x @ W.T for W of shape (out, in): the LM head over a (tied) token-embedding table."""

    def forward(self, x, w):
        n_out, n_in = w.shape
        x2 = x.reshape(-1, n_in)
        self.x2, self.w, self.xshape = x2, w, x.shape
        return (x2 @ w.T).reshape(*x.shape[:-1], n_out)

    def backward(self, g):
        w = self.w
        g2 = g.reshape(-1, w.shape[0])
        dx = (g2 @ w).reshape(self.xshape) if self.needs[0] else None
        dw = g2.T @ self.x2 if self.needs[1] else None
        return (dx, dw)


class LayerNorm(Function):
    """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance, as GPT-2).

    Forward and backward are fused kernels (``minigpt.kernels.layernorm``); the per-row mean and
    reciprocal standard deviation are saved for backward.
    """

    def forward(self, x, gamma, beta, eps):
        c = x.shape[-1]
        x2 = x.reshape(-1, c)
        y, self.mean, self.rstd = KLN.layer_norm_forward(x2, gamma, beta, eps)
        self.x2, self.gamma, self.shape = x2, gamma, x.shape
        return y.reshape(x.shape)

    def backward(self, g):
        g2 = g.reshape(self.x2.shape)
        dx, dgamma, dbeta = KLN.layer_norm_backward(g2, self.x2, self.gamma, self.mean, self.rstd)
        return (dx.reshape(self.shape), dgamma, dbeta)


class Dropout(Function):
    """Inverted dropout: zero each element with probability p and scale the rest by 1/(1-p)."""

    def forward(self, x, p, rng):
        keep = rng.random(x.shape, dtype=np.float64 if x.dtype == np.float64 else np.float32) >= p
        self.scale = np.where(keep, x.dtype.type(1.0 / (1.0 - p)), x.dtype.type(0))
        return x * self.scale

    def backward(self, g):
        if self.grad_is_scratch:
            g *= self.scale
            return (g,)
        return (g * self.scale,)


def _check_linear(x, weight, bias, name):
    check_float(x, name)
    if weight.ndim != 2:
        raise MiniGPTError(f"{name}: weight must be 2-D (in, out), got shape {weight.shape}")
    if x.ndim == 0 or x.shape[-1] != weight.shape[0]:
        raise MiniGPTError(
            f"{name}: input of shape {x.shape} does not match weight of shape {weight.shape} "
            f"(the input's last axis must equal the weight's first, {weight.shape[0]})"
        )
    if x.dtype != weight.dtype:
        raise MiniGPTError(f"{name}: input is {x.dtype} but weight is {weight.dtype}")
    if bias is not None:
        bias = as_tensor(bias, like=weight)
        if bias.shape != (weight.shape[1],):
            raise MiniGPTError(f"{name}: bias must have shape ({weight.shape[1]},), got {bias.shape}")
        if bias.dtype != weight.dtype:
            raise MiniGPTError(f"{name}: bias is {bias.dtype} but weight is {weight.dtype}")


def linear(x, weight, bias=None) -> Tensor:
    """``x @ weight + bias`` with ``weight`` of shape (in, out) and ``bias`` of shape (out,)."""
    x, weight = as_tensor(x), as_tensor(weight)
    _check_linear(x, weight, bias, "linear")
    if bias is None:
        return Linear.apply(x, weight)
    return Linear.apply(x, weight, as_tensor(bias, like=weight))


def linear_gelu(x, weight, bias) -> Tensor:
    """``gelu(x @ weight + bias)`` in one fused op (the feed-forward layer's first linear and its GELU);
    same arguments, checks and result as ``gelu(linear(x, weight, bias))``."""
    if bias is None:
        return gelu(linear(x, weight))
    x, weight = as_tensor(x), as_tensor(weight)
    _check_linear(x, weight, bias, "linear_gelu")
    return LinearGELU.apply(x, weight, as_tensor(bias, like=weight))


def linear_t(x, weight) -> Tensor:
    """``x @ weight.T`` for ``weight`` of shape (out, in) (PyTorch's nn.Linear layout), e.g. logits
    from a token-embedding table (vocab, dim) shared with the input embedding."""
    x, weight = as_tensor(x), as_tensor(weight)
    check_float(x, "linear_t")
    if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise MiniGPTError(
            f"linear_t: input of shape {x.shape} does not match weight of shape {weight.shape} "
            "(the input's last axis must equal the weight's second)"
        )
    if x.dtype != weight.dtype:
        raise MiniGPTError(f"linear_t: input is {x.dtype} but weight is {weight.dtype}")
    return LinearT.apply(x, weight)


def layer_norm(x, weight, bias, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last axis with scale ``weight`` and shift ``bias`` (each (C,))."""
    x = as_tensor(x)
    check_float(x, "layer_norm")
    weight, bias = as_tensor(weight, like=x), as_tensor(bias, like=x)
    c = x.shape[-1] if x.ndim else None
    if c is None or weight.shape != (c,) or bias.shape != (c,):
        raise MiniGPTError(
            f"layer_norm: weight and bias must have shape ({c},) for input {x.shape}, "
            f"got {weight.shape} and {bias.shape}"
        )
    if not (x.dtype == weight.dtype == bias.dtype):
        raise MiniGPTError(f"layer_norm: dtypes differ: x {x.dtype}, weight {weight.dtype}, bias {bias.dtype}")
    return LayerNorm.apply(x, weight, bias, eps=float(eps))


def dropout(x, p: float = 0.5, training: bool = True, rng=None) -> Tensor:
    """Inverted dropout. Identity when ``training`` is False or ``p`` is 0.

    ``rng``: a ``np.random.Generator``, an int seed, or None for minigpt's global generator
    (``minigpt.manual_seed``).
    """
    x = as_tensor(x)
    if not 0.0 <= p < 1.0:
        raise MiniGPTError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    if x.dtype not in FLOAT_DTYPES:
        raise MiniGPTError(f"dropout needs a float tensor, got {x.dtype}")
    return Dropout.apply(x, p=float(p), rng=as_generator(rng))

