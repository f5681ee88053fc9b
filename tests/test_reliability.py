"""Hostile files, bad arguments and kills: each case gets a one-line error (or a safe recovery), never a hang,
a traceback, a silent wrong result or lost work. The README's reliability table lists the same cases."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigpt.cli import main
from minigpt.errors import MiniGPTError
from minigpt.tokenizer import BPETokenizer

ROOT = Path(__file__).resolve().parent.parent


def tok_file(path, merges, **extra):
    d = {"format": "minigpt-bpe", "version": 1, "pattern": "gpt2", "special_tokens": {}, "merges": merges}
    d.update(extra)
    path.write_text(json.dumps(d), encoding="utf-8")
    return path


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *words):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minigpt: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


# --- 1. tokenizer files ----------------------------------------------------------------------------------
def test_merge_chain_tokenizer_is_refused_fast(tmp_path, capsys):
    # 20,000 merges, each growing one token by a byte: 200 MB of token bytes once spelled out
    p = tok_file(tmp_path / "c.json", [[97, 97]] + [[256 + i, 97] for i in range(19999)])
    t0 = time.perf_counter()
    code, out, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", str(p), "--text", "hello")
    assert time.perf_counter() - t0 < 0.5
    one_line_error(code, err, "c.json", "merge 255", "bytes")


def test_token_and_vocabulary_byte_limits(tmp_path):
    # refused from the lengths alone, before any token's bytes are spelled out
    from minigpt.tokenizer.bpe import MAX_TOKEN_BYTES, MAX_VOCAB_BYTES

    chain = [[97, 97]] + [[256 + i, 97] for i in range(MAX_TOKEN_BYTES - 2)]  # "a" * 2 .. "a" * 256
    assert len(BPETokenizer(chain).id_to_token(256 + len(chain) - 1)) == MAX_TOKEN_BYTES
    with pytest.raises(MiniGPTError, match=f"limited to {MAX_TOKEN_BYTES} bytes"):
        BPETokenizer(chain + [[256 + len(chain) - 1, 98]])
    # 256 tokens of 128 bytes ("a" * 127 + one byte), then their pairs: 256 bytes each, 16 MB in all
    half = [[97, 97]] + [[256 + i, 97] for i in range(MAX_TOKEN_BYTES // 2 - 3)]  # up to "a" * 127
    a127 = 256 + len(half) - 1
    first = 256 + len(half) + 256
    ends = [[a127, b] for b in range(256)]
    pairs = [[x, y] for x in range(first - 256, first) for y in range(first - 256, first)]
    assert len(pairs) * MAX_TOKEN_BYTES > MAX_VOCAB_BYTES
    t0 = time.perf_counter()
    with pytest.raises(MiniGPTError, match=f"limited to {MAX_VOCAB_BYTES:,} bytes"):
        BPETokenizer(half + ends + pairs)
    assert time.perf_counter() - t0 < 0.5


def test_encode_time_is_bounded_for_the_largest_legal_chain():
    # the worst shape of a legal vocabulary (every prefix of a 256-byte token is a token, so every split of it
    # is a pair to look up): building the encoder costs time proportional to the vocabulary's bytes
    from minigpt.tokenizer.bpe import MAX_TOKEN_BYTES

    BPETokenizer([]).encode("warm up the kernels")
    merges = []
    for c in range(119, 123):  # 4 chains "x" * 2 .. "x" * 256: 130 KB of tokens
        base = 256 + len(merges)
        merges += [[c, c]] + [[base + i, c] for i in range(MAX_TOKEN_BYTES - 2)]
    tok = BPETokenizer(merges)
    t0 = time.perf_counter()
    ids = tok.encode("hello " + "z" * 1000)
    assert time.perf_counter() - t0 < 1.5
    assert tok.decode(ids) == "hello " + "z" * 1000 and len(ids) < 100


@pytest.mark.parametrize("merges, words", [
    ([[1.5, 1]], "merge 0 must be a pair of integer"),
    ([[True, 1]], "merge 0 must be a pair of integer"),
    ([["97", 97]], "merge 0 must be a pair of integer"),
    ([[97, 97, 97]], "merge 0 must be a pair of integer"),
    ([97], "merge 0 must be a pair of integer"),
    ([[97, 97], [258, 97]], "does not exist yet"),
    ([[97, -1]], "does not exist yet"),
])
def test_bad_merges_are_refused(tmp_path, capsys, merges, words):
    p = tok_file(tmp_path / "t.json", merges)
    code, out, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", str(p), "--text", "hi")
    one_line_error(code, err, "t.json", words)


@pytest.mark.parametrize("content, words", [
    ({"byte_ids": "abc"}, "byte_ids"),
    ({"byte_ids": list(range(255)) + [1.0]}, "byte_ids"),
    ({"byte_ids": list(range(255)) + [0]}, "permutation"),
    ({"special_tokens": {"<x>": "256"}}, "must be an integer"),
    ({"special_tokens": {"<x>": 257}}, "special token ids"),
    ({"pattern": 5}, "'pattern' must be a string"),
])
def test_bad_tokenizer_fields_are_refused(tmp_path, capsys, content, words):
    p = tok_file(tmp_path / "t.json", [], **content)
    code, out, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", str(p), "--text", "hi")
    one_line_error(code, err, words)


def test_deeply_nested_tokenizer_file(tmp_path, capsys):
    p = tmp_path / "t.json"
    depth = 1_000_000
    p.write_text('{"format": "minigpt-bpe", "version": 1, "pattern": "gpt2", "special_tokens": {}, "merges": []'
                 ', "byte_ids": ' + "[" * depth + "]" * depth + "}", encoding="utf-8")
    code, out, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", str(p), "--text", "hi")
    one_line_error(code, err, "nested too deeply")


def test_training_keeps_tokens_within_the_limit(tmp_path):
    from minigpt.tokenizer.bpe import MAX_TOKEN_BYTES

    text = ("x" * (3 * MAX_TOKEN_BYTES) + "\n") * 4  # a 768-byte word: "x" * 2, 4, ..., 256 (and 512 uncut)
    tok = BPETokenizer.train(text, 256 + 8, special_tokens=())
    assert max(len(tok.id_to_token(i)) for i in range(tok.vocab_size)) == MAX_TOKEN_BYTES
    with pytest.raises(MiniGPTError, match="too small"):  # learnt in 256-byte pieces: no 512-byte token
        BPETokenizer.train(text, 256 + 9, special_tokens=())
    back = BPETokenizer.load(tok.save(tmp_path / "t.json"))
    assert back.encode(text) == tok.encode(text) and back.decode(back.encode(text)) == text


def test_tokenizer_train_huge_vocab_size(tmp_path, capsys):
    f = tmp_path / "a.txt"
    f.write_text("hello world " * 10, encoding="utf-8")
    code, out, err = run_cli(capsys, "tokenizer", "train", "--text", str(f), "--vocab-size", "1000000000000000000",
                             "--out", str(tmp_path / "t.json"), "--quiet")
    one_line_error(code, err, "vocab_size", "too large")
