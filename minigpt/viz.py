"""Drawing the autograd graph: ``minigpt.viz.graph(tensor)`` -> Graphviz DOT text (see
``minigpt.inspect.graph``, where the code lives)."""
from .inspect.graph import Graph, graph, trace

__all__ = ["graph", "trace", "Graph"]
