"""What finetuning prints: the instruction answer passes report in plain lines when the output is a log (no
carriage returns), and a classifier's epochs report whole-split losses, never the perplexity of a
classification loss or a one-batch loss."""
import json

import numpy as np
import pytest

from minigpt.model import GPT, GPTConfig
from minigpt.tokenizer import BPETokenizer
from minigpt.train import TrainConfig, pretrain
from minigpt.train.classify import ClassifyConfig, finetune_classify
from minigpt.train.instruct import answer_all


def test_answer_passes_write_plain_lines_to_a_log(capsys, monkeypatch):
    monkeypatch.setattr("minigpt.progress.MIN_GAP_SECONDS", 0.0)  # these answers take milliseconds
    tok = BPETokenizer.train("Name a colour. Blue is a colour. " * 20, 270)
    model = GPT(GPTConfig.preset("nano", vocab_size=tok.vocab_size, context_length=32))
    entries = [{"instruction": f"Name colour {i}.", "input": "", "output": "Blue."} for i in range(3)]
    answers = answer_all(model, tok, entries, "alpaca", 2, progress=True, desc="untuned answers")
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    err = capsys.readouterr().err  # standard error here is not a terminal, as in a log file
    assert "\r" not in err
    lines = err.splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["untuned answers: 1/3 (33%)", "untuned answers: 2/3 (67%)",
                                                  "untuned answers: 3/3 (100%)"]
    assert all("elapsed" in ln for ln in lines)
    answer_all(model, tok, entries[:1], "alpaca", 2, progress=False)
    assert capsys.readouterr().err == ""


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("clf-out")
    (d / "text.txt").write_text("You won a free prize, call now. See you at lunch, love. " * 60)
    cfg = TrainConfig(steps=2, batch_size=2, warmup=1, eval_every=2, eval_batches=1, sample_tokens=4, seed=1)
    pretrain(d / "pre", text_files=[d / "text.txt"], config="nano", config_overrides={"context_length": 32},
             tokenizer="bpe", vocab_size=280, train_cfg=cfg, progress=False, log=lambda m: None)
    rng = np.random.default_rng(0)
    rows = [f"ham\tsee you at lunch {rng.integers(100)} love" if i % 3 else
            f"spam\tWIN a FREE prize now call {rng.integers(1000)}!!!" for i in range(60)]
    (d / "sms.txt").write_text("\n".join(rows) + "\n")
    return d


def test_classifier_reports_epochs_without_perplexity_or_a_batch_loss(base, tmp_path, monkeypatch):
    import minigpt.train.loop as loop

    smoothing = []
    real = loop.loss_figure
    monkeypatch.setattr(loop, "loss_figure", lambda plt, h, s=0: (smoothing.append(s), real(plt, h, s))[1])
    said = []
    cfg = ClassifyConfig(epochs=2, batch_size=4, lr=3e-3, format="sms")
    finetune_classify(tmp_path / "c", init=base / "pre", data=base / "sms.txt", cfg=cfg, progress=False,
                      log=said.append)
    epochs = [m for m in said if m.startswith("epoch ")]
    assert [m.split(":")[0] for m in epochs] == ["epoch 1", "epoch 2"]
    assert not any("ppl" in m or m.startswith("step ") for m in said), said
    log = [json.loads(x) for x in (tmp_path / "c" / "log.jsonl").read_text().splitlines()]
    last = [r for r in log if "train_loss" in r][-1]
    assert f"loss train {last['train_loss']:.3f} val {last['val_loss']:.3f}" in epochs[-1]
    if smoothing:  # matplotlib installed: loss.png draws the mean over an epoch's 7 batches
        assert set(smoothing) == {7}
