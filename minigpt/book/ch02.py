"""Chapter 2, *Working with text data*: the GPT-2 tokenizer, GPTDatasetV1 and create_dataloader_v1.

The book's listings use ``tiktoken`` and PyTorch's ``Dataset`` / ``DataLoader``; here the same calls run on
minigpt's own pieces:

===============================================  ===================================================
the book                                         minigpt.book (what it stands on)
===============================================  ===================================================
``tiktoken.get_encoding("gpt2")``                ``get_encoding("gpt2")``: minigpt's byte-level BPE
                                                 reading GPT-2's ``encoder.json`` + ``vocab.bpe``
                                                 (same ids as tiktoken)
``GPTDatasetV1(txt, tokenizer, max_length,       a ``SlidingWindowDataset`` (windows are views of one
stride)``                                        id array, not a list of copied tensors)
``DataLoader(dataset, batch_size, shuffle,       ``DataLoader`` here: minigpt's loader, plus the
drop_last, num_workers, collate_fn)``            ``collate_fn`` that chapters 6 and 7 pass
``SimpleTokenizerV1(vocab)``,                    minigpt's ``SimpleTokenizer`` (the same split, the
``SimpleTokenizerV2(vocab)``                     same ids); V1 refuses unknown words, V2 maps them
                                                 to ``<|unk|>``
``torch.nn.Embedding(num, dim)``                 ``Embedding``: minigpt's layer, N(0, 1) as torch's
===============================================  ===================================================

Batches are int64 Tensors, as torch's loaders yield tensors: ``x.shape``, indexing, ``x.tolist()``,
``x.numel()`` and ``x.to(device)`` work as in the book, and a batch passes wherever an array is expected
(``np.asarray(x)`` does not copy). Shuffling draws its seed from minigpt's generator, so
``manual_seed(123)`` before building a loader fixes its order (the order differs from torch's: the two
libraries' random numbers differ).
"""
from __future__ import annotations

import re

import numpy as np

from ..data import SlidingWindowDataset
from ..data.loader import DataLoader as _Loader
from ..errors import MiniGPTError
from ..loading import gpt2_vocab_dir
from ..nn import Embedding
from ..random import get_rng
from ..tensor import Tensor
from ..tokenizer import BPETokenizer
from ..tokenizer.simple import SimpleTokenizer

__all__ = ["get_encoding", "GPTDatasetV1", "create_dataloader_v1", "DataLoader", "SimpleTokenizerV1",
           "SimpleTokenizerV2", "Embedding"]


class SimpleTokenizerV2(SimpleTokenizer):
    """The book's word tokenizer of section 2.4, ``SimpleTokenizerV2(vocab)`` with ``vocab`` a dict
    ``{token: id}`` (the book's ``{token: integer for integer, token in enumerate(all_tokens)}``): the text
    is cut at whitespace and around ``, . : ; ? _ ! " ( ) '`` and ``--``, a word missing from the
    vocabulary becomes ``<|unk|>``; ``decode`` joins with spaces and removes the space before punctuation.
    It is minigpt's ``SimpleTokenizer`` (``minigpt.tokenizer.simple``), which also builds a vocabulary
    from a text itself (``SimpleTokenizer.from_text``) and names an id out of range instead of a KeyError.
    """


class SimpleTokenizerV1(SimpleTokenizer):
    """The book's first word tokenizer (section 2.3): no ``<|unk|>``, so a word missing from the vocabulary
    is an error naming it (the book's KeyError, as a MiniGPTError), and ``decode`` keeps a space before
    ``:`` and ``;`` as the book's V1 pattern does (V2 removes it)."""

    space_before_punct = re.compile(r'\s+([,.?!"()\'])')

    def __init__(self, vocab: dict):
        super().__init__(vocab)
        self._unk = None  # even a vocabulary that holds <|unk|> does not map unknown words to it here

_ENCODINGS: dict = {}


