"""Finetuning, gradcheck and run-folder hardening: every bad option or data file is a one-line error (exit
status 2) before any work, nothing is coerced silently, and temporary files of killed processes are cleaned
without touching a live process's."""
import json
import os
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

from minigpt import MiniGPTError
from minigpt.cli import main
from minigpt.data.classification import check_label_config, read_labelled
from minigpt.data.instruct import collate, read_instructions
from minigpt.settings import ClassifyConfig, InstructConfig, TrainConfig
from minigpt.train import pretrain


def quiet(_msg):
    pass


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A tiny pretrained model, labelled texts (40 ham, 20 spam) and 40 instruction entries."""
    d = tmp_path_factory.mktemp("hard")
    (d / "text.txt").write_text("You won a free prize, call now. See you at lunch, love. Below is an instruction. "
                                "### Response: Blue is a colour. Numbers 0123456789 and CAPITALS too. " * 60)
    cfg = TrainConfig(steps=2, batch_size=2, warmup=1, eval_every=2, eval_batches=1, sample_tokens=4, seed=1)
    pretrain(d / "pre", text_files=[d / "text.txt"], config="nano", config_overrides={"context_length": 32},
             tokenizer="bpe", vocab_size=280, train_cfg=cfg, progress=False, log=quiet)
    rows = [f"ham\tsee you at lunch {i} love" if i % 3 else f"spam\tWIN a FREE prize now call {i}!!!"
            for i in range(60)]
    (d / "sms.txt").write_text("\n".join(rows) + "\n")
    entries = [{"instruction": f"Name colour {i}.", "input": "", "output": "Blue."} for i in range(40)]
    (d / "ins.json").write_text(json.dumps(entries))
    return d


def one_line_error(capsys, argv, *needles):
    """Run the CLI in process: exit status 2 and one line ``minigpt: error: ...`` holding every needle."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("minigpt: error: ") and err.count("\n") == 1, err
    for n in needles:
        assert n in err, err
    return err


# --- options, checked before any work ----------------------------------------------------------------
CLASSIFY_BAD = [
    (["--epochs", "inf"], "epochs must be a finite number > 0, got inf"),
    (["--epochs", "nan"], "epochs must be a finite number > 0, got nan"),
    (["--epochs", "0"], "epochs must be a finite number > 0"),
    (["--epochs", "-1"], "epochs must be a finite number > 0"),
    (["--split", "nan,nan,nan"], "split must be three fractions > 0"),
    (["--split", "0,0,1"], "split must be three fractions > 0"),
    (["--split", "1,0,0"], "split must be three fractions > 0"),
    (["--split", "0.5,0.5"], "split must be three fractions > 0"),
    (["--seed", "-1"], "seed must be an integer >= 0, got -1"),
    (["--train", "lora", "--lora-alpha", "nan"], "lora-alpha must be a finite number > 0 and <= 10000, got nan"),
    (["--train", "lora", "--lora-alpha", "inf"], "lora-alpha must be a finite number > 0"),
    (["--train", "lora", "--lora-alpha", "1e30"], "lora-alpha must be a finite number > 0 and <= 10000"),
    (["--train", "lora", "--lora-alpha", "0"], "lora-alpha must be a finite number > 0"),
    (["--train", "lora", "--lora-alpha", "-1"], "lora-alpha must be a finite number > 0"),
    (["--train", "lora", "--lora-rank", "0"], "lora-rank must be an integer >= 1"),
    (["--max-length", "0"], "max-length must be an integer >= 1, got 0"),
    (["--lr", "0"], "lr must be a finite number > 0"),
    (["--lr", "nan"], "lr must be a finite number > 0"),
    (["--batch-size", "0"], "batch-size must be an integer >= 1"),
    (["--weight-decay", "-1"], "weight-decay must be a finite number >= 0"),
    (["--warmup", "-1"], "warmup must be an integer >= 0"),
    (["--grad-clip", "inf"], "grad-clip must be a finite number >= 0"),
    (["--format", "xml"], "unknown data format 'xml'"),
    (["--train", "bogus"], "--train 'bogus': expected one of head, last-blocks:K, all, lora"),
    (["--lr", "x"], "argument --lr: invalid float value: 'x'"),
]


