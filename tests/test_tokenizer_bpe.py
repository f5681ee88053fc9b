"""Byte-level BPE: training (against a naive reference), encode/decode properties, specials, files, splitter."""
import json
from collections import Counter

import numpy as np
import pytest
import regex
from hypothesis import given
from hypothesis import strategies as st

from minigpt import kernels
from minigpt.errors import MiniGPTError
from minigpt.tokenizer import GPT2_PATTERN, GPT4_PATTERN, BPETokenizer, Splitter
from minigpt.tokenizer import training

CORPUS = (
    "The quick brown fox jumps over the lazy dog. It's the dog's bone, isn't it? They're here; we'll see.\n"
    "Numbers 12345 and 3.14159, dates 2024-06-01.  Double  spaces\tand tabs.\n\n"
    "Unicode: naïve café — “quotes” 你好世界 🤗🤗 שלום مرحبا 𝔘𝔫𝔦 e\u0301\n"
) * 3 + "the the the then there these those this that theory thermal"

# text with many whitespace runs, astral characters, combining marks and RTL script
TEXT = st.text(alphabet=st.one_of(
    st.characters(blacklist_categories=("Cs",)),
    st.sampled_from(list(" \t\n\r\u00a0\u3000'sSdtm0123456789abcXYZ.,!?😀𝔘é\u0301שم")),
), max_size=60)


def reference_train(word_counts, n_new):
    """Naive BPE: recount all pairs after every merge; most frequent pair, ties to the smallest (a, b)."""
    words = Counter()
    for w, c in word_counts.items():
        words[tuple(w)] += c
    vocab = [bytes([i]) for i in range(256)]
    index = {b: i for i, b in enumerate(vocab)}
    merges = []
    while len(vocab) < 256 + n_new:
        pc = Counter()
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pc[p] += c
        if not pc:
            break
        a, b = min(pc, key=lambda p: (-pc[p], p))
        joined = vocab[a] + vocab[b]
        t = index.get(joined)
        if t is None:
            t = len(vocab)
            vocab.append(joined)
            index[joined] = t
            merges.append((a, b))
        new = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(t)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        words = new
    return merges


@pytest.fixture(scope="module")
def trained():
    return BPETokenizer.train(CORPUS, vocab_size=400)


# --- training --------------------------------------------------------------------------------------
def test_classic_example_and_tie_break():
    # "aaabdaaabac": aa (4 overlapping) first; then ab and (aa)a tie at 2: smallest ids first -> (97, 98)
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=259, special_tokens=())
    assert tok.merges == [(97, 97), (97, 98), (256, 257)]
    assert tok.encode("aaabdaaabac") == [258, 100, 258, 97, 99]
    # three pairs with count 1: (97, 98) < (98, 99) < (99, 100); then (99, 100) < (256, 99)
    assert BPETokenizer.train("abcd", vocab_size=258, special_tokens=()).merges == [(97, 98), (99, 100)]


@given(st.lists(st.text(alphabet="ab c\néa", min_size=1, max_size=12), min_size=1, max_size=8),
       st.integers(1, 40))
def test_training_matches_naive_reference(docs, n_new):
    splitter = Splitter("gpt2")
    counts = training.count_pretokens(docs, splitter)
    words = {w.encode("utf-8"): c for w, c in counts.items()}
    expected = reference_train(words, n_new)
    merges, made = training.learn_merges(list(words), np.array(list(words.values()), np.int64), n_new)
    assert merges == expected
    assert made == len(expected)


def test_training_matches_reference_on_prose():
    counts = training.count_pretokens(CORPUS, Splitter("gpt2"))
    words = {w.encode("utf-8"): c for w, c in counts.items()}
    merges, _ = training.learn_merges(list(words), np.array(list(words.values()), np.int64), 150)
    assert merges == reference_train(words, 150)


@given(TEXT, st.integers(0, 30))
def test_training_deterministic_and_exact_size(s, extra):
    text = CORPUS + s
    n = 260 + extra
    a = BPETokenizer.train(text, vocab_size=n)
    b = BPETokenizer.train([text], vocab_size=n)
    assert a.vocab_size == n == len(a) and a.merges == b.merges
    assert len({a.id_to_token(i) for i in range(n)}) == n  # n distinct tokens
    assert a.special_tokens == {"<|endoftext|>": n - 1}


def test_vocab_too_large_or_too_small():
    with pytest.raises(MiniGPTError, match="can be at most"):
        BPETokenizer.train("tiny text", vocab_size=1000)
    with pytest.raises(MiniGPTError, match="at least 257"):
        BPETokenizer.train("tiny text", vocab_size=100)
    assert BPETokenizer.train("tiny text", vocab_size=256, special_tokens=()).merges == []


