"""The book's functions and classes under the book's names: *Build a Large Language Model (From Scratch)*,
chapter by chapter, on minigpt.

Each name is a thin adapter over minigpt's own implementation, documented with how minigpt's native API
differs and why. One module per chapter, as the book's own package (``from minigpt.book.ch05 import
train_model_simple``), and everything here at the top (``from minigpt.book import *``)::

    >>> from minigpt.book import GPT_CONFIG_124M, GPTModel, manual_seed
    >>> cfg = {**GPT_CONFIG_124M, "context_length": 16, "emb_dim": 32, "n_heads": 2, "n_layers": 1}
    >>> manual_seed(123)
    >>> GPTModel(cfg)([[6109, 3626, 6100, 345]]).shape
    (1, 4, 50257)

Where the book writes ``torch.manual_seed(123)``, ``torch.optim.AdamW(...)``, ``torch.nn.Linear(...)``,
``torch.tensor(...)``, ``torch.save`` / ``torch.load`` and ``tiktoken.get_encoding("gpt2")``, use
``manual_seed``, ``AdamW``, ``Linear``, ``tensor``, ``save`` / ``load`` (safetensors files, never pickles)
and ``get_encoding`` from here (minigpt's own). ``device`` arguments are accepted and ignored.
The notebooks/ folder walks through each chapter with these; docs/book.md is the map.

Nothing in minigpt imports this package: it is a front, like the command line.
"""
from ..nn import Linear
from ..optim import AdamW
from ..random import manual_seed
from ..tensor import no_grad, tensor
from .appendix_d import book_lr, clip_grad_norm_, find_highest_gradient, train_model
from .appendix_e import LinearWithLoRA, LoRALayer, replace_linear_with_lora
from .ch02 import (DataLoader, Embedding, GPTDatasetV1, SimpleTokenizerV1, SimpleTokenizerV2, create_dataloader_v1,
                   get_encoding)
from .ch03 import (CausalAttention, Dropout, MultiHeadAttention, MultiHeadAttentionWrapper, SelfAttention_v1,
                   SelfAttention_v2)
from .ch04 import (GELU, GPT_CONFIG_124M, DummyGPTModel, DummyLayerNorm, DummyTransformerBlock, ExampleDeepNeuralNetwork,
                   FeedForward, GPTModel, LayerNorm, OutputHead, TransformerBlock, book_config, generate_text_simple,
                   print_gradients, rand, randn)
from .ch05 import (calc_loss_batch, calc_loss_loader, download_and_load_gpt2, evaluate_model, generate,
                   generate_and_print_sample, load, load_gpt2_params, load_weights_into_gpt, plot_losses, save,
                   text_to_token_ids, token_ids_to_text, train_model_simple)
from .ch06 import (Column, SpamDataset, Table, calc_accuracy_loader, classify_review, create_balanced_dataset,
                   load_sms_spam, plot_values, random_split, train_classifier_simple)
from .ch07 import (InstructionDataset, custom_collate_draft_1, custom_collate_draft_2, custom_collate_fn,
                   download_and_load_file, format_input, load_file)

__all__ = [
    "manual_seed", "AdamW", "Linear", "tensor", "no_grad",
    "get_encoding", "GPTDatasetV1", "create_dataloader_v1", "DataLoader", "SimpleTokenizerV1", "SimpleTokenizerV2",
    "Embedding",
    "SelfAttention_v1", "SelfAttention_v2", "CausalAttention", "MultiHeadAttentionWrapper", "MultiHeadAttention",
    "Dropout",
    "GPT_CONFIG_124M", "GPTModel", "generate_text_simple", "book_config", "LayerNorm", "GELU", "FeedForward",
    "TransformerBlock", "OutputHead", "rand", "randn", "DummyGPTModel", "DummyTransformerBlock", "DummyLayerNorm",
    "ExampleDeepNeuralNetwork", "print_gradients",
    "generate", "text_to_token_ids", "token_ids_to_text", "calc_loss_batch", "calc_loss_loader",
    "train_model_simple", "evaluate_model", "generate_and_print_sample", "plot_losses", "load_gpt2_params",
    "load_weights_into_gpt", "save", "load", "download_and_load_gpt2",
    "load_sms_spam", "create_balanced_dataset", "random_split", "SpamDataset", "calc_accuracy_loader",
    "train_classifier_simple", "classify_review", "plot_values", "Table", "Column",
    "load_file", "format_input", "InstructionDataset", "custom_collate_fn", "download_and_load_file",
    "custom_collate_draft_1", "custom_collate_draft_2",
    "train_model", "book_lr", "find_highest_gradient", "clip_grad_norm_",
    "LoRALayer", "LinearWithLoRA", "replace_linear_with_lora",
]
