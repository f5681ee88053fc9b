"""`Module` and `Parameter`: the containers that layers and models are built from.

A Module registers the Parameters and sub-Modules assigned to its attributes (in assignment order), so
``named_parameters()`` walks the tree and names every parameter by its path (``blocks.0.attn.qkv.weight``).
Parameters shared between modules (weight tying) are listed once.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..errors import MiniGPTError
from ..hooks import RemovableHandle
from ..ops import concatenate, reshape
from ..tensor import FLOAT_DTYPES, Tensor, is_grad_enabled, no_grad


class Parameter(Tensor):
    """A tensor that a Module trains: requires a gradient unless frozen."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        arr = np.asarray(data.data if isinstance(data, Tensor) else data)
        if arr.dtype not in FLOAT_DTYPES:
            arr = arr.astype(np.float32)
        super().__init__(arr, requires_grad=requires_grad)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"


# Functions ``hook(module, output)`` called after every module call; ``summary()`` records output shapes
# with one. Empty (one truth test per call) the rest of the time.
_CALL_HOOKS: list = []


def _shape_of(out):
    if isinstance(out, Tensor | np.ndarray):
        return tuple(out.shape)
    if isinstance(out, tuple | list) and out:
        return _shape_of(out[0])
    return None


class ModelSummary:
    """The table ``Module.summary()`` returns: print it, or read ``rows`` (one dict per module:
    ``name``, ``type``, ``depth``, ``output_shape`` (None if the module did not run), ``params``,
    ``trainable``) and the totals ``params``, ``trainable``, ``frozen``, ``input_shape``, ``output_shape``."""

    def __init__(self, title, rows, params, trainable, input_shape, output_shape):
        self.title, self.rows = title, rows
        self.params, self.trainable, self.frozen = params, trainable, params - trainable
        self.input_shape, self.output_shape = input_shape, output_shape

    def __str__(self) -> str:
        def state(r):
            if r["params"] == 0:
                return "-"
            return ("trainable" if r["trainable"] == r["params"] else "frozen" if r["trainable"] == 0
                    else f"{r['trainable']:,} trainable")

        def shape(s):
            return "-" if s is None else "(" + ", ".join(map(str, s)) + ")"

        cells = [("layer (type)", "output shape", "params", "trainable")]
        cells += [("  " * (r["depth"] - 1) + f"{r['name']} ({r['type']})", shape(r["output_shape"]),
                   f"{r['params']:,}", state(r)) for r in self.rows]
        w = [max(len(c[i]) for c in cells) for i in range(4)]
        line = "-" * (sum(w) + 6)
        out = [self.title, line]
        for k, c in enumerate(cells):
            out.append(f"{c[0]:<{w[0]}}  {c[1]:<{w[1]}}  {c[2]:>{w[2]}}  {c[3]}".rstrip())
            if k == 0:
                out.append(line)
        out += [line, f"parameters: {self.params:,} (trainable {self.trainable:,}, frozen {self.frozen:,}; "
                      "a shared parameter counted once)"]
        if self.input_shape is not None:
            out.append(f"input {shape(self.input_shape)} -> output {shape(self.output_shape)}")
        return "\n".join(out)

    __repr__ = __str__


