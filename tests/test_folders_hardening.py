"""Model folders beyond the plain GPT-2 files: LoRA adapters (beside the weights or in an adapter-only
folder), classifier heads and int8 folders. Each hostile or unusual folder is either used correctly (int8
bases dequantized, adapters merged before quantizing or stacking) or refused with a one-line error naming
the file and the field or tensor: never a traceback, a hang, random weights or a silent wrong result."""
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from minigpt import random as mrandom
from minigpt.cli import main
from minigpt.errors import MiniGPTError
from minigpt.io import read_json
from minigpt.kernels.int8 import dequantize_int8
from minigpt.loading import load_model_and_tokenizer
from minigpt.model import GPT, GPTClassifier, GPTConfig
from minigpt.model.folders import load_model, save_adapters, save_model, weights_sha256
from minigpt.nn import apply_lora, merge_lora
from minigpt.tensor import no_grad
from minigpt.tokenizer import BPETokenizer

TEXT = ("You won a free prize, call now. See you at lunch, love. Which bird flies over the quiet harbour at "
        "dawn? Numbers 0123456789 and CAPITALS too. ") * 20
IDS = np.array([[5, 17, 42, 99, 3, 250]])


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, *words):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("minigpt: error: "), err
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture(scope="module")
def tok():
    return BPETokenizer.train(TEXT, vocab_size=280)


def nano(tok, seed=0, **kw):
    mrandom.manual_seed(seed)
    return GPT(GPTConfig.preset("nano", vocab_size=tok.vocab_size, context_length=32, **kw))


def logits(model, ids=IDS):
    model.eval()
    with no_grad():
        return model(ids).data.copy()


def lora_model(model, seed=1, **kw):
    """``model`` with LoRA layers whose B matrices are non-zero (as after training)."""
    apply_lora(model, rank=kw.pop("rank", 4), alpha=kw.pop("alpha", 8.0), **kw)
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if name.endswith("lora_B"):
            p.data[...] = rng.normal(0, 0.2, p.shape).astype(p.dtype)
    return model


def folder(path, model, tok, adapters_of_base=None):
    """A model folder (save_model: adapters beside the weights), or with ``adapters_of_base`` an adapter-only
    folder over that base; with the tokenizer."""
    if adapters_of_base is None:
        save_model(model, path)
    else:
        save_adapters(model, path, adapters_of_base)
    tok.save(Path(path) / "tokenizer.json")
    return Path(path)


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tok):
    """base/ (float LM), int8/ (its int8 copy), lora/ (base + LoRA beside), clf/ (classifier),
    clf_lora/ (adapter-only classifier folder over base/), sms.txt (labelled texts)."""
    d = tmp_path_factory.mktemp("folders")
    base = nano(tok)
    folder(d / "base", base, tok)
    q = nano(tok).quantize()
    q.save_pretrained(d / "int8")
    tok.save(d / "int8" / "tokenizer.json")
    folder(d / "lora", lora_model(nano(tok)), tok)
    mrandom.manual_seed(3)
    clf = GPTClassifier.from_gpt(nano(tok), ["ham", "spam"])
    folder(d / "clf", clf, tok)
    mrandom.manual_seed(4)
    clf2 = GPTClassifier.from_gpt(nano(tok), ["ham", "spam"])
    apply_lora(clf2, rank=2, alpha=4.0, train_also=("score",))
    folder(d / "clf_lora", clf2, tok, adapters_of_base=d / "base")
    rng = np.random.default_rng(0)
    rows = [f"ham\tsee you at lunch {rng.integers(100)} love" if i % 3 else
            f"spam\tWIN a FREE prize now call {rng.integers(1000)}!!!" for i in range(60)]
    (d / "sms.txt").write_text("\n".join(rows) + "\n")
    return d


def copy_folder(src, dst):
    dst.mkdir(parents=True)
    for p in Path(src).iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def edit_json(path, **fields):
    d = json.loads(path.read_text())
    for k, v in fields.items():
        if v is KeyError:
            d.pop(k, None)
        else:
            d[k] = v
    path.write_text(json.dumps(d))


