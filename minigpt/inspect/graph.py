"""The recorded autograd graph as Graphviz DOT text.

``graph(loss)`` walks back from a tensor through the ops that made it and returns a :class:`Graph`
whose ``.source`` is DOT text: one node per op (its class name, output shape, dtype), one per leaf (its
parameter name when ``modules=`` a model owning it, else ``input``; shape; ``requires_grad``), edges in
data-flow order (from an input to the op that consumes it). After ``backward()``, ``grads=True`` adds
``|grad|`` (the L2 norm of ``.grad``) to every tensor that kept one (leaves, and intermediates that called
``retain_grad()``).

Run the forward pass inside ``with trace(model):`` to know which module made each op: the drawing then
puts each module's ops in a box (nested like the modules), and ``collapse=N`` draws every module
``N`` names deep (``collapse=2``: ``blocks.0``, ``blocks.1``, ...) as one node. ``Graph.render(path)``
writes SVG/PNG/PDF through Graphviz's ``dot`` program.

Fused or not: ``trace(model)`` watches the modules with forward hooks, and a module with hooks cannot be
skipped over, so the model then runs its *unfused* path (the feed-forward layer as ``LinearGELUOp`` and
``LinearOp``, each residual addition an ``Add``), the ops one per module, as a reader expects them. A
user's own hooks do the same in part: one on a block's ``attn`` or ``ff`` takes its residual additions out
of the fused ops, one on ``ff.proj`` splits the feed-forward op. ``trace(model,
fused=True)`` labels the ops without hooks, so the drawing shows the ops training actually runs
(``FeedForwardOp``, ``LinearOp`` with the residual added inside). The arithmetic of the two is the same.

``retain_all(loss)`` before ``loss.backward()`` keeps the gradient of every op's output, so that
``graph(..., grads=True)`` annotates ``|grad|`` on every op too, not only on the parameters.

Example::

    >>> with trace(model):
    ...     loss = model.loss(x, y)
    >>> loss.backward()
    >>> g = graph(loss, modules=model, grads=True)
    >>> print(g.source[:60])
    digraph autograd {
      graph [rankdir=TB fontname=Helvetica ...
    >>> g.render("step.svg")
"""
from __future__ import annotations

import contextlib
import shutil
import subprocess
import weakref
from pathlib import Path

import numpy as np

from ..errors import MiniGPTError
from ..io import atomic_write_bytes, atomic_write_text
from ..tensor import Tensor

_SCOPES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # op -> (module path, module class)

INSTALL_DOT = ("the Graphviz program `dot` is not installed (Debian/Ubuntu: apt-get install graphviz; "
               "macOS: brew install graphviz)")


def _label_ops(out, inputs: set, path: str, cls: str) -> None:
    """Mark every op between the module's inputs and its output with the module's path (inner modules
    run first, so an op keeps the innermost module that made it)."""
    stack = [t for t in (out if isinstance(out, (tuple, list)) else (out,)) if isinstance(t, Tensor)]
    seen = set()
    while stack:
        t = stack.pop()
        if id(t) in seen or id(t) in inputs or t._op is None:
            continue
        seen.add(id(t))
        op = t._op
        if op not in _SCOPES:
            _SCOPES[op] = (path, cls)
        stack.extend(op.inputs)


@contextlib.contextmanager
def trace(model, fused: bool = False):
    """Within this block, ops made by ``model``'s sub-modules remember which module made them.

    ``fused=False``: through forward hooks, which switch the model's fused paths off (the unfused ops);
    ``fused=True``: by wrapping each module's ``forward`` for the block's duration, no hook registered, so
    the model runs the fused ops it trains with."""
    handles, wrapped = [], []
    for path, mod in model.named_modules():
        if not path:
            continue
        if fused:
            wrapped.append(mod)
            object.__setattr__(mod, "forward", _labelling_forward(mod.forward, path, type(mod).__name__))
            continue

        def hook(m, args, out, _path=path, _cls=type(mod).__name__):
            ins = {id(a) for a in args if isinstance(a, Tensor)}
            _label_ops(out, ins, _path, _cls)

        handles.append(mod.register_forward_hook(hook))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for mod in wrapped:
            object.__delattr__(mod, "forward")   # the class's forward again


