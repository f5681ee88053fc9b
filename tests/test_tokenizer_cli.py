"""`minigpt tokenizer train|encode|decode`, through minigpt.cli.main."""
import pytest

from minigpt.cli import main
from minigpt.tokenizer import BPETokenizer

CORPUS = "the cat sat on the mat. the dog sat on the log. " * 20 + "Ünïcödé 🤗 text\n"


def test_train_encode_decode(tmp_path, capsys):
    src = tmp_path / "corpus.txt"
    src.write_text(CORPUS, encoding="utf-8")
    out = tmp_path / "tok.json"
    assert main(["tokenizer", "train", "--text", str(src), "--vocab-size", "290", "--out", str(out),
                 "--quiet", "--gpt2-files"]) == 0
    tok = BPETokenizer.load(out)
    assert tok.vocab_size == 290 and (tmp_path / "vocab.bpe").is_file()
    capsys.readouterr()
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "--text", "the cat 🤗"]) == 0
    ids = [int(x) for x in capsys.readouterr().out.split()]
    assert ids == tok.encode("the cat 🤗")
    assert main(["tokenizer", "decode", "--tokenizer", str(out), *map(str, ids)]) == 0
    assert capsys.readouterr().out == "the cat 🤗\n"
    assert main(["tokenizer", "decode", "--tokenizer", str(tmp_path), ",".join(map(str, ids))]) == 0
    assert capsys.readouterr().out == "the cat 🤗\n"  # the folder's encoder.json + vocab.bpe
    f = tmp_path / "in.txt"
    f.write_text("a<|endoftext|>b", encoding="utf-8")
    assert main(["tokenizer", "encode", "--tokenizer", str(out), "--file", str(f), "--allow-special"]) == 0
    assert capsys.readouterr().out.split() == [str(i) for i in tok.encode("a<|endoftext|>b", allowed_special="all")]


def test_gpt2_folder(capsys, shared_data):
    assert main(["tokenizer", "encode", "--gpt2", str(shared_data / "gpt2"), "--text", "Hello, I am"]) == 0
    assert capsys.readouterr().out.split() == ["15496", "11", "314", "716"]


@pytest.mark.parametrize("argv, message", [
    (["tokenizer", "decode", "--tokenizer", "{tok}", "1", "x"], "must be integers"),
    (["tokenizer", "decode", "--tokenizer", "{tok}", "99999"], "out of range"),
    (["tokenizer", "encode", "--tokenizer", "{tok}", "--text", "a<|endoftext|>"], "pass --allow-special"),
    (["tokenizer", "encode", "--tokenizer", "{tmp}/missing.json", "--text", "a"], "not found"),
    (["tokenizer", "train", "--text", "{tmp}/missing.txt", "--vocab-size", "300", "--out", "{tmp}/t.json"],
     "not found"),
    (["tokenizer", "train", "--text", "{src}", "--vocab-size", "100000", "--out", "{tmp}/t.json", "--quiet"],
     "at most"),
])
def test_user_errors_exit_2(tmp_path, capsys, argv, message):
    src = tmp_path / "corpus.txt"
    src.write_text(CORPUS, encoding="utf-8")
    tok = BPETokenizer.train(CORPUS, vocab_size=280).save(tmp_path / "tok.json")
    argv = [a.format(tok=tok, tmp=tmp_path, src=src) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_special_token_error_names_the_flag_not_python(tmp_path, capsys):
    tok = BPETokenizer.train(CORPUS, vocab_size=280).save(tmp_path / "tok.json")
    assert main(["tokenizer", "encode", "--tokenizer", str(tok), "--text", "a<|endoftext|>b"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigpt: error: ") and err.count("\n") == 1
    assert "--allow-special" in err and "allowed_special" not in err and "disallowed_special" not in err
