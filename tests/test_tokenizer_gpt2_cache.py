"""Loading GPT-2's vocabulary files: the whole-file reader (``gpt2_vocab.parse``) gives what the line-by-line
reader gives, odd or hostile files are still refused with the line-by-line messages, and the binary vocabulary
cache is used only for the exact files it was made from (an edited, corrupted or unwritable cache is never
trusted nor fatal)."""
import json

import numpy as np
import pytest

from minigpt.errors import MiniGPTError
from minigpt.kernels import bpe as kbpe
from minigpt.tokenizer import BPETokenizer, gpt2_bytes_to_unicode
from minigpt.tokenizer import gpt2_vocab

TEXT = ("The quick brown fox's tale: 12 foxes, 345 dogs... and a café ☃ naïve  spaces\n\n"
        "the end of the story of the quick brown fox and the lazy dog ")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test gets its own cache folder, and vocabularies of any size are cached."""
    monkeypatch.setenv("MINIGPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gpt2_vocab, "CACHE_MIN_MERGES", 0)


@pytest.fixture(scope="module")
def trained():
    corpus = (TEXT * 20) + "ünïcödé ☃ text " * 10
    return BPETokenizer.train(corpus, vocab_size=330)


def _files(tok, folder):
    tok.to_gpt2(folder)
    return folder / "encoder.json", folder / "vocab.bpe"


def _same(a, b):
    assert a.merges == b.merges and a.byte_ids == b.byte_ids and a.special_tokens == b.special_tokens
    assert a.vocab_size == b.vocab_size
    assert [a.id_to_token(i) for i in range(a.vocab_size)] == [b.id_to_token(i) for i in range(b.vocab_size)]
    assert a.encode(TEXT) == b.encode(TEXT) and a.decode(a.encode(TEXT)) == TEXT
    with BPETokenizer_numpy():
        assert a.encode(TEXT) == b.encode(TEXT)


class BPETokenizer_numpy:
    def __enter__(self):
        from minigpt import kernels

        self._ctx = kernels.use_backend("numpy")
        self._ctx.__enter__()

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)


def _lines_reader(enc, bpe):
    encoder = json.loads(enc.read_text(encoding="utf-8"))
    return BPETokenizer._from_gpt2_lines(encoder, bpe.read_text(encoding="utf-8"), enc, bpe, "gpt2")


def _cache_files(tmp_path):
    return sorted((tmp_path / "cache" / "tokenizers").glob("*.safetensors"))


def test_whole_file_reader_equals_the_line_reader(trained, tmp_path):
    enc, bpe = _files(trained, tmp_path)
    encoder = json.loads(enc.read_text(encoding="utf-8"))
    assert gpt2_vocab.parse(encoder, bpe.read_text(encoding="utf-8")) is not None  # the fast path is taken
    fast = BPETokenizer.from_gpt2(enc, bpe, cache=False)
    _same(fast, _lines_reader(enc, bpe))
    _same(fast, trained)
    assert not _cache_files(tmp_path)  # cache=False writes nothing


def test_both_ways_of_finding_the_merge_ids_agree(trained, tmp_path):
    enc, bpe = _files(trained, tmp_path)
    encoder, text = json.loads(enc.read_text(encoding="utf-8")), bpe.read_text(encoding="utf-8")
    by_dict = gpt2_vocab.parse(encoder, text)

    def pairs_of(tok_buf, tok_off):
        t = BPETokenizer._from_vocab(by_dict, "gpt2", joined=True)
        return tuple(np.array(x, np.int32) for x in t._pairs())

    by_pairs = gpt2_vocab.parse(encoder, text, pairs_of)
    assert np.array_equal(by_dict.merges, by_pairs.merges) and by_pairs.pairs is not None
    assert np.array_equal(by_dict.merges, np.array(trained.merges))
    assert np.array_equal(by_dict.tok_buf, by_pairs.tok_buf) and np.array_equal(by_dict.lens, by_pairs.lens)


def test_gpt2_whole_file_reader_equals_the_line_reader(shared_data, tmp_path):
    d = shared_data / "gpt2"
    if not (d / "encoder.json").is_file():
        pytest.skip("GPT-2 vocabulary files not in the shared data folder")
    fast = BPETokenizer.from_gpt2(d, cache=False)
    slow = _lines_reader(d / "encoder.json", d / "vocab.bpe")
    assert fast.merges == slow.merges and fast.byte_ids == slow.byte_ids
    assert fast.special_tokens == slow.special_tokens == {"<|endoftext|>": 50256}
    assert fast._tokens == slow._tokens and fast._encoder == slow._encoder
    cached_first = BPETokenizer.from_gpt2(d)  # writes the cache
    cached = BPETokenizer.from_gpt2(d)  # reads it
    assert len(_cache_files(tmp_path)) == 1
    text = (shared_data / "the-verdict" / "the-verdict.txt").read_text(encoding="utf-8")
    ids = slow.encode(text)
    assert fast.encode(text) == ids and cached.encode(text) == ids and cached_first.encode(text) == ids
    assert cached._tokens == slow._tokens and cached.merges == slow.merges
    # the cached pair-table entries are those the Numba pass finds, and those of the Python walk
    fresh = BPETokenizer.from_gpt2(d, cache=False)
    fresh._kernel_state(kbpe)
    assert cached._pair_entries is not None
    for x, y, z in zip(cached._pair_entries, fresh._pair_entries, slow._pairs()):
        assert np.array_equal(x, y) and np.array_equal(x, z)


def test_the_cache_is_used_and_gives_the_same_tokenizer(trained, tmp_path, monkeypatch):
    enc, bpe = _files(trained, tmp_path)
    first = BPETokenizer.from_gpt2(enc, bpe)
    (path,) = _cache_files(tmp_path)

    def no_parsing(*a):
        raise AssertionError("the files were parsed although the cache holds them")

    monkeypatch.setattr(gpt2_vocab, "parse", no_parsing)
    monkeypatch.setattr(BPETokenizer, "_from_gpt2_lines", no_parsing)
    again = BPETokenizer.from_gpt2(enc, bpe)
    _same(again, first)
    _same(again, trained)
    assert again.token_to_id(again.id_to_token(300)) == 300
    assert _cache_files(tmp_path) == [path]
    # the file is a standard safetensors file
    from safetensors.numpy import load_file

    arrays = load_file(str(path))
    assert arrays["tok_buf"].dtype == np.uint8 and arrays["merges"].shape == (len(trained.merges), 2)


def test_an_edited_file_is_never_served_the_old_cache(trained, tmp_path):
    enc, bpe = _files(trained, tmp_path)
    BPETokenizer.from_gpt2(enc, bpe)
    # a valid edit: drop the last merge (and its token; the special token's id moves down by one)
    encoder = json.loads(enc.read_text(encoding="utf-8"))
    n_regular = 256 + len(trained.merges)
    encoder = {s: (i if i < n_regular - 1 else i - 1) for s, i in encoder.items() if i != n_regular - 1}
    enc.write_text(json.dumps(encoder), encoding="utf-8")
    lines = bpe.read_text(encoding="utf-8").rstrip("\n").split("\n")
    bpe.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    shorter = BPETokenizer.from_gpt2(enc, bpe)
    assert shorter.merges == trained.merges[:-1]
    assert len(_cache_files(tmp_path)) == 2
    # an invalid edit is refused although a cache for the former contents exists
    lines = bpe.read_text(encoding="utf-8").split("\n")
    lines[1], lines[2] = lines[2], lines[1]
    bpe.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(MiniGPTError, match="should make token id"):
        BPETokenizer.from_gpt2(enc, bpe)


def test_a_corrupted_cache_is_ignored_and_rewritten(trained, tmp_path):
    enc, bpe = _files(trained, tmp_path)
    BPETokenizer.from_gpt2(enc, bpe)
    (path,) = _cache_files(tmp_path)
    good = path.read_bytes()
    for bad in (good[: len(good) // 2], good[:-1] + bytes([good[-1] ^ 1]), b"", b"\xff" * 64,
                good[:8] + b"{" + good[9:]):
        path.write_bytes(bad)
        _same(BPETokenizer.from_gpt2(enc, bpe), trained)
        assert path.read_bytes() == good  # rewritten from the files


def test_an_unwritable_cache_folder_only_costs_the_parsing(trained, tmp_path, monkeypatch):
    enc, bpe = _files(trained, tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("MINIGPT_CACHE", str(blocker))
    _same(BPETokenizer.from_gpt2(enc, bpe), trained)


def test_small_vocabularies_are_not_cached(trained, tmp_path, monkeypatch):
    monkeypatch.setattr(gpt2_vocab, "CACHE_MIN_MERGES", len(trained.merges) + 1)
    enc, bpe = _files(trained, tmp_path)
    BPETokenizer.from_gpt2(enc, bpe)
    assert not _cache_files(tmp_path)


def test_odd_files_go_through_the_line_reader(trained, tmp_path):
    enc, bpe = _files(trained, tmp_path)
    lines = bpe.read_text(encoding="utf-8").split("\n")
    bpe.write_text("\n".join(lines[:3] + [""] + lines[3:]) + "\n\n", encoding="utf-8")  # blank lines
    encoder = json.loads(enc.read_text(encoding="utf-8"))
    assert gpt2_vocab.parse(encoder, bpe.read_text(encoding="utf-8")) is None
    _same(BPETokenizer.from_gpt2(enc, bpe), trained)
    # entries of encoder.json in another order than by id
    enc.write_text(json.dumps(dict(reversed(list(encoder.items())))), encoding="utf-8")
    _same(BPETokenizer.from_gpt2(enc, bpe, cache=False), trained)


def _write(folder, encoder: dict, merges: list[str]):
    (folder / "encoder.json").write_text(json.dumps(encoder), encoding="utf-8")
    (folder / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return folder


def _base():
    return {c: b for b, c in gpt2_bytes_to_unicode().items()}


@pytest.mark.parametrize("cache", [True, False])
def test_hostile_files_are_refused(tmp_path, cache):
    # a chain of doublings: token 256 + k is "a" * 2 ** (k + 1); the 9th merge makes 512 bytes
    enc, merges = _base(), []
    for k in range(9):
        half = "a" * 2 ** k
        enc[half * 2] = 256 + k
        merges.append(f"{half} {half}")
    with pytest.raises(MiniGPTError, match="tokens are limited to"):
        BPETokenizer.from_gpt2(_write(tmp_path, enc, merges), cache=cache)
    # a merge whose part is a later token
    enc2 = _base()
    enc2.update({"ab": 256, "abcab": 257, "abc": 258})
    with pytest.raises(MiniGPTError, match="does not exist yet"):
        BPETokenizer.from_gpt2(_write(tmp_path, enc2, ["a b", "abc ab", "ab c"]), cache=cache)
    # a character outside GPT-2's byte alphabet, a line with two spaces, an id that is not an integer
    enc = _base()
    enc["a b"] = 256
    with pytest.raises(MiniGPTError):
        BPETokenizer.from_gpt2(_write(tmp_path, enc, ["a  b"]), cache=cache)
    enc = _base()
    enc["ab"], enc["abc"] = 256, 257
    with pytest.raises(MiniGPTError, match="expected two tokens"):
        BPETokenizer.from_gpt2(_write(tmp_path, enc, ["a b c", "ab"]), cache=cache)
    enc = _base()
    enc["ab"], enc["abc"] = 256, 257
    with pytest.raises(MiniGPTError, match="'bc' is not in encoder.json"):  # a part that is not a token
        BPETokenizer.from_gpt2(_write(tmp_path, enc, ["a b", "a bc"]), cache=cache)
    enc = _base()
    enc["ab"] = "256"
    with pytest.raises(MiniGPTError, match="must be an integer"):
        BPETokenizer.from_gpt2(_write(tmp_path, enc, ["a b"]), cache=cache)
    assert not _cache_files(tmp_path)


def test_check_refuses_unsound_vocabularies():
    tok_buf = np.arange(256, dtype=np.uint8)
    good = gpt2_vocab.Vocab(np.concatenate([tok_buf, [1, 2, 1, 2, 3]]).astype(np.uint8),
                            np.array([1] * 256 + [2, 3], np.int64), np.array([[1, 2], [256, 3]], np.int64), {})
    assert gpt2_vocab.check(good) == list(range(256))
    bad_bytes = good._replace(tok_buf=np.concatenate([tok_buf, [1, 2, 1, 2, 4]]).astype(np.uint8))
    assert gpt2_vocab.check(bad_bytes) is None  # token 257 is not token 256 followed by token 3
    assert gpt2_vocab.check(good._replace(merges=np.array([[1, 2], [257, 3]]))) is None  # a later token
    assert gpt2_vocab.check(good._replace(merges=np.array([[1, 2], [-1, 3]]))) is None
    two_zero = np.concatenate([np.zeros(2), np.arange(2, 256), [1, 2, 1, 2, 3]]).astype(np.uint8)
    assert gpt2_vocab.check(good._replace(tok_buf=two_zero)) is None  # not the 256 single bytes
    pairs = (np.array([1, 256], np.int32), np.array([2, 3], np.int32), np.array([256, 257], np.int32))
    assert gpt2_vocab.check(good._replace(pairs=pairs)) is not None
    assert gpt2_vocab.check(good._replace(pairs=(pairs[0], pairs[1], np.array([256, 258], np.int32)))) is None
