"""Fused layer ops: linear (x @ W + b), linear + GELU, the whole feed-forward layer, layer_norm, dropout;
Llama's and Qwen's rms_norm and SwiGLU feed-forward layer (swiglu), and its gate silu / silu_mul.

``linear`` keeps W as (in, out) — GPT-2's Conv1D layout — and works on (..., in) inputs as one GEMM over
all leading axes flattened, so the weight gradient is a single (in, N) @ (N, out) product.
"""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..kernels import bias, gelu, layernorm, rmsnorm
from ..kernels import swiglu as gate
from ..random import as_generator
from ..tensor import FLOAT_DTYPES, Function, Tensor
from . import elementwise
from ._util import LOGITS_POOL, as_tensor, check_float

# Shapes: x (..., C_in) is flattened to N = prod(...) rows; W (C_in, C_out), b (C_out,).


class LinearOp(Function):
    """y = x @ W + b (+ r: a residual of y's shape, e.g. a transformer block's skip connection, added in
    place, so the product is never kept as a tensor of its own).
    math: kernels/bias.py::add_bias_numpy, bias_grad_numpy"""

    def forward(self, x, w, b=None, r=None):
        n_in, n_out = w.shape
        x2 = x.reshape(-1, n_in)                 # (..., C_in) -> (N, C_in)
        y = x2 @ w                               # (N, C_in) @ (C_in, C_out) -> (N, C_out)
        if b is not None:
            bias.add_bias(y, b)                  # (N, C_out) += (C_out,)
        if r is not None:
            y += r.reshape(y.shape)              # (N, C_out) += residual (N, C_out)
        self.x2, self.w, self.xshape = x2, w, x.shape
        return y.reshape(*x.shape[:-1], n_out)   # (N, C_out) -> (..., C_out)

    def backward(self, g):
        w, needs = self.w, self.needs
        g2 = g.reshape(-1, w.shape[1])                                      # (..., C_out) -> (N, C_out)
        dx = (g2 @ w.T).reshape(self.xshape) if needs[0] else None          # dx = g W^T: (N, C_out) @ (C_out, C_in)
        dw = self.x2.T @ g2 if needs[1] else None                           # dW = x^T g: (C_in, N) @ (N, C_out)
        db = bias.bias_grad(g2) if len(needs) > 2 and needs[2] else None    # db = sum_n g: (C_out,)
        if len(needs) > 3:
            return (dx, dw, db, g if needs[3] else None)                    # dr = g
        return (dx, dw, db)


class LinearGELUOp(Function):
    """y = gelu(x @ W + b): the feed-forward layer's first half, fused.

    The bias is added to the GEMM's output in the same pass that applies GELU, and in the backward the
    bias gradient is summed in the pass that applies GELU's derivative: one pass over the (N, 4C)
    activations each way instead of two. The math is exactly ``gelu(linear(x, W, b))``.
    math: kernels/gelu.py::bias_gelu_forward_numpy, bias_gelu_backward_numpy (gelu_backward_numpy)
    """

    def forward(self, x, w, b):
        n_in, n_out = w.shape
        x2 = x.reshape(-1, n_in)                 # (..., C) -> (N, C)
        h = x2 @ w                               # (N, C) @ (C, 4C) -> (N, 4C)
        y = gelu.bias_gelu_forward(h, b)         # h += b in place (the pre-activation, kept); y = gelu(h): (N, 4C)
        self.x2, self.w, self.h, self.xshape = x2, w, h, x.shape
        return y.reshape(*x.shape[:-1], n_out)   # (N, 4C) -> (..., 4C)

    def backward(self, g):
        w = self.w
        g2 = g.reshape(-1, w.shape[1])           # (..., 4C) -> (N, 4C)
        scratch = self.grad_is_scratch and g2.flags.c_contiguous and g2.dtype == self.h.dtype
        # dh = g * gelu'(h): (N, 4C); db = sum_n dh: (4C,)
        dh, db = gelu.bias_gelu_backward(g2, self.h, out=g2 if scratch else None)
        dx = (dh @ w.T).reshape(self.xshape) if self.needs[0] else None   # dx = dh W^T: (N, 4C) @ (4C, C)
        dw = self.x2.T @ dh if self.needs[1] else None                    # dW = x^T dh: (C, N) @ (N, 4C)
        return (dx, dw, db if self.needs[2] else None)