class Module:
    """Base class of layers and models. Subclasses define ``forward``; call the module to run it.

    Hooks, as in PyTorch: ``register_forward_pre_hook``, ``register_forward_hook``,
    ``register_full_backward_pre_hook`` and ``register_full_backward_hook`` (also under its old name
    ``register_backward_hook``) let you observe a module while it runs, or change what flows through it
    (see their docstrings); with no hook registered, calling a module is just ``forward``.
    """

    _forward_hooks = None   # {handle id: ("pre" | "post", fn)}, created on the instance by the first registration
    _backward_hooks = None  # {handle id: ("pre" | "full", fn)}

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise MiniGPTError(f"{type(self).__name__}.__init__ must call super().__init__() before assigning {name}")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        if self._forward_hooks or self._backward_hooks:
            out = self._call_with_hooks(args, kwargs)
        else:
            out = self.forward(*args, **kwargs)
        if _CALL_HOOKS:
            self._ran(out)
        return out

    def _ran(self, out) -> None:
        """Tell the call hooks this module produced ``out``: for a sub-module whose work a fused op of
        its parent did without calling it (``FeedForward.fc`` inside ``linear_gelu``)."""
        for hook in _CALL_HOOKS:
            hook(self, out)

    # --- hooks --------------------------------------------------------------------------------------
    def register_forward_pre_hook(self, fn):
        """Call ``fn(module, args)`` before every forward of this module (``args``: the tuple of positional
        arguments). If ``fn`` returns something other than None, it replaces the arguments (a tuple; a
        single value is wrapped into a 1-tuple). PyTorch's ``register_forward_pre_hook``. Returns a handle."""
        return self._add_hook("_forward_hooks", "pre", fn)

    def register_forward_hook(self, fn):
        """Call ``fn(module, inputs, output)`` after every forward of this module (``inputs``: the
        positional arguments). If ``fn`` returns something other than None, it replaces the output.
        PyTorch's ``register_forward_hook``. Returns a handle; ``handle.remove()`` unregisters the hook."""
        return self._add_hook("_forward_hooks", "post", fn)

    def register_full_backward_hook(self, fn):
        """Call ``fn(module, grad_input, grad_output)`` during backward, once the gradients with respect to
        this module's tensor inputs are known; PyTorch's ``register_full_backward_hook`` (which
        ``register_backward_hook`` is here too: not PyTorch's deprecated hook of that name).

        ``grad_output``: one gradient per tensor output (a 1-tuple for a module returning one tensor; for
        a tuple output, None for an output that got no gradient); ``grad_input``: one gradient per positional
        argument (None for an argument that is not a tensor requiring a gradient, or that got none). These
        are the gradients through this module only, even when an input is also used elsewhere. The hook
        fires once per call of the module, also when ``forward`` returns a tuple.

        If ``fn`` returns something other than None, it must be a tuple like ``grad_input``, and it
        replaces the gradients that flow on to the inputs (None: zero). The arrays a hook receives are
        read-only: return new ones instead of changing them in place (in PyTorch, changing a hook's
        argument in place corrupts the gradient of every other branch that shares it: an ablation with
        ``g.fill_(0)`` zeroes every gradient below it). Returns a handle."""
        return self._add_hook("_backward_hooks", "full", fn)

    register_backward_hook = register_full_backward_hook

    def register_full_backward_pre_hook(self, fn):
        """Call ``fn(module, grad_output)`` during backward as soon as the gradients with respect to this
        module's outputs are known, before they flow into the module. If ``fn`` returns something other
        than None, it must be a tuple like ``grad_output`` and replaces it. PyTorch's
        ``register_full_backward_pre_hook``. Returns a handle."""
        return self._add_hook("_backward_hooks", "pre", fn)

    def _add_hook(self, attr, kind, fn):
        if not callable(fn):
            raise MiniGPTError(f"a hook must be callable, got {type(fn).__name__}")
        hooks = self.__dict__.get(attr)
        if hooks is None:
            hooks = {}
            object.__setattr__(self, attr, hooks)
        handle = RemovableHandle(hooks)
        hooks[handle.id] = (kind, fn)
        return handle

    def _call_with_hooks(self, args, kwargs):
        forward = list((self._forward_hooks or {}).values())
        for kind, fn in forward:
            if kind == "pre":
                r = fn(self, args)
                if r is not None:
                    args = r if isinstance(r, tuple) else (r,)
        backward = list((self._backward_hooks or {}).values())
        call = None
        if backward and is_grad_enabled():
            call = _BackwardHookCall(self, backward)
            args = call.wrap_inputs(args)
        out = self.forward(*args, **kwargs)
        for kind, fn in forward:
            if kind == "post":
                r = fn(self, args, out)
                if r is not None:
                    out = r
        if call is not None:
            out = call.wrap_outputs(out)
        return out

    # --- the tree ---------------------------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def children(self):
        return iter(self._modules.values())

    def named_parameters(self, prefix: str = "", recurse: bool = True):
        """(name, Parameter) pairs; a parameter shared by several modules appears once (first name)."""
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mname, m in mods:
            for pname, p in m._parameters.items():
                if id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p

    def parameters(self, recurse: bool = True):
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of scalar parameters (shared ones counted once)."""
        return int(sum(p.size for p in self.parameters() if p.requires_grad or not trainable_only))

    # --- state --------------------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Name -> array (the live arrays, not copies) of every parameter, shared ones once."""
        return OrderedDict((n, p.data) for n, p in self.named_parameters())

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Copy arrays into the parameters in place, checking names and shapes.

        With ``strict``, missing and unexpected names are errors; shape mismatches always are.
        Arrays are cast to each parameter's dtype.
        """
        own = dict(self.named_parameters())
        missing = [n for n in own if n not in state]
        unexpected = [n for n in state if n not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing {len(missing)}: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
            if unexpected:
                parts.append(f"unexpected {len(unexpected)}: {', '.join(unexpected[:8])}"
                             f"{' ...' if len(unexpected) > 8 else ''}")
            raise MiniGPTError(f"load_state_dict into {type(self).__name__}: " + "; ".join(parts))
        bad = [f"{n}: checkpoint {np.shape(state[n])} vs model {p.shape}" for n, p in own.items()
               if n in state and tuple(np.shape(state[n])) != p.shape]
        if bad:
            raise MiniGPTError("load_state_dict: shape mismatch for " + "; ".join(bad[:8]))
        for n, p in own.items():
            if n in state:
                np.copyto(p.data, np.asarray(state[n]), casting="unsafe")

    # --- modes ----------------------------------------------------------------------------------------
    def train(self, mode: bool = True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag: bool = True):
        """Freeze (False) or unfreeze (True) every parameter of this module."""
        for p in self.parameters():
            p.requires_grad = bool(flag)
        return self

    def to_dtype(self, dtype):
        """Convert every parameter to ``dtype`` (float32 or float64) in place; returns self."""
        dtype = np.dtype(dtype)
        if dtype not in FLOAT_DTYPES:
            raise MiniGPTError(f"parameters must be float32 or float64, not {dtype}")
        for p in self.parameters():
            if p.dtype != dtype:
                p.data = p.data.astype(dtype)
                p.grad = None
        return self

    @property
    def dtype(self):
        ps = self.parameters()
        return ps[0].dtype if ps else np.dtype(np.float32)

    # --- summary --------------------------------------------------------------------------------------
    def summary(self, *inputs, max_depth: int | None = None) -> ModelSummary:
        """A per-layer table: every sub-module's name and type, its output shape when the module runs
        on ``inputs`` (in eval mode, without a graph; omit ``inputs`` for the parameters alone), its
        number of parameters and whether they are trainable or frozen. ``max_depth`` limits how deep
        the tree is listed (1: direct children only)."""
        shapes, out = {}, None
        if inputs:
            def record(module, output):
                shapes[id(module)] = _shape_of(output)

            was_training = self.training
            self.eval()
            _CALL_HOOKS.append(record)
            try:
                with no_grad():
                    out = self(*inputs)
            finally:
                _CALL_HOOKS.remove(record)
                self.train(was_training)
        rows = []
        for name, m in self.named_modules():
            depth = name.count(".") + 1 if name else 0
            if depth == 0 or (max_depth is not None and depth > max_depth):
                continue
            params = m.parameters()  # every parameter under the module
            rows.append({"name": name, "type": type(m).__name__, "depth": depth,
                         "output_shape": shapes.get(id(m)), "params": int(sum(p.size for p in params)),
                         "trainable": int(sum(p.size for p in params if p.requires_grad))})
        return ModelSummary(f"{type(self).__name__}: {self.extra_repr()}" if self.extra_repr() else type(self).__name__,
                            rows, self.num_parameters(), self.num_parameters(trainable_only=True),
                            _shape_of(inputs[0]) if inputs else None, _shape_of(out))

    # --- repr ---------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            sub = repr(m).replace("\n", "\n  ")
            lines.append(f"  ({name}): {sub}")
        if len(lines) == 1:
            return lines[0] + ")"
        return "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules, registered under the names "0", "1", ..."""

    def __init__(self, modules=()):
        super().__init__()
        self._list = []
        for m in modules:
            self.append(m)

    def append(self, m: Module):
        setattr(self, str(len(self._list)), m)
        self._list.append(m)

    def __getitem__(self, i):
        return self._list[i]

    def __len__(self):
        return len(self._list)

    def __iter__(self):
        return iter(self._list)


