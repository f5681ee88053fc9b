"""minigpt: a GPT built from scratch on NumPy, with its own autograd engine and Numba kernels.

Layers, bottom up (each imports only the layers below it; nothing imports the CLI):
errors, io, random, runtime, progress -> kernels (Numba + NumPy reference, arrays only) -> tensor
(autograd core), grad_buffers (gradient-buffer reuse in backward) -> ops (forward + backward of every op)
-> functional, gradcheck -> nn (layers) -> model (config -> checkpoint -> gpt, generation) -> tokenizer,
download, data.shared -> data, optim -> train -> cli. (tensor.py imports the ops at its end, by design:
its operators are the ops.)

``import minigpt`` changes nothing in the process: no environment variable, no thread pool, no allocator
setting. The tuned runtime (thread pools, allocator: :mod:`minigpt.runtime`) is applied by the first kernel
launch, before Numba's thread pool starts; ``MINIGPT_RUNTIME=0`` or ``minigpt.runtime.disable()`` opts out.
The names below load on first use, so ``import minigpt`` is quick and does not even import NumPy.
"""
import importlib
import sys
import types

from .errors import MiniGPTError

__version__ = "0.1.0"

_LAZY = {
    "Tensor": ("minigpt.tensor", "Tensor"),
    "tensor": ("minigpt.tensor", "tensor"),
    "no_grad": ("minigpt.tensor", "no_grad"),
    "is_grad_enabled": ("minigpt.tensor", "is_grad_enabled"),
    "gradcheck": ("minigpt.gradcheck", "gradcheck"),
    "GradcheckError": ("minigpt.gradcheck", "GradcheckError"),
    "functional": ("minigpt.functional", None),
    "BPETokenizer": ("minigpt.tokenizer", "BPETokenizer"),
    "SimpleTokenizer": ("minigpt.tokenizer", "SimpleTokenizer"),
    "GPT": ("minigpt.model", "GPT"),
    "GPTConfig": ("minigpt.model", "GPTConfig"),
    "generate": ("minigpt.model", "generate"),
    "Classifier": ("minigpt.train.classify", "Classifier"),
    "profile": ("minigpt.inspect.profiler", "profile"),
}


def _load(name):
    module, attr = _LAZY[name]
    mod = importlib.import_module(module)
    return mod if attr is None else getattr(mod, attr)


def __getattr__(name):
    if name in _LAZY:
        return _load(name)
    raise AttributeError(f"module 'minigpt' has no attribute {name!r}")


class _Package(types.ModuleType):
    """``minigpt.tensor`` and ``minigpt.gradcheck`` are functions named like the modules that define them.
    Importing such a module binds the module to the package's attribute of that name; these properties
    keep the name on the function, as ``from .tensor import tensor`` in this file would."""

    tensor = property(lambda self: _load("tensor"), lambda self, value: None)
    gradcheck = property(lambda self: _load("gradcheck"), lambda self, value: None)


sys.modules[__name__].__class__ = _Package


__all__ = ["MiniGPTError", *_LAZY]
