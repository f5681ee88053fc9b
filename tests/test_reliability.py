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


def best_time(fn, repeats=3):
    """The shortest of a few timed calls (this machine is shared: one call may be paused by others)."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def refused(exc, match, fn, *args):
    def call():
        with pytest.raises(exc, match=match):
            fn(*args)
    return call


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
    # (it used to load in 0.3 s, then encoding "hello" ran for minutes): refused at load in ~30 ms
    assert best_time(refused(MiniGPTError, "merge 255 .* makes a token of 257 bytes", BPETokenizer.load, p)) < 0.5
    code, out, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", str(p), "--text", "hello")
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
    assert best_time(refused(MiniGPTError, f"limited to {MAX_VOCAB_BYTES:,} bytes", BPETokenizer,
                             half + ends + pairs)) < 0.5


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
    assert time.perf_counter() - t0 < 3.0  # ~0.15 s on an idle 2-core machine
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


# --- 2, 3, 6, 8. run folders, checkpoints, divergence ------------------------------------------------------
WORDS = ("the cat sat on a mat and the dog ran to the old red barn while birds sang in tall green trees near "
         "water where fish swim slowly under bright summer light").split()


def quiet(_msg):
    pass


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    p = tmp_path_factory.mktemp("text") / "t.txt"
    p.write_text(". ".join(" ".join(rng.choice(WORDS, 8)) for _ in range(120)) + ".\n", encoding="utf-8")
    return p


def run(out, text_file, steps=2, resume=False, **kw):
    from minigpt.train import TrainConfig, pretrain

    kw = {"batch_size": 2, "checkpoint_every": 1, "eval_every": 1, "eval_batches": 1, "sample_tokens": 2,
          "warmup": 1, "seed": 3, **kw}
    return pretrain(out, text_files=[text_file], config="nano", config_overrides={"context_length": 16},
                    vocab_size=270, train_cfg=TrainConfig(steps=steps, **kw), resume=resume, progress=False,
                    log=quiet)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, text_file):
    """A run folder with complete checkpoints at steps 1 and 2."""
    out = tmp_path_factory.mktemp("run") / "run"
    run(out, text_file, steps=2)
    return out


@pytest.fixture
def run_copy(trained, tmp_path):
    import shutil

    return Path(shutil.copytree(trained, tmp_path / "run"))


def strict_json_lines(path):
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name} in {path}")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_fresh_run_never_overwrites_a_run_without_latest_json(run_copy, text_file):
    (run_copy / "latest.json").unlink()
    before = snapshot(run_copy)
    with pytest.raises(MiniGPTError, match="already holds a training run .*checkpoints"):
        run(run_copy, text_file, steps=2)
    assert snapshot(run_copy) == before


def test_resume_without_latest_json_finds_the_newest_complete_checkpoint(run_copy, text_file):
    from minigpt.train import resolve_model_dir

    (run_copy / "latest.json").unlink()
    assert resolve_model_dir(run_copy).name == "step-000002"
    # stale: latest.json still names step 1 (a kill after step 2 was renamed into place)
    (run_copy / "latest.json").write_text('{"checkpoint": "checkpoints/step-000001", "step": 1}')
    assert resolve_model_dir(run_copy).name == "step-000002"
    # a half-written checkpoint (a kill mid-save) is not complete and does not count
    half = run_copy / "checkpoints" / "step-000003"
    half.mkdir()
    (half / "config.json").write_text("{}")
    assert resolve_model_dir(run_copy).name == "step-000002"
    (run_copy / "latest.json").unlink()
    summary = run(run_copy, text_file, steps=3, resume=True)
    assert summary["step"] == 3
    steps = [r["step"] for r in strict_json_lines(run_copy / "log.jsonl")]
    assert steps == [1, 2, 3]


def test_a_run_killed_before_its_first_checkpoint(tmp_path, text_file):
    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "lo')  # torn by the kill
    with pytest.raises(MiniGPTError, match="already holds a training run .*log.jsonl"):
        run(out, text_file)
    with pytest.raises(MiniGPTError, match="no checkpoint to resume from .*stopped before its first checkpoint"):
        run(out, text_file, resume=True)


def test_a_fresh_trainer_starts_its_log_afresh(tmp_path, text_file):
    # the Trainer itself (used from Python without pretrain's guard) never appends to an old log
    from minigpt.model import GPT, GPTConfig
    from minigpt.train import TrainConfig, Trainer
    from minigpt.train.run import build_loaders

    out = tmp_path / "run"
    out.mkdir()
    (out / "log.jsonl").write_text('{"step": 7, "loss": 1.0}\n')
    ids = np.arange(400) % 50
    tl, vl = build_loaders(ids, 16, 2, 0.2, 0)
    cfg = TrainConfig(steps=1, batch_size=2, eval_every=0, sample_tokens=1)
    Trainer(GPT(GPTConfig.preset("nano", vocab_size=64, context_length=16)), None, tl, vl, cfg, out,
            progress=False, log=quiet).run()
    assert [r["step"] for r in strict_json_lines(out / "log.jsonl")] == [1]


def test_divergence_with_no_checkpoint_says_so(tmp_path, text_file):
    from minigpt.train import TrainingDiverged

    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="No checkpoint was written before it") as e:
        run(out, text_file, steps=4, lr=1e10)
    assert "last good checkpoint" not in str(e.value)
    assert not (out / "latest.json").exists() and not list(out.glob("checkpoints/step-*"))
    log = strict_json_lines(out / "log.jsonl")  # standard JSON: NaN written as null
    assert log and log[-1]["val_loss"] is None


def test_divergence_keeps_only_a_finite_checkpoint(run_copy, text_file, monkeypatch):
    from minigpt.train import Trainer, TrainingDiverged, load_checkpoint

    real_step = Trainer.train_step

    def blow_up(self, x, y):  # the weights overflow after step 2; the loss of step 3 is still finite
        out = real_step(self, x, y)
        if self.step == 2:
            self.model.blocks[0].ff.fc.weight.data[0, 0] = np.inf
        return out

    monkeypatch.setattr(Trainer, "train_step", blow_up)
    with pytest.raises(TrainingDiverged, match=r"checkpoints/step-000002, is kept") as e:
        run(run_copy, text_file, steps=4, resume=True)
    assert "NaN or infinity" in str(e.value) or "became nan" in str(e.value)
    monkeypatch.undo()
    model, _, _, state = load_checkpoint(run_copy)
    assert state["step"] == 2
    assert all(np.isfinite(p.data).all() for p in model.parameters())
    strict_json_lines(run_copy / "log.jsonl")


@pytest.mark.parametrize("content, words", [
    ('{"checkpoint": "../m"}', "not a checkpoint of this run"),
    ('{"checkpoint": "/tmp/other/checkpoints/step-000001"}', "not a checkpoint of this run"),
    ('{"checkpoint": "checkpoints/../../m"}', "not a checkpoint of this run"),
    ('{"checkpoint": null}', "'checkpoint' must be a path"),
    ("[1, 2]", "expected a JSON object"),
    ('{"checkpoint": NaN}', "not a valid latest.json"),
    ('{"checkp', "not a valid latest.json"),
])
def test_latest_json_cannot_point_outside_the_run(run_copy, capsys, content, words):
    (run_copy / "latest.json").write_text(content)
    code, out, err = run_cli(capsys, "generate", "--model", str(run_copy), "--max-new-tokens", "2")
    one_line_error(code, err, "latest.json", words)
    assert out == ""


def resume_cli(capsys, out, text_file):
    return run_cli(capsys, "train", "--resume", "--out", str(out), "--text", str(text_file), "--steps", "3",
                   "--quiet")


def test_resume_refuses_damaged_checkpoints(run_copy, text_file, capsys):
    from safetensors.numpy import load_file, save_file

    ck = run_copy / "checkpoints" / "step-000002"
    opt = ck / "optimizer.safetensors"
    good_opt = opt.read_bytes()
    opt.write_bytes(good_opt[: len(good_opt) // 2])  # truncated
    one_line_error(*resume_cli(capsys, run_copy, text_file)[::2], "optimizer.safetensors")
    opt.write_bytes(good_opt)
    arrays = load_file(str(opt))
    save_file({k: v.astype(np.int32) for k, v in arrays.items()}, str(opt))  # int32 moments
    one_line_error(*resume_cli(capsys, run_copy, text_file)[::2], "int32")
    opt.write_bytes(good_opt)
    state = ck / "trainer_state.json"
    good_state = state.read_text()
    for damaged, words in (('{"step": "two"}', "'step'"), ("[]", "expected a JSON object"),
                           (good_state.replace('"loader": {', '"loader": {"epoch": "x", "x": {'), "damaged"),
                           (good_state[:100], "trainer_state.json")):
        state.write_text(damaged)
        one_line_error(*resume_cli(capsys, run_copy, text_file)[::2], words)
    state.write_text(good_state)
    (ck / "tokenizer.json").unlink()
    one_line_error(*resume_cli(capsys, run_copy, text_file)[::2], "tokenizer.json")


def test_train_out_naming_a_file(tmp_path, text_file, capsys):
    f = tmp_path / "f.txt"
    f.write_text("x")
    code, out, err = run_cli(capsys, "train", "--out", str(f), "--text", str(text_file), "--steps", "1", "--quiet")
    one_line_error(code, err, "is a file")


@pytest.mark.parametrize("args, words", [
    (["--grad-clip", "-1"], "grad-clip must be a finite number >= 0"),
    (["--grad-clip", "nan"], "grad-clip"),
    (["--eval-batches", "0"], "eval-batches must be an integer >= 1"),
    (["--lr", "inf"], "lr must be"),
    (["--weight-decay", "nan"], "weight-decay"),
])
def test_train_refuses_bad_values(tmp_path, text_file, capsys, args, words):
    code, out, err = run_cli(capsys, "train", "--out", str(tmp_path / "r"), "--text", str(text_file), "--steps", "1",
                             "--quiet", *args)
    one_line_error(code, err, words)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, words", [
    (["--temperature", "nan"], "temperature"),
    (["--temperature", "-1"], "temperature"),
    (["--top-p", "nan"], "top_p"),
    (["--top-k", "0"], "top_k"),
    (["--max-new-tokens", "-1"], "max_new_tokens"),
])
def test_generate_refuses_bad_values_before_printing(trained, capsys, args, words):
    code, out, err = run_cli(capsys, "generate", "--model", str(trained), "--prompt", "the cat", *args)
    one_line_error(code, err, words)
    assert out == ""


# --- 4. config.json and weights --------------------------------------------------------------------------
@pytest.fixture
def model_dir(trained, tmp_path):
    import shutil

    from minigpt.train import resolve_model_dir

    return Path(shutil.copytree(resolve_model_dir(trained), tmp_path / "m"))


def edit_config(model_dir, **fields):
    p = model_dir / "config.json"
    d = json.loads(p.read_text())
    d.update(fields)
    p.write_text(json.dumps(d))


@pytest.mark.parametrize("fields, words", [
    ({"n_positions": 10_000_000}, "does not match"),
    ({"n_positions": 10 ** 12}, "does not match"),
    ({"vocab_size": 10 ** 9}, "does not match"),
    ({"n_layer": 10 ** 6}, "n_layer is 1000000, the file holds 2 blocks"),
    ({"n_layer": 1}, "n_layer is 1, the file holds 2 blocks"),
    ({"n_head": True}, "n_head must be a positive integer"),
    ({"n_embd": 64.9}, "n_embd must be a positive integer"),
    ({"layer_norm_epsilon": -1}, "layer_norm_epsilon must be in (0, 1)"),
    ({"layer_norm_epsilon": "1e-5"}, "layer_norm_epsilon must be a finite number"),
    ({"tie_word_embeddings": "yes"}, "tie_word_embeddings must be true or false"),
])
def test_config_is_checked_before_allocating(model_dir, capsys, fields, words):
    edit_config(model_dir, **fields)
    t0 = time.perf_counter()
    code, out, err = run_cli(capsys, "generate", "--model", str(model_dir), "--max-new-tokens", "2")
    assert time.perf_counter() - t0 < 5
    one_line_error(code, err, "config.json", words)


@pytest.mark.parametrize("content", ['"abc"', "Infinity", "[1, 2]", '{"n_embd": NaN}', "\xff\xfe", "{" * 100000])
def test_config_json_not_an_object(model_dir, capsys, content):
    (model_dir / "config.json").write_bytes(content.encode("latin-1"))
    code, out, err = run_cli(capsys, "generate", "--model", str(model_dir), "--max-new-tokens", "2")
    one_line_error(code, err, "config.json")


@pytest.mark.parametrize("change, words", [
    (lambda a: a.astype(np.int64), "dtype I64"),
    (lambda a: a.astype(bool), "dtype BOOL"),
    (lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, np.nan, a).astype(a.dtype), "NaN or infinity"),
])
def test_weights_must_be_finite_floats(model_dir, capsys, change, words):
    from safetensors.numpy import load_file, save_file

    w = model_dir / "model.safetensors"
    t = load_file(str(w))
    name = next(k for k in t if k.endswith("wte.weight"))
    t[name] = change(t[name])
    save_file(t, str(w))
    code, out, err = run_cli(capsys, "generate", "--model", str(model_dir), "--max-new-tokens", "2")
    one_line_error(code, err, "model.safetensors", words)
    assert out == ""


# --- 6. the CLI's catch-all ------------------------------------------------------------------------------
def test_internal_error_says_so_and_debug_shows_the_traceback(capsys, monkeypatch, tmp_path):
    import minigpt.cli.tokenizer as T

    def broken(args):
        raise KeyError("oops")

    p = tok_file(tmp_path / "t.json", [])
    monkeypatch.setattr(T, "_load_tokenizer_arg", broken)
    code, out, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", str(p), "--text", "a")
    assert code == 3 and len(err.strip().splitlines()) == 1
    assert "internal error" in err and "please report" in err and "--debug" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", str(p), "--text", "a", "--debug")
    assert code == 3 and "Traceback (most recent call last)" in err and "KeyError: 'oops'" in err


def test_unreadable_file_is_a_one_line_error(tmp_path, capsys):
    p = tok_file(tmp_path / "t.json", [])
    code, out, err = run_cli(capsys, "tokenizer", "encode", "--tokenizer", str(p), "--file", str(tmp_path))
    one_line_error(code, err, str(tmp_path))


# --- 5. gradcheck ----------------------------------------------------------------------------------------
def test_gradcheck_fails_on_a_nan_backward():
    from minigpt import Tensor, gradcheck
    from minigpt.gradcheck import GradcheckError
    from minigpt.tensor import Function

    class NanBack(Function):
        def forward(self, x):
            return x * 2.0

        def backward(self, grad):
            return (np.full_like(grad, np.nan),)

    x = Tensor(np.arange(1.0, 4.0), requires_grad=True)
    with pytest.raises(GradcheckError, match=r"index \(0,\): analytic nan vs numeric [-0-9.]+ "):
        gradcheck(lambda t: NanBack.apply(t), x)
    report = gradcheck(lambda t: NanBack.apply(t), x, raise_on_failure=False)
    assert report["ok"] is False and report["worst"]["index"] == (0,)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_gradcheck_fails_where_the_function_is_not_differentiable():
    from minigpt import Tensor, gradcheck
    from minigpt.gradcheck import GradcheckError

    with pytest.raises(GradcheckError, match=r"index \(1,\): analytic -?inf vs numeric nan"):  # sqrt at 0: inf vs nan
        gradcheck(lambda t: t.sqrt(), Tensor(np.array([1.0, 0.0]), requires_grad=True))
    with pytest.raises(GradcheckError, match=r"index \(0,\): analytic [-0-9.e]+ vs numeric nan"):  # log at -1
        gradcheck(lambda t: t.log(), Tensor(np.array([-1.0, 2.0]), requires_grad=True))
    # NaN on both sides is no match either
    with pytest.raises(GradcheckError, match=r"index \(0,\): analytic nan vs numeric nan"):
        gradcheck(lambda t: t.sqrt(), Tensor(np.array([-4.0, 4.0]), requires_grad=True))


# --- 9. downloads ----------------------------------------------------------------------------------------
def _zip_manifest(member_size):
    return {"entries": {"x": {"archive": {"name": "x.zip", "sha256": None, "size": None},
                              "files": [{"name": "data.bin", "member": "data.bin", "sha256": None,
                                         "size": member_size}]}}}


def test_no_verify_still_enforces_the_manifest_sizes(tmp_path):
    import zipfile

    from minigpt.download import fetch

    src = tmp_path / "src"
    src.mkdir()
    with zipfile.ZipFile(src / "x.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("data.bin", b"\0" * (4 << 20))  # 4 MB of zeros: a 4 KB zip
    assert (src / "x.zip").stat().st_size < 50_000
    cache = tmp_path / "cache"
    with pytest.raises(MiniGPTError, match="larger than the 1,000 bytes the manifest records"):
        fetch("x", cache_dir=cache, from_dir=src, no_verify=True, quiet=True, manifest=_zip_manifest(1000))
    assert not (cache / "x").exists()  # nothing installed, and the folder this call made is removed again
    with pytest.raises(MiniGPTError, match="size mismatch for data.bin"):  # too short: refused as well
        fetch("x", cache_dir=cache, from_dir=src, no_verify=True, quiet=True, manifest=_zip_manifest(5 << 20))
    folder = fetch("x", cache_dir=cache, from_dir=src, no_verify=True, quiet=True, manifest=_zip_manifest(4 << 20))
    assert (folder / "data.bin").stat().st_size == 4 << 20


def test_a_killed_download_leaves_no_part_file_behind(tmp_path):
    from minigpt.download import fetch

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_bytes(b"x" * (3 << 20))
    manifest = {"entries": {"y": {"files": [{"name": "a.txt", "sha256": None, "size": 3 << 20}]}}}
    cache = tmp_path / "cache"
    (cache / "y").mkdir(parents=True)
    code = ("import os, sys\n"
            "import minigpt.download as D\n"
            "real = D._Sink.write\n"
            "def write(self, b):\n"
            "    real(self, b)\n"
            "    os.kill(os.getpid(), 9)\n"  # SIGKILL mid-copy: no cleanup code can run
            "D._Sink.write = write\n"
            f"D.fetch('y', cache_dir={str(cache)!r}, from_dir={str(src)!r}, no_verify=True, quiet=True, "
            f"manifest={manifest!r})\n")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == -9
    assert list((cache / "y").glob(".*.part"))  # what the kill left
    folder = fetch("y", cache_dir=cache, from_dir=src, no_verify=True, quiet=True, manifest=manifest)
    assert (folder / "a.txt").stat().st_size == 3 << 20
    assert not list(folder.glob(".*.part"))


# --- 1. encoding cost: a long pre-token ------------------------------------------------------------------
def test_long_pretokens_merge_like_the_reference():
    # pre-tokens over 64 bytes merge through a heap; the ids equal the plain-Python reference's
    from minigpt.kernels.bpe import encode_word_python

    rng = np.random.default_rng(1)
    text = " ".join("".join(rng.choice(list("abcab"), rng.integers(1, 12))) for _ in range(800))
    tok = BPETokenizer.train(text, 400, special_tokens=())
    pa, pb, pv = tok._pairs()
    pairs = dict(zip(zip(pa, pb), pv))
    for n in (65, 66, 100, 257, 1000):
        for alphabet in ("ab", "abc", "aaab", "a"):
            word = "".join(rng.choice(list(alphabet), n))
            assert tok.encode(word) == encode_word_python(word.encode(), tok.byte_ids, pairs), (n, alphabet)


def test_encoding_a_long_run_is_not_quadratic():
    tok = BPETokenizer([[97, 97], [256, 256], [257, 257], [256, 97]])
    tok.encode("a" * 1000)  # compile / load the kernels
    t0 = time.perf_counter()
    ids = tok.encode("a" * 400_000)  # one pre-token: once minutes of rescanning
    assert time.perf_counter() - t0 < 5.0
    assert tok.decode(ids) == "a" * 400_000 and len(ids) == 50_000


def test_encoding_a_long_run_is_not_quadratic_on_the_numpy_backend():
    from minigpt import kernels
    tok = BPETokenizer([[97, 97], [256, 256], [257, 257], [256, 97]])
    with kernels.use_backend("numpy"):
        t0 = time.perf_counter()
        ids = tok.encode("a" * 20_000)  # one pre-token: once a minute of rescanning
        elapsed = time.perf_counter() - t0
    assert elapsed < 2.0
    assert ids == tok.encode("a" * 20_000) and len(ids) == 2_500


def test_long_pre_tokens_merge_to_the_same_ids_on_both_backends():
    # a pre-token of random a/b over 64 bytes takes the heap path in both backends; overlapping merges test
    # the order (lowest rank first, leftmost on ties) and the skipping of stale pairs
    from minigpt import kernels
    tok = BPETokenizer([[97, 98], [98, 97], [97, 97], [256, 97], [257, 256], [256, 256], [258, 98], [259, 260]])
    rng = np.random.default_rng(0)
    for n in (65, 200, 3000):
        text = "".join(rng.choice(["a", "b"], n))
        fast = tok.encode(text)
        with kernels.use_backend("numpy"):
            ref = tok.encode(text)
        assert ref == fast and tok.decode(ref) == text


def test_sigkill_between_checkpoint_rename_and_latest_json(tmp_path, text_file):
    # a real SIGKILL in the window the probe found: step 2's checkpoint renamed into place, latest.json still
    # naming step 1. --resume must continue from step 2, and the log must hold each step once.
    out = tmp_path / "run"
    code = ("import os\n"
            "import minigpt.train.loop as L\n"
            "real = L.atomic_write_json\n"
            "def write(path, obj):\n"
            "    if path.name == 'latest.json' and obj['step'] == 2:\n"
            "        os.kill(os.getpid(), 9)\n"
            "    real(path, obj)\n"
            "L.atomic_write_json = write\n"
            "from minigpt.cli import main\n"
            f"main(['train', '--out', {str(out)!r}, '--text', {str(text_file)!r}, '--config', 'nano',\n"
            "      '--context-length', '16', '--vocab-size', '270', '--steps', '3', '--batch-size', '2',\n"
            "      '--checkpoint-every', '1', '--eval-every', '1', '--eval-batches', '1', '--quiet'])\n")
    r = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True)
    assert r.returncode == -9, r.stderr
    assert json.loads((out / "latest.json").read_text())["step"] == 1
    assert (out / "checkpoints" / "step-000002" / "trainer_state.json").is_file()
    from minigpt.train import TrainConfig, pretrain

    said = []
    summary = pretrain(out, text_files=[text_file], resume=True, progress=False, log=said.append,
                       train_cfg=TrainConfig(steps=3))
    assert any("at step 2 of 3" in m for m in said), said  # from the newest complete checkpoint, not step 1
    assert summary["step"] == 3
    assert [r["step"] for r in strict_json_lines(out / "log.jsonl")] == [1, 2, 3]
    assert json.loads((out / "latest.json").read_text())["step"] == 3


def test_a_model_folder_carrying_a_hostile_tokenizer(model_dir, capsys):
    tok_file(model_dir / "tokenizer.json", [[97, 97]] + [[256 + i, 97] for i in range(19999)])
    code, out, err = run_cli(capsys, "generate", "--model", str(model_dir), "--prompt", "hello",
                             "--max-new-tokens", "2")
    one_line_error(code, err, "tokenizer.json", "limited to 256 bytes")
    assert out == ""


@pytest.mark.parametrize("name, value", [("MINIGPT_KERNELS", "foo"), ("MINIGPT_GRAD_OPTIMIZATIONS", "maybe")])
def test_a_bad_environment_variable_is_a_one_line_error(name, value):
    # the variables are read when a command loads the numerical modules: a fresh interpreter, so they are
    # imported under the bad value
    code = "import sys\nfrom minigpt.cli import main\nsys.exit(main(['gradcheck', 'gelu', '--shape', '2,3']))\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT), name: value})
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("minigpt: error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert name in r.stderr and value in r.stderr
