"""The autograd core: `Tensor`, the `Function` base class every op derives from, and `no_grad`.

A `Tensor` wraps a NumPy array. When an op is applied to tensors of which at least one requires a gradient
(and gradients are enabled), the result remembers the op instance that made it (``tensor._op``); the op
instance remembers its input tensors and whatever it saved in its forward pass. ``loss.backward()`` walks
that graph once in reverse topological order (iteratively: deep graphs do not hit Python's recursion
limit), asks each op for the gradients of its inputs, sums the contributions of tensors used more than
once, and accumulates the results into the ``.grad`` of leaf tensors.

The ops themselves (forward and backward side by side) live in ``minigpt/ops/``; this module only
records and replays the graph. The running gradient sums, and the two memory optimisations behind them
(buffer reuse, sparse embedding gradients; ``set_grad_optimizations(False)`` turns them off), live in
``minigpt/grad_buffers.py``.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import warnings

import numpy as np

from .errors import MiniGPTError
from .grad_buffers import GradSums, RowGrad, set_grad_optimizations  # noqa: F401  (re-exported)
from .hooks import RemovableHandle

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
DEFAULT_DTYPE = np.dtype(np.float32)

_state = threading.local()


def is_grad_enabled() -> bool:
    """True unless inside a ``no_grad()`` block (per thread)."""
    return getattr(_state, "grad_enabled", True)


@contextlib.contextmanager
def no_grad():
    """Context manager: ops inside record no graph, and their results do not require gradients."""
    prev = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = prev


def _as_array(data, dtype=None) -> np.ndarray:
    """Convert user data to an array: Python floats become float32 (the default), ints int64."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    if isinstance(data, np.ndarray):
        if data.dtype == np.float16:
            return data.astype(np.float32)
        return data
    if isinstance(data, np.generic):
        return np.asarray(data)
    arr = np.asarray(data)
    if arr.dtype.kind == "f":
        arr = arr.astype(DEFAULT_DTYPE)
    elif arr.dtype.kind == "i":
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "bu":
        raise MiniGPTError(f"cannot make a tensor from data of dtype {arr.dtype}")
    return arr


