"""The LoRA product: ``scale * (x @ A) @ B``, the low-rank update a LoRA layer adds to a frozen linear.

Shapes: x (..., in), A (in, r), B (r, out) -> (..., out). Computed as two thin GEMMs through the
(N, r) intermediate ``xa = x @ A`` (never the (in, out) product ``A @ B``), which backward reuses.
"""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..tensor import Function, Tensor
from ._util import as_tensor, check_float


class LoRAProduct(Function):
    def forward(self, x, a, b, scale):
        n_in, r = a.shape
        x2 = x.reshape(-1, n_in)            # [N, in]
        xa = x2 @ a                          # [N, in] @ [in, r] -> [N, r]
        y = (xa @ b)                         # [N, r] @ [r, out] -> [N, out]
        if scale != 1.0:
            y *= scale
        self.x2, self.a, self.b, self.xa, self.scale, self.xshape = x2, a, b, xa, scale, x.shape
        return y.reshape(*x.shape[:-1], b.shape[1])

    def backward(self, g):
        # y = s * x A B.  dB = s * (xA)^T g;  d(xA) = s * g B^T;  dA = x^T d(xA);  dx = d(xA) A^T
        g2 = g.reshape(-1, self.b.shape[1])                      # [N, out]
        dxa = (g2 @ self.b.T) * self.scale                       # [N, out] @ [out, r] -> [N, r]
        dx = (dxa @ self.a.T).reshape(self.xshape) if self.needs[0] else None   # [N, r] @ [r, in]
        da = self.x2.T @ dxa if self.needs[1] else None          # [in, N] @ [N, r] -> [in, r]
        db = (self.xa.T @ g2) * self.scale if self.needs[2] else None           # [r, N] @ [N, out]
        return (dx, da, db)


def lora(x, a, b, scale: float = 1.0) -> Tensor:
    """``scale * (x @ a) @ b`` for x (..., in), a (in, r), b (r, out).

    >>> import numpy as np; from minigpt import Tensor
    >>> lora(Tensor(np.ones((1, 2))), Tensor(np.ones((2, 1))), Tensor(np.ones((1, 3))), 0.5).data
    array([[1., 1., 1.]])
    """
    x, a, b = as_tensor(x), as_tensor(a), as_tensor(b)
    for t, n in ((x, "x"), (a, "a"), (b, "b")):
        check_float(t, f"lora ({n})")
    if a.ndim != 2 or b.ndim != 2 or x.ndim < 1:
        raise MiniGPTError(f"lora: expected x (..., in), a (in, r), b (r, out); got {x.shape}, {a.shape}, {b.shape}")
    if x.shape[-1] != a.shape[0] or a.shape[1] != b.shape[0]:
        raise MiniGPTError(f"lora: shapes do not chain: x {x.shape}, a {a.shape}, b {b.shape}")
    if not (x.dtype == a.dtype == b.dtype):
        raise MiniGPTError(f"lora: dtypes differ ({x.dtype}, {a.dtype}, {b.dtype})")
    return LoRAProduct.apply(x, a, b, scale=float(scale))
