"""The functional API: every op by its name (``import minigpt.functional as F``).

Arguments follow PyTorch's order (``F.linear(x, weight, bias)``, ``F.cross_entropy(logits, targets)``,
``F.embedding(ids, weight)``) with NumPy-style ``axis=`` keywords. Each function's forward and backward
are in ``minigpt/ops/`` (see ``minigpt.ops`` for the map).
"""
from .ops import *  # noqa: F401,F403
from .ops import __all__  # noqa: F401
