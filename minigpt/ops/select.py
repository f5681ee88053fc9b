"""Selection ops: where, masked_fill, and the embedding lookup (gather rows; backward scatter-adds)."""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..grad_buffers import row_grad
from ..tensor import Function, Tensor
from ._util import as_tensor, binary_operands, unbroadcast


def _mask_array(mask, opname) -> np.ndarray:
    m = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
    if m.dtype != np.bool_:
        raise MiniGPTError(f"{opname}: the condition/mask must be a boolean array, got {m.dtype}")
    return m


class Where(Function):
    """``cond ? a : b`` elementwise, broadcasting all three."""

    def forward(self, a, b, cond):
        try:
            shape = np.broadcast_shapes(cond.shape, a.shape, b.shape)
        except ValueError:
            raise MiniGPTError(
                f"where: shapes {cond.shape} (condition), {a.shape} and {b.shape} cannot be broadcast together"
            ) from None
        self.cond, self.shapes = cond, (a.shape, b.shape)
        out = np.where(cond, a, b)
        return out if out.shape == shape else np.broadcast_to(out, shape).copy()

    def backward(self, g):
        zero = g.dtype.type(0)
        sa, sb = self.shapes
        da = unbroadcast(np.where(self.cond, g, zero), sa) if self.needs[0] else None
        db = unbroadcast(np.where(self.cond, zero, g), sb) if self.needs[1] else None
        return da, db


class MaskedFill(Function):
    """Replace ``x`` by a constant where ``mask`` is true (e.g. -inf above the causal diagonal)."""

    def forward(self, x, mask, value):
        try:
            if np.broadcast_shapes(mask.shape, x.shape) != x.shape:
                raise ValueError
        except ValueError:
            raise MiniGPTError(f"masked_fill: mask of shape {mask.shape} does not broadcast to {x.shape}") from None
        self.mask = mask
        return np.where(mask, x.dtype.type(value), x)

    def backward(self, g):
        return (np.where(self.mask, g.dtype.type(0), g),)


class EmbeddingOp(Function):
    """Rows of ``weight`` (V, C) picked by integer ids of any shape -> (*ids.shape, C).

    Backward scatter-adds each output row's gradient into the row it came from; repeated ids sum.
    """

    def forward(self, weight, ids):
        self.ids, self.vshape = ids, weight.shape
        return weight[ids]                       # (V, C)[ids] -> (*ids.shape, C)

    def backward(self, g):
        # dW[ids[i]] += g[i] for every position i (repeated ids add up): g (*ids.shape, C) -> (V, C).
        # Sparse: the rows to add, not a (V, C) array of zeros (see ``minigpt.grad_buffers.row_grad``).
        return (row_grad(self.ids.reshape(-1), g.reshape(-1, self.vshape[1]), self.vshape),)


def where(cond, a, b) -> Tensor:
    a, b = binary_operands(a, b, "where")
    return Where.apply(a, b, cond=_mask_array(cond, "where"))


def masked_fill(x, mask, value) -> Tensor:
    return MaskedFill.apply(as_tensor(x), mask=_mask_array(mask, "masked_fill"), value=float(value))


def embedding(ids, weight) -> Tensor:
    """Look up rows of ``weight`` (V, C) for integer ``ids`` (PyTorch argument order: input, weight)."""
    ids_arr = ids.data if isinstance(ids, Tensor) else np.asarray(ids)
    if ids_arr.dtype.kind not in "iu":
        raise MiniGPTError(f"embedding: ids must be integers, got {ids_arr.dtype}")
    weight = as_tensor(weight)
    if weight.ndim != 2:
        raise MiniGPTError(f"embedding: weight must be 2-D (vocab, dim), got shape {weight.shape}")
    if ids_arr.size:
        lo, hi = ids_arr.min(), ids_arr.max()
        if lo < 0 or hi >= weight.shape[0]:
            bad = lo if lo < 0 else hi
            raise MiniGPTError(f"embedding: id {bad} is out of range for a table of {weight.shape[0]} rows")
    return EmbeddingOp.apply(weight, ids=ids_arr)
