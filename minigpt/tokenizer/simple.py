"""The word tokenizer of the book's chapter 2: a vocabulary of the words and punctuation marks of a text.

The text is cut at whitespace and around punctuation (``, . : ; ? _ ! " ( ) '`` and ``--``); each piece that
is not blank is a token. Two special tokens are added after the words: ``<|endoftext|>`` (put it between
documents) and ``<|unk|>`` (stands for any word the vocabulary does not know). Decoding joins the tokens with
spaces and then removes the space in front of punctuation, as the book's version does, so
``decode(encode(s))`` gives back ``s`` up to whitespace (and unknown words).
"""
from __future__ import annotations

import re

from ..errors import MiniGPTError
from .special import ENDOFTEXT

_SPLIT = re.compile(r'(--|[,.:;?_!"()\']|\s)')
_SPACE_BEFORE_PUNCT = re.compile(r'\s+([,.:;?!"()\'])')
UNK = "<|unk|>"


def split_words(text: str) -> list[str]:
    """The book's chapter 2 split: words and punctuation marks, whitespace dropped."""
    return [p for p in (s.strip() for s in _SPLIT.split(text)) if p]


class SimpleTokenizer:
    """Maps the words and punctuation of a fixed vocabulary to ids (``str_to_int``/``int_to_str``)."""

    space_before_punct = _SPACE_BEFORE_PUNCT  # decode drops the whitespace this pattern's group follows

    def __init__(self, vocab: dict[str, int]):
        if not isinstance(vocab, dict) or not vocab:
            raise MiniGPTError("SimpleTokenizer needs a non-empty dict {token: id}")
        ids = sorted(vocab.values())
        if ids != list(range(len(ids))):
            raise MiniGPTError("the vocabulary's ids must be 0..N-1, each used once")
        self.str_to_int = dict(vocab)
        self.int_to_str = {i: s for s, i in vocab.items()}
        self._unk = vocab.get(UNK)
        specials = [s for s in (ENDOFTEXT, UNK) if s in vocab]
        self._special_rx = re.compile("(" + "|".join(re.escape(s) for s in specials) + ")") if specials else None

    @classmethod
    def from_text(cls, text: str, special_tokens=(ENDOFTEXT, UNK)) -> "SimpleTokenizer":
        """A vocabulary of the distinct words of ``text`` in sorted order, then ``special_tokens``."""
        if not isinstance(text, str):
            raise MiniGPTError(f"from_text expects a str, got {type(text).__name__}")
        words = sorted(set(split_words(text)) - set(special_tokens))
        vocab = {w: i for i, w in enumerate(words)}
        for s in special_tokens:
            vocab[s] = len(vocab)
        return cls(vocab)

    @property
    def vocab_size(self) -> int:
        return len(self.str_to_int)

    def __len__(self) -> int:
        return len(self.str_to_int)

    def encode(self, text: str) -> list[int]:
        """Ids of the words of ``text``; unknown words become ``<|unk|>`` (an error if there is none)."""
        if not isinstance(text, str):
            raise MiniGPTError(f"encode expects a str, got {type(text).__name__}")
        pieces = self._special_rx.split(text) if self._special_rx is not None else [text]
        out = []
        for k, piece in enumerate(pieces):
            if k % 2:
                out.append(self.str_to_int[piece])
                continue
            for w in split_words(piece):
                i = self.str_to_int.get(w, self._unk)
                if i is None:
                    raise MiniGPTError(f"{w!r} is not in the vocabulary" + (
                        "" if UNK in self.str_to_int else f" and the vocabulary has no {UNK} token"))
                out.append(i)
        return out

    def decode(self, ids) -> str:
        """The words of ``ids`` joined by spaces, with no space before punctuation."""
        words = []
        for i in ids:
            try:
                words.append(self.int_to_str[int(i)])
            except (KeyError, TypeError, ValueError):
                raise MiniGPTError(f"token id {i!r} is out of range: ids go from 0 to {len(self) - 1}") from None
        return self.space_before_punct.sub(r"\1", " ".join(words))