def test_train_inputs(tmp_path, monkeypatch):
    f1, f2 = tmp_path / "a.txt", tmp_path / "b.txt"
    half = len(CORPUS) // 2
    f1.write_text(CORPUS[:half], encoding="utf-8")
    f2.write_text(CORPUS[half:], encoding="utf-8")
    monkeypatch.setattr(training, "_READ_CHARS", 37)  # many small chunks cut at safe places
    from_files = BPETokenizer.train([f1, f2], vocab_size=330)
    from_texts = BPETokenizer.train([CORPUS[:half], CORPUS[half:]], vocab_size=330)
    assert from_files.merges == from_texts.merges
    # a file is streamed in chunks, yet counts the same pre-tokens as the whole text
    assert training.count_pretokens(f1, Splitter("gpt2")) == Counter(Splitter("gpt2")(CORPUS[:half]))
    with pytest.raises(MiniGPTError, match="not found"):
        BPETokenizer.train(tmp_path / "missing.txt", vocab_size=300)
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe abc")
    with pytest.raises(MiniGPTError, match="not UTF-8"):
        BPETokenizer.train(tmp_path / "bad.txt", vocab_size=300)
    with pytest.raises(MiniGPTError, match="got bytes"):
        BPETokenizer.train(b"abc", vocab_size=300)


def test_special_tokens_separate_training_documents():
    tok = BPETokenizer.train("xyxy<|endoftext|>xyxy", vocab_size=259)
    assert tok.merges == [(120, 121), (256, 256)]  # never merged across (or into) the special token
    assert tok.encode("xyxy<|endoftext|>", allowed_special="all") == [257, 258]


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", r"\w+|\s+|[^\w\s]+"])
def test_patterns_round_trip(pattern):
    tok = BPETokenizer.train(CORPUS, vocab_size=350, pattern=pattern)
    assert tok.decode(tok.encode(CORPUS)) == CORPUS
    assert tok.pattern_name == (pattern if pattern in ("gpt2", "gpt4") else "custom")


def test_bad_pattern():
    with pytest.raises(MiniGPTError, match="not a valid regular expression"):
        BPETokenizer.train(CORPUS, vocab_size=300, pattern="(unclosed")


# --- encode / decode properties --------------------------------------------------------------------
@given(TEXT)
def test_round_trip_trained(trained, s):
    ids = trained.encode(s)
    assert trained.decode(ids) == s
    assert trained.decode_bytes(ids) == s.encode("utf-8")
    assert all(0 <= i < trained.vocab_size for i in ids)


@given(TEXT)
def test_encoding_is_concatenation_of_pretoken_encodings(trained, s):
    pieces = regex.findall(GPT2_PATTERN, s)
    assert trained.encode(s) == [i for p in pieces for i in trained.encode(p)]


@given(st.binary(max_size=40))
def test_decode_bytes_round_trips_arbitrary_bytes(trained, data):
    ids = [trained.token_to_id(bytes([b])) for b in data]
    assert trained.decode_bytes(ids) == data
    assert trained.decode(ids) == data.decode("utf-8", errors="replace")


def test_cold_warm_numpy_backend_agree(trained):
    trained.clear_cache()
    cold = trained.encode(CORPUS)
    warm = trained.encode(CORPUS)
    ascii_text = CORPUS.encode("ascii", "ignore").decode()  # the kernel splits all of it
    assert cold == warm == _numpy_backend_encode(trained, CORPUS)
    assert trained.encode(ascii_text) == _numpy_backend_encode(trained, ascii_text)


def test_kernel_matches_python_twin(trained):
    from minigpt.kernels.bpe import encode_word_python

    pa, pb, pv = trained._pairs()
    table = dict(zip(zip(pa, pb), pv))
    trained.clear_cache()
    for w in sorted(set(Splitter("gpt2")(CORPUS))):
        b = w.encode("utf-8")
        whole = trained._encoder.get(b)
        expected = [whole] if whole is not None else encode_word_python(b, range(256), table)
        assert trained.encode_ordinary(w) == expected


def _numpy_backend_encode(tok, text):
    fresh = BPETokenizer(tok.merges, tok.special_tokens, tok.pattern, tok.byte_ids)
    with kernels.use_backend("numpy"):
        return fresh.encode_ordinary(text)


