"""Tokenizers: the book's word tokenizer and a byte-level BPE that encodes exactly like GPT-2.

>>> from minigpt.tokenizer import BPETokenizer
>>> tok = BPETokenizer.train("some text to learn from ...", vocab_size=300)   # doctest: +SKIP
>>> gpt2 = BPETokenizer.from_gpt2("../shared/data/gpt2")                          # doctest: +SKIP
>>> gpt2.encode("Hello, I am")                                                    # doctest: +SKIP
[15496, 11, 314, 716]
"""
from .bpe import BPETokenizer, gpt2_bytes_to_unicode
from .patterns import GPT2_PATTERN, GPT4_PATTERN, PATTERNS, Splitter
from .simple import SimpleTokenizer

__all__ = ["BPETokenizer", "SimpleTokenizer", "Splitter", "GPT2_PATTERN", "GPT4_PATTERN", "PATTERNS",
           "gpt2_bytes_to_unicode"]
