"""The package's import graph, read from the source with ``ast``: no cycles, every import runs down the
layer order (CONTRIBUTING.md), and function-local imports only where they keep a heavy optional
dependency out of the import or are the CLI's lazy command loading."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "minigpt"

# Bottom up. A module may import modules of its own layer or of a lower one, never of a higher one.
LAYERS = [
    ["minigpt", "minigpt.errors", "minigpt.io", "minigpt.random", "minigpt.runtime", "minigpt.progress",
     "minigpt.hooks", "minigpt.settings"],
    ["minigpt.kernels"],
    ["minigpt.tensor", "minigpt.grad_buffers"],
    ["minigpt.ops"],
    ["minigpt.functional", "minigpt.gradcheck"],
    ["minigpt.nn"],
    ["minigpt.model"],
    ["minigpt.tokenizer", "minigpt.download", "minigpt.data.shared"],
    ["minigpt.data", "minigpt.optim", "minigpt.distributed", "minigpt.loading"],
    ["minigpt.train"],
    ["minigpt.inspect", "minigpt.viz"],
    ["minigpt.exercises", "minigpt.book"],  # fronts over everything below, like the CLI; nothing imports them
    ["minigpt.cli", "minigpt.__main__"],
]

# Function-local imports that are allowed, and why.
OPTIONAL_HEAVY = {"matplotlib", "graphviz", "mpi4py"}  # optional dependencies: imported only when used
LOCAL_IMPORTS_ALLOWED = {
    # runtime.configure() must run before NumPy/Numba load, so runtime.py never imports them at the top
    "minigpt.runtime": {"numba", "numpy"},
}
# The CLI loads each command's implementation when the command runs: `minigpt --help` stays quick, and
# runtime.configure() (first thing in main) runs before NumPy is imported.
LAZY_PACKAGES = ("minigpt.cli",)
# The one import that runs up, by design: Tensor's operators (x + y, x @ y, x.sum()) are the ops, so
# tensor.py imports the ops package at its very end, after Tensor and Function exist.
UPWARD_ALLOWED = {("minigpt.tensor", "minigpt.ops")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


FILES = {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def resolve(mod: str, is_pkg: bool, node: ast.ImportFrom | ast.Import) -> list[str]:
    """The modules an import statement names (a submodule when ``from pkg import sub`` names one)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        base = mod.split(".")
        base = base[: len(base) - node.level + (1 if is_pkg else 0)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    out = []
    for a in node.names:
        sub = f"{target}.{a.name}"
        out.append(sub if sub in FILES else target)
    return out


def imports():
    """Yield (module, imported module, function-local?) for every import in the package."""
    for mod, path in FILES.items():
        tree = ast.parse(path.read_text(), str(path))
        is_pkg = path.name == "__init__.py"

        def walk(node, local):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in resolve(mod, is_pkg, child):
                        yield mod, target, local
                else:
                    yield from walk(child, local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                       ast.Lambda)))

        yield from walk(tree, False)


def layer_of(mod: str) -> int:
    best, rank = -1, None
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (mod == prefix or mod.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{mod} is in no layer: add it to LAYERS (and to CONTRIBUTING.md)"
    return rank


def internal_edges():
    return {(a, b) for a, b, _ in imports()
            if b.startswith("minigpt") and a != b and (a, b) not in UPWARD_ALLOWED}


def test_every_module_has_a_layer():
    for mod in FILES:
        layer_of(mod)


def test_no_import_runs_upward():
    bad = [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
           for a, b in sorted(internal_edges()) if layer_of(b) > layer_of(a)]
    assert not bad, "\n".join(bad)


def test_no_import_cycles():
    graph = {}
    for a, b in internal_edges():
        graph.setdefault(a, set()).add(b)
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_function_local_imports_only_for_optional_dependencies():
    bad = []
    for a, b, local in imports():
        if not local or b.split(".")[0] in OPTIONAL_HEAVY or a.startswith(LAZY_PACKAGES):
            continue
        if b.split(".")[0] in LOCAL_IMPORTS_ALLOWED.get(a, ()):
            continue
        bad.append(f"{a}: function-local import of {b}")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_cycles_and_local_imports():
    # the parser itself: a relative import inside a function is found and resolved
    tree = ast.parse("def f():\n    from .checkpoint import x\n")
    node = tree.body[0].body[0]
    assert resolve("minigpt.model.gpt", False, node) == ["minigpt.model.checkpoint"]
    assert resolve("minigpt.model", True, ast.parse("from . import gpt").body[0]) == ["minigpt.model.gpt"]
