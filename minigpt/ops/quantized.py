"""Inference-only ops over int8 weights (``model.quantize("int8")``): the linear layer and the embedding
lookup. The weight is ``(q, scales)`` as described in ``minigpt.kernels.int8``; activations stay float32.

These ops have no backward: a quantized model is for generation and evaluation. Calling backward through
one raises a ``MiniGPTError`` that says so (train the float32 model, then quantize it).
"""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..kernels import bias, int8
from ..tensor import Function, Tensor
from ._util import as_tensor, check_float

INFERENCE_ONLY = ("int8-quantized weights are for inference only (no gradients): train or finetune the "
                  "float32 model, then quantize it")


class Int8LinearOp(Function):
    """y = x @ W.T (+ b) for an int8 weight W (C_out, C_in) stored as ``(q, scales)``; forward only.
    math: kernels/int8.py::int8_matmul_numpy (dequantize, then matmul), kernels/bias.py::add_bias_numpy
    """

    def forward(self, x, b=None, *, q, scales):
        n_out, n_in = q.shape
        x2 = x.reshape(-1, n_in)                      # (..., C_in) -> (N, C_in)
        y = int8.int8_matmul(x2, q, scales)           # (N, C_in) @ W.T -> (N, C_out), W never materialised
        if b is not None:
            bias.add_bias(y, b.astype(y.dtype, copy=False))   # (N, C_out) += (C_out,)
        return y.astype(x.dtype, copy=False).reshape(*x.shape[:-1], n_out)

    def backward(self, g):
        raise MiniGPTError(INFERENCE_ONLY)


def int8_linear(x, q, scales, bias=None) -> Tensor:
    """``x @ W.T + bias`` for the int8 weight ``W`` (out, in) given as ``q`` (int8, (out, in)) and
    ``scales`` (float32, (out, G)); ``bias`` of shape (out,) or None. Inference only (no backward)."""
    x = as_tensor(x)
    check_float(x, "int8_linear")
    q, scales = np.asarray(q), np.asarray(scales)
    if q.ndim != 2 or q.dtype != np.int8:
        raise MiniGPTError(f"int8_linear: the weight must be a 2-D int8 array, got {q.dtype} {q.shape}")
    if x.ndim == 0 or x.shape[-1] != q.shape[1]:
        raise MiniGPTError(f"int8_linear: input of shape {x.shape} does not match a weight of shape {q.shape} "
                           f"(out, in): the input's last axis must be {q.shape[1]}")
    if bias is None:
        return Int8LinearOp.apply(x, q=q, scales=scales)
    bias = as_tensor(bias, like=x)
    if bias.shape != (q.shape[0],):
        raise MiniGPTError(f"int8_linear: bias must have shape ({q.shape[0]},), got {bias.shape}")
    return Int8LinearOp.apply(x, bias, q=q, scales=scales)


def int8_embedding(ids, q, scales) -> Tensor:
    """Rows ``ids`` of the int8 table ``(q, scales)`` (vocab, dim), dequantised: (..., dim) float32.
    A constant (the table is not trained)."""
    ids = np.asarray(getattr(ids, "data", ids) if not isinstance(ids, np.ndarray) else ids)
    if ids.dtype.kind not in "iu":
        raise MiniGPTError(f"int8_embedding: ids must be integers, got {ids.dtype}")
    if ids.size and (ids.min() < 0 or ids.max() >= q.shape[0]):
        raise MiniGPTError(f"int8_embedding: id out of range for a table of {q.shape[0]} rows")
    return Tensor._wrap(int8.dequantize_rows(q, scales, ids))