@pytest.mark.parametrize("extra, message", CLASSIFY_BAD)
def test_classify_options_refused_before_any_work(base, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    one_line_error(capsys, ["finetune", "classify", "--init", str(base / "pre"), "--data", str(base / "sms.txt"),
                            "--out", str(out), "--quiet"] + extra, message)
    assert not out.exists()


INSTRUCT_BAD = [
    (["--epochs", "0"], "epochs must be a finite number > 0"),
    (["--epochs", "-1"], "epochs must be a finite number > 0"),
    (["--epochs", "inf"], "epochs must be a finite number > 0"),
    (["--epochs", "nan"], "epochs must be a finite number > 0"),
    (["--eval-limit", "0"], "eval-limit must be an integer >= 1, got 0"),
    (["--eval-limit", "-1"], "eval-limit must be an integer >= 1, got -1"),
    (["--max-length", "0"], "max-length must be an integer >= 1"),
    (["--max-new-tokens", "0"], "max-new-tokens must be an integer >= 1"),
    (["--train", "lora", "--lora-alpha", "nan"], "lora-alpha must be a finite number > 0"),
    (["--lr", "-1"], "lr must be a finite number > 0"),
    (["--batch-size", "0"], "batch-size must be an integer >= 1"),
    (["--weight-decay", "nan"], "weight-decay must be a finite number >= 0"),
    (["--warmup", "-1"], "warmup must be an integer >= 0"),
    (["--seed", "-1"], "seed must be an integer >= 0"),
    (["--template", "chatml"], "unknown template 'chatml'; known: alpaca, phi3"),
    (["--train", "last-blocks:0"], "K must be an integer >= 1"),
    (["--judge-url", "notaurl"], "--judge-url 'notaurl': expected an http:// or https:// URL"),
    (["--judge-url", "http://localhost:port"], "--judge-url 'http://localhost:port': not a valid URL"),
    (["--batch-size", "2.5"], "argument --batch-size: invalid int value: '2.5'"),
]


@pytest.mark.parametrize("extra, message", INSTRUCT_BAD)
def test_instruct_options_refused_before_any_work(base, tmp_path, capsys, extra, message):
    out = tmp_path / "run"
    one_line_error(capsys, ["finetune", "instruct", "--init", str(base / "pre"), "--data", str(base / "ins.json"),
                            "--out", str(out), "--quiet"] + extra, message)
    assert not out.exists()


def test_configs_refuse_wrong_types_instead_of_coercing():
    for kw, message in (({"epochs": True}, "epochs must be a finite number"),
                        ({"batch_size": 2.5}, "batch-size must be an integer"),
                        ({"max_length": True}, "max-length must be an integer"),
                        ({"balance": 1}, "balance must be true or false")):
        with pytest.raises(MiniGPTError, match=message):
            ClassifyConfig(**kw)
    with pytest.raises(MiniGPTError, match="eval-limit must be an integer >= 1"):
        InstructConfig(eval_limit=2.0)
    with pytest.raises(MiniGPTError, match="seed must be an integer >= 0"):
        TrainConfig(seed=-1)


@pytest.mark.parametrize("argv, message", [
    (["gradcheck", "gelu", "--shape", "3", "--atol", "nan"], "gradcheck: atol must be a finite number >= 0, got nan"),
    (["gradcheck", "gelu", "--shape", "3", "--rtol", "nan"], "gradcheck: rtol must be a finite number >= 0, got nan"),
    (["gradcheck", "gelu", "--shape", "3", "--eps", "0"], "gradcheck: eps must be a finite number > 0, got 0.0"),
    (["gradcheck", "gelu", "--shape", "3", "--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
    (["gradcheck", "linear", "--shape", ""], "has too few dimensions for linear's inputs"),
    (["gradcheck", "cross_entropy", "--shape", ""], "has too few dimensions for cross_entropy's inputs"),
    (["graph", "--out", "g.dot", "--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["profile", "--seed", "-1"], "argument --seed: expected an integer >= 0"),
    (["profile", "--config", "nano", "--seq-len", "0"], "--seq-len must be in 1..64"),
    (["train", "--seed", "-1", "--out", "never"], "seed must be an integer >= 0, got -1"),
])
def test_inspect_and_train_options_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(capsys, argv, message)
    assert not (tmp_path / "never").exists() and not (tmp_path / "g.dot").exists()


def test_gradcheck_nan_tolerance_never_passes_a_wrong_gradient():
    from minigpt import Tensor, gradcheck
    from minigpt.ops import mul

    wrong = lambda x: mul(x, x).detach() * 0 + x  # noqa: E731 - its gradient is 1, the numeric one is too
    x = Tensor(np.array([0.3, -0.2]), requires_grad=True)
    assert gradcheck(wrong, x)["ok"]
    with pytest.raises(MiniGPTError, match="atol must be a finite number >= 0, got nan"):
        gradcheck(lambda t: t * t, x, atol=float("nan"))


def test_argparse_errors_are_one_line(capsys):
    err = one_line_error(capsys, ["finetune", "classify", "--out", "x", "--lr", "x"],
                         "argument --lr: invalid float value: 'x'", "minigpt finetune classify --help")
    assert "usage:" not in err


# --- data that leaves nothing to train or test ----------------------------------------------------------
@pytest.mark.parametrize("rows, extra, message", [
    (["ham\thello there", "spam\twin now"], [], "the train split is empty (0/0/2"),
    (["ham\thello there", "spam\twin now", "ham\tsee you", "spam\tprize", "ham\tok then", "spam\tcall now"], [],
     "the validation split is empty"),
    (["ham\thello there", "ham\tsee you", "ham\tok", "ham\tyes", "spam\twin now"], ["--no-balance"],
     "no training example of class(es) 'spam' ('spam' has 1 in all)"),
])
def test_classification_data_too_small_refused_before_training(base, tmp_path, capsys, rows, extra, message):
    (tmp_path / "d.txt").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    one_line_error(capsys, ["finetune", "classify", "--init", str(base / "pre"), "--data", str(tmp_path / "d.txt"),
                            "--format", "sms", "--out", str(out), "--quiet"] + extra, message)
    assert not (out / "log.jsonl").exists()


@pytest.mark.parametrize("n, split", [(1, "0/0/1"), (2, "1/1/0"), (5, "4/1/0"), (9, "7/2/0")])
def test_instruction_data_too_small_refused_before_any_work(base, tmp_path, capsys, n, split):
    data = tmp_path / "ins.json"
    data.write_text(json.dumps([{"instruction": "a", "input": "", "output": "b"}] * n))
    out = tmp_path / "run"
    one_line_error(capsys, ["finetune", "instruct", "--init", str(base / "pre"), "--data", str(data),
                            "--out", str(out), "--quiet"],
                   f"{n} entries split into", "use at least 10 entries")
    assert not out.exists()


def test_byte_order_mark_is_not_part_of_the_data(tmp_path):
    bom = "\ufeff"
    (tmp_path / "d.csv").write_text(bom + "text,label\nhello,ham\nwin,spam\n", encoding="utf-8")
    (tmp_path / "d.tsv").write_text(bom + "text\tlabel\nhello\tham\nwin\tspam\n", encoding="utf-8")
    (tmp_path / "d.jsonl").write_text(bom + '{"text": "hello", "label": "ham"}\n{"text": "win", "label": "spam"}\n',
                                      encoding="utf-8")
    (tmp_path / "sms").write_text(bom + "ham\thello\nspam\twin\n", encoding="utf-8")
    for name in ("d.csv", "d.tsv", "d.jsonl", "sms"):
        texts, labels, _ = read_labelled(tmp_path / name)
        assert texts == ["hello", "win"] and labels == ["ham", "spam"], name
    (tmp_path / "i.json").write_text(bom + json.dumps([{"instruction": "a", "input": "", "output": "b"}]),
                                     encoding="utf-8")
    assert read_instructions(tmp_path / "i.json")[0]["output"] == "b"


@pytest.mark.parametrize("name, content, message", [
    ("mixed.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "1"}\n',
     "mixed.jsonl:2: label \"1\" is a string but line 1's label 1 is an integer"),
    ("null.jsonl", '{"text": "a", "label": null}\n{"text": "b", "label": "x"}\n',
     "null.jsonl:1: 'label' must be a string or an integer, got null"),
    ("float.jsonl", '{"text": "a", "label": 1.5}\n{"text": "b", "label": 2}\n', "got a number"),
    ("nested.jsonl", '{"text": "a", "label": {"x": 1}}\n', "'label' must be a string or an integer, got an object"),
    ("list.jsonl", '[1, 2]\n', "list.jsonl:1: expected a JSON object, got a list"),
    ("deep.jsonl", '{"text": ' + "[" * 100000 + "]" * 100000 + "}\n", "deep.jsonl:1: not valid JSON (nested too deeply)"),
    ("long.csv", "text,label\n" + "x" * 140000 + ",ham\ny,spam\n", "long.csv:2: not a valid CSV row (field larger"),
])
def test_labelled_data_refused_not_coerced(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(MiniGPTError) as e:
        read_labelled(tmp_path / name)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("id2label, kw, message", [
    ({"0": "ham", "1": 1}, {}, "id2label[1] must be a non-empty string, got 1"),
    ({"0": "ham", "1": None}, {}, "id2label[1] must be a non-empty string, got null"),
    ({"0": "ham", "1": "ham"}, {}, "id2label names 'ham' twice"),
    ({"0": "ham", "2": "spam"}, {}, "id2label keys must be class ids 0..1"),
    (["ham"], {}, "needs at least two labels"),
    (["ham", "spam"], {"num_labels": "2"}, 'num_labels must be an integer, got "2"'),
    (["ham", "spam"], {"num_labels": 2.7}, "num_labels must be an integer, got 2.7"),
    (["ham", "spam"], {"num_labels": 3}, "num_labels is 3 but id2label names 2 labels"),
    (["ham", "spam"], {"max_length": 2.5}, "max_length must be an integer >= 1, got 2.5"),
    (["ham", "spam"], {"max_length": True}, "max_length must be an integer >= 1, got true"),
    (["ham", "spam"], {"max_length": 0}, "max_length must be an integer >= 1, got 0"),
])
def test_classifier_label_config_refused_not_coerced(id2label, kw, message):
    with pytest.raises(MiniGPTError) as e:
        check_label_config(id2label, where="x/config.json", **kw)
    assert str(e.value).startswith("x/config.json: ") and message in str(e.value)
    assert check_label_config({"0": "ham", "1": "spam"}, 2, 16) == ["ham", "spam"]


def test_collate_truncates_each_sequence_before_padding():
    """One huge entry costs max_length columns, never a batch-wide array of its raw length."""
    long = np.arange(2_000_000, dtype=np.int64) % 1000
    tracemalloc.start()
    try:
        x, y = collate([long, [1, 2, 3]], pad_id=50256, max_length=16)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert x.shape == y.shape == (2, 16) and peak < 2_000_000  # the raw length padded: 2 x 16 MB and more
    assert x[0].tolist() == list(range(16)) and y[0].tolist() == list(range(1, 17))
    assert x[1].tolist()[:5] == [1, 2, 3, 50256, 50256] and y[1].tolist()[:5] == [2, 3, 50256, -100, -100]
    with pytest.raises(MiniGPTError, match="max_length must be an integer >= 1, got 0"):
        collate([[1, 2]], pad_id=0, max_length=0)


# --- MPI ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task", ["classify", "instruct"])
def test_finetuning_refused_under_mpi(base, tmp_path, capsys, monkeypatch, task):
    monkeypatch.setenv("PMI_RANK", "1")
    monkeypatch.setenv("PMI_SIZE", "2")
    out = tmp_path / "run"
    data = base / ("sms.txt" if task == "classify" else "ins.json")
    one_line_error(capsys, ["finetune", task, "--init", str(base / "pre"), "--data", str(data), "--out", str(out)],
                   f"finetune {task} runs in a single process, but MPI started 2 ranks")
    assert not out.exists()


# --- resuming a damaged run -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clf_run(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("clfrun") / "run"
    assert main(["finetune", "classify", "--init", str(base / "pre"), "--data", str(base / "sms.txt"),
                 "--format", "sms", "--epochs", "1", "--batch-size", "8", "--out", str(out), "--quiet"]) == 0
    return out


def _state_path(run):
    latest = json.loads((run / "latest.json").read_text())["checkpoint"]
    return run / latest / "trainer_state.json"


@pytest.mark.parametrize("damage, message", [
    (lambda s: s.update(classify=[1]), "'classify' must be a JSON object"),
    (lambda s: s["classify"].update(bogus=1), "unknown classify field(s) ['bogus']"),
    (lambda s: s["classify"].update(split="0.7"), "classify.split must be a list"),
    (lambda s: s["classify"].update(epochs="many"), "classify.epochs must be a finite number > 0"),
    (lambda s: s["classify"].update(lora_alpha=None), "classify.lora-alpha must be a finite number"),
    (lambda s: s.update(data=5), "'data' must be a path"),
])
def test_resume_names_a_damaged_classify_section(clf_run, tmp_path, capsys, damage, message):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(clf_run, run)
    path = _state_path(run)
    state = json.loads(path.read_text())
    damage(state)
    path.write_text(json.dumps(state))
    one_line_error(capsys, ["finetune", "classify", "--out", str(run), "--resume", "--quiet"],
                   "trainer_state.json is damaged", message)


def test_classify_escapes_terminal_control_sequences(clf_run, capsys):
    capsys.readouterr()
    assert main(["classify", "--model", str(clf_run), "\x1b[2J\x1b[31mcall now\x1b[0m\rfree"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and out.count("\n") == 1
    assert out.rstrip("\n").endswith("\\x1b[2J\\x1b[31mcall now\\x1b[0m\\rfree")


@pytest.fixture(scope="module")
def instruct_run(base, tmp_path_factory):
    out = tmp_path_factory.mktemp("insrun") / "run"
    assert main(["finetune", "instruct", "--init", str(base / "pre"), "--data", str(base / "ins.json"),
                 "--epochs", "0.2", "--batch-size", "4", "--max-new-tokens", "2", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.mark.parametrize("what, content, message", [
    ("responses", "{}", "responses_before.json is not a valid responses_before.json (expected a JSON list"),
    ("responses", "[1, 2, 3, 4]", "responses_before.json is damaged: expected a list of 4 answers"),
    ("responses", '["a"]', "responses_before.json is damaged: expected a list of 4 answers"),
    ("state", {"template": "chatml"}, "instruct.unknown template 'chatml'"),
    ("state", {"max_new_tokens": -3}, "instruct.max-new-tokens must be an integer >= 1"),
    ("state", {"nonsense": 1}, "unknown instruct field(s) ['nonsense']"),
])
def test_resume_names_damaged_instruct_files(instruct_run, tmp_path, capsys, what, content, message):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(instruct_run, run)
    if what == "responses":
        (run / "responses_before.json").write_text(content)
    else:
        path = _state_path(run)
        state = json.loads(path.read_text())
        state["instruct"].update(content)
        path.write_text(json.dumps(state))
    one_line_error(capsys, ["finetune", "instruct", "--out", str(run), "--resume", "--quiet"], message)


# --- temporary files of killed processes -----------------------------------------------------------------
def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temporaries_of_dead_processes_are_cleaned_live_ones_kept(tmp_path):
    from minigpt.train.loop import clean_run_folder

    live = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'w'); time.sleep(60)",
                             str(tmp_path / ".scores.json.held.tmp")])
    try:
        dead = _dead_pid()
        ck = tmp_path / "checkpoints"
        (ck / f".tmp-step-000004-{dead}").mkdir(parents=True)          # a dead process's half-written checkpoint
        (ck / f".tmp-step-000004-{dead}" / "model.safetensors").write_bytes(b"x")
        (ck / f".tmp-step-000006-{live.pid}").mkdir()                  # a live process's: kept
        (ck / f".old-step-000002-{dead}").mkdir()                      # moved aside, never replaced: restored
        (ck / f".old-step-000002-{dead}" / "config.json").write_text("{}")
        (tmp_path / f".tmp-model-{dead}").mkdir()
        (tmp_path / ".latest.json.k2j3h4.tmp").write_text("{")          # an atomic write cut by a kill
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / ".model.safetensors.a8b7.tmp").write_bytes(b"xx")
        (tmp_path / ".metrics.json.fresh.tmp").write_text("{")          # being written right now: kept
        old = time.time() - 60
        for p in (tmp_path / ".latest.json.k2j3h4.tmp", tmp_path / "model" / ".model.safetensors.a8b7.tmp"):
            os.utime(p, (old, old))
        deadline = time.time() + 30
        while not (tmp_path / ".scores.json.held.tmp").exists() and time.time() < deadline:
            time.sleep(0.05)
        os.utime(tmp_path / ".scores.json.held.tmp", (old, old))       # old, but open in a live process: kept
        removed = {p.name for p in clean_run_folder(tmp_path)}
        assert removed == {f".tmp-step-000004-{dead}", f".old-step-000002-{dead}", f".tmp-model-{dead}",
                           ".latest.json.k2j3h4.tmp", ".model.safetensors.a8b7.tmp"}
        assert (ck / "step-000002" / "config.json").read_text() == "{}"
        left = sorted(p.name for p in tmp_path.rglob(".*"))
        assert left == sorted([f".tmp-step-000006-{live.pid}", ".metrics.json.fresh.tmp", ".scores.json.held.tmp"])
    finally:
        live.kill()
        live.wait()


def test_save_checkpoint_leaves_other_live_processes_temporaries(tmp_path):
    from minigpt.model import GPT, GPTConfig
    from minigpt.optim import AdamW
    from minigpt.train.loop import save_checkpoint

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _dead_pid()
        ck = tmp_path / "checkpoints"
        (ck / f".tmp-step-000001-{live.pid}").mkdir(parents=True)
        (ck / f".tmp-step-000001-{dead}").mkdir()
        model = GPT(GPTConfig.preset("nano", vocab_size=64, context_length=8))
        save_checkpoint(tmp_path, 2, model, AdamW(model.parameters()), None, {"step": 2})
        names = sorted(p.name for p in ck.iterdir())
        assert names == [f".tmp-step-000001-{live.pid}", "step-000002"]
    finally:
        live.kill()
        live.wait()


def test_a_classifier_with_coerced_labels_or_length_is_refused(clf_run):
    """What the classifier folder's loader hands over is checked again where it is used."""
    from minigpt.train.classify import Classifier

    clf = Classifier.from_pretrained(clf_run)
    for attr, value, message in (("max_length", 2.5, "max_length must be an integer >= 1, got 2.5"),
                                 ("max_length", True, "max_length must be an integer >= 1, got true"),
                                 ("id2label", ["ham", "ham"], "id2label names 'ham' twice"),
                                 ("id2label", ["ham", None], "id2label[1] must be a non-empty string, got null")):
        old = getattr(clf.model, attr)
        setattr(clf.model, attr, value)
        try:
            with pytest.raises(MiniGPTError, match="^the classifier: " + message.replace("[", r"\[")
                               .replace("]", r"\]").replace(".", r"\.")):
                Classifier(clf.model, clf.tokenizer)
        finally:
            setattr(clf.model, attr, old)
    assert Classifier(clf.model, clf.tokenizer).labels == ["ham", "spam"]


def test_instruction_dataset_keeps_only_what_collate_uses():
    from minigpt.data.instruct import InstructionDataset

    class Chars:
        def encode_ordinary(self, text):
            return [ord(c) % 256 for c in text]

    entries = [{"instruction": "a", "input": "", "output": "b" * 100_000}, {"instruction": "c", "input": "", "output": "d"}]
    ds = InstructionDataset(entries, Chars(), "alpaca", pad_id=0, max_length=200)  # entry 1: 142 ids
    assert ds.truncated == 1 and [len(s) for s in ds.ids] == [201, 142]
    x, y = ds.get_batch([0, 1])
    assert x.shape == (2, 200)


@pytest.mark.parametrize("content, message", [
    ('{"template": 5}', "instruct.json is damaged: 'template' must be one of alpaca, phi3, got '5'"),
    ("[1]", "expected a JSON object at the top level"),
    ("[" * 100000, "nested too deeply"),
])
def test_a_damaged_instruct_json_is_named(instruct_run, tmp_path, capsys, monkeypatch, content, message):
    import io
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(instruct_run, run)
    (run / "instruct.json").write_text(content)
    monkeypatch.setattr("sys.stdin", io.StringIO("Name colour 3.\n"))
    one_line_error(capsys, ["chat", "--model", str(run), "--max-new-tokens", "2"], "instruct.json", message)