class FeedForwardOp(Function):
    """y = gelu(x @ W1 + b1) @ W2 + b2 (+ r, a residual added in place as in LinearOp): the transformer's
    whole feed-forward layer as one op.

    Forward keeps only the pre-activation ``h = x @ W1 + b1`` (N, 4C); the GELU output ``gelu(h)``, the
    other (N, 4C) array of the layer, is freed as soon as the second GEMM has read it, and backward
    recomputes it from ``h`` (one cheap element-wise pass) for W2's gradient. That halves what the layer
    keeps for backward. The arithmetic is exactly that of ``linear(linear_gelu(x, W1, b1), W2, b2)``, so
    results are bit-identical to the unfused pair.
    math: kernels/gelu.py::bias_gelu_forward_numpy, gelu_forward_numpy, bias_gelu_backward_numpy;
    kernels/bias.py::add_bias_numpy, bias_grad_numpy
    """

    def forward(self, x, w1, b1, w2, b2, r=None):
        n_in, n_hidden = w1.shape
        x2 = x.reshape(-1, n_in)                 # (..., C) -> (N, C)
        h = x2 @ w1                              # (N, C) @ (C, 4C) -> (N, 4C)
        y = gelu.bias_gelu_forward(h, b1)        # h += b1 in place (kept); y = gelu(h): (N, 4C), not kept
        out = y @ w2                             # (N, 4C) @ (4C, C) -> (N, C)
        bias.add_bias(out, b2)                   # (N, C) += (C,)
        if r is not None:
            out += r.reshape(out.shape)          # (N, C) += residual (N, C)
        self.x2, self.w1, self.w2, self.h, self.xshape = x2, w1, w2, h, x.shape
        return out.reshape(*x.shape[:-1], w2.shape[1])

    def backward(self, g):
        w1, w2, h = self.w1, self.w2, self.h
        g2 = g.reshape(-1, w2.shape[1])                          # (..., C) -> (N, C)
        needs = self.needs
        dw2 = db2 = None
        y = gelu.gelu_forward(h)                                 # y = gelu(h) again: (N, 4C)
        if needs[3]:
            dw2 = y.T @ g2                                       # dW2 = y^T g: (4C, N) @ (N, C)
        if needs[4]:
            db2 = bias.bias_grad(g2)                             # db2 = sum_n g: (C,)
        dr = (g if needs[5] else None,) if len(needs) > 5 else ()  # dr = g
        if not (needs[0] or needs[1] or needs[2]):
            return (None, None, None, dw2, db2) + dr
        dy = np.matmul(g2, w2.T, out=y)                          # dy = g W2^T: (N, C) @ (C, 4C), over y
        dh, db1 = gelu.bias_gelu_backward(dy, h, out=dy)         # dh = dy * gelu'(h): (N, 4C); db1 = sum_n dh
        dx = (dh @ w1.T).reshape(self.xshape) if needs[0] else None  # dx = dh W1^T: (N, 4C) @ (4C, C)
        dw1 = self.x2.T @ dh if needs[1] else None                # dW1 = x^T dh: (C, N) @ (N, 4C)
        return (dx, dw1, db1 if needs[2] else None, dw2, db2) + dr


