"""Instruction finetuning: the book's collate arrays, templates, split counts, entry errors, ROUGE-L,
the LLM judge against a local HTTP server, and `finetune instruct` + `chat` end to end on tiny data."""
import io
import json
import threading
from pathlib import Path
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest

from minigpt import MiniGPTError
from minigpt.cli import main
from minigpt.data.instruct import collate, format_example, format_prompt, read_instructions, split_instructions
from minigpt.train import TrainConfig, pretrain
from minigpt.train.instruct import exact_match, judge_scores, lcs_length, rouge_l_f1, score_responses


def test_collate_matches_the_books_example():
    x, y = collate([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]], pad_id=50256)
    assert x.tolist() == [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256], [7, 8, 9, 50256, 50256]]
    assert y.tolist() == [[1, 2, 3, 4, 50256], [6, 50256, -100, -100, -100], [8, 9, 50256, -100, -100]]
    assert x.dtype == y.dtype == np.int64
    # --max-length truncates; --mask-prompt hides the targets that predict prompt tokens
    x3, y3 = collate([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]], 50256, max_length=3)
    assert x3.tolist() == [[0, 1, 2], [5, 6, 50256], [7, 8, 9]] and y3.tolist()[1] == [6, 50256, -100]
    _, ym = collate([[0, 1, 2, 3, 4], [5, 6], [7, 8, 9]], 50256, prompt_lengths=[3, 1, 2])
    assert ym.tolist() == [[-100, -100, 3, 4, 50256], [6, 50256, -100, -100, -100], [-100, 9, 50256, -100, -100]]


def test_templates():
    e = {"instruction": "Convert to passive.", "input": "The cat ate the fish.", "output": "The fish was eaten."}
    p = format_prompt(e)
    assert p.startswith("Below is an instruction that describes a task.")
    assert "\n\n### Instruction:\nConvert to passive.\n\n### Input:\nThe cat ate the fish.\n\n### Response:\n" in p
    assert format_example(e) == p + "The fish was eaten."
    assert "### Input" not in format_prompt({**e, "input": ""})
    assert format_prompt(e, "phi3") == "<|user|>\nConvert to passive.\nThe cat ate the fish.\n<|assistant|>\n"
    with pytest.raises(MiniGPTError, match="unknown prompt template"):
        format_prompt(e, "chatml")


def test_split_counts_and_real_file(shared_data):
    tr, va, te = split_instructions(1100, seed=123)
    assert (len(tr), len(va), len(te)) == (935, 55, 110)
    assert len(set(tr) | set(va) | set(te)) == 1100
    entries = read_instructions(shared_data / "instruction-data" / "instruction-data.json")
    assert len(entries) == 1100


@pytest.mark.parametrize("content,msg", [
    ('[{"instruction": "a", "input": "", "output": "b"}, {"instruction": "c", "output": "d"}]',
     r"entry 1 lacks 'input'"),
    ('{"instruction": "a"}', "non-empty JSON list"),
    ('[{"instruction": "a", "input": "", "output": 3}]', r"entry 0: 'output' must be a string"),
    ('[{"instruction": "a", "input": "", "output": "  "}]', r"entry 0 has an empty output"),
    ('[{"instruction": "a",', "not valid JSON"),
])
def test_bad_instruction_files(tmp_path, content, msg):
    (tmp_path / "d.json").write_text(content)
    with pytest.raises(MiniGPTError, match=msg):
        read_instructions(tmp_path / "d.json")


def test_rouge_l_and_exact_match_by_hand():
    assert lcs_length("a b c d".split(), "a c d e".split()) == 3
    assert rouge_l_f1("the cat sat", "The cat sat down") == pytest.approx(6 / 7)
    assert rouge_l_f1("", "anything") == 0.0 and rouge_l_f1("x y", "z") == 0.0
    assert exact_match(" The  Cat ", "the cat") and not exact_match("the cat.", "the cat")
    s = score_responses(["the cat sat", "a dog"], ["the cat sat down", "a dog"])
    assert s["exact_match"] == 0.5 and s["rouge_l_f1"] == pytest.approx((6 / 7 + 1) / 2) and s["mean_words"] == 2.5


