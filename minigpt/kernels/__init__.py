"""Numba kernels: pure array code (NumPy arrays in, NumPy arrays out), no Tensor in sight.

Each public kernel (``attention_forward``, ``layer_norm_forward``, ``gelu_forward``, ``softmax_forward``,
``cross_entropy_forward``, their backwards, ...) exists twice, side by side in its module:
``<name>_numba`` (the fast kernel) and ``<name>_numpy`` (the readable reference math in plain NumPy).
The public function dispatches on the backend chosen here:

- ``backend()`` returns ``"numba"`` or ``"numpy"``;
- ``set_backend(name)`` switches it for the whole process;
- the environment variable ``MINIGPT_KERNELS`` sets the initial value (default ``"numba"``).

    >>> from minigpt import kernels
    >>> kernels.set_backend("numpy")      # every kernel now runs its NumPy reference
    >>> kernels.backend()
    'numpy'

The modules are imported lazily (``kernels.attention`` on first use), so importing this package does not
start Numba; Numba compiles a kernel the first time it is called (``cache=True`` keeps the machine code in
``__pycache__`` so later processes load it in a fraction of a second).
"""
import importlib
import os

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


_SUBMODULES = ("fastmath", "attention", "layernorm", "gelu", "softmax", "bias", "scatter")
_FUNCTIONS = {
    "attention_forward": "attention",
    "attention_backward": "attention",
    "layer_norm_forward": "layernorm",
    "layer_norm_backward": "layernorm",
    "gelu_forward": "gelu",
    "gelu_backward": "gelu",
    "bias_gelu_forward": "gelu",
    "bias_gelu_backward": "gelu",
    "softmax_forward": "softmax",
    "softmax_backward": "softmax",
    "log_softmax_forward": "softmax",
    "log_softmax_backward": "softmax",
    "cross_entropy_forward": "softmax",
    "cross_entropy_backward": "softmax",
    "add_bias": "bias",
    "bias_grad": "bias",
    "add_rows": "scatter",
}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f"{__name__}.{_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["backend", "set_backend", "use_backend", "BACKENDS", *_FUNCTIONS]
