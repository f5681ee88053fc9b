"""The GPT model (and its classifier variant), its generation loop and its checkpoints."""
from .generation import generate, generate_stream
from .gpt import GPT, PRESETS, GPTConfig, count_gpt2_parameters
from .classifier import GPTClassifier

__all__ = ["GPT", "GPTClassifier", "GPTConfig", "PRESETS", "count_gpt2_parameters", "generate", "generate_stream"]