def _labelling_forward(forward, path: str, cls: str):
    def labelled(*args, **kwargs):
        out = forward(*args, **kwargs)
        ins = {id(a) for a in (*args, *kwargs.values()) if isinstance(a, Tensor)}
        _label_ops(out, ins, path, cls)
        return out

    return labelled


def retain_all(root: Tensor) -> int:
    """Call ``retain_grad()`` on every op output ``root`` depends on (``root`` included), before
    ``root.backward()``: afterwards every intermediate tensor holds its gradient, and ``graph(root,
    grads=True)`` can show ``|grad|`` on every op. Returns the number of tensors marked."""
    if not isinstance(root, Tensor):
        raise MiniGPTError(f"retain_all() needs a Tensor, got {type(root).__name__}")
    n, seen, stack = 0, set(), [root]
    while stack:
        t = stack.pop()
        if id(t) in seen or t._op is None or not t.requires_grad:
            continue
        seen.add(id(t))
        t.retain_grad()
        n += 1
        stack.extend(t._op.inputs)
    return n


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _esc(s: str) -> str:
    return s.replace('"', '\\"')


class Graph:
    """DOT text (``.source``) plus the nodes and edges as plain data (``.nodes``, ``.edges``)."""

    def __init__(self, source: str, nodes: list, edges: list):
        self.source, self.nodes, self.edges = source, nodes, edges

    def __str__(self) -> str:
        return self.source

    def _repr_svg_(self):  # notebooks
        try:
            return self.pipe("svg").decode()
        except MiniGPTError:
            return None

    def pipe(self, fmt: str = "svg") -> bytes:
        """The drawing as bytes in ``fmt`` (svg, png, pdf), made by Graphviz's ``dot``."""
        if shutil.which("dot") is None:
            raise MiniGPTError(INSTALL_DOT + "; the DOT text is Graph.source (or `minigpt graph --out FILE.dot`)")
        try:
            import graphviz

            return graphviz.Source(self.source).pipe(format=fmt)
        except ImportError:
            r = subprocess.run(["dot", f"-T{fmt}"], input=self.source.encode(), capture_output=True)
            if r.returncode:
                raise MiniGPTError(f"dot failed: {r.stderr.decode(errors='replace').strip()}") from None
            return r.stdout

    def render(self, path) -> Path:
        """Write the drawing; the format follows the suffix (.svg, .png, .pdf; .dot/.gv: the text)."""
        path = Path(path)
        fmt = path.suffix.lower().lstrip(".")
        if fmt in ("dot", "gv"):
            atomic_write_text(path, self.source)
        elif fmt in ("svg", "png", "pdf"):
            atomic_write_bytes(path, self.pipe(fmt))
        else:
            raise MiniGPTError(f"{path}: unknown drawing format {path.suffix!r}; use .svg, .png, .pdf or .dot")
        return path