class LinearTOp(Function):
    """y = x @ W.T for W of shape (C_out, C_in): the LM head over a (tied) token-embedding table."""

    def forward(self, x, w):
        n_out, n_in = w.shape
        x2 = x.reshape(-1, n_in)                               # (..., C_in) -> (N, C_in)
        self.x2, self.w, self.xshape = x2, w, x.shape
        # the logits of a training batch are the step's largest array: last step's buffer is reused once
        # nobody holds it any more (ops/_util.py BufferPool); small outputs are allocated as usual
        y = LOGITS_POOL.take((x2.shape[0], n_out), np.result_type(x2, w))
        np.matmul(x2, w.T, out=y)                              # (N, C_in) @ (C_in, C_out) -> (N, C_out)
        return y.reshape(*x.shape[:-1], n_out)                 # (N, C_out) -> (..., C_out)

    def backward(self, g):
        w = self.w
        g2 = g.reshape(-1, w.shape[0])                                   # (..., C_out) -> (N, C_out)
        dx = (g2 @ w).reshape(self.xshape) if self.needs[0] else None    # dx = g W: (N, C_out) @ (C_out, C_in)
        dw = g2.T @ self.x2 if self.needs[1] else None                   # dW = g^T x: (C_out, N) @ (N, C_in)
        return (dx, dw)


class LayerNormOp(Function):
    """y = (x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance, as GPT-2).

    Forward and backward are fused kernels; the per-row mean and reciprocal standard deviation (rstd)
    are saved for backward.
    math: kernels/layernorm.py::layer_norm_forward_numpy, layer_norm_backward_numpy
    """

    def forward(self, x, gamma, beta, eps):
        c = x.shape[-1]
        x2 = x.reshape(-1, c)                    # (..., C) -> (N, C)
        # y = xhat * gamma + beta with xhat = (x - mean) * rstd: (N, C); mean, rstd: (N,)
        y, self.mean, self.rstd = layernorm.layer_norm_forward(x2, gamma, beta, eps)
        self.x2, self.gamma, self.shape = x2, gamma, x.shape
        return y.reshape(x.shape)                # (N, C) -> (..., C)

    def backward(self, g):
        g2 = g.reshape(self.x2.shape)            # (..., C) -> (N, C)
        # With gx = g * gamma, per row (means over C):
        #   dx = rstd * (gx - mean(gx) - xhat * mean(gx * xhat))   term 1: the direct path through xhat,
        #        term 2: through the mean, term 3: through the variance;        dx: (N, C)
        #   dgamma = sum_n g * xhat, dbeta = sum_n g                             (C,), (C,)
        dx, dgamma, dbeta = layernorm.layer_norm_backward(g2, self.x2, self.gamma, self.mean, self.rstd)
        return (dx.reshape(self.shape), dgamma, dbeta)


class DropoutOp(Function):
    """Inverted dropout: y = x * mask / (1 - p), each element kept with probability 1 - p."""

    def forward(self, x, p, rng):
        keep = rng.random(x.shape, dtype=np.float64 if x.dtype == np.float64 else np.float32) >= p
        self.scale = np.where(keep, x.dtype.type(1.0 / (1.0 - p)), x.dtype.type(0))  # mask / (1 - p): x.shape
        return x * self.scale

    def backward(self, g):
        # dx = g * mask / (1 - p), same shape as x
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


def _check_residual(residual, x, n_out, name):
    residual = as_tensor(residual, like=x)
    shape = (*x.shape[:-1], n_out)
    if residual.shape != shape or residual.dtype != x.dtype:
        raise MiniGPTError(f"{name}: residual must be a {x.dtype} array of the output's shape {shape}, got "
                           f"{residual.dtype} {residual.shape}")
    return residual


def linear(x, weight, bias=None, residual=None) -> Tensor:
    """``x @ weight + bias`` with ``weight`` of shape (in, out) and ``bias`` of shape (out,);
    ``+ residual`` (the output's shape) when given, added in the same op: the product itself is never
    kept, as ``linear(x, w, b) + residual`` would keep it."""
    x, weight = as_tensor(x), as_tensor(weight)
    _check_linear(x, weight, bias, "linear")
    if residual is not None:
        residual = _check_residual(residual, x, weight.shape[1], "linear")
        if bias is None:
            return LinearOp.apply(x, weight) + residual
        return LinearOp.apply(x, weight, as_tensor(bias, like=weight), residual)
    if bias is None:
        return LinearOp.apply(x, weight)
    return LinearOp.apply(x, weight, as_tensor(bias, like=weight))


