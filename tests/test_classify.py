"""Classification finetuning: readers, balance, stratified split, metrics, last-real-token pooling,
freezing, and `minigpt finetune classify` / `minigpt classify` end to end on tiny data."""
import json

import numpy as np
import pytest

from minigpt import Classifier, MiniGPTError
from minigpt.cli import main
from minigpt.data.classification import ClassificationDataset, balance, read_labelled, stratified_split
from minigpt.model import GPT, GPTClassifier, GPTConfig
from minigpt.train import TrainConfig, pretrain
from minigpt.train.classify import ClassifyConfig, classification_report, finetune_classify
from minigpt.train.finetune import apply_train_mode


def quiet(_msg):
    pass


def test_sms_collection_reads_every_line(shared_data):
    texts, labels, where = read_labelled(shared_data / "sms-spam" / "SMSSpamCollection")
    assert len(texts) == 5574 and labels.count("ham") == 4827 and labels.count("spam") == 747
    assert all(t.strip() for t in texts) and where[0].endswith("SMSSpamCollection:1")
    # quote characters are literal: some message starts with a quote and is kept whole
    assert any(t.startswith('"') for t in texts)


def test_csv_tsv_jsonl_with_named_columns(tmp_path):
    (tmp_path / "d.csv").write_text('id,body,kind\n1,"hello, world",a\n2,bye,b\n')
    t, lab, w = read_labelled(tmp_path / "d.csv", text_column="body", label_column="kind")
    assert t == ["hello, world", "bye"] and lab == ["a", "b"] and w[1].endswith("d.csv:3")
    (tmp_path / "d.tsv").write_text("text\tlabel\nhello\tx\nbye\ty\n")
    assert read_labelled(tmp_path / "d.tsv")[1] == ["x", "y"]
    (tmp_path / "d.jsonl").write_text('{"text": "a b", "label": 1}\n\n{"text": "c", "label": 0}\n')
    assert read_labelled(tmp_path / "d.jsonl")[:2] == (["a b", "c"], ["1", "0"])


@pytest.mark.parametrize("name,content,kw,msg", [
    ("one.tsv", "text\tlabel\nhello\tx\nbye\tx\n", {}, "every example has the label 'x'"),
    ("col.csv", "text,label\nhello,x\n", {"label_column": "kind"}, r"no column 'kind'; the header has \['text', 'label'\]"),
    ("empty.tsv", "text\tlabel\nhello\tx\n  \ty\n", {}, r"empty.tsv:3: empty text"),
    ("notab", "ham\thi\nspam no tab here\n", {}, r"notab:2: expected 'label<TAB>text'"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": "b"}\n', {}, r"bad.jsonl:2: no key 'label'"),
])
def test_bad_data_files_name_file_and_line(tmp_path, name, content, kw, msg):
    (tmp_path / name).write_text(content)
    with pytest.raises(MiniGPTError, match=msg):
        read_labelled(tmp_path / name, **kw)


def test_balance_and_stratified_split_counts():
    labels = ["ham"] * 4827 + ["spam"] * 747
    idx = balance(labels, seed=1)
    sub = np.array(labels)[idx]
    assert len(idx) == 1494 and (sub == "spam").sum() == 747 and np.all(np.diff(idx) > 0)
    tr, va, te = stratified_split(sub, (0.7, 0.1, 0.2), seed=1)
    assert [len(tr), len(va), len(te)] == [1044, 150, 300]
    for part, n in ((tr, 522), (va, 75), (te, 150)):
        assert (sub[part] == "spam").sum() == n
    assert len(set(tr) | set(va) | set(te)) == 1494
    again = stratified_split(sub, (0.7, 0.1, 0.2), seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))


