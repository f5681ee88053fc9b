"""Hugging Face tokenizer.json and tiktoken-format vocabularies in minigpt's BPE engine: ids equal to those
of the tokenizers library and of tiktoken on held-out text (tests/fixtures/hf_tokenizer, made by
make_hf_tokenizer_fixture.py), decoding, special tokens, renumbering, chat templates and bad files."""
import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from minigpt.errors import MiniGPTError
from minigpt.data.instruct import CHAT_FORMATS, format_prompt
from minigpt.tokenizer.hf_files import from_tiktoken, from_tokenizer_json, llama3_special_tokens, load_hf_tokenizer

FIX = Path(__file__).parent / "fixtures" / "hf_tokenizer"
META = json.loads((FIX / "meta.json").read_text(encoding="utf-8"))
STRESS = Path(__file__).parent / "fixtures" / "tokenizer" / "unicode_stress.txt"


def _tokenizers():
    return {"qwen_style": from_tokenizer_json(FIX / "qwen_style" / "tokenizer.json"),
            "llama3_style": from_tiktoken(FIX / "llama3_style.tiktoken")}


def _text(entry, shared):
    if entry["source"] == "fixture":
        text = STRESS.read_text(encoding="utf-8")
    else:
        if shared is None:
            pytest.skip("shared data folder not found: set MINIGPT_DATA or place it at ../shared/data")
        text = (shared / entry["source"].split(":", 1)[1]).read_text(encoding="utf-8")[:entry["chars"]]
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() == entry["sha256"]
    return text


@pytest.mark.parametrize("kind", ["qwen_style", "llama3_style"])
@pytest.mark.parametrize("name", ["unicode-stress", "the-verdict", "tinyshakespeare"])
def test_ids_equal_the_reference_library(kind, name):
    from minigpt.data.shared import shared_data_dir

    tok = _tokenizers()[kind]
    text = _text(META[kind][name], shared_data_dir())
    ref = np.load(FIX / f"{kind}.{name}.npy").tolist()
    # the tokenizers library always treats its added tokens as special; tiktoken's encode_ordinary never does
    ids = tok.encode(text, allowed_special="all") if kind == "qwen_style" else tok.encode_ordinary(text)
    assert ids == ref
    assert tok.decode(ids) == text
    assert tok.encode_batch([text, text[:50]], allowed_special="all" if kind == "qwen_style" else ())[0] == ref


def test_special_tokens_and_renumbered_ids():
    q = _tokenizers()["qwen_style"]
    chat = META["qwen_style"]["chat"]
    assert q.encode(chat["text"], allowed_special="all") == chat["ids"]
    # the file puts its added tokens first: ids 0, 1, 2; the bytes and merges after them
    assert q.special_tokens == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    assert q.token_to_id("<|im_end|>") == 2 and q.id_to_token(2) == b"<|im_end|>"
    assert q.decode(chat["ids"]) == chat["text"]
    with pytest.raises(MiniGPTError, match="not allowed"):
        q.encode("<|im_start|>")
    ll = _tokenizers()["llama3_style"]
    n = ll.vocab_size - 256
    assert ll.special_tokens["<|begin_of_text|>"] == n and ll.special_tokens["<|eot_id|>"] == n + 9
    assert ll.decode([ll.special_tokens["<|start_header_id|>"]]) == "<|start_header_id|>"


def test_saved_in_minigpt_format_with_the_files_ids(tmp_path):
    from minigpt.tokenizer import BPETokenizer

    text = STRESS.read_text(encoding="utf-8")
    for tok in _tokenizers().values():
        again = BPETokenizer.load(tok.save(tmp_path / "tok.json"))
        assert again.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")
        assert again.special_tokens == tok.special_tokens
    bad = json.loads((tmp_path / "tok.json").read_text())
    bad["file_ids"] = bad["file_ids"][:-1] + [0]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(MiniGPTError, match="permutation"):
        BPETokenizer.load(tmp_path / "bad.json")


