"""softmax, log_softmax (numerically stable) and the fused cross-entropy over logits.

The row-wise math lives in ``minigpt.kernels.softmax`` (a Numba kernel with a NumPy reference beside it);
these ops move the softmax axis last and flatten to (rows, classes) around it.
"""
from __future__ import annotations

import numpy as np

from ..errors import MiniGPTError
from ..kernels import softmax as softmax_kernels
from ..tensor import Function, Tensor
from ._util import LOGITS_POOL, as_tensor, check_float


def _rows(x: np.ndarray, axis: int) -> np.ndarray:
    if axis != x.ndim - 1:
        x = np.moveaxis(x, axis, -1)
    return x.reshape(-1, x.shape[-1]) if x.shape[-1] else x.reshape(-1, 0)


def _unrows(y2: np.ndarray, shape: tuple, axis: int) -> np.ndarray:
    moved = list(shape)
    moved.append(moved.pop(axis))
    y = y2.reshape(moved)
    return np.moveaxis(y, -1, axis) if axis != len(shape) - 1 else y


# Shapes: the softmax axis (V entries) is moved last and the rest flattened to N rows: x (..., V) -> (N, V).


class SoftmaxOp(Function):
    """y = exp(x - max) / sum(exp(x - max)) along ``axis``.
    math: kernels/softmax.py::softmax_forward_numpy, softmax_backward_numpy"""

    def forward(self, x, axis):
        self.axis, self.shape = axis, x.shape
        self.y2 = softmax_kernels.softmax_forward(_rows(x, axis))          # (N, V) -> (N, V)
        return _unrows(self.y2, x.shape, axis)                      # (N, V) -> x.shape

    def backward(self, g):
        # dx = y * (g - sum_v(y * g)): the Jacobian diag(y) - y y^T applied to g, per row: (N, V)
        return (_unrows(softmax_kernels.softmax_backward(self.y2, _rows(g, self.axis)), self.shape, self.axis),)


class LogSoftmaxOp(Function):
    """y = x - logsumexp(x) along ``axis``.
    math: kernels/softmax.py::log_softmax_forward_numpy, log_softmax_backward_numpy"""

    def forward(self, x, axis):
        self.axis, self.shape = axis, x.shape
        self.y2 = softmax_kernels.log_softmax_forward(_rows(x, axis))      # (N, V) -> (N, V)
        return _unrows(self.y2, x.shape, axis)

    def backward(self, g):
        # dx = g - exp(y) * sum_v(g): term 1 the identity, term 2 through logsumexp (softmax = exp(y)): (N, V)
        return (_unrows(softmax_kernels.log_softmax_backward(self.y2, _rows(g, self.axis)), self.shape, self.axis),)


def _check_counted(n_valid: int, ignore_index: int) -> None:
    if n_valid == 0:
        raise MiniGPTError(
            f"cross_entropy: every target is ignore_index ({ignore_index}); the mean loss is undefined"
        )


def _flat_targets(targets, input_shape: tuple, opname: str) -> np.ndarray:
    """Integer targets of shape ``input_shape[:-1]`` (one per row of scores), flattened to int64."""
    t = targets.data if isinstance(targets, Tensor) else np.asarray(targets)
    if t.dtype.kind not in "iu":
        raise MiniGPTError(f"{opname}: targets must be integers, got {t.dtype}")
    if len(input_shape) < 1:
        raise MiniGPTError(f"{opname}: the scores must have at least 1 axis (the classes, last), got a 0-d tensor")
    if input_shape[:-1] != t.shape:
        raise MiniGPTError(f"{opname}: input of shape {input_shape} needs targets of shape {input_shape[:-1]}, "
                           f"got {t.shape}")
    return np.ascontiguousarray(t.reshape(-1), dtype=np.int64)


class CrossEntropyOp(Function):
    """loss = mean (or sum) over rows n of lse_n - logits[n, target_n], rows whose target is
    ``ignore_index`` skipped (lse = log-sum-exp of the row = -log softmax(logits)[target] + logits[target]).

    Fused: one pass computes each row's log-sum-exp and the loss; backward writes
    ``scale * (softmax - onehot)`` per row from the saved log-sum-exp, never forming the log-probabilities.
    math: kernels/softmax.py::cross_entropy_forward_numpy, cross_entropy_backward_numpy
    """

    def forward(self, logits, targets, ignore_index, reduction):
        # logits (N, V), targets (N,) -> loss_sum (scalar), lse (N,)
        loss_sum, n_valid, lse = softmax_kernels.cross_entropy_forward(logits, targets, ignore_index)
        _check_counted(n_valid, ignore_index)
        self.logits, self.targets, self.lse = logits, targets, lse
        self.ignore_index = ignore_index
        self.div = n_valid if reduction == "mean" else 1
        return np.asarray(loss_sum / self.div, dtype=logits.dtype)

    def backward(self, g):
        scale = float(g) / self.div
        # dlogits = scale * (softmax(logits) - onehot(target)), zero rows where ignored: (N, V)
        #   term 1 (softmax) through lse, term 2 (-onehot) through -logits[target]
        logits = self.logits
        out = None
        if logits.ndim == 2 and logits.flags.c_contiguous:
            # as large as the logits (e.g. (B*T, vocab) from the LM head): the pooled buffer when it is
            # free (logits made elsewhere); in the book's loss path, cross_entropy(model(x)...), the
            # logits hold it, and this is a fresh array (ops/_util.py LOGITS_POOL says why)
            out = LOGITS_POOL.take(logits.shape, logits.dtype)
        return (softmax_kernels.cross_entropy_backward(logits, self.targets, self.lse, scale, self.ignore_index,
                                                       out=out),)


