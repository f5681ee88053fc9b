"""GPT-2's vocabulary: exact parity with tiktoken's ``gpt2`` encoding (committed fixture), file round trips."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from minigpt.errors import MiniGPTError
from minigpt.tokenizer import BPETokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "tokenizer"
PARITY = json.loads((FIXTURES / "gpt2_parity.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def gpt2():
    from minigpt.data.shared import shared_data_dir

    d = shared_data_dir()
    if d is None or not (d / "gpt2" / "encoder.json").is_file():
        pytest.skip("GPT-2 vocabulary not found: set MINIGPT_DATA or place the shared data at ../shared/data")
    return BPETokenizer.from_gpt2(d / "gpt2" / "encoder.json", d / "gpt2" / "vocab.bpe")


def _source_text(source, shared_data):
    kind, rel = source.split(":", 1)
    path = shared_data / rel if kind == "shared" else FIXTURES / rel
    return path.read_bytes().decode("utf-8")


def test_hello_and_the_verdict(gpt2, shared_data):
    assert gpt2.encode("Hello, I am") == [15496, 11, 314, 716]
    assert PARITY["hello"]["ids"] == [15496, 11, 314, 716]
    text = (shared_data / "the-verdict" / "the-verdict.txt").read_text(encoding="utf-8")
    ids = gpt2.encode(text)
    assert len(ids) == 5145
    assert gpt2.decode(ids) == text
    assert gpt2.vocab_size == 50257
    assert gpt2.special_tokens == {"<|endoftext|>": 50256}


@pytest.mark.parametrize("case", PARITY["cases"], ids=[c["name"] for c in PARITY["cases"]])
def test_parity_with_tiktoken_fixture(gpt2, shared_data, case):
    text = _source_text(case["source"], shared_data)
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == case["text_sha256"], "source text changed"
    ids = gpt2.encode_ordinary(text)
    assert len(ids) == case["n_tokens"]
    stored = np.load(FIXTURES / case["ids_file"]).tolist()
    if case["prefix_chars"] is None:
        assert ids == stored
    else:
        assert gpt2.encode_ordinary(text[: case["prefix_chars"]]) == stored
    assert hashlib.sha256(np.asarray(ids, dtype="<i4").tobytes()).hexdigest() == case["ids_sha256"]
    assert gpt2.decode(ids) == text


def test_parity_cold_and_warm_cache_agree(gpt2, shared_data):
    case = next(c for c in PARITY["cases"] if c["name"] == "unicode-stress")
    text = _source_text(case["source"], shared_data)
    gpt2.clear_cache()
    cold = gpt2.encode_ordinary(text)
    warm = gpt2.encode_ordinary(text)
    assert cold == warm == np.load(FIXTURES / case["ids_file"]).tolist()


def test_special_tokens_like_tiktoken(gpt2):
    sp = PARITY["special"]
    assert gpt2.encode(sp["text"], allowed_special="all") == sp["ids"]
    assert gpt2.encode(sp["text"], allowed_special={"<|endoftext|>"}) == sp["ids"]
    with pytest.raises(MiniGPTError, match="special token"):
        gpt2.encode(sp["text"])
    ordinary = gpt2.encode(sp["text"], disallowed_special=())
    assert 50256 not in ordinary and gpt2.decode(ordinary) == sp["text"]
    assert gpt2.decode([50256]) == "<|endoftext|>"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_gpt2_round_trip_arbitrary_unicode(gpt2, s):
    ids = gpt2.encode_ordinary(s)
    assert gpt2.decode(ids) == s
    assert gpt2.decode_bytes(ids) == s.encode("utf-8")


@given(st.lists(st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "a", "é", "😀", "𝔘", "'s", "1"]),
                max_size=30))
def test_gpt2_round_trip_whitespace_runs(gpt2, parts):
    s = "".join(parts)
    assert gpt2.decode(gpt2.encode(s)) == s


def test_to_gpt2_reproduces_the_original_files(gpt2, shared_data, tmp_path):
    gpt2.to_gpt2(tmp_path)
    for name in ("encoder.json", "vocab.bpe"):
        assert (tmp_path / name).read_bytes() == (shared_data / "gpt2" / name).read_bytes(), name
    again = BPETokenizer.from_gpt2(tmp_path)
    assert again.merges == gpt2.merges and again.byte_ids == gpt2.byte_ids


def test_save_load_keeps_gpt2_ids(gpt2, tmp_path):
    path = gpt2.save(tmp_path / "gpt2.json")
    loaded = BPETokenizer.load(path)
    text = "Hello, I am a tokenizer 🤗 with 12345 digits\n\n  and spaces"
    assert loaded.encode(text) == gpt2.encode(text)
    assert loaded.vocab_size == 50257 and loaded.byte_ids == gpt2.byte_ids


def test_token_lookup(gpt2):
    assert gpt2.id_to_token(15496) == b"Hello"
    assert gpt2.token_to_id(b" am") == 716
    assert gpt2.token_to_id("Hello") == 15496
    assert gpt2.token_to_id("<|endoftext|>") == 50256
    assert gpt2.id_to_token(50256) == b"<|endoftext|>"
    with pytest.raises(MiniGPTError, match="out of range"):
        gpt2.id_to_token(50257)
    with pytest.raises(MiniGPTError, match="not a token"):
        gpt2.token_to_id(b"not-a-single-token-at-all")


def test_from_gpt2_bad_files(tmp_path, gpt2):
    with pytest.raises(MiniGPTError, match="not found"):
        BPETokenizer.from_gpt2(tmp_path)
    gpt2.to_gpt2(tmp_path)
    lines = (tmp_path / "vocab.bpe").read_text(encoding="utf-8").split("\n")
    lines[1], lines[2] = lines[2], lines[1]  # merges out of id order
    (tmp_path / "vocab.bpe").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(MiniGPTError, match="should make token id"):
        BPETokenizer.from_gpt2(tmp_path)