def test_report_on_hand_made_predictions():
    rep = classification_report([0, 0, 1, 1, 1], [0, 1, 1, 1, 0], ["ham", "spam"])
    assert rep["accuracy"] == pytest.approx(3 / 5)
    assert rep["confusion_matrix"] == [[1, 1], [1, 2]]
    s = rep["per_class"]["spam"]
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    h = rep["per_class"]["ham"]
    assert h["precision"] == pytest.approx(1 / 2) and h["f1"] == pytest.approx(1 / 2)
    assert rep["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def small_clf(seed=0):
    from minigpt import random as mrandom

    mrandom.manual_seed(seed)
    return GPTClassifier(GPTConfig.preset("nano", vocab_size=100, context_length=16), ["a", "b", "c"])


def test_prediction_does_not_depend_on_padding():
    m = small_clf()
    m.eval()
    ds = ClassificationDataset([[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16], [3]], [0, 1, 2], 16, pad_id=99)
    ids, _, lengths = ds.get_batch([0, 1, 2])
    assert ids.shape == (3, 9) and ids[2, 1:].tolist() == [99] * 8 and lengths.tolist() == [3, 9, 1]
    batched = m(ids, lengths).data
    for k, row in enumerate([[5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15, 16], [3]]):
        alone = m(np.array([row])).data[0]
        np.testing.assert_allclose(batched[k], alone, rtol=1e-5, atol=1e-6)
        # and with any other padding length
        padded = np.array([row + [99] * 5])
        np.testing.assert_allclose(m(padded, [len(row)]).data[0], alone, rtol=1e-5, atol=1e-6)


def _graph_ops(t):
    seen, stack, n = set(), [t], 0
    while stack:
        x = stack.pop()
        if id(x) in seen or x._op is None:
            continue
        seen.add(id(x))
        n += 1
        stack.extend(i for i in x._op.inputs if i.requires_grad)
    return n


def test_frozen_layers_get_no_gradient_and_no_backward_graph():
    m = small_clf()
    ids, labels = np.array([[1, 2, 3, 4], [5, 6, 7, 8]]), np.array([0, 2])
    n_head = apply_train_mode(m, "head")
    assert n_head == 64 * 3 + 3
    loss = m.loss(ids, labels)
    small_graph = _graph_ops(loss)
    loss.backward()
    assert m.score.weight.grad is not None
    assert all(p.grad is None for n, p in m.named_parameters() if not n.startswith("score."))
    n_last = apply_train_mode(m, "last-blocks:1")
    assert n_last == n_head + sum(p.size for p in m.blocks[1].parameters()) + 2 * 64
    m.zero_grad()
    loss = m.loss(ids, labels)
    mid_graph = _graph_ops(loss)
    loss.backward()
    assert m.blocks[1].attn.qkv.weight.grad is not None and m.final_norm.weight.grad is not None
    assert m.blocks[0].attn.qkv.weight.grad is None and m.tok_emb.weight.grad is None
    apply_train_mode(m, "all")
    full_graph = _graph_ops(m.loss(ids, labels))
    assert small_graph < mid_graph < full_graph  # the graph (and backward) stops at the lowest trainable layer
    with pytest.raises(MiniGPTError, match="only 2 transformer blocks"):
        apply_train_mode(m, "last-blocks:3")
    with pytest.raises(MiniGPTError, match="expected one of"):
        apply_train_mode(m, "some")


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("clf")
    (d / "text.txt").write_text("You won a free prize, call now. See you at lunch, love. Which bird flies "
                                "over the quiet harbour at dawn? Numbers 0123456789 and CAPITALS too. " * 60)
    cfg = TrainConfig(steps=2, batch_size=2, warmup=1, eval_every=2, eval_batches=1, sample_tokens=4, seed=1)
    pretrain(d / "pre", text_files=[d / "text.txt"], config="nano", config_overrides={"context_length": 32},
             tokenizer="bpe", vocab_size=280, train_cfg=cfg, progress=False, log=quiet)
    rows = []
    rng = np.random.default_rng(0)
    for i in range(60):
        if i % 3:
            rows.append(f"ham\tsee you at lunch {rng.integers(100)} love")
        else:
            rows.append(f"spam\tWIN a FREE prize now call {rng.integers(1000)}!!!")
    (d / "sms.txt").write_text("\n".join(rows) + "\n")
    return d


def test_cli_finetune_classify_end_to_end_and_resume(base, tmp_path, capsys):
    args = ["finetune", "classify", "--init", str(base / "pre"), "--data", str(base / "sms.txt"), "--lr", "3e-3",
            "--batch-size", "4", "--quiet", "--format", "sms"]
    assert main(args + ["--out", str(tmp_path / "a"), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out
    log = [json.loads(x) for x in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    epochs = [r for r in log if "train_acc" in r]
    assert [r["epoch"] for r in epochs] == [1, 2] and all("test_acc" in r and "val_loss" in r for r in epochs)
    assert len(log) == 2 * 7  # balanced 40 -> 28 training texts -> 7 batches of 4 per epoch
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["data"]["split"] == {"train": 28, "val": 4, "test": 8}
    assert sum(map(sum, metrics["confusion_matrix"])) == 8
    cfg = json.loads((tmp_path / "a" / "model" / "config.json").read_text())
    assert cfg["num_labels"] == 2 and cfg["id2label"] == {"0": "ham", "1": "spam"}
    clf = Classifier.from_pretrained(tmp_path / "a" / "model")
    preds = clf.predict(["WIN a FREE prize now call 12!!!", "see you at lunch 3 love"])
    assert [p[0] for p in preds] in (["spam", "ham"], ["ham", "spam"], ["spam", "spam"], ["ham", "ham"])
    assert all(0.5 <= p[1] <= 1.0 for p in preds)
    capsys.readouterr()
    assert main(["classify", "--model", str(tmp_path / "a"), "hello there", "free prize"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in ("ham", "spam") and lines[0].endswith("hello there")
    # a classifier cannot generate, an LM cannot classify
    assert main(["generate", "--model", str(tmp_path / "a"), "--prompt", "hi"]) == 2
    assert "holds a classifier, not a language model" in capsys.readouterr().err
    assert main(["classify", "--model", str(base / "pre"), "hi"]) == 2
    assert "holds a language model, not a classifier" in capsys.readouterr().err


def test_finetuning_guards_its_output_folder_like_pretraining(base, tmp_path, capsys):
    """A run folder without latest.json is still a run: a fresh finetuning refuses it (nothing overwritten)
    and --resume finds its newest complete checkpoint; a log alone is refused by --resume, saying why."""
    args = ["finetune", "classify", "--init", str(base / "pre"), "--data", str(base / "sms.txt"), "--lr", "3e-3",
            "--batch-size", "4", "--quiet", "--format", "sms", "--out", str(tmp_path / "a")]
    assert main(args + ["--epochs", "1"]) == 0
    (tmp_path / "a" / "latest.json").unlink()
    log_before = (tmp_path / "a" / "log.jsonl").read_bytes()
    capsys.readouterr()
    assert main(args + ["--epochs", "1"]) == 2
    assert "already holds a training run (checkpoints, log.jsonl)" in capsys.readouterr().err
    assert (tmp_path / "a" / "log.jsonl").read_bytes() == log_before
    assert main(args + ["--resume"]) == 0  # nothing left to run, but the checkpoint is found
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "log.jsonl").write_text("{}\n")
    capsys.readouterr()
    assert main(args[:-1] + [str(tmp_path / "b"), "--resume"]) == 2
    assert "stopped before its first checkpoint" in capsys.readouterr().err


def test_resume_continues_exactly(base, tmp_path, monkeypatch):
    from minigpt.train import Trainer

    cfg = ClassifyConfig(format="sms", epochs=2, batch_size=4, lr=3e-3)
    finetune_classify(tmp_path / "straight", base / "pre", base / "sms.txt", cfg, progress=False, log=quiet)
    real = Trainer.train_step

    def crash(self, *batch):
        if self.step == 7:
            raise KeyboardInterrupt
        return real(self, *batch)

    monkeypatch.setattr(Trainer, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        finetune_classify(tmp_path / "cut", base / "pre", base / "sms.txt", cfg, progress=False, log=quiet)
    monkeypatch.setattr(Trainer, "train_step", real)
    finetune_classify(tmp_path / "cut", resume=True, progress=False, log=quiet)
    a = [json.loads(x)["loss"] for x in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    b = [json.loads(x)["loss"] for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert a == b


def test_lm_generate_refuses_classifier_and_vocab_mismatch(tmp_path):
    m = GPT(GPTConfig.preset("nano", vocab_size=100))
    clf = GPTClassifier.from_gpt(m, ["x", "y"])
    np.testing.assert_array_equal(clf.tok_emb.weight.data, m.tok_emb.weight.data)
    clf.save_pretrained(tmp_path / "c")
    with pytest.raises(MiniGPTError, match="holds a classifier"):
        GPT.from_pretrained(tmp_path / "c")


def test_cli_lora_adapters_and_merge(base, tmp_path, capsys):
    args = ["finetune", "classify", "--init", str(base / "pre"), "--data", str(base / "sms.txt"), "--lr", "3e-3",
            "--batch-size", "4", "--quiet", "--epochs", "1", "--train", "lora", "--lora-rank", "4",
            "--lora-alpha", "8"]
    assert main(args + ["--out", str(tmp_path / "lora")]) == 0
    capsys.readouterr()
    folder = tmp_path / "lora" / "model"
    assert {p.name for p in folder.iterdir()} == {"adapter.safetensors", "adapter_config.json", "tokenizer.json"}
    metrics = json.loads((tmp_path / "lora" / "metrics.json").read_text())
    assert metrics["trainable_parameters"] == 2 * 4 * (256 + 128 + 320 + 320) + 64 * 2 + 2
    a = Classifier.from_pretrained(folder).predict_proba(["free prize call", "lunch love"])
    b = Classifier.from_pretrained(tmp_path / "lora").predict_proba(["free prize call", "lunch love"])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert main(args + ["--out", str(tmp_path / "merged"), "--merge"]) == 0
    merged = tmp_path / "merged" / "model"
    assert {p.name for p in merged.iterdir()} == {"config.json", "model.safetensors", "score.safetensors", "tokenizer.json"}
    c = Classifier.from_pretrained(merged).predict_proba(["free prize call", "lunch love"])
    np.testing.assert_allclose(a, c, rtol=1e-4, atol=1e-5)  # same seed, same run: merge changes nothing
    # a rank above a layer's width works (the book's rank 16 on a 768 -> 2 head), with one warning
    from minigpt.nn import apply_lora
    from minigpt.loading import load_model_and_tokenizer
    model, _ = load_model_and_tokenizer(base / "pre")
    with pytest.warns(UserWarning, match="larger than the width"):
        apply_lora(model, rank=100, alpha=8)