def linear_gelu(x, weight, bias) -> Tensor:
    """``gelu(x @ weight + bias)`` in one fused op (the feed-forward layer's first linear and its GELU);
    same arguments, checks and result as ``gelu(linear(x, weight, bias))``."""
    if bias is None:
        return elementwise.gelu(linear(x, weight))
    x, weight = as_tensor(x), as_tensor(weight)
    _check_linear(x, weight, bias, "linear_gelu")
    return LinearGELUOp.apply(x, weight, as_tensor(bias, like=weight))


def feed_forward(x, w1, b1, w2, b2, residual=None) -> Tensor:
    """``linear(gelu(linear(x, w1, b1)), w2, b2)`` as one op that keeps only the (N, hidden) pre-activation
    for backward (the GELU output is recomputed there). ``w1`` (C, hidden), ``b1`` (hidden,), ``w2``
    (hidden, C_out), ``b2`` (C_out,); same checks and bit-identical results as the three ops. ``residual``
    (the output's shape) is added in the same op, as in :func:`linear`."""
    x, w1, w2 = as_tensor(x), as_tensor(w1), as_tensor(w2)
    _check_linear(x, w1, b1, "feed_forward")
    if b1 is None or b2 is None:
        raise MiniGPTError("feed_forward: both biases are required (use linear and gelu without them)")
    if w2.ndim != 2 or w2.shape[0] != w1.shape[1]:
        raise MiniGPTError(f"feed_forward: second weight of shape {w2.shape} does not match the hidden size "
                           f"{w1.shape[1]} of the first {w1.shape}")
    b2 = as_tensor(b2, like=w2)
    if w2.dtype != x.dtype or b2.dtype != x.dtype:
        raise MiniGPTError(f"feed_forward: input is {x.dtype} but the second weight and bias are {w2.dtype} and "
                           f"{b2.dtype}")
    if b2.shape != (w2.shape[1],):
        raise MiniGPTError(f"feed_forward: second bias must have shape ({w2.shape[1]},), got {b2.shape}")
    if residual is not None:
        residual = _check_residual(residual, x, w2.shape[1], "feed_forward")
        return FeedForwardOp.apply(x, w1, as_tensor(b1, like=w1), w2, b2, residual)
    return FeedForwardOp.apply(x, w1, as_tensor(b1, like=w1), w2, b2)


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
    return LinearTOp.apply(x, weight)