# --- 1. generate|chat --quantize int8 on a LoRA model ------------------------------------------------------
def test_quantizing_a_lora_model_merges_its_adapters_first(folders, tok, capsys, monkeypatch):
    from minigpt.cli.generate import _load_model_and_tokenizer

    float_lora = logits(load_model(folders / "lora"))
    int8_lora = logits(_load_model_and_tokenizer(folders / "lora", None, "int8")[0])
    int8_base = logits(_load_model_and_tokenizer(folders / "base", None, "int8")[0])
    # (the adapters used to be dropped: int8(LoRA) equalled int8(base) exactly)
    assert np.abs(int8_lora - int8_base).max() > 0.05
    np.testing.assert_allclose(int8_lora, float_lora, atol=0.02)  # only the int8 rounding differs
    assert np.abs(int8_lora - float_lora).max() < 0.2 * np.abs(int8_base - float_lora).max()
    code, out, err = run_cli(capsys, "generate", "--model", folders / "lora", "--prompt", "free", "--quantize",
                             "int8", "--max-new-tokens", "3", "--seed", "1")
    assert code == 0, err
    monkeypatch.setattr(sys, "stdin", io.StringIO("free prize\n"))
    code, out, err = run_cli(capsys, "chat", "--model", folders / "lora", "--quantize", "int8", "--max-new-tokens", "2")
    assert code == 0, err
    # the library refuses rather than quantize the frozen base weights alone
    m = load_model(folders / "lora")
    with pytest.raises(MiniGPTError, match="carries LoRA adapters: fold them"):
        m.quantize()
    merge_lora(m)
    m.quantize()


def test_minigpt_quantize_merges_a_lora_model(folders, tmp_path, capsys):
    code, out, err = run_cli(capsys, "quantize", "--model", folders / "lora", "--out", tmp_path / "q")
    assert code == 0, err
    assert not (tmp_path / "q" / "adapter.safetensors").exists() and (tmp_path / "q" / "tokenizer.json").exists()
    np.testing.assert_allclose(logits(load_model(tmp_path / "q")), logits(load_model(folders / "lora")), atol=0.02)


# --- 2. finetuning from an int8 folder ---------------------------------------------------------------------
def test_finetuning_an_int8_folder_starts_from_its_dequantized_weights(folders, tmp_path):
    q = load_model(folders / "int8")
    assert q.quantization
    m, _ = load_model_and_tokenizer(folders / "int8", for_training=True)
    assert not m.quantization and all(p.requires_grad for p in m.parameters())
    qkv = q.blocks[1].attn.qkv
    np.testing.assert_array_equal(m.blocks[1].attn.qkv.weight.data, dequantize_int8(qkv.q, qkv.scales).T)
    np.testing.assert_allclose(logits(m), logits(q), atol=1e-5)
    with pytest.raises(MiniGPTError, match="cannot be built on an int8 model"):
        GPTClassifier.from_gpt(q, ["a", "b"])  # (it used to keep random block weights: strict=False)
    clf = GPTClassifier.from_gpt(m, ["a", "b"]).quantize()
    with pytest.raises(MiniGPTError, match="an int8 classifier cannot be saved"):
        clf.save_pretrained(tmp_path / "c")  # (it wrote a folder without its int8 weights)


def test_cli_classify_from_an_int8_folder_keeps_the_base_weights(folders, tmp_path, capsys):
    code, out, err = run_cli(capsys, "finetune", "classify", "--init", folders / "int8", "--data",
                             folders / "sms.txt", "--format", "sms", "--train", "head", "--epochs", "1",
                             "--batch-size", "8", "--quiet", "--out", tmp_path / "run")
    assert code == 0, err
    got = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    q = load_model(folders / "int8")
    for i in range(2):  # --train head: the blocks are the int8 base's weights, dequantized
        qkv = q.blocks[i].attn.qkv
        np.testing.assert_array_equal(got[f"transformer.h.{i}.attn.c_attn.weight"], dequantize_int8(qkv.q, qkv.scales).T)


