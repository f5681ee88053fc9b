"""Numba kernels: pure array code (NumPy arrays in, NumPy arrays out), no Tensor in sight.

Each kernel (``attention_forward``, ``layer_norm_forward``, ``gelu_forward``, ``softmax_forward``,
``cross_entropy_forward``, their backwards, ``adamw_update``, ...) is written twice, side by side in its
module -- ``<name>_numpy`` (the readable reference math in plain NumPy) and ``<name>_numba`` (the fast
kernel) -- and declared once, ``<name> = kernel(<name>_numpy, <name>_numba)``. The declaration runs the
version the backend selects; the backend switch lives in :mod:`minigpt.kernels.registry`:

- ``backend()`` returns ``"numba"`` or ``"numpy"``;
- ``set_backend(name)`` switches it for the whole process; ``use_backend(name)`` for a ``with`` block;
- the environment variable ``MINIGPT_KERNELS`` sets the initial value (default ``"numba"``).

    >>> from minigpt import kernels
    >>> kernels.set_backend("numpy")      # every kernel now runs its NumPy reference
    'numba'
    >>> kernels.backend()
    'numpy'

Numba compiles a kernel the first time it is called (``cache=True`` keeps the machine code in
``__pycache__`` so later processes load it in a fraction of a second).
"""
import importlib

from .registry import BACKENDS, KERNELS, backend, kernel, set_backend, use_backend  # noqa: F401

_SUBMODULES = ("fastmath", "attention", "layernorm", "gelu", "softmax", "bias", "scatter", "adamw", "bpe", "int8", "rmsnorm", "swiglu", "rope")
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
    "int8_matmul": "int8",
    "rms_norm_forward": "rmsnorm",
    "rms_norm_backward": "rmsnorm",
    "silu_mul_forward": "swiglu",
    "silu_mul_backward": "swiglu",
    "rope_apply": "rope",
}


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _FUNCTIONS:
        return getattr(importlib.import_module(f"{__name__}.{_FUNCTIONS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["backend", "set_backend", "use_backend", "kernel", "KERNELS", "BACKENDS", *_FUNCTIONS]
