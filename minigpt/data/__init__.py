"""Data: token-id datasets, batching, text sources, the built-in default corpus and the shared data folder.

Light to import (NumPy only); the default corpus is built on first call.
"""
from .shared import shared_data_dir, shared_file
from .datasets import ENDOFTEXT, SlidingWindowDataset, load_texts, train_val_split
from .loader import DataLoader
from .corpus import default_corpus

__all__ = ["SlidingWindowDataset", "DataLoader", "train_val_split", "load_texts", "default_corpus",
           "shared_data_dir", "shared_file", "ENDOFTEXT"]
