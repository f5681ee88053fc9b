"""Instruments for looking inside a model while it runs and learns (observe only: nothing here changes
what a model computes).

- ``maps``: attention maps (L, H, T, T) from the NumPy reference math, the logit lens, the residual stream
- ``graph``: the recorded autograd graph as Graphviz DOT text (``minigpt.viz.graph``)
- ``profiler``: per-op forward/backward counts, times and bytes (``minigpt.profile``)
- ``checkgrad``: a finite-difference check of any ``minigpt.functional`` function by name
- ``stats``: training statistics every N steps (``stats.jsonl``) and their dashboards

Sits above the model and the training loop; only the CLI imports it.
"""
from .maps import attention_maps, logit_lens, residual_stream

__all__ = ["attention_maps", "logit_lens", "residual_stream"]