def get_encoding(name: str = "gpt2") -> BPETokenizer:
    """GPT-2's tokenizer, where the book calls ``tiktoken.get_encoding("gpt2")``.

    ``encode(text, allowed_special={"<|endoftext|>"})`` and ``decode(ids)`` behave as tiktoken's (the same
    ids; a special token in the text is refused unless allowed). The vocabulary files come from
    ``minigpt download gpt2-vocab`` or the shared data folder. Loaded once, then shared.
    """
    if name != "gpt2":
        raise MiniGPTError(f"get_encoding: only the 'gpt2' encoding is available, got {name!r}")
    if name not in _ENCODINGS:
        _ENCODINGS[name] = BPETokenizer.from_gpt2(gpt2_vocab_dir())
    return _ENCODINGS[name]


class GPTDatasetV1(SlidingWindowDataset):
    """The book's sliding-window dataset: window i holds tokens ``[i * stride, i * stride + max_length)``
    and its targets the same span one token later; ``dataset[i]`` is ``(input_ids, target_ids)``.

    The text is encoded with ``<|endoftext|>`` allowed, as in the book. minigpt's ``SlidingWindowDataset``
    (which this is) keeps one id array and views into it, so a long corpus costs its ids once instead of
    two tensors per window; ``input_ids`` / ``target_ids`` give the book's lists when you ask for them.
    """

    def __init__(self, txt: str, tokenizer, max_length: int, stride: int):
        ids = tokenizer.encode(txt, allowed_special={"<|endoftext|>"})
        super().__init__(np.asarray(ids, dtype=np.int64), max_length, stride, name="text")

    @property
    def input_ids(self) -> list:
        return [self[i][0] for i in range(len(self))]

    @property
    def target_ids(self) -> list:
        return [self[i][1] for i in range(len(self))]


class DataLoader(_Loader):
    """``torch.utils.data.DataLoader``'s call, on minigpt's loader: ``for x, y in loader`` is one epoch, its
    batches Tensors (integer ones for token ids), as torch's loader yields tensors.

    ``collate_fn(list_of_items)`` builds a batch from the dataset's items (chapter 7's padding); without it
    items are stacked (datasets with ``get_batch``, like GPTDatasetV1, gather whole batches at once).
    ``num_workers`` is accepted and ignored: batches are made in the training process. With ``shuffle``,
    each epoch's order is a permutation seeded from minigpt's generator when the loader is built.
    """

    def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 num_workers: int = 0, collate_fn=None):
        seed = int(get_rng().integers(2**31)) if shuffle else 0
        super().__init__(dataset, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        if collate_fn is not None and not callable(collate_fn):
            raise MiniGPTError(f"DataLoader: collate_fn must be callable, got {type(collate_fn).__name__}")
        self.collate_fn = collate_fn

    def __iter__(self):
        """A new pass each time, independent of any other pass under way, as a torch DataLoader: the book
        evaluates on ``train_loader`` in the middle of iterating it. (minigpt's native loader keeps one
        resumable position instead, for checkpoints.) With ``shuffle``, pass k uses the k-th order."""
        epoch, self.epoch = self.epoch, self.epoch + 1
        for _, batch in self._epoch_batches(epoch, 0):
            yield _as_tensors(batch)

    def _batch(self, idx):
        if self.collate_fn is None:
            return super()._batch(idx)
        return self.collate_fn([self.dataset[int(i)] for i in idx])


def _as_tensors(batch):
    """A batch's arrays as Tensors (no copy), as a torch DataLoader yields tensors: the book's own loops call
    ``input_batch.to(device)``, ``input_batch.numel()``, ``target_batch.flatten()`` on them. A Tensor also
    passes wherever an array is expected (``np.asarray(batch)``)."""
    if isinstance(batch, np.ndarray):
        return Tensor(batch)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_as_tensors(b) for b in batch)
    return batch


def create_dataloader_v1(txt: str, batch_size: int = 4, max_length: int = 256, stride: int = 128,
                         shuffle: bool = True, drop_last: bool = True, num_workers: int = 0) -> DataLoader:
    """The book's loader over ``txt``: GPT-2 tokens in windows of ``max_length`` every ``stride`` tokens,
    ``batch_size`` windows per batch; iterating yields ``(input_batch, target_batch)``, each a
    (batch_size, max_length) int64 Tensor."""
    dataset = GPTDatasetV1(txt, get_encoding("gpt2"), max_length, stride)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers)