class LinearCrossEntropyOp(Function):
    """loss = cross_entropy(x @ W.T, targets): an LM head over a (vocab, dim) table and its loss, fused.

    The (N, vocab) logits are the largest buffer of a training step, and this op keeps only that one:
    forward computes each row's log-sum-exp and the loss in one pass (never the log-probabilities), and
    backward writes ``softmax - onehot`` over the logits in place, then reads the gradient from there for
    dx and dW. The buffer comes from ``LOGITS_POOL`` (ops/_util.py), so steps reuse it. The graph through
    this op can be back-propagated once (a second backward is an error).
    math: kernels/softmax.py::cross_entropy_forward_numpy, cross_entropy_backward_numpy
    """

    saved = None

    def forward(self, x, w, targets, ignore_index):
        n_out, n_in = w.shape
        x2 = x.reshape(-1, n_in)                                    # (..., C) -> (N, C)
        logits = LOGITS_POOL.take((x2.shape[0], n_out), x.dtype)
        np.matmul(x2, w.T, out=logits)                              # (N, C) @ (C, V) -> (N, V)
        # loss_sum (scalar), lse (N,): the log-sum-exp of each row of logits
        loss_sum, n_valid, lse = softmax_kernels.cross_entropy_forward(logits, targets, ignore_index)
        _check_counted(n_valid, ignore_index)
        if any(self.needs):
            self.saved = (x2, w, logits, targets, lse, ignore_index, n_valid, x.shape)
        return np.asarray(loss_sum / n_valid, dtype=x.dtype)

    def backward(self, g):
        if self.saved is None:
            raise MiniGPTError("linear_cross_entropy: this graph was already back-propagated; its logits "
                               "buffer goes back to the pool in its first backward, even with retain_graph=True, "
                               "so run the forward pass again")
        x2, w, logits, targets, lse, ignore_index, n_valid, xshape = self.saved
        self.saved = None
        # dlogits = g / n_valid * (softmax(logits) - onehot(targets)), written over the logits: (N, V).
        # The same kernel arithmetic as CrossEntropyOp's, so the book's loss path gets the same bits.
        dlogits = softmax_kernels.cross_entropy_backward(logits, targets, lse, float(g) / n_valid, ignore_index,
                                                         out=logits)
        del logits
        dx = (dlogits @ w).reshape(xshape) if self.needs[0] else None   # dx = dlogits W: (N, V) @ (V, C)
        dw = dlogits.T @ x2 if self.needs[1] else None                  # dW = dlogits^T x: (V, N) @ (N, C)
        return dx, dw


def _axis(x, axis, name):
    if not -x.ndim <= axis < x.ndim:
        raise MiniGPTError(f"{name}: axis {axis} is out of range for a {x.ndim}-D tensor")
    return axis % x.ndim


def softmax(x, axis=-1) -> Tensor:
    x = as_tensor(x)
    check_float(x, "softmax")
    return SoftmaxOp.apply(x, axis=_axis(x, axis, "softmax"))


def log_softmax(x, axis=-1) -> Tensor:
    x = as_tensor(x)
    check_float(x, "log_softmax")
    return LogSoftmaxOp.apply(x, axis=_axis(x, axis, "log_softmax"))


def cross_entropy(logits, targets, ignore_index: int = -100, reduction: str = "mean") -> Tensor:
    """Cross-entropy of ``logits`` (N, V) against integer ``targets`` (N,), PyTorch's argument order.

    Logits of shape (..., V) with targets of shape (...) are flattened. Targets equal to
    ``ignore_index`` do not count; ``reduction`` is "mean" (over counted targets) or "sum".
    """
    logits = as_tensor(logits)
    check_float(logits, "cross_entropy")
    t = _flat_targets(targets, logits.shape, "cross_entropy")
    if reduction not in ("mean", "sum"):
        raise MiniGPTError(f"cross_entropy: reduction must be 'mean' or 'sum', got {reduction!r}")
    if logits.ndim != 2:
        logits = logits.reshape(-1, logits.shape[-1])
    return CrossEntropyOp.apply(logits, targets=t, ignore_index=int(ignore_index), reduction=reduction)


def linear_cross_entropy(x, weight, targets, ignore_index: int = -100) -> Tensor:
    """``cross_entropy(linear_t(x, weight), targets)`` (mean over counted targets) as one fused op that
    never keeps a second (N, vocab) buffer. ``x`` (..., C), ``weight`` (V, C), ``targets`` (...)."""
    x, weight = as_tensor(x), as_tensor(weight)
    check_float(x, "linear_cross_entropy")
    if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise MiniGPTError(f"linear_cross_entropy: input {x.shape} does not match weight {weight.shape}")
    if x.dtype != weight.dtype:
        raise MiniGPTError(f"linear_cross_entropy: input is {x.dtype} but weight is {weight.dtype}")
    t = _flat_targets(targets, x.shape, "linear_cross_entropy")
    return LinearCrossEntropyOp.apply(x, weight, targets=t, ignore_index=int(ignore_index))