class Tensor:
    """An n-dimensional array with an optional gradient.

    ``data`` is the NumPy array, ``grad`` the accumulated gradient (a NumPy array of the same shape, or
    None), ``requires_grad`` whether gradients flow to it. Only float32/float64 tensors may require
    gradients; integer tensors (token ids, targets) may not.
    """

    __slots__ = ("data", "_grad", "requires_grad", "_op", "name", "_hooks", "__weakref__")
    __array_priority__ = 1000  # so that `ndarray + Tensor` defers to Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, dtype=None, name: str | None = None):
        arr = _as_array(data, dtype)
        if requires_grad and arr.dtype not in FLOAT_DTYPES:
            raise MiniGPTError(
                f"only float32/float64 tensors can require gradients, this one is {arr.dtype}"
            )
        self.data = arr
        self._grad = None
        self.requires_grad = bool(requires_grad)
        self._op = None
        self.name = name
        self._hooks = None  # {handle id: fn}, and RETAIN for retain_grad(); None: no hook (the common case)

    @classmethod
    def _wrap(cls, arr: np.ndarray, requires_grad: bool = False) -> "Tensor":
        """Fast internal constructor (no conversion, no checks)."""
        t = object.__new__(Tensor)
        t.data = arr
        t._grad = None
        t.requires_grad = requires_grad
        t._op = None
        t.name = None
        t._hooks = None
        return t

    # --- array-like properties ------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return len(self.data)

    def __iter__(self):
        """``for row in t``: the tensors ``t[0]``, ``t[1]``, ... along the first axis (as in PyTorch; each a
        differentiable ``getitem``). A 0-d tensor is not iterable (TypeError, as in PyTorch)."""
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        for i in range(self.data.shape[0]):
            yield self[i]

    def __array__(self, dtype=None, copy=None):
        """``np.asarray(t)``, ``np.linalg.norm(t)`` and every NumPy function read the tensor's array (as
        ``t.data``: no copy unless ``dtype`` asks for another type or ``copy=True``). The result is a plain
        array, off the graph: no gradient flows back through NumPy functions (PyTorch refuses this for a
        tensor that requires grad and asks for ``.detach().numpy()``; minigpt hands the data over, detached)."""
        a = self.data if dtype is None else self.data.astype(dtype, copy=False)
        return a.copy() if copy else a

    @property
    def is_leaf(self) -> bool:
        return self._op is None

    @property
    def grad(self):
        """The accumulated gradient (a NumPy array of the tensor's shape), or None. Leaves keep theirs; an
        intermediate tensor (made by an op) keeps one only after ``retain_grad()``: reading ``.grad`` of an
        intermediate that did not call it warns (UserWarning, as in PyTorch), since it is None."""
        g = self._grad
        if (g is None and self._op is not None and self.requires_grad and not self.retains_grad
                and not sys._getframe(1).f_globals.get("__name__", "").startswith("minigpt.")):
            warnings.warn("the .grad of a tensor that is not a leaf is None unless you call .retain_grad() on it "
                          "before backward() (it only passes its gradient on); for a leaf, make it with "
                          "requires_grad=True", UserWarning, stacklevel=2)
        return g

    @grad.setter
    def grad(self, value):
        self._grad = value

    @property
    def grad_fn(self):
        """The op (a ``Function`` instance) that made this tensor, None for a leaf: PyTorch's ``grad_fn``.
        ``type(t.grad_fn).__name__`` names it (``MatMul``, ``LayerNormOp``); ``t.grad_fn.inputs`` are the
        tensors it was applied to."""
        return self._op

    @property
    def retains_grad(self) -> bool:
        """True for an intermediate tensor that called ``retain_grad()`` (False for leaves, as in PyTorch:
        they keep their gradient anyway)."""
        return self._op is not None and bool(self._hooks) and _RETAIN in self._hooks

    def numpy(self) -> np.ndarray:
        """The underlying array (shared, not copied)."""
        return self.data

    def item(self):
        return self.data.item()

    def detach(self) -> "Tensor":
        """A tensor sharing the data, cut from the graph."""
        return Tensor._wrap(self.data, False)

    def astype(self, dtype) -> "Tensor":
        return _ops.cast(self, dtype)

    def requires_grad_(self, flag: bool = True) -> "Tensor":
        if flag and self.data.dtype not in FLOAT_DTYPES:
            raise MiniGPTError(f"only float32/float64 tensors can require gradients, this one is {self.dtype}")
        self.requires_grad = bool(flag)
        return self

    def zero_grad(self) -> None:
        self.grad = None

    # --- hooks ------------------------------------------------------------------------------------------
    def retain_grad(self) -> None:
        """Keep this tensor's gradient in ``.grad`` after backward (leaves always do; an intermediate
        tensor otherwise only passes its gradient on). Repeated backward passes add up, as for leaves."""
        if not self.requires_grad:
            raise MiniGPTError("retain_grad() on a tensor that does not require grad")
        if self._op is not None:
            self._hook_dict()[_RETAIN] = _RETAIN

    def register_hook(self, fn):
        """Call ``fn(grad)`` during backward with the gradient flowing into this tensor (a NumPy array of
        its shape, the sum over all its uses). If ``fn`` returns an array, that replaces the gradient from
        there on (for a leaf: before it is added to ``.grad``). Returns a handle; ``.remove()`` unregisters.
        PyTorch's ``Tensor.register_hook``.

        ``grad`` is read-only: return a new array instead of changing it in place. (In PyTorch an in-place
        change is allowed and corrupts the gradient of every other branch that shares the array: an
        ablation with ``grad.fill_(0)`` zeroes every gradient below it. Here it raises NumPy's "assignment
        destination is read-only".)"""
        if not self.requires_grad:
            raise MiniGPTError("register_hook() on a tensor that does not require grad (no gradient reaches it)")
        if not callable(fn):
            raise MiniGPTError(f"a hook must be callable, got {type(fn).__name__}")
        hooks = self._hook_dict()
        handle = RemovableHandle(hooks)
        hooks[handle.id] = fn
        return handle

    def register_post_accumulate_grad_hook(self, fn):
        """Call ``fn(tensor)`` on a leaf each time backward has added a gradient into its ``.grad`` (after the
        ``register_hook`` hooks, after accumulation): PyTorch's hook of that name, e.g. for an optimizer
        step per parameter. Leaves only (an intermediate has no ``.grad`` to accumulate into). Returns a
        handle; ``.remove()`` unregisters."""
        if not self.requires_grad:
            raise MiniGPTError("register_post_accumulate_grad_hook() on a tensor that does not require grad")
        if self._op is not None:
            raise MiniGPTError("register_post_accumulate_grad_hook() on a tensor that is not a leaf: only leaves "
                               "accumulate a .grad (use register_hook to see an intermediate's gradient)")
        if not callable(fn):
            raise MiniGPTError(f"a hook must be callable, got {type(fn).__name__}")
        post = self._hook_dict().setdefault(_POST, {})
        handle = RemovableHandle(post)
        post[handle.id] = fn
        return handle

    def _hook_dict(self) -> dict:
        if self._hooks is None:
            self._hooks = {}
        return self._hooks

    def __repr__(self) -> str:
        body = np.array2string(self.data, precision=4, threshold=20, edgeitems=2, separator=", ")
        extra = ", requires_grad=True" if self.requires_grad else ""
        if self._op is not None:
            extra += f", op={type(self._op).__name__}"
        return f"Tensor({body}, dtype={self.dtype}{extra})"

    def __bool__(self):
        if self.data.size != 1:
            raise MiniGPTError("the truth value of a tensor with more than one element is ambiguous")
        return bool(self.data)

    def __hash__(self):
        return id(self)

    # --- backward ---------------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf tensor that requires a gradient.

        ``grad`` is the gradient of some scalar with respect to this tensor; it may be omitted only
        when this tensor holds a single element (then it is 1). Each op releases what its forward saved
        once its backward has run, so a graph can be back-propagated once (as in PyTorch); a second
        ``backward()`` through it is an error, unless the first one passed ``retain_graph=True``.
        """
        if not self.requires_grad:
            raise MiniGPTError("backward() on a tensor that does not require grad (no graph was recorded)")
        if grad is None:
            if self.data.size != 1:
                raise MiniGPTError(
                    f"backward() on a non-scalar tensor of shape {self.shape} needs an explicit gradient "
                    "of the same shape (e.g. reduce it with .sum() or .mean() first)"
                )
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad, dtype=self.dtype)
            if grad.shape != self.shape:
                raise MiniGPTError(f"backward() gradient has shape {grad.shape}, the tensor has {self.shape}")

        order = _topological_order(self)  # every tensor self depends on, inputs before outputs
        _check_not_released(order)          # before any gradient is added anywhere
        grads = GradSums(self, grad)        # tensor -> sum of the gradients it has received so far
        for node in reversed(order):        # outputs before inputs: a node's sum is complete when reached
            g = grads.pop(node)
            if g is None:
                continue
            if node._hooks:                 # hooks see the complete sum (the no-hook path: this check only)
                g = _run_hooks(node, g)
                grads.owned.discard(id(node))   # a hook may keep g: no op may overwrite it now
            op = node._op
            if op is None:                  # a leaf: accumulate into .grad
                grads.add_to_leaf(node, g)
                if node._hooks and _POST in node._hooks:
                    for fn in list(node._hooks[_POST].values()):
                        fn(node)
                continue
            op.grad_is_scratch = grads.is_scratch(node)
            in_grads = op.backward(g)       # chain rule: d(self)/d(input) for each of the op's inputs
            if not isinstance(in_grads, (tuple, list)):
                in_grads = (in_grads,)
            if len(in_grads) != len(op.inputs) and (len(in_grads) < len(op.inputs) or any(
                    x is not None for x in in_grads[len(op.inputs):])):   # trailing Nones: optional inputs not given
                raise RuntimeError(f"function {type(op).__name__}.backward returned an incorrect number of "
                                   f"gradients (expected {len(op.inputs)}, got {len(in_grads)}): one per input, "
                                   "None for an input that needs none")
            for inp, ig in zip(op.inputs, in_grads):
                if ig is not None and inp.requires_grad:
                    if isinstance(ig, np.generic):  # NumPy arithmetic on 0-d arrays gives immutable scalars:
                        ig = np.asarray(ig)         # a 0-d array, so in-place sums and writes land in it
                    _check_grad_shape(op, inp, ig)
                    grads.add(inp, ig, g, in_grads)   # grads[inp] += ig
            if not retain_graph:
                op.release()                # frees the op's saved arrays now, not when the graph dies

    # --- operators (defined in ops/, bound at the bottom of this module) ---------------------------
    def __neg__(self):
        return _ops.neg(self)

    def __add__(self, other):
        return _ops.add(self, other)

    def __radd__(self, other):
        return _ops.add(other, self)

    def __sub__(self, other):
        return _ops.sub(self, other)

    def __rsub__(self, other):
        return _ops.sub(other, self)

    def __mul__(self, other):
        return _ops.mul(self, other)

    def __rmul__(self, other):
        return _ops.mul(other, self)

    def __truediv__(self, other):
        return _ops.div(self, other)

    def __rtruediv__(self, other):
        return _ops.div(other, self)

    def __pow__(self, exponent):
        return _ops.pow(self, exponent)

    def __matmul__(self, other):
        return _ops.matmul(self, other)

    def __rmatmul__(self, other):
        return _ops.matmul(other, self)

    def __getitem__(self, index):
        _check_int_index(self.data.shape, index)
        return _ops.getitem(self, index)

    # Comparisons give plain boolean arrays: they have no gradient.
    def __lt__(self, other):
        return self.data < _raw(other)

    def __le__(self, other):
        return self.data <= _raw(other)

    def __gt__(self, other):
        return self.data > _raw(other)

    def __ge__(self, other):
        return self.data >= _raw(other)

    def __eq__(self, other):
        return self.data == _raw(other)

    def __ne__(self, other):
        return self.data != _raw(other)

    # --- methods ------------------------------------------------------------------------------------
    # sum, mean and var take NumPy's ``axis`` / ``keepdims`` or PyTorch's ``dim`` / ``keepdim`` (the book's
    # ``x.mean(dim=-1, keepdim=True)``).
    def sum(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _torch_names("sum", axis, keepdims, dim, keepdim)
        return _ops.sum(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims=False, *, dim=None, keepdim=None):
        axis, keepdims = _torch_names("mean", axis, keepdims, dim, keepdim)
        return _ops.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        # no ``dim=``: PyTorch's ``x.max(dim=d)`` returns (values, indices), this returns the values only
        return _ops.max(self, axis=axis, keepdims=keepdims)

    def var(self, axis=None, keepdims=False, *, dim=None, keepdim=None, unbiased: bool = True):
        """Variance over ``axis`` (all elements when None): the mean squared deviation, divided by n - 1
        when ``unbiased`` (PyTorch's default, the book's ``x.var(dim=-1, keepdim=True)``), by n when not
        (``unbiased=False``, what LayerNorm uses; NumPy's ``np.var`` default). Differentiable (sum, mean and
        arithmetic ops)."""
        axis, keepdims = _torch_names("var", axis, keepdims, dim, keepdim)
        centered = self - _ops.mean(self, axis=axis, keepdims=True)
        sq = _ops.sum(centered * centered, axis=axis, keepdims=keepdims)
        n = self.data.size // max(sq.data.size, 1) if self.data.size else 0
        return sq / float(max(n - 1, 0) if unbiased else n)

    def numel(self) -> int:
        """The number of elements (``size``), PyTorch's name: ``sum(p.numel() for p in model.parameters())``."""
        return self.data.size

    def tolist(self):
        """The values as nested Python lists (a number for a 0-d tensor)."""
        return self.data.tolist()

    def unsqueeze(self, dim: int) -> "Tensor":
        """A new axis of length 1 at ``dim`` (negative counts from the end of the result): ``(4,) -> (1, 4)``."""
        d = _axis(dim, self.data.ndim + 1, "unsqueeze")
        return _ops.reshape(self, self.data.shape[:d] + (1,) + self.data.shape[d:])

    def squeeze(self, dim=None) -> "Tensor":
        """Without the axis ``dim`` if its length is 1 (unchanged otherwise, as PyTorch), or without every
        axis of length 1 when ``dim`` is None."""
        shape = self.data.shape
        if dim is None:
            return _ops.reshape(self, tuple(s for s in shape if s != 1))
        d = _axis(dim, max(len(shape), 1), "squeeze")
        if not shape or shape[d] != 1:
            return self
        return _ops.reshape(self, shape[:d] + shape[d + 1:])

    def to(self, device=None, dtype=None) -> "Tensor":
        """PyTorch's ``t.to(device)``: minigpt runs on the CPU, so a device ("cpu", "cuda", ...) is accepted
        and the tensor itself returned; ``dtype`` (a NumPy dtype, or ``t.to(np.float64)``) casts."""
        if dtype is None and device is not None and not isinstance(device, str):
            try:
                dtype = np.dtype(device)
            except TypeError:
                dtype = None
        return self if dtype is None or np.dtype(dtype) == self.data.dtype else self.astype(dtype)

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _ops.reshape(self, shape)

    def view(self, *shape):
        return self.reshape(*shape)

    def flatten(self, start_dim: int = 0, end_dim: int = -1):
        """The axes ``start_dim`` ... ``end_dim`` merged into one (PyTorch's ``flatten``): by default all of them,
        a 1-d tensor; ``logits.flatten(0, 1)`` turns (batch, tokens, vocab) into (batch * tokens, vocab). A
        reshape, so gradients flow through it."""
        if self.ndim == 0:
            return _ops.reshape(self, (1,))
        s, e = _axis(start_dim, self.ndim, "flatten"), _axis(end_dim, self.ndim, "flatten")
        if s > e:
            raise MiniGPTError(f"flatten: start_dim ({start_dim}) comes after end_dim ({end_dim})")
        shape = self.shape
        return _ops.reshape(self, shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:])

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        if len(axes) == 2 and self.ndim != 2:
            # PyTorch style: swap two axes.
            a, b = (ax % self.ndim for ax in axes)
            perm = list(range(self.ndim))
            perm[a], perm[b] = perm[b], perm[a]
            axes = tuple(perm)
        return _ops.transpose(self, axes or None)

    def permute(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _ops.transpose(self, axes)

    @property
    def T(self):
        return _ops.transpose(self, None)

    def exp(self):
        return _ops.exp(self)

    def log(self):
        return _ops.log(self)

    def sqrt(self):
        return _ops.sqrt(self)

    def tanh(self):
        return _ops.tanh(self)

    def relu(self):
        return _ops.relu(self)

    def softmax(self, axis=-1):
        return _ops.softmax(self, axis=axis)

    def log_softmax(self, axis=-1):
        return _ops.log_softmax(self, axis=axis)

    def masked_fill(self, mask, value):
        return _ops.masked_fill(self, mask, value)


def _axis(dim, ndim: int, what: str) -> int:
    """``dim`` as an axis in [0, ndim), negative counting from the end; a clear error when out of range."""
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise MiniGPTError(f"{what}: dim must be an integer, got {dim!r}")
    if not -ndim <= dim < ndim:
        raise MiniGPTError(f"{what}: dim {dim} is out of range for {ndim} axes (expected {-ndim} ... {ndim - 1})")
    return int(dim) % ndim


def _raw(x):
    return x.data if isinstance(x, Tensor) else x


def _torch_names(method, axis, keepdims, dim, keepdim):
    """A reduction's axis and keepdims from NumPy's names or PyTorch's (``dim``, ``keepdim``), not both."""
    if dim is not None:
        if axis is not None:
            raise MiniGPTError(f"{method}: give axis or dim, not both")
        axis = dim
    if keepdim is not None:
        keepdims = keepdim
    return axis, keepdims


_RETAIN = "retain_grad"  # the key under which retain_grad() marks a tensor in its hook dict
_POST = "post_accumulate"  # the key of a leaf's {handle id: fn} of post-accumulate-grad hooks


class IndexOutOfRange(MiniGPTError, IndexError):
    """An integer index beyond a tensor's axis: an IndexError (so ``for row in t`` and Python's sequence
    protocol end there, as in PyTorch and NumPy) and a MiniGPTError (one line on the command line)."""


def _check_int_index(shape: tuple, index) -> None:
    """Raise IndexOutOfRange for an integer index outside its axis (the leading ints and slices of
    ``index``; arrays, masks, None and ``...`` are left to the op)."""
    axis = 0
    for it in index if isinstance(index, tuple) else (index,):
        if isinstance(it, slice):
            axis += 1
        elif isinstance(it, (int, np.integer)) and not isinstance(it, (bool, np.bool_)):
            if axis < len(shape) and not -shape[axis] <= it < shape[axis]:
                raise IndexOutOfRange(f"index {int(it)} is out of bounds for axis {axis} with size {shape[axis]}")
            axis += 1
        else:
            return


def _readonly(g):
    v = g.view()
    v.flags.writeable = False
    return v


def _run_hooks(node: Tensor, g):
    """Apply ``node``'s hooks to its complete gradient ``g``; keep it in ``.grad`` if retained."""
    if isinstance(g, RowGrad):
        g = g.dense()
    for key, fn in list(node._hooks.items()):
        if key == _RETAIN or key == _POST:
            continue
        r = fn(_readonly(g))
        if r is not None:
            r = np.asarray(r.data if isinstance(r, Tensor) else r)
            if r.shape != g.shape:
                raise MiniGPTError(f"a hook returned a gradient of shape {r.shape} for a tensor of shape {g.shape}")
            g = r.astype(g.dtype, copy=False)
    if _RETAIN in node._hooks and node._op is not None:
        node._grad = g.copy() if node._grad is None else node._grad + g
    return g


def _topological_order(root: Tensor) -> list:
    """The tensors ``root`` depends on (those requiring grad), each after all of its inputs. Iterative
    (a post-order depth-first search with an explicit stack), so deep graphs do not hit Python's
    recursion limit."""
    order, visited, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:                # all of node's inputs are in order already
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._op is not None:
            stack.extend((inp, False) for inp in node._op.inputs if inp.requires_grad and id(inp) not in visited)
    return order


def _check_not_released(order) -> None:
    op = next((n._op for n in order if n._op is not None and n._op.released), None)
    if op is not None:
        raise MiniGPTError(
            f"backward() through a graph that was already back-propagated: the first backward() released "
            f"what its ops saved ({type(op).__name__} among them). To back-propagate the same graph again, pass "
            f"retain_graph=True to the first backward(); to accumulate gradients on purpose (several batches "
            f"per optimizer step), run a forward pass for each and call backward() on each loss: .grad adds "
            f"up until zero_grad()")


def _check_grad_shape(op, inp: Tensor, ig) -> None:
    if ig.shape != inp.data.shape:  # an op bug, never a user error
        raise RuntimeError(f"{type(op).__name__}.backward returned a gradient of shape {ig.shape} "
                           f"for an input of shape {inp.data.shape}")


def tensor(data, dtype=None, requires_grad: bool = False) -> Tensor:
    """Make a tensor (a copy of ``data``). Python floats become float32, Python ints int64."""
    arr = _as_array(data, dtype)
    if isinstance(data, (np.ndarray, Tensor)) and (arr is data or arr is getattr(data, "data", None)):
        arr = arr.copy()
    return Tensor(arr, requires_grad=requires_grad)


class Function:
    """Base class of every differentiable op.

    A subclass defines ``forward(self, *arrays, **params) -> ndarray`` and
    ``backward(self, grad) -> tuple`` (one gradient array, or None, per tensor input), side by side. A
    backward that returns fewer gradients than the op has inputs is an error when backward runs
    ("returned an incorrect number of gradients", as in PyTorch); ``gradcheck(MyOp, x)`` checks one.
    ``forward`` may save what backward needs on ``self``; ``self.needs`` tells which inputs require a
    gradient, so forward can skip saving what no one will ask for. During backward,
    ``self.grad_is_scratch`` says whether the incoming gradient array belongs to this op alone, so that it
    may be overwritten (and returned) instead of allocating a new one. Use ``Op.apply(*tensors, **params)``.
    """

    inputs: tuple = ()
    needs: tuple = ()
    released: bool = False          # True once backward ran without retain_graph: the saved arrays are gone
    grad_is_scratch: bool = False  # set by backward (grad_buffers.GradSums.is_scratch): may reuse grad's memory

    def forward(self, *arrays, **params):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    def release(self) -> None:
        """Drop everything forward saved on ``self`` (the graph's links, ``inputs`` and ``needs``, stay)."""
        keep = {k: v for k, v in self.__dict__.items() if k in ("inputs", "needs")}
        self.__dict__.clear()
        self.__dict__.update(keep)
        self.released = True

    @classmethod
    def apply(cls, *inputs: Tensor, **params) -> Tensor:
        op = cls()
        needs = tuple(t.requires_grad for t in inputs)
        record = any(needs) and is_grad_enabled()
        op.needs = needs if record else (False,) * len(inputs)
        out = op.forward(*[t.data for t in inputs], **params)
        result = Tensor._wrap(out, record)
        if record:
            op.inputs = inputs
            result._op = op
        return result


from . import ops as _ops  # noqa: E402  (ops import Tensor and Function from this module)
