"""The one kernel mechanism: the backend switch and the ``kernel(reference, fast)`` declaration.

Every kernel is written twice, side by side in its module: ``<name>_numpy``, the plain NumPy math (the
reference a reader checks against), and ``<name>_numba``, the fast Numba version. One line declares it:

    layer_norm_forward = kernel(layer_norm_forward_numpy, layer_norm_forward_numba)

The declared object is called like a function (``layer_norm_forward(x, gamma, beta)``); it runs the
reference or the fast version according to the backend chosen here, and only here. The first call of any
kernel also applies the tuned runtime (thread pools, allocator: ``minigpt.runtime.ensure``), before Numba's
thread pool starts; later calls check one flag.

- ``backend()`` returns ``"numba"`` or ``"numpy"``;
- ``set_backend(name)`` switches it for the whole process; ``use_backend(name)`` for a ``with`` block;
- the environment variable ``MINIGPT_KERNELS`` sets the initial value (default ``"numba"``).

    >>> from minigpt import kernels
    >>> with kernels.use_backend("numpy"):      # every kernel runs its NumPy reference in this block
    ...     kernels.backend()
    'numpy'

``KERNELS`` maps each declared kernel's name (``"layernorm.layer_norm_forward"``) to its declaration; the tests walk it to check that every fast
version equals its reference. Within a fast version, the choice between a kernel's serial and parallel
Numba builds is made by ``fastmath.LazyKernel.pick`` (serial below ``fastmath.SMALL_WORK`` elements).

Adding a kernel ``foo``: write ``foo_numpy`` (the math in plain NumPy) and ``foo_numba`` (checks and output
arrays around a ``LazyKernel`` built from an ``@njit``-able loop) in a module of this package; declare
``foo = kernel(foo_numpy, foo_numba, "docstring")`` below them; add one line with example arguments to
``EXAMPLES`` in ``tests/test_kernels_registry.py`` (which checks ``foo_numba`` against ``foo_numpy``). An op
calls ``module.foo(...)`` and names ``kernels/module.py::foo_numpy`` in its docstring.

The one exception: BPE training (``kernels/bpe.py``: ``train_init``, ``train_merges`` and their helpers) is
Numba only, with no declaration. Its kernels are not functions of arrays but steps of one resumable state
machine (a pair table, linked word nodes and a count heap, grown by the caller between calls), so a NumPy
version of the same signature would be a second copy of that machine rather than a readable reference; and
training is never run on the hot path of a model. The math is checked instead against a plain-Python
reference of the whole algorithm (count pairs, merge the most frequent, repeat): ``reference_train`` in
``tests/test_tokenizer_bpe.py``. BPE *encoding* is declared as usual (``tokenizer/bpe.py``).
"""
import functools
import os

from .. import runtime
from ..errors import MiniGPTError

BACKENDS = ("numba", "numpy")


def _initial_backend():
    name = os.environ.get("MINIGPT_KERNELS", "numba").strip().lower() or "numba"
    if name not in BACKENDS:
        raise MiniGPTError(
            f"environment variable MINIGPT_KERNELS={os.environ['MINIGPT_KERNELS']!r} is not a kernel "
            f"backend; use one of {', '.join(BACKENDS)}"
        )
    return name


_backend = _initial_backend()


def backend():
    """The kernel backend in use: ``"numba"`` (fast kernels) or ``"numpy"`` (plain NumPy reference)."""
    return _backend


def set_backend(name):
    """Select the kernel backend for the whole process: ``"numba"`` or ``"numpy"``. Returns the old one."""
    global _backend
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise MiniGPTError(f"unknown kernel backend {name!r}; use one of {', '.join(BACKENDS)}")
    old, _backend = _backend, name.strip().lower()
    return old


class use_backend:
    """Context manager: ``with use_backend("numpy"): ...`` runs the block on that backend, then restores."""

    def __init__(self, name):
        self.name = name
        self.old = None

    def __enter__(self):
        self.old = set_backend(self.name)
        return self

    def __exit__(self, *exc):
        set_backend(self.old)
        return False


KERNELS = {}  # name -> Kernel, in declaration order


class Kernel:
    """A kernel declared once: ``reference`` (plain NumPy) and ``fast`` (Numba), same arguments, same
    results (up to float rounding). Calling it runs the one the backend selects."""

    def __init__(self, name, reference, fast, doc):
        self.name = self.__qualname__ = name
        self.reference, self.fast = reference, fast
        self.__doc__ = doc
        self.__module__ = reference.__module__

    def __call__(self, *args, **kwargs):
        if not runtime.ready:  # the first launch applies the tuned runtime (minigpt/runtime.py)
            runtime.ensure()
        return (self.fast if _backend == "numba" else self.reference)(*args, **kwargs)

    def __get__(self, obj, objtype=None):
        """Declared in a class body, a kernel is a method: ``obj.name(...)`` runs ``version(obj, ...)``."""
        return self if obj is None else functools.partial(self, obj)

    def __repr__(self):
        return f"<kernel {self.__module__}.{self.name}: {self.reference.__name__} | {self.fast.__name__}>"


def kernel(reference, fast, doc=None):
    """Declare a kernel from its NumPy ``reference`` (named ``<name>_numpy``) and its ``fast`` Numba version.

    The kernel's name is the reference's name without ``_numpy``; its docstring is ``doc``, else the
    reference's. Returns the callable declaration (and records it in ``KERNELS``).
    """
    name = reference.__name__
    if not name.endswith("_numpy"):
        raise ValueError(f"kernel reference {name!r} should be named <kernel>_numpy")
    name = name[: -len("_numpy")]
    k = Kernel(name, reference, fast, doc if doc is not None else reference.__doc__)
    module = reference.__module__.removeprefix("minigpt.kernels.").removeprefix("minigpt.")
    KERNELS[f"{module}.{reference.__qualname__[: -len('_numpy')]}"] = k
    return k
