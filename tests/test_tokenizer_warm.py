"""The encode kernels' pair table is built by a Numba pass over the seeded cache: it must hold exactly the
pairs of the Python walk (``_pairs``), in the same order, for a trained vocabulary and for GPT-2's."""
import numpy as np
import pytest

from minigpt.kernels import bpe as kbpe
from minigpt.tokenizer import BPETokenizer


def _check(tok):
    pa, pb, pv = tok._pairs()
    tok._kernel_state(kbpe)
    c = tok._kcache
    ka, kb, kv = kbpe.vocab_pairs(c.tok_buf, c.tok_off, 256, c.tab, c.kbuf)
    assert np.array_equal(ka, pa) and np.array_equal(kb, pb) and np.array_equal(kv, pv)
    return len(pa)


def test_vocab_pairs_equal_the_python_walk_trained():
    text = "the quick brown fox jumps over the lazy dog; the dog sleeps. " * 30 + "ünïcödé ☃ text " * 10
    assert _check(BPETokenizer.train(text, vocab_size=280)) > 0


def test_vocab_pairs_equal_the_python_walk_gpt2(shared_data):
    if not (shared_data / "gpt2" / "encoder.json").exists():
        pytest.skip("GPT-2 vocabulary files not in the shared data folder")
    tok = BPETokenizer.from_gpt2(shared_data / "gpt2")
    assert _check(tok) >= 50000
    text = (shared_data / "the-verdict" / "the-verdict.txt").read_text()
    fresh = BPETokenizer.from_gpt2(shared_data / "gpt2")
    assert fresh.encode(text) == tok.encode(text)
