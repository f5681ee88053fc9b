"""minigpt: a GPT built from scratch on NumPy, with its own autograd engine and Numba kernels.

Layers, bottom up: tensor (autograd core) -> ops (forward + backward of every op) -> kernels (Numba)
-> nn (layers) -> model (GPT, generation, checkpoints) -> tokenizer -> data -> optim -> train -> cli.
"""
from . import _threads  # noqa: F401  (must run before Numba starts its thread pool)
from . import _alloc  # noqa: F401  (keeps freed activations in the process for the next step)
from .errors import MiniGPTError
from .tensor import Tensor, tensor, no_grad, is_grad_enabled
from .gradcheck import gradcheck, GradcheckError
from . import functional

__version__ = "0.1.0"

_LAZY = {
    "BPETokenizer": ("minigpt.tokenizer", "BPETokenizer"),
    "SimpleTokenizer": ("minigpt.tokenizer", "SimpleTokenizer"),
    "GPT": ("minigpt.model", "GPT"),
    "GPTConfig": ("minigpt.model", "GPTConfig"),
    "generate": ("minigpt.model", "generate"),
    "Classifier": ("minigpt.train.classify", "Classifier"),
}


def __getattr__(name):
    # Heavier parts (tokenizer, model) load on first use so `import minigpt` stays quick.
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'minigpt' has no attribute {name!r}")


__all__ = ["Tensor", "tensor", "no_grad", "is_grad_enabled", "gradcheck", "GradcheckError", "functional",
           "MiniGPTError", *_LAZY]