class _BackwardHookCall:
    """One forward call's backward hooks. The tensor inputs requiring a gradient go through one identity
    node (one reshape for a single input; for several, one flat concatenation that each input is sliced
    back out of), and so do the tensor outputs: the gradient reaching that node is complete at once, for
    every input (or output) together, so the hooks see them all, fire once, and what they return replaces
    them. (PyTorch's full backward hooks work the same way, with one identity function per side.)"""

    def __init__(self, module, hooks):
        self.module = module
        self.pre = [fn for kind, fn in hooks if kind == "pre"]
        self.full = [fn for kind, fn in hooks if kind == "full"]
        self.n_args, self.watch, self.grad_out = 0, [], None

    @staticmethod
    def _join(tensors, what):
        """One identity node for ``tensors``: (the node, the tensors made from it, reached flags)."""
        if len({t.dtype for t in tensors}) > 1:
            raise MiniGPTError(f"backward hooks on a module whose tensor {what} mix dtypes "
                               f"({', '.join(sorted({str(t.dtype) for t in tensors}))}) are not supported")
        if len(tensors) == 1:
            node = reshape(tensors[0], tensors[0].shape)
            parts = [node]
        else:
            node = concatenate([reshape(t, (-1,)) for t in tensors])
            parts, off = [], 0
            for t in tensors:
                parts.append(reshape(node[off:off + t.size], t.shape))
                off += t.size
        reached = [False] * len(parts)
        if len(parts) > 1:
            for i, p in enumerate(parts):
                p.register_hook(lambda g, i=i: reached.__setitem__(i, True))
        else:
            reached[0] = True
        return node, parts, reached

    @staticmethod
    def _split(g, tensors, reached):
        if len(tensors) == 1:
            return [g]
        out, off = [], 0
        for t, r in zip(tensors, reached):
            out.append(g[off:off + t.size].reshape(t.shape) if r else None)
            off += t.size
        return out

    @staticmethod
    def _check(r, like, what):
        """A hook's returned gradients: one per entry of ``like`` (None or an array of its shape)."""
        if not isinstance(r, (tuple, list)) or len(r) != len(like):
            raise MiniGPTError(f"a backward hook of {what} must return None or a tuple of {len(like)} gradient(s), "
                               f"got {type(r).__name__}" + (f" of {len(r)}" if isinstance(r, (tuple, list)) else ""))
        out = []
        for x, ref in zip(r, like):
            if x is not None:
                x = np.asarray(x.data if isinstance(x, Tensor) else x)
                if ref is not None and x.shape != tuple(ref.shape):
                    raise MiniGPTError(f"a backward hook returned a gradient of shape {x.shape} for a tensor of "
                                       f"shape {tuple(ref.shape)}")
            out.append(x)
        return out

    @staticmethod
    def _merge(grads, tensors, dtype):
        parts = [np.zeros(t.shape, dtype) if g is None else np.asarray(g, dtype=dtype) for g, t in zip(grads, tensors)]
        return parts[0] if len(parts) == 1 else np.concatenate([p.ravel() for p in parts])

    def wrap_inputs(self, args):
        self.n_args = len(args)
        self.watch = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
        if not self.watch:
            return args
        self.inputs = [args[i] for i in self.watch]
        node, parts, self.in_reached = self._join(self.inputs, "inputs")
        self.in_node = node
        node.register_hook(self._on_inputs)
        args = list(args)
        for i, p in zip(self.watch, parts):
            args[i] = p
        return tuple(args)

    def wrap_outputs(self, out):
        single = isinstance(out, Tensor)
        items = [out] if single else list(out) if isinstance(out, (tuple, list)) else []
        pos = [i for i, t in enumerate(items) if isinstance(t, Tensor) and t.requires_grad]
        if not pos:
            return out
        self.outputs = [items[i] for i in pos]
        if self.watch and not _reaches(self.outputs, self.in_node):
            self.watch = []   # no input gets a gradient through this call: fire when the outputs' arrive
        node, parts, self.out_reached = self._join(self.outputs, "outputs")
        node.register_hook(self._on_outputs)
        for i, p in zip(pos, parts):
            items[i] = p
        self.out_dtype = node.dtype
        if single:
            return items[0]
        return type(out)(*items) if hasattr(out, "_fields") else type(out)(items)   # a namedtuple, or not

    def _on_outputs(self, g):
        grads = self._split(g, self.outputs, self.out_reached)
        changed = False
        for fn in self.pre:
            r = fn(self.module, tuple(grads))
            if r is not None:
                grads, changed = self._check(r, self.outputs, type(self.module).__name__), True
        self.grad_out = tuple(grads)
        if not self.watch:            # no input needs a gradient: the output's is all there is
            self._fire(None)
        return self._merge(grads, self.outputs, g.dtype) if changed else None

    def _on_inputs(self, g):
        grads = self._split(g, self.inputs, self.in_reached)
        r = self._fire(grads)
        return None if r is None else self._merge(r, self.inputs, g.dtype)

    def _fire(self, grads):
        """Call the full backward hooks; returns the replaced input gradients (by watched input), or None."""
        grad_in = [None] * self.n_args
        for i, gi in zip(self.watch, grads or ()):
            grad_in[i] = gi
        changed = False
        for fn in self.full:
            r = fn(self.module, tuple(grad_in), self.grad_out)
            if r is not None:
                if grads is None:
                    raise MiniGPTError(f"a backward hook of {type(self.module).__name__} returned gradients, but "
                                       "no input of this call requires one")
                like = [self.inputs[self.watch.index(i)] if i in self.watch else None for i in range(self.n_args)]
                r = self._check(r, like, type(self.module).__name__)
                bad = [i for i in range(self.n_args) if i not in self.watch and r[i] is not None]
                if bad:
                    raise MiniGPTError(f"a backward hook of {type(self.module).__name__} returned a gradient for "
                                       f"argument {bad[0]}, which is not a tensor requiring a gradient")
                grad_in, changed = list(r), True
        return [grad_in[i] for i in self.watch] if changed else None


def _reaches(outputs, target) -> bool:
    """Whether ``target`` is in the graph of ``outputs`` (a walk of the module's own ops: every path to what
    lies below the module runs through ``target``, where it stops)."""
    stack, seen = list(outputs), set()
    while stack:
        t = stack.pop()
        if t is target:
            return True
        if id(t) in seen or t._op is None:
            continue
        seen.add(id(t))
        stack.extend(i for i in t._op.inputs if i.requires_grad)
    return False