def layer_norm(x, weight, bias, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last axis with scale ``weight`` and shift ``bias`` (each (C,))."""
    x = as_tensor(x)
    check_float(x, "layer_norm")
    weight, bias = as_tensor(weight, like=x), as_tensor(bias, like=x)
    if x.ndim == 0:
        raise MiniGPTError("layer_norm: the input must have at least 1 axis (it is normalised over the last), "
                           "got a 0-d tensor")
    c = x.shape[-1]
    if weight.shape != (c,) or bias.shape != (c,):
        raise MiniGPTError(
            f"layer_norm: weight and bias must have shape ({c},) for input {x.shape}, "
            f"got {weight.shape} and {bias.shape}"
        )
    if not (x.dtype == weight.dtype == bias.dtype):
        raise MiniGPTError(f"layer_norm: dtypes differ: x {x.dtype}, weight {weight.dtype}, bias {bias.dtype}")
    return LayerNormOp.apply(x, weight, bias, eps=float(eps))


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
    return DropoutOp.apply(x, p=float(p), rng=as_generator(rng))



class RMSNormOp(Function):
    """y = x / sqrt(mean(x^2) + eps) * gamma over the last axis (Llama, Qwen: no centring, no shift).

    Forward and backward are fused kernels; the per-row reciprocal RMS (rstd) is saved for backward.
    math: kernels/rmsnorm.py::rms_norm_forward_numpy, rms_norm_backward_numpy
    """

    def forward(self, x, gamma, eps):
        c = x.shape[-1]
        x2 = x.reshape(-1, c)                    # (..., C) -> (N, C)
        y, self.rstd = rmsnorm.rms_norm_forward(x2, gamma, eps)   # y = x * rstd * gamma: (N, C); rstd: (N,)
        self.x2, self.gamma, self.shape = x2, gamma, x.shape
        return y.reshape(x.shape)                # (N, C) -> (..., C)

    def backward(self, g):
        g2 = g.reshape(self.x2.shape)            # (..., C) -> (N, C)
        # With gx = g * gamma and xhat = x * rstd, per row (mean over C):
        #   dx = rstd * (gx - xhat * mean(gx * xhat))      the direct path, minus the path through rstd: (N, C)
        #   dgamma = sum_n g * xhat                                                                        (C,)
        dx, dgamma = rmsnorm.rms_norm_backward(g2, self.x2, self.gamma, self.rstd)
        return (dx.reshape(self.shape), dgamma)


class SwiGLUOp(Function):
    """y = (silu(x @ W_gate) * (x @ W_up)) @ W_down (+ r, a residual added in place): the feed-forward layer
    of Llama and Qwen as one op, weights in minigpt's (in, out) layout and without biases.

    Forward keeps the two pre-activations ``a = x W_gate`` and ``b = x W_up`` (N, H); the gated product
    ``u = silu(a) * b`` is freed once the last GEMM has read it and recomputed in backward for W_down's
    gradient.
    math: kernels/swiglu.py::silu_mul_forward_numpy, silu_mul_backward_numpy
    """

    def forward(self, x, w_gate, w_up, w_down, r=None):
        n_in = w_gate.shape[0]
        x2 = x.reshape(-1, n_in)                 # (..., C) -> (N, C)
        a = x2 @ w_gate                          # (N, C) @ (C, H) -> (N, H)
        b = x2 @ w_up                            # (N, C) @ (C, H) -> (N, H)
        u = gate.silu_mul_forward(a, b)        # u = silu(a) * b: (N, H), not kept
        out = u @ w_down                         # (N, H) @ (H, C_out) -> (N, C_out)
        if r is not None:
            out += r.reshape(out.shape)          # (N, C_out) += residual
        self.x2, self.a, self.b, self.w = x2, a, b, (w_gate, w_up, w_down)
        self.xshape = x.shape
        return out.reshape(*x.shape[:-1], w_down.shape[1])

    def backward(self, g):
        w_gate, w_up, w_down = self.w
        needs = self.needs
        g2 = g.reshape(-1, w_down.shape[1])                        # (..., C_out) -> (N, C_out)
        dw_down = None
        if needs[3]:
            u = gate.silu_mul_forward(self.a, self.b)            # u again: (N, H)
            dw_down = u.T @ g2                                     # dW_down = u^T g: (H, N) @ (N, C_out)
        dr = (g if needs[4] else None,) if len(needs) > 4 else ()   # dr = g
        if not (needs[0] or needs[1] or needs[2]):
            return (None, None, None, dw_down) + dr
        du = g2 @ w_down.T                                         # du = g W_down^T: (N, C_out) @ (C_out, H)
        da, db = gate.silu_mul_backward(du, self.a, self.b)      # da = du * b * silu'(a), db = du * silu(a): (N, H)
        dx = None
        if needs[0]:
            dx = da @ w_gate.T                                     # dx = da W_gate^T + db W_up^T: (N, C)
            dx += db @ w_up.T                                      # (the input feeds both branches: they add)
            dx = dx.reshape(self.xshape)
        dw_gate = self.x2.T @ da if needs[1] else None             # dW_gate = x^T da: (C, N) @ (N, H)
        dw_up = self.x2.T @ db if needs[2] else None               # dW_up = x^T db: (C, N) @ (N, H)
        return (dx, dw_gate, dw_up, dw_down) + dr


def rms_norm(x, weight, eps: float = 1e-6) -> Tensor:
    """RMS normalisation over the last axis with scale ``weight`` ((C,)): ``x / sqrt(mean(x^2) + eps) *
    weight``, as Llama's and Qwen's ``RMSNorm``."""
    x = as_tensor(x)
    check_float(x, "rms_norm")
    weight = as_tensor(weight, like=x)
    c = x.shape[-1] if x.ndim else None
    if c is None or weight.shape != (c,):
        raise MiniGPTError(f"rms_norm: weight must have shape ({c},) for input {x.shape}, got {weight.shape}")
    if x.dtype != weight.dtype:
        raise MiniGPTError(f"rms_norm: dtypes differ: x {x.dtype}, weight {weight.dtype}")
    if not eps >= 0:
        raise MiniGPTError(f"rms_norm: eps must be >= 0, got {eps}")
    return RMSNormOp.apply(x, weight, eps=float(eps))


def swiglu(x, w_gate, w_up, w_down, residual=None) -> Tensor:
    """Llama's / Qwen's feed-forward layer ``(silu(x @ w_gate) * (x @ w_up)) @ w_down`` as one op: ``w_gate``
    and ``w_up`` (C, H), ``w_down`` (H, C_out), no biases; ``residual`` (the output's shape) is added in
    the same op, as in :func:`linear`. ``silu(a) = a * sigmoid(a)``."""
    x, w_gate, w_up, w_down = (as_tensor(t) for t in (x, w_gate, w_up, w_down))
    _check_linear(x, w_gate, None, "swiglu")
    if w_up.shape != w_gate.shape:
        raise MiniGPTError(f"swiglu: w_up of shape {w_up.shape} must have w_gate's shape {w_gate.shape}")
    if w_down.ndim != 2 or w_down.shape[0] != w_gate.shape[1]:
        raise MiniGPTError(f"swiglu: w_down of shape {w_down.shape} does not match the hidden size "
                           f"{w_gate.shape[1]}")
    if not (x.dtype == w_up.dtype == w_down.dtype):
        raise MiniGPTError(f"swiglu: dtypes differ: x {x.dtype}, w_up {w_up.dtype}, w_down {w_down.dtype}")
    if residual is not None:
        residual = _check_residual(residual, x, w_down.shape[1], "swiglu")
        return SwiGLUOp.apply(x, w_gate, w_up, w_down, residual)
    return SwiGLUOp.apply(x, w_gate, w_up, w_down)


def silu(x) -> Tensor:
    """``x * sigmoid(x)`` element-wise (the gate of SwiGLU), any shape."""
    x = as_tensor(x)
    check_float(x, "silu")
    return SiLUMulOp.apply(x)


def silu_mul(a, b) -> Tensor:
    """``silu(a) * b`` element-wise in one pass (SwiGLU's gate), ``a`` and ``b`` of one shape."""
    a, b = as_tensor(a), as_tensor(b)
    check_float(a, "silu_mul")
    if a.shape != b.shape or a.dtype != b.dtype:
        raise MiniGPTError(f"silu_mul: a and b must have one shape and dtype, got {a.dtype} {a.shape} and "
                           f"{b.dtype} {b.shape}")
    return SiLUMulOp.apply(a, b)


class SiLUMulOp(Function):
    """y = silu(a) * b element-wise (y = silu(a) without ``b``), with silu(a) = a * sigmoid(a).
    math: kernels/swiglu.py::silu_mul_forward_numpy, silu_mul_backward_numpy"""

    def forward(self, a, b=None):
        self.a = a
        self.b = np.ones(a.shape, dtype=a.dtype) if b is None else b     # a.shape
        return gate.silu_mul_forward(a, self.b)                         # a.shape

    def backward(self, g):
        da, db = gate.silu_mul_backward(g, self.a, self.b)   # da = g * b * silu'(a), db = g * silu(a)
        return (da, db) if len(self.needs) > 1 else (da,)