class _Judge(BaseHTTPRequestHandler):
    seen = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Judge.seen.append((self.path, body))
        text = body["messages"][0]["content"]
        reply = {"model": body["model"], "message": {"role": "assistant", "content": "87" if "excellent" in text else "12"},
                 "done": True}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


def test_judge_against_a_local_ollama_like_server():
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        e = {"instruction": "Say hi", "input": "", "output": "hi"}
        assert judge_scores(url, [e, e], ["an excellent answer", "bad"], model="tiny") == [87, 12]
        path, body = _Judge.seen[-1]
        assert path == "/api/chat" and body["model"] == "tiny" and body["stream"] is False
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(MiniGPTError, match="nothing answers there"):
        judge_scores(url, [e], ["x"])  # the server is gone: nothing listens on that port now


def quiet(_m):
    pass


def test_finetune_instruct_and_chat_end_to_end(tmp_path, capsys, monkeypatch):
    (tmp_path / "text.txt").write_text("Below is an instruction that describes a task. Write a response. "
                                       "### Instruction: Name a colour. ### Response: Blue is a colour. " * 50)
    cfg = TrainConfig(steps=2, batch_size=2, warmup=1, eval_every=2, eval_batches=1, sample_tokens=4, seed=1)
    pretrain(tmp_path / "pre", text_files=[tmp_path / "text.txt"], config="nano",
             config_overrides={"context_length": 64}, tokenizer="bpe", vocab_size=300, train_cfg=cfg,
             progress=False, log=quiet)
    entries = [{"instruction": f"Name colour {i}.", "input": "" if i % 2 else "please", "output": "Blue."}
               for i in range(40)]
    (tmp_path / "ins.json").write_text(json.dumps(entries))
    args = ["finetune", "instruct", "--init", str(tmp_path / "pre"), "--data", str(tmp_path / "ins.json"),
            "--out", str(tmp_path / "run"), "--epochs", "3", "--batch-size", "4", "--lr", "3e-3",
            "--max-new-tokens", "4", "--quiet", "--template", "phi3", "--mask-prompt"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "ROUGE-L F1" in out and "validation loss" in out
    scores = json.loads((tmp_path / "run" / "scores.json").read_text())
    assert scores["before"]["n"] == 4 and scores["template"] == "phi3"
    assert scores["val_loss_after"] < scores["val_loss_before"]
    recs = json.loads((tmp_path / "run" / "test_responses.json").read_text())
    assert len(recs) == 4 and {"response", "response_before", "output", "instruction"} <= set(recs[0])
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert len(log) == 3 * 8 and any("val_loss" in r for r in log)  # 34 train entries -> 8 batches of 4
    monkeypatch.setattr("sys.stdin", io.StringIO("Name colour 3.\n\nName colour 5.\n"))
    assert main(["chat", "--model", str(tmp_path / "run"), "--max-new-tokens", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()  # piped: the two answers with a separator line between them
    assert len(lines) == 3 and lines[1] == "---"
    monkeypatch.setattr("sys.stdin", io.StringIO("Name colour 3.\n"))  # the same, with int8 weights
    assert main(["chat", "--model", str(tmp_path / "run"), "--max-new-tokens", "3", "--quantize", "int8"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    # an LM is required: a classifier folder is refused; a missing key names its entry
    (tmp_path / "bad.json").write_text(json.dumps(entries[:3] + [{"instruction": "x", "output": "y"}]))
    assert main(args[:4] + ["--data", str(tmp_path / "bad.json"), "--out", str(tmp_path / "bad")]) == 2
    assert "entry 3 lacks 'input'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_finetune_instruct_lora_adapters_chat_and_merge(tmp_path, capsys, monkeypatch):
    """`--train lora` writes an adapter-only model folder naming its base; that folder (and the run) loads
    and chats; `--merge` (same seed, same run) writes a plain model whose logits are the adapted model's."""
    from minigpt.model import GPT
    from minigpt.model.folders import load_model
    from minigpt.nn.lora import LoRALinear

    (tmp_path / "text.txt").write_text("### Instruction: Name a colour. ### Response: Blue is a colour. " * 40)
    cfg = TrainConfig(steps=1, batch_size=2, warmup=0, eval_every=1, eval_batches=1, sample_tokens=0, seed=1)
    pretrain(tmp_path / "pre", text_files=[tmp_path / "text.txt"], config="nano",
             config_overrides={"context_length": 48}, tokenizer="bpe", vocab_size=280, train_cfg=cfg,
             progress=False, log=quiet)
    entries = [{"instruction": f"Name colour {i}.", "input": "", "output": "Blue."} for i in range(20)]
    (tmp_path / "ins.json").write_text(json.dumps(entries))
    args = ["finetune", "instruct", "--init", str(tmp_path / "pre"), "--data", str(tmp_path / "ins.json"),
            "--epochs", "0.5", "--batch-size", "4", "--lr", "1e-2", "--max-new-tokens", "2", "--eval-limit", "1",
            "--quiet", "--train", "lora", "--lora-rank", "2", "--lora-alpha", "4"]
    assert main(args + ["--out", str(tmp_path / "lora")]) == 0
    assert "(--train lora) for 2 steps" in capsys.readouterr().out  # 17 training entries: 4 batches, half an epoch
    folder = tmp_path / "lora" / "model"
    assert {p.name for p in folder.iterdir()} == {"adapter.safetensors", "adapter_config.json", "tokenizer.json",
                                                   "instruct.json"}
    acfg = json.loads((folder / "adapter_config.json").read_text())
    # the base is named by its run folder (resolved to its latest checkpoint on load), never by a checkpoint that
    # the run's rotation may delete
    assert acfg["kind"] == "lm" and acfg["rank"] == 2 and Path(acfg["base"]) == (tmp_path / "pre").resolve()
    scores = json.loads((tmp_path / "lora" / "scores.json").read_text())
    E, L = 64, 2  # nano: a rank-2 A (in, 2) and B (2, out) on each block's qkv, proj, fc and proj
    assert scores["trainable_parameters"] == L * 2 * ((E + 3 * E) + (E + E) + (E + 4 * E) + (4 * E + E))

    adapted = load_model(folder)
    assert sum(isinstance(m, LoRALinear) for m in adapted.modules()) == 4 * L
    base = GPT.from_pretrained(tmp_path / "pre")
    ids = np.array([[3, 17, 42, 99, 5, 250, 7]])
    logits = adapted(ids).data
    assert not np.allclose(logits, base(ids).data, atol=1e-6)  # the adapters were trained: they change the output
    np.testing.assert_array_equal(load_model(tmp_path / "lora").tok_emb.weight.data, base.tok_emb.weight.data)
    for model_arg in (folder, tmp_path / "lora"):
        monkeypatch.setattr("sys.stdin", io.StringIO("Name colour 3.\n"))
        assert main(["chat", "--model", str(model_arg), "--max-new-tokens", "2"]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 1

    assert main(args + ["--out", str(tmp_path / "merged"), "--merge"]) == 0
    capsys.readouterr()
    merged = tmp_path / "merged" / "model"
    assert {p.name for p in merged.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json", "instruct.json"}
    plain = GPT.from_pretrained(merged)
    assert not any(isinstance(m, LoRALinear) for m in plain.modules())
    np.testing.assert_allclose(plain(ids).data, logits, rtol=1e-4, atol=1e-5)  # same seed, same run