def test_lora_classifier_over_an_int8_base(folders, tok, tmp_path):
    base, _ = load_model_and_tokenizer(folders / "int8", for_training=True)
    mrandom.manual_seed(5)
    clf = GPTClassifier.from_gpt(base, ["ham", "spam"])
    apply_lora(clf, rank=2, alpha=4.0, train_also=("score",))
    want = clf(IDS).data
    folder(tmp_path / "ad", clf, tok, adapters_of_base=folders / "int8")
    back = load_model(tmp_path / "ad")
    np.testing.assert_allclose(back(IDS).data, want, rtol=1e-5, atol=1e-6)


def test_instruct_from_an_int8_folder_loads_float_weights_before_any_work(folders, tmp_path, monkeypatch):
    import minigpt.train.instruct as instruct

    seen = {}

    def stop(model, *a, **kw):  # the untuned answer pass: the model must already be a float, trainable one
        seen["quantized"] = model.quantization
        raise KeyboardInterrupt

    monkeypatch.setattr(instruct, "answer_all", stop)
    data = tmp_path / "d.json"
    data.write_text(json.dumps([{"instruction": f"say {i}", "input": "", "output": f"{i}"} for i in range(20)]))
    with pytest.raises(KeyboardInterrupt):
        instruct.finetune_instruct(tmp_path / "run", folders / "int8", data, progress=False, log=lambda m: None)
    assert seen == {"quantized": None}


# --- 3. minigpt quantize --out --------------------------------------------------------------------------
def test_quantize_refuses_a_non_empty_out_unless_forced(folders, tmp_path, capsys):
    out = copy_folder(folders / "clf", tmp_path / "out")  # someone's classifier
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run_cli(capsys, "quantize", "--model", folders / "base", "--out", out)
    one_line_error(code, err, str(out), "not empty", "--force")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    code, _, err = run_cli(capsys, "quantize", "--model", folders / "base", "--out", out, "--force")
    assert code == 0, err
    # the whole folder is replaced: no stale head or label config left to mix with the int8 weights
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "tokenizer.json"}
    assert load_model(out).quantization == {"scheme": "int8", "group_size": 0}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left
    (tmp_path / "empty").mkdir()
    assert run_cli(capsys, "quantize", "--model", folders / "base", "--out", tmp_path / "empty")[0] == 0
    (tmp_path / "file").write_text("x")
    one_line_error(*run_cli(capsys, "quantize", "--model", folders / "base", "--out", tmp_path / "file")[::2], "is a file")
    one_line_error(*run_cli(capsys, "quantize", "--model", folders / "base", "--out", folders, "--force")[::2],
                   "holds the model being quantized")


