"""The GPT model, its generation loop and its checkpoints."""
from .generation import generate, generate_stream
from .gpt import GPT, PRESETS, GPTConfig, count_gpt2_parameters

__all__ = ["GPT", "GPTConfig", "PRESETS", "count_gpt2_parameters", "generate", "generate_stream"]
