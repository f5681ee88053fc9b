"""The GPT model: its config (config.py), checkpoint file format (checkpoint.py), the model (gpt.py) and
its generation loop (generation.py)."""
from .generation import generate, generate_stream
from .config import PRESETS, GPTConfig
from .gpt import GPT, count_gpt2_parameters
from .classifier import GPTClassifier

__all__ = ["GPT", "GPTClassifier", "GPTConfig", "PRESETS", "count_gpt2_parameters", "generate", "generate_stream"]