def test_llama3_special_token_names():
    s = llama3_special_tokens()
    assert len(s) == 256 and s["<|begin_of_text|>"] == 128000 and s["<|end_of_text|>"] == 128001
    assert s["<|start_header_id|>"] == 128006 and s["<|end_header_id|>"] == 128007 and s["<|eot_id|>"] == 128009
    assert s["<|reserved_special_token_0|>"] == 128002 and s["<|reserved_special_token_247|>"] == 128255


def test_chat_formats():
    assert format_prompt({"instruction": "Hi"}, "qwen") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    text = format_prompt({"instruction": "Hi", "input": "there"}, "llama3")
    assert text == ("<|start_header_id|>user<|end_header_id|>\n\nHi\nthere<|eot_id|><|start_header_id|>assistant"
                    "<|end_header_id|>\n\n")
    assert {k: v[2] for k, v in CHAT_FORMATS.items()} == {"llama3": "<|eot_id|>", "qwen": "<|im_end|>"}
    with pytest.raises(MiniGPTError, match="unknown prompt template"):
        format_prompt({"instruction": "Hi"}, "vicuna")


def test_model_folder_tokenizers(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "tokenizer.json").write_bytes((FIX / "qwen_style" / "tokenizer.json").read_bytes())
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "tokenizer.model").write_bytes((FIX / "llama3_style.tiktoken").read_bytes())
    assert load_hf_tokenizer(tmp_path / "a").special_tokens["<|im_end|>"] == 2
    assert "<|eot_id|>" in load_hf_tokenizer(tmp_path / "b").special_tokens
    assert load_hf_tokenizer(tmp_path) is None


def test_bad_files_are_refused_in_one_line(tmp_path):
    good = json.loads((FIX / "qwen_style" / "tokenizer.json").read_text(encoding="utf-8"))
    cases = {
        "wordpiece": ({**good, "model": {**good["model"], "type": "WordPiece"}}, "model.type must be BPE"),
        "merge": ({**good, "model": {**good["model"], "merges": [["Ġ", "zzz"]]}}, "not in the vocabulary|outside"),
        "byte": ({**good, "model": {**good["model"], "vocab": {k: v for k, v in good["model"]["vocab"].items()
                                                               if k != "!"}}}, "single byte 33"),
        "normalizer": ({**good, "normalizer": {"type": "NFC"}}, "normalizer"),
        "pre": ({**good, "pre_tokenizer": {"type": "Whitespace"}}, "not supported"),
    }
    for name, (d, msg) in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(d), encoding="utf-8")
        with pytest.raises(MiniGPTError, match=msg):
            from_tokenizer_json(p)
    lines = (FIX / "llama3_style.tiktoken").read_text(encoding="ascii").splitlines()
    for name, body, msg in (("junk", "not base64 at all\n", "expected 'base64-token rank'"),
                            ("nobyte", "\n".join(lines[1:]) + "\n", "single byte"),
                            ("dup", "\n".join(lines + [lines[-1].split()[0] + " 99999"]) + "\n", "listed twice"),
                            ("orphan", "\n".join(lines + [base64.b64encode(b"\x00\x01\x02zq").decode() + f" {len(lines)}"])
                             + "\n", "not the merge of two tokens")):
        p = tmp_path / f"{name}.tiktoken"
        p.write_text(body, encoding="ascii")
        with pytest.raises(MiniGPTError, match=msg):
            from_tiktoken(p)
    with pytest.raises(MiniGPTError, match="does not exist"):
        from_tiktoken(tmp_path / "missing.tiktoken")


def test_the_tokenizer_command_takes_these_files(capsys):
    from minigpt.cli import main

    for path in (FIX / "qwen_style" / "tokenizer.json", FIX / "llama3_style.tiktoken"):
        tok = from_tokenizer_json(path) if path.suffix == ".json" else from_tiktoken(path)
        assert main(["tokenizer", "encode", "--tokenizer", str(path), "--text", "Hello, naïve world 123"]) == 0
        assert capsys.readouterr().out.split() == [str(i) for i in tok.encode("Hello, naïve world 123")]