def graph(root: Tensor, modules=None, grads: bool = False, collapse: int | None = None) -> Graph:
    """The autograd graph that produced ``root`` (see the module docstring)."""
    if not isinstance(root, Tensor):
        raise MiniGPTError(f"graph() needs a Tensor, got {type(root).__name__}")
    if collapse is not None and collapse < 1:
        raise MiniGPTError(f"collapse must be >= 1 (module names that deep become one node), got {collapse}")
    pnames = {}
    if modules is not None:
        pnames = {id(p): n for n, p in modules.named_parameters()}

    # topological order, inputs first (iterative post-order DFS)
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        t, done = stack.pop()
        if done:
            order.append(t)
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        stack.append((t, True))
        if t._op is not None:
            for inp in reversed(t._op.inputs):
                if id(inp) not in seen:
                    stack.append((inp, False))

    def scope(t):
        if t._op is not None:
            return _SCOPES.get(t._op, ("", ""))[0]
        name = pnames.get(id(t))
        return name.rsplit(".", 1)[0] if name and "." in name else ""

    short = {id(t): f"n{i}" for i, t in enumerate(order)}  # stable node ids, in data-flow order

    def key(t):
        s = scope(t)
        if collapse is not None and s and s.count(".") + 1 >= collapse:
            return "m:" + ".".join(s.split(".")[:collapse])
        return short[id(t)]

    classes = {path: cls for path, cls in _SCOPES.values()} if collapse is not None else {}
    nodes, node_index, edges = [], {}, []
    for t in order:
        k = key(t)
        if k.startswith("m:"):
            if k not in node_index:
                path = k[2:]
                node_index[k] = len(nodes)
                nodes.append({"id": k, "kind": "module", "label": path, "module": path,
                              "class": classes.get(path, ""), "ops": 0, "parameters": 0})
            n = nodes[node_index[k]]
            if t._op is not None:
                n["ops"] += 1
            elif id(t) in pnames:
                n["parameters"] += int(t.size)
        else:
            node_index[k] = len(nodes)
            n = {"id": k, "shape": tuple(t.shape), "dtype": str(t.dtype), "module": scope(t)}
            if t._op is not None:
                n.update(kind="op", label=type(t._op).__name__)
            else:
                n.update(kind="parameter" if id(t) in pnames else "input",
                         label=pnames.get(id(t), t.name or "input"), requires_grad=t.requires_grad)
            if grads and t.grad is not None:
                n["grad_norm"] = float(np.linalg.norm(np.asarray(t.grad, dtype=np.float64)))
            nodes.append(n)
        if t._op is not None:
            for inp in t._op.inputs:
                e = (key(inp), k)
                if e[0] != e[1] and e not in edges:
                    edges.append(e)
    return Graph(_to_dot(nodes, edges), nodes, edges)


def _node_line(n: dict) -> str:
    if n["kind"] == "module":
        cls = f" ({n['class']})" if n["class"] else ""
        lab = f"{n['label']}{cls}\\n{n['ops']} ops, {n['parameters']:,} parameters"
        return f'"{n["id"]}" [label="{_esc(lab)}" shape=box3d style=filled fillcolor="#fff2cc"];'
    lab = f"{n['label']}\\n{_fmt_shape(n['shape'])} {n['dtype']}"
    if n["kind"] != "op" and n.get("requires_grad"):
        lab += "\\nrequires_grad"
    if "grad_norm" in n:
        lab += f"\\n|grad| = {n['grad_norm']:.3g}"
    if n["kind"] == "op":
        style = 'shape=box style="rounded,filled" fillcolor="#dae8fc"'
    elif n["kind"] == "parameter":
        style = 'shape=ellipse style=filled fillcolor="#d5e8d4"'
    else:
        style = 'shape=ellipse style=filled fillcolor="#eeeeee"'
    return f'"{n["id"]}" [label="{_esc(lab)}" {style}];'


def _to_dot(nodes: list, edges: list) -> str:
    lines = ["digraph autograd {",
             '  graph [rankdir=TB fontname=Helvetica fontsize=10];',
             '  node [fontname=Helvetica fontsize=10];',
             '  edge [arrowsize=0.6];']
    # nest nodes in clusters by module path ("blocks.0.attn" inside "blocks.0" inside "blocks")
    tree: dict = {"children": {}, "nodes": []}
    for n in nodes:
        where = tree
        path = n["module"] if n["kind"] != "module" else n["module"].rsplit(".", 1)[0] if "." in n["module"] else ""
        if path:
            prefix = []
            for part in path.split("."):
                prefix.append(part)
                where = where["children"].setdefault(".".join(prefix), {"children": {}, "nodes": []})
        where["nodes"].append(n)

    def emit(sub, depth):
        pad = "  " * depth
        for n in sub["nodes"]:
            lines.append(pad + _node_line(n))
        for path, child in sub["children"].items():
            lines.append(f'{pad}subgraph "cluster_{_esc(path)}" {{')
            lines.append(f'{pad}  label="{_esc(path)}"; style=rounded; color="#888888";')
            emit(child, depth + 1)
            lines.append(pad + "}")

    emit(tree, 1)
    for a, b in edges:
        lines.append(f'  "{a}" -> "{b}";')
    lines.append("}")
    return "\n".join(lines) + "\n"
