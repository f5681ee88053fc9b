"""One loader for every command: run folder / checkpoint folder / GPT-2 folder -> (model, tokenizer);
`minigpt train --init DIR` continues pretraining with a context that may be lowered, never raised."""
import json
import shutil

import numpy as np
import pytest

from minigpt import MiniGPTError
from minigpt.cli import main
from minigpt.loading import load_model_and_tokenizer, load_tokenizer, shrink_context
from minigpt.model import GPT, GPTConfig
from minigpt.train import TrainConfig, pretrain, resolve_model_dir

TEXT = ("The quick brown fox jumps over the lazy dog. A stitch in time saves nine. " * 40 +
        "Every good boy deserves fruit. Spam and eggs, eggs and spam. " * 40)


def quiet(_msg):
    pass


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("load")
    (d / "text.txt").write_text(TEXT)
    cfg = TrainConfig(steps=3, batch_size=2, warmup=1, eval_every=3, eval_batches=1, sample_tokens=4, seed=1)
    pretrain(d / "run", text_files=[d / "text.txt"], config="nano", config_overrides={"context_length": 32},
             tokenizer="bpe", vocab_size=300, train_cfg=cfg, progress=False, log=quiet)
    return d


def test_run_folder_checkpoint_folder_and_from_pretrained_agree(run):
    m1, t1 = load_model_and_tokenizer(run / "run")
    ck = resolve_model_dir(run / "run")
    m2, t2 = load_model_and_tokenizer(ck)
    m3 = GPT.from_pretrained(run / "run")  # a run folder is accepted too
    ids = np.array([t1.encode("The quick brown fox")])
    assert t1.encode("spam and eggs") == t2.encode("spam and eggs")
    np.testing.assert_array_equal(m1(ids).data, m2(ids).data)
    np.testing.assert_array_equal(m1(ids).data, m3(ids).data)


def test_gpt2_folder_without_tokenizer_uses_gpt2_vocabulary(tmp_path, shared_data):
    m = GPT(GPTConfig.preset("nano", vocab_size=50257))
    m.save_pretrained(tmp_path / "g")
    model, tok = load_model_and_tokenizer(tmp_path / "g")
    assert tok.vocab_size == 50257 and tok.encode("Hello world") == [15496, 995]
    shutil.copy(shared_data / "gpt2" / "encoder.json", tmp_path / "g")
    shutil.copy(shared_data / "gpt2" / "vocab.bpe", tmp_path / "g")
    assert load_tokenizer(tmp_path / "g").encode("Hello world") == [15496, 995]


def test_folder_errors(tmp_path, run):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MiniGPTError, match="holds no model weights"):
        load_model_and_tokenizer(tmp_path / "empty")
    with pytest.raises(MiniGPTError, match="does not exist"):
        load_model_and_tokenizer(tmp_path / "nowhere")
    # weights but no tokenizer, vocabulary not GPT-2's
    GPT(GPTConfig.preset("nano", vocab_size=300)).save_pretrained(tmp_path / "notok")
    with pytest.raises(MiniGPTError, match="has no tokenizer"):
        load_model_and_tokenizer(tmp_path / "notok")
    # a tokenizer larger than the model's vocabulary
    GPT(GPTConfig.preset("nano", vocab_size=100)).save_pretrained(tmp_path / "small")
    shutil.copy(resolve_model_dir(run / "run") / "tokenizer.json", tmp_path / "small")
    with pytest.raises(MiniGPTError, match="tokenizer has 300 tokens but the model's vocabulary only 100"):
        load_model_and_tokenizer(tmp_path / "small")
    # a damaged latest.json names its file
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "latest.json").write_text("{")
    with pytest.raises(MiniGPTError, match="latest.json is not a valid latest.json"):
        load_model_and_tokenizer(tmp_path / "bad")


def test_shrink_context_keeps_the_first_positions(run):
    m, tok = load_model_and_tokenizer(run / "run")
    s = shrink_context(m, 16)
    ids = np.array([tok.encode("The quick brown fox jumps")[:10]])
    assert s.config.context_length == 16
    np.testing.assert_allclose(s(ids).data, m(ids).data, rtol=1e-6, atol=1e-6)
    with pytest.raises(MiniGPTError, match="lowered, never raised"):
        shrink_context(m, 64)


def test_cli_train_init_continues_pretraining(run, tmp_path, capsys):
    args = ["train", "--text", str(run / "text.txt"), "--steps", "2", "--batch-size", "2", "--eval-every", "2",
            "--eval-batches", "1", "--sample-tokens", "4", "--quiet", "--init", str(run / "run")]
    assert main(args + ["--out", str(tmp_path / "more"), "--context-length", "16"]) == 0
    cfg = json.loads((resolve_model_dir(tmp_path / "more") / "config.json").read_text())
    assert cfg["n_positions"] == 16 and cfg["vocab_size"] == 300
    before, _ = load_model_and_tokenizer(run / "run")
    after, _ = load_model_and_tokenizer(tmp_path / "more")
    assert not np.array_equal(before.blocks[0].attn.qkv.weight.data, after.blocks[0].attn.qkv.weight.data)
    np.testing.assert_array_equal(before.tok_emb.weight.data.shape, after.tok_emb.weight.data.shape)
    capsys.readouterr()
    assert main(args + ["--out", str(tmp_path / "raise"), "--context-length", "64"]) == 2
    assert "never raised" in capsys.readouterr().err


def test_init_with_a_foreign_tokenizer_is_refused(run, tmp_path, shared_data):
    from minigpt.train.classify import finetune_classify

    (tmp_path / "d.tsv").write_text("text\tlabel\nhello\ta\nbye\tb\n")
    with pytest.raises(MiniGPTError, match="model's vocabulary has 300 tokens but the tokenizer 50257"):
        load_model_and_tokenizer(run / "run", "gpt2", strict_vocab=True)
    with pytest.raises(MiniGPTError, match="do not belong together"):
        finetune_classify(tmp_path / "out", run / "run", tmp_path / "d.tsv", tokenizer="gpt2", log=quiet,
                          progress=False)
    assert not (tmp_path / "out").exists()
