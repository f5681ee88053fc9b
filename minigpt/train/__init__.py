"""Training: the pretraining loop with evaluation and crash-safe checkpoints, and run assembly."""
from .loop import (Trainer, TrainConfig, TrainingDiverged, evaluate, load_checkpoint, perplexity,
                       resolve_model_dir, save_checkpoint)
from .run import load_corpus, make_tokenizer, pretrain

__all__ = ["Trainer", "TrainConfig", "TrainingDiverged", "evaluate", "perplexity", "save_checkpoint",
           "load_checkpoint", "resolve_model_dir", "pretrain", "load_corpus", "make_tokenizer"]