def test_quantize_killed_while_writing_leaves_the_old_folder(folders, tmp_path, capsys, monkeypatch):
    out = copy_folder(folders / "base", tmp_path / "out")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = GPT.save_pretrained

    def killed(self, path):  # the weights are written, then the process dies before config.json
        real(self, path)
        (Path(path) / "config.json").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(GPT, "save_pretrained", killed)
    assert main(["quantize", "--model", str(folders / "lora"), "--out", str(out), "--force"]) != 0
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    # what a SIGKILL leaves (no cleanup ran): a temporary folder of a dead process; the next quantize removes it
    monkeypatch.setattr(GPT, "save_pretrained", real)
    proc = subprocess.Popen([sys.executable, "-c", ""])
    proc.wait()
    dead = proc.pid
    (tmp_path / f".tmp-out-{dead}").mkdir()
    (tmp_path / f".tmp-out-{dead}" / "model.safetensors").write_bytes(b"partial")
    assert main(["quantize", "--model", str(folders / "base"), "--out", str(out), "--force"]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


# --- 4. heads and adapters checked like the model's own tensors --------------------------------------------
def _damage_tensor(file, name, fn):
    t = load_file(str(file))
    from safetensors import safe_open
    with safe_open(str(file), "np") as f:
        meta = f.metadata()
    t[name] = fn(t[name])
    save_file(t, str(file), metadata=meta)


def _set_meta(file, **meta):
    from safetensors import safe_open
    with safe_open(str(file), "np") as f:
        m = dict(f.metadata() or {})
    m.update({k: str(v) for k, v in meta.items()})
    save_file(load_file(str(file)), str(file), metadata=m)


def _drop_tensor(file, name):
    from safetensors import safe_open
    with safe_open(str(file), "np") as f:
        meta = f.metadata()
    t = load_file(str(file))
    del t[name]
    save_file(t, str(file), metadata=meta)


def _nan(a):
    a = a.copy()
    a.flat[0] = np.nan
    return a


def _inf(a):
    a = a.copy()
    a.flat[-1] = np.inf
    return a


LORA_NAME = "blocks.0.attn.qkv.lora_A"
HEAD_CASES = [
    ("clf", "score.safetensors", lambda f: _damage_tensor(f, "score.weight", _nan), ["score.weight", "NaN"]),
    ("clf", "score.safetensors", lambda f: _damage_tensor(f, "score.bias", _inf), ["score.bias", "NaN or infinity"]),
    ("clf", "score.safetensors", lambda f: _damage_tensor(f, "score.bias", lambda a: a.astype(np.int64)),
     ["score.bias", "I64", "floating point"]),
    ("clf", "score.safetensors", lambda f: _drop_tensor(f, "score.bias"), ["lacks the tensor score.bias"]),
    ("clf_lora", "adapter.safetensors", lambda f: _damage_tensor(f, LORA_NAME, _nan), [LORA_NAME, "NaN"]),
    ("clf_lora", "adapter.safetensors", lambda f: _damage_tensor(f, LORA_NAME, lambda a: a > 0),
     [LORA_NAME, "BOOL", "floating point"]),
    ("clf_lora", "adapter.safetensors", lambda f: _damage_tensor(f, LORA_NAME, lambda a: a.astype(np.int64)),
     [LORA_NAME, "I64"]),
    ("clf_lora", "adapter.safetensors", lambda f: _drop_tensor(f, LORA_NAME), ["lacks the tensor", LORA_NAME]),
    ("clf_lora", "adapter.safetensors", lambda f: _drop_tensor(f, "blocks.1.ff.proj.lora_B"),
     ["lacks the tensor", "blocks.1.ff.proj.lora_B"]),
    ("clf_lora", "adapter.safetensors", lambda f: _drop_tensor(f, "score.weight"), ["lacks the tensor", "score.weight"]),
    ("clf_lora", "adapter.safetensors", lambda f: _set_meta(f, alpha="nan"), ["LoRA alpha", "nan"]),
    ("clf_lora", "adapter.safetensors", lambda f: _set_meta(f, alpha="inf"), ["LoRA alpha", "inf"]),
    ("clf_lora", "adapter.safetensors", lambda f: _set_meta(f, alpha="-1e30"), ["LoRA alpha", "-1e+30"]),
    ("clf_lora", "adapter.safetensors", lambda f: _set_meta(f, alpha="1e30"), ["LoRA alpha", "1e+30"]),
    ("clf_lora", "adapter.safetensors", lambda f: _set_meta(f, alpha="x"), ["LoRA alpha", "'x'"]),
    ("clf_lora", "adapter.safetensors", lambda f: _set_meta(f, rank="2.5"), ["LoRA rank", "'2.5'"]),
    ("clf_lora", "adapter.safetensors", lambda f: _set_meta(f, rank="100"), ["adapter.safetensors", "expected [64, 100]"]),
    ("clf_lora", "adapter.safetensors", lambda f: _set_meta(f, rank="4"), ["shape mismatch", "lora_A [64, 2] (expected [64, 4])"]),
    ("clf_lora", "adapter.safetensors", lambda f: _set_meta(f, targets="5"), ["LoRA targets", "5"]),
    ("clf_lora", "adapter.safetensors", lambda f: _set_meta(f, targets="null"), ["LoRA targets", "None"]),
    ("clf_lora", "adapter.safetensors", lambda f: _set_meta(f, targets='["qkv", "nope"]'), ["unknown LoRA target"]),
]


@pytest.mark.parametrize("src,file,damage,words", HEAD_CASES)
def test_damaged_heads_and_adapters_are_refused_by_name(folders, tmp_path, capsys, src, file, damage, words):
    d = copy_folder(folders / src, tmp_path / src)
    damage(d / file)
    code, out, err = run_cli(capsys, "classify", "--model", d, "free prize")
    one_line_error(code, err, file, *words)
    assert out == ""  # (a NaN alpha used to print "ham nan" and exit 0)


def test_lora_lm_beside_the_weights_missing_an_adapter(folders, tmp_path, capsys):
    d = copy_folder(folders / "lora", tmp_path / "lora")
    _drop_tensor(d / "adapter.safetensors", "blocks.1.attn.proj.lora_A")
    code, out, err = run_cli(capsys, "generate", "--model", d, "--prompt", "hi", "--max-new-tokens", "2")
    one_line_error(code, err, "adapter.safetensors", "lacks the tensor blocks.1.attn.proj.lora_A")
    d = copy_folder(folders / "lora", tmp_path / "lora_head")
    _set_meta(d / "adapter.safetensors", targets='["head"]')
    code, out, err = run_cli(capsys, "generate", "--model", d, "--prompt", "hi", "--max-new-tokens", "2")
    one_line_error(code, err, "adapter.safetensors", "'head' needs a model with a classification head")


def test_alpha_is_checked_when_adapters_are_made():
    from minigpt.nn import LoRALinear, Linear

    for alpha in (float("nan"), float("inf"), -1.0, 0.0, 1e30):
        with pytest.raises(MiniGPTError, match="LoRA alpha must be a number in"):
            LoRALinear(Linear(4, 3), rank=2, alpha=alpha)


# --- 5. continuing LoRA finetuning from an adapter folder ---------------------------------------------------
def test_lora_finetuning_from_an_adapter_folder_stacks_the_adapters(folders, tmp_path, capsys):
    args = ["finetune", "classify", "--data", folders / "sms.txt", "--format", "sms", "--train", "lora",
            "--lora-rank", "2", "--lora-alpha", "4", "--epochs", "1", "--batch-size", "8", "--quiet", "--lr", "1e-2"]
    code, out, err = run_cli(capsys, *args, "--init", folders / "clf_lora", "--out", tmp_path / "r1")
    assert code == 0, err
    model_dir = tmp_path / "r1" / "model"
    acfg = json.loads((model_dir / "adapter_config.json").read_text())
    assert Path(acfg["base"]) == (folders / "clf_lora").resolve()
    # the saved adapters load (they used to fail: "the model already has LoRA layers") and reproduce the run's
    # final checkpoint (old adapters merged into the base weights, new ones on top)
    ckpt = tmp_path / "r1"
    texts = np.array([[5, 17, 42, 99, 3, 250, 7]])
    a, b = logits(load_model(model_dir), texts), logits(load_model(ckpt), texts)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert np.abs(a - logits(load_model(folders / "clf_lora"), texts)).max() > 1e-4  # it did train
    code, out, err = run_cli(capsys, "classify", "--model", model_dir, "free prize")
    assert code == 0 and out.split("\t")[0] in ("ham", "spam"), err
    # and again from that run: a chain of three adapter folders over base/
    code, out, err = run_cli(capsys, *args, "--init", tmp_path / "r1", "--out", tmp_path / "r2")
    assert code == 0, err
    np.testing.assert_allclose(logits(load_model(tmp_path / "r2" / "model"), texts),
                               logits(load_model(tmp_path / "r2"), texts), rtol=1e-5, atol=1e-5)


def test_full_finetuning_from_an_adapter_folder_merges_it(folders, tmp_path, capsys):
    code, out, err = run_cli(capsys, "finetune", "classify", "--init", folders / "clf_lora", "--data",
                             folders / "sms.txt", "--format", "sms", "--train", "head", "--epochs", "1",
                             "--batch-size", "8", "--quiet", "--out", tmp_path / "r")
    assert code == 0, err  # (it used to be refused: "the model carries LoRA adapters; merge them first")
    assert (tmp_path / "r" / "model" / "model.safetensors").exists()


# --- 6. the base's identity ------------------------------------------------------------------------------
def test_adapters_check_the_identity_of_their_base(folders, tok, tmp_path, capsys):
    base = folder(tmp_path / "base", nano(tok), tok)
    mrandom.manual_seed(4)
    clf = GPTClassifier.from_gpt(load_model(base), ["ham", "spam"])
    apply_lora(clf, rank=2, alpha=4.0, train_also=("score",))
    ad = folder(tmp_path / "ad", clf, tok, adapters_of_base=base)
    acfg = json.loads((ad / "adapter_config.json").read_text())
    assert acfg["base_sha256"] == weights_sha256(base)
    assert run_cli(capsys, "classify", "--model", ad, "free prize")[0] == 0
    nano(tok, seed=9).save_pretrained(base)  # another model of the same shape in its place
    code, out, err = run_cli(capsys, "classify", "--model", ad, "free prize")
    one_line_error(code, err, str(ad), "not the model these adapters were trained on", "sha256")


def test_an_adapter_over_a_run_names_the_run_not_a_rotating_checkpoint(folders, tok, tmp_path):
    from minigpt.model.folders import stable_base

    run = tmp_path / "run"
    ck = run / "checkpoints" / "step-000004"
    save_model(nano(tok), ck)
    (run / "latest.json").write_text(json.dumps({"checkpoint": "checkpoints/step-000004"}))
    assert stable_base(ck) == run.resolve()
    save_model(nano(tok), run / "model")
    assert stable_base(ck) == (run / "model").resolve() == stable_base(run)
    clf = GPTClassifier.from_gpt(load_model(ck), ["a", "b"])
    apply_lora(clf, rank=2, alpha=2.0)
    save_adapters(clf, tmp_path / "ad", ck)
    assert json.loads((tmp_path / "ad" / "adapter_config.json").read_text())["base"] == str((run / "model").resolve())


# --- 8. JSON fields of model folders ----------------------------------------------------------------------
CONFIG_CASES = [
    ("base", "config.json", {"architectures": 5}, ["architectures", "list of names", "5"]),
    ("base", "config.json", {"architectures": [7]}, ["architectures", "[7]"]),
    ("clf", "config.json", {"id2label": KeyError}, ["id2label", "None"]),
    ("clf", "config.json", {"quantization": {"scheme": "int8", "group_size": 0}}, ["an int8 classifier"]),
    ("clf", "config.json", {"id2label": {"0": "ham", "1": 1}}, ["label names must be non-empty strings", "1"]),
    ("clf", "config.json", {"id2label": {"0": "ham", "1": None}}, ["label names", "None"]),
    ("clf", "config.json", {"id2label": {"0": "ham", "1": "ham"}}, ["'ham' is given twice"]),
    ("clf", "config.json", {"id2label": {"0": "ham", "2": "spam"}}, ["id2label must map '0'..'1'"]),
    ("clf", "config.json", {"num_labels": "2"}, ["num_labels", "'2'"]),
    ("clf", "config.json", {"num_labels": 2.7}, ["num_labels", "2.7"]),
    ("clf", "config.json", {"minigpt": {"max_length": "abc"}}, ["minigpt.max_length", "'abc'"]),
    ("clf", "config.json", {"minigpt": {"max_length": 2.5}}, ["minigpt.max_length", "2.5"]),
    ("clf", "config.json", {"minigpt": {"max_length": True}}, ["minigpt.max_length", "True"]),
    ("clf_lora", "adapter_config.json", {"base": 5}, ["'base' must name the base model folder", "5"]),
    ("clf_lora", "adapter_config.json", {"base": None}, ["'base'", "None"]),
    ("clf_lora", "adapter_config.json", {"base": "."}, ["is the adapter folder itself"]),
    ("clf_lora", "adapter_config.json", {"kind": "regression"}, ["'kind'", "regression"]),
    ("clf_lora", "adapter_config.json", {"targets": 5}, ["targets", "5"]),
    ("clf_lora", "adapter_config.json", {"targets": None}, ["targets", "None"]),
    ("clf_lora", "adapter_config.json", {"id2label": KeyError}, ["id2label", "None"]),
    ("clf_lora", "adapter_config.json", {"id2label": ["a"]}, ["at least 2 label names"]),
    ("clf_lora", "adapter_config.json", {"base_sha256": 12}, ["base_sha256", "64 hexadecimal"]),
]


@pytest.mark.parametrize("src,file,fields,words", CONFIG_CASES)
def test_bad_folder_json_fields_are_refused_by_name(folders, tmp_path, capsys, src, file, fields, words):
    d = copy_folder(folders / src, tmp_path / src)
    edit_json(d / file, **fields)
    cmd = ["generate", "--model", d, "--prompt", "hi", "--max-new-tokens", "2"] if src == "base" else \
        ["classify", "--model", d, "free prize"]
    code, out, err = run_cli(capsys, *cmd)
    one_line_error(code, err, file, *words)


def test_adapter_base_naming_itself_or_a_cycle(folders, tmp_path, capsys):
    a = copy_folder(folders / "clf_lora", tmp_path / "a")
    b = copy_folder(folders / "clf_lora", tmp_path / "b")
    edit_json(a / "adapter_config.json", base=str(a.resolve()), base_sha256=KeyError)
    one_line_error(*run_cli(capsys, "classify", "--model", a, "x")[::2], "is the adapter folder itself")
    edit_json(a / "adapter_config.json", base="../b")
    edit_json(b / "adapter_config.json", base=str(a), base_sha256=KeyError)
    code, out, err = run_cli(capsys, "classify", "--model", a, "x")
    one_line_error(code, err, "a cycle of adapter folders")
    assert len(err) < 400  # (it used to recurse into a 4 KB "File name too long")


def test_folder_json_size_and_depth_are_bounded(folders, tmp_path, capsys):
    d = copy_folder(folders / "clf_lora", tmp_path / "deep")
    (d / "adapter_config.json").write_text("[" * 100000 + "]" * 100000)
    one_line_error(*run_cli(capsys, "classify", "--model", d, "x")[::2], "adapter_config.json", "nested")
    (d / "adapter_config.json").write_text('{"base": "../x", "pad": ' + "[" * 40 + "]" * 40 + "}")
    one_line_error(*run_cli(capsys, "classify", "--model", d, "x")[::2], "nested deeper than 16")
    big = copy_folder(folders / "base", tmp_path / "big")
    cfg = json.loads((big / "config.json").read_text())
    cfg["pad"] = "x" * (2 << 20)
    (big / "config.json").write_text(json.dumps(cfg))
    one_line_error(*run_cli(capsys, "generate", "--model", big, "--prompt", "hi")[::2], "config.json",
                   "larger than the 1,048,576 bytes allowed")


# --- 11. JSON files that are not regular files --------------------------------------------------------------
@pytest.mark.parametrize("name", ["config.json", "tokenizer.json", "adapter_config.json"])
@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_json_files_that_are_fifos_or_devices(folders, tmp_path, capsys, name, kind):
    d = copy_folder(folders / ("clf_lora" if name == "adapter_config.json" else "base"), tmp_path / "m")
    (d / name).unlink()
    if kind == "fifo":
        os.mkfifo(d / name)  # nobody ever writes: a blocking read would hang
    else:
        os.symlink("/dev/zero", d / name)  # an endless file: an unbounded read fills the memory
    cmd = ["classify", "--model", d, "x"] if name == "adapter_config.json" else \
        ["generate", "--model", d, "--prompt", "hi", "--max-new-tokens", "1"]
    t0 = time.perf_counter()
    code, out, err = run_cli(capsys, *cmd)
    one_line_error(code, err, name, "not a regular file")
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("kind", ["fifo", "dev_zero"])
def test_gpt2_vocabulary_files_that_are_fifos_or_devices(tmp_path, kind):
    (tmp_path / "encoder.json").write_text(json.dumps({chr(33 + i): i for i in range(94)}))
    if kind == "fifo":
        os.mkfifo(tmp_path / "vocab.bpe")
    else:
        os.symlink("/dev/zero", tmp_path / "vocab.bpe")
    with pytest.raises(MiniGPTError, match="vocab.bpe is not a regular file"):
        BPETokenizer.from_gpt2(tmp_path)


@pytest.mark.parametrize("name", ["latest.json", "trainer_state.json", "instruct.json"])
def test_run_json_files_that_are_fifos_or_devices(tmp_path, name):
    p = tmp_path / name
    os.mkfifo(p)
    with pytest.raises(MiniGPTError, match="not a regular file"):
        read_json(p, name)
    p.unlink()
    os.symlink("/dev/zero", p)
    with pytest.raises(MiniGPTError, match="not a regular file"):
        read_json(p, name)


def test_read_json_never_reads_past_its_limit(tmp_path, monkeypatch):
    import minigpt.io as mio

    p = tmp_path / "f.json"
    p.write_text('{"a": "' + "x" * 5000 + '"}')
    reads = []
    real = os.read
    monkeypatch.setattr(mio.os, "read", lambda fd, n: reads.append(n) or real(fd, n))
    monkeypatch.setattr(mio.os, "fstat", lambda fd: os.stat_result((0o100644, 0, 0, 1, 0, 0, 10, 0, 0, 0)))
    with pytest.raises(MiniGPTError, match="larger than the 1,000 bytes allowed"):
        read_json(p, "f.json", max_bytes=1000)  # the size was misreported as 10: the read itself stops
    assert sum(reads) <= 1001


def test_template_of_a_damaged_instruct_json(tmp_path):
    from minigpt.train.instruct import template_of

    (tmp_path / "model.safetensors").write_bytes(b"")  # a model folder (template_of reads only instruct.json)
    (tmp_path / "instruct.json").write_text('{"template": 5}')
    with pytest.raises(MiniGPTError, match="'template' must be"):
        template_of(tmp_path)


# --- 13. int8 folders checked against their config before allocating ---------------------------------------
INT8_CASES = [
    ({"n_layer": 10**6}, ["n_layer is 1000000", "holds 2 blocks"]),
    ({"vocab_size": 10**9}, ["wte.weight must be int8 [1000000000, 64]"]),
    ({"n_positions": 10**9}, ["wpe.weight must be floating point [1000000000, 64]"]),
    ({"n_embd": 128}, ["must be int8"]),
    ({"tie_word_embeddings": False}, ["wte.weight must be floating point [280, 64], the file holds I8"]),
]


@pytest.mark.parametrize("fields,words", INT8_CASES)
def test_int8_config_is_checked_against_the_weights_before_allocating(folders, tmp_path, capsys, fields, words):
    d = copy_folder(folders / "int8", tmp_path / "q")
    edit_json(d / "config.json", **fields)
    t0 = time.perf_counter()
    code, out, err = run_cli(capsys, "generate", "--model", d, "--prompt", "hi", "--max-new-tokens", "1")
    one_line_error(code, err, "config.json", *words)
    assert time.perf_counter() - t0 < 2  # (n_layer 10**6 used to run 14 s and out of memory)


def test_int8_tensor_dtypes_and_scales_are_checked(folders, tmp_path, capsys):
    d = copy_folder(folders / "int8", tmp_path / "q")
    t = load_file(str(d / "model.safetensors"))
    t["transformer.h.0.mlp.c_fc.weight_scale"] = t["transformer.h.0.mlp.c_fc.weight_scale"][:, :0]
    save_file(t, str(d / "model.safetensors"), metadata={"format": "pt"})
    one_line_error(*run_cli(capsys, "generate", "--model", d, "--prompt", "hi")[::2], "h.0.mlp.c_fc.weight",
                   "scales")
