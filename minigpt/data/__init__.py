"""Data: token-id datasets, batching, text sources, the built-in default corpus, and the real
data sets by name (``dataset_path("sms-spam")``).

Light to import (NumPy only); the default corpus is built on first call.
"""
from .shared import dataset_names, dataset_path, shared_data_dir, shared_file
from .datasets import ENDOFTEXT, SlidingWindowDataset, load_texts, train_val_split
from .loader import DataLoader
from .corpus import default_corpus

__all__ = ["SlidingWindowDataset", "DataLoader", "train_val_split", "load_texts", "default_corpus",
           "shared_data_dir", "shared_file", "dataset_path", "dataset_names", "ENDOFTEXT"]