def test_encode_cache_grows_and_clears(monkeypatch):
    """Many new pre-tokens, short and long (> 8 bytes: keys kept beside the table), multi-token ones, and a
    pre-token longer than the key buffer: the cache's arrays grow several times mid-text, and the ids stay
    those of the plain-Python path, cold, warm and after the cache was cleared for being over its limit."""
    from minigpt.tokenizer import bpe

    tok = BPETokenizer.train(CORPUS, vocab_size=300)
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=n)) for n in rng.integers(1, 30, size=3000)]
    words += ["".join(rng.choice(letters, size=5000))]  # longer than the key buffer it starts with
    words += [f"{w}é" for w in words[:200]]  # regions split by `regex`
    text = " ".join(words) + ".\n"
    expected = _numpy_backend_encode(tok, text)
    numba = kernels.backend() == "numba"
    if numba:
        from minigpt.kernels import bpe as K

        rows0 = len(tok._kernel_state(K).tab)
    assert tok.encode(text) == expected
    if numba:
        assert len(tok._kcache.tab) > rows0  # it grew
    assert tok.encode(text) == expected
    monkeypatch.setattr(bpe, "_CACHE_LIMIT", 100)
    assert tok.encode(text) == expected  # cleared first (over the limit), then filled again
    assert tok.encode(text[:1000]) == _numpy_backend_encode(tok, text[:1000])


@pytest.mark.parametrize("pattern", [r"\w+", r"\S+|\s+", r"[a-z]+|."])
def test_custom_patterns_kernel_equals_python(pattern):
    tok = BPETokenizer.train(CORPUS, vocab_size=300, pattern=pattern)
    text = CORPUS + "  gaps:  \t\n"
    assert tok.encode(text) == _numpy_backend_encode(tok, text) == tok.encode(text)
    assert tok.encode(text) == [i for w in regex.findall(pattern, text) for i in tok.encode(w)]


ASCII_TEXT = st.text(alphabet=st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x1f\x00\x7f'sStTdDmMlLvVeErR.,!?-_09aZ")),
                     max_size=80)


@given(ASCII_TEXT)
def test_ascii_kernel_split_equals_regex(s):
    from minigpt.kernels import bpe as K

    buf = np.frombuffer(s.encode("ascii"), np.uint8)
    for kind, pattern in ((K.KIND_GPT2, GPT2_PATTERN), (K.KIND_GPT4, GPT4_PATTERN)):
        ends = K.pretoken_ends(buf, kind).tolist()
        assert [s[a:b] for a, b in zip([0] + ends, ends)] == regex.findall(pattern, s)


def test_lone_surrogates_are_a_clear_error(trained):
    for s in ["abc\ud800def", "\udfff", "x \ud83d"]:
        with pytest.raises(MiniGPTError, match="lone surrogate"):
            trained.encode(s)
    with pytest.raises(MiniGPTError, match="lone surrogate"):
        BPETokenizer.train(CORPUS + "\ud800", vocab_size=300)


def test_special_tokens_allowed_and_disallowed(trained):
    eot = trained.special_tokens["<|endoftext|>"]
    text = "a<|endoftext|>b"
    with pytest.raises(MiniGPTError, match="not allowed"):
        trained.encode(text)
    assert trained.encode(text, allowed_special="all") == trained.encode("a") + [eot] + trained.encode("b")
    assert trained.encode(text, allowed_special={"<|endoftext|>"}) == trained.encode(text, allowed_special="all")
    assert eot not in trained.encode(text, disallowed_special=())
    assert trained.encode_ordinary(text) == trained.encode(text, disallowed_special=())
    with pytest.raises(MiniGPTError, match="not special tokens"):
        trained.encode("x", allowed_special={"<|nope|>"})
    assert trained.encode_batch(["a b", text], allowed_special="all") == [trained.encode("a b"),
                                                                         trained.encode(text, allowed_special="all")]
    with pytest.raises(MiniGPTError, match="list of strings"):
        trained.encode_batch("a string")


def test_bad_ids_are_clear_errors(trained):
    n = trained.vocab_size
    for bad in ([n], [-1], [0, 1, n + 5]):
        with pytest.raises(MiniGPTError, match="out of range"):
            trained.decode(bad)
    with pytest.raises(MiniGPTError, match="integers"):
        trained.decode([1.5])
    with pytest.raises(MiniGPTError, match="1-D"):
        trained.decode(np.zeros((2, 2), np.int64))
    assert trained.decode(np.array(trained.encode("the fox"), np.int32)) == "the fox"
    with pytest.raises(MiniGPTError, match="out of range"):
        trained.id_to_token(-1)
    with pytest.raises(MiniGPTError, match="expects a str"):
        trained.encode(b"bytes")


# --- files -----------------------------------------------------------------------------------------
def test_save_load_round_trip(trained, tmp_path):
    path = trained.save(tmp_path / "tok.json")
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["format"] == "minigpt-bpe" and doc["version"] == 1 and doc["pattern"] == "gpt2"
    assert doc["merges"] == [list(m) for m in trained.merges] and "byte_ids" not in doc
    loaded = BPETokenizer.load(path)
    assert loaded.merges == trained.merges and loaded.special_tokens == trained.special_tokens
    assert loaded.encode(CORPUS) == trained.encode(CORPUS)
    assert trained.save(tmp_path / "again.json").read_bytes() == path.read_bytes()  # deterministic
    custom = BPETokenizer.train(CORPUS, vocab_size=300, pattern=r"\S+|\s+", special_tokens=("<a>", "<b>"))
    again = BPETokenizer.load(custom.save(tmp_path / "custom.json"))
    assert again.pattern == r"\S+|\s+" and again.special_tokens == {"<a>": 298, "<b>": 299}


def test_load_bad_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json", encoding="utf-8")
    with pytest.raises(MiniGPTError, match="invalid JSON"):
        BPETokenizer.load(p)
    p.write_text('{"format": "other"}', encoding="utf-8")
    with pytest.raises(MiniGPTError, match="not a minigpt tokenizer"):
        BPETokenizer.load(p)
    p.write_text('{"format": "minigpt-bpe", "version": 99}', encoding="utf-8")
    with pytest.raises(MiniGPTError, match="version"):
        BPETokenizer.load(p)
    p.write_text('{"format": "minigpt-bpe", "version": 1, "pattern": "gpt2", "special_tokens": {},'
                 ' "merges": [[1, 400]]}', encoding="utf-8")
    with pytest.raises(MiniGPTError, match="does not exist yet"):
        BPETokenizer.load(p)
    p.write_text('{"format": "minigpt-bpe", "version": 1, "pattern": "gpt2", "special_tokens": {"<x>": 5},'
                 ' "merges": []}', encoding="utf-8")
    with pytest.raises(MiniGPTError, match="special token ids"):
        BPETokenizer.load(p)
    with pytest.raises(MiniGPTError, match="not found"):
        BPETokenizer.load(tmp_path / "missing.json")


def test_gpt2_files_round_trip_of_trained(trained, tmp_path):
    trained.to_gpt2(tmp_path)
    back = BPETokenizer.from_gpt2(tmp_path / "encoder.json", tmp_path / "vocab.bpe")
    assert back.merges == trained.merges and back.special_tokens == trained.special_tokens
    assert back.encode(CORPUS) == trained.encode(CORPUS)


# --- the fast splitter against the `regex` reference -----------------------------------------------
SPLIT_TEXT = st.text(alphabet=st.one_of(
    st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x00\x7f'sStTdDmMlLvVeErR.,!?-_09aZ")),
    st.sampled_from(list("\u00a0\u0085\u2028\u3000é\u0301😀𝔘ſK½٣")),
    st.characters(blacklist_categories=("Cs",)),
), max_size=80)


@given(SPLIT_TEXT)
def test_fast_split_equals_regex(s):
    for name, pattern in (("gpt2", GPT2_PATTERN), ("gpt4", GPT4_PATTERN)):
        sp = Splitter(name)
        assert sp(s) == regex.findall(pattern, s) == sp.slow(s)


@given(st.text(alphabet=st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x1fab'sT9.!é😀\u00a0")), max_size=60))
def test_fast_split_equals_regex_dense(s):
    for name, pattern in (("gpt2", GPT2_PATTERN), ("gpt4", GPT4_PATTERN)):
        assert Splitter(name)(s) == regex.findall(pattern, s)


@given(st.lists(SPLIT_TEXT, min_size=1, max_size=6))
def test_fast_split_equals_regex_in_small_blocks(small_blocks, parts):
    s = "a b. ".join(parts) * 3  # long enough for several blocks
    for name, pattern in (("gpt2", GPT2_PATTERN), ("gpt4", GPT4_PATTERN)):
        assert Splitter(name)(s) == regex.findall(pattern, s)


PIECES_TEXT = st.lists(st.sampled_from(["the", " ", "  ", "\n", "\n ", " \n", "\t", "x.", ",", "'s", "42", "é",
                                        "😀", "\u00a0", "\r\n", "a", "word", "!!", " ?"]), max_size=40)


@given(PIECES_TEXT, st.sampled_from(["gpt2", "gpt4"]))
def test_encode_in_small_blocks_equals_pretoken_encodings(small_blocks, trained_both, parts, pattern):
    tok = trained_both[pattern]
    s = "".join(parts)
    tok.clear_cache()
    cold = tok.encode(s)
    expected = [i for p in regex.findall(tok.pattern, s) for i in tok.encode_ordinary(p)]
    assert cold == expected == tok.encode(s)
    assert tok.decode(cold) == s


@pytest.fixture(scope="module")
def trained_both():
    return {p: BPETokenizer.train(CORPUS + " the  the\n the", vocab_size=330, pattern=p) for p in ("gpt2", "gpt4")}


@pytest.fixture(scope="module")
def small_blocks():
    from minigpt.tokenizer import patterns

    old = patterns._BLOCK
    patterns._BLOCK = 7  # the splitter's blocks of ~7 characters: every block boundary case shows up
    yield
    patterns._BLOCK = old
