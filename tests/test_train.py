"""Pretraining end to end: loss falls, CLI train -> generate, exact resume, crash-safe checkpoints, NaN stop."""
import json

import numpy as np
import pytest

import minigpt
from minigpt.cli import main
from minigpt.train import TrainConfig, Trainer, TrainingDiverged, load_checkpoint, pretrain, resolve_model_dir


def quiet(_msg):
    pass


@pytest.fixture
def verdict(shared_data):
    return shared_data / "the-verdict" / "the-verdict.txt"


def small_run(out, verdict, steps, vocab_size=300, drop_rate=0.1, **kw):
    kw = {"batch_size": 4, "lr": 3e-3, "eval_every": 10, **kw}
    cfg = TrainConfig(steps=steps, warmup=5, eval_batches=2, sample_tokens=8, seed=7, **kw)
    return pretrain(out, text_files=[verdict], config="nano",
                    config_overrides={"context_length": 32, "drop_rate": drop_rate},
                    tokenizer="bpe", vocab_size=vocab_size, train_cfg=cfg, progress=False, log=quiet)


def read_log(out):
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def test_training_on_the_verdict_drives_loss_down(tmp_path, verdict):
    summary = small_run(tmp_path / "run", verdict, steps=300, vocab_size=1000, drop_rate=0.0, lr=1e-2,
                        batch_size=8, eval_every=100)
    log = read_log(tmp_path / "run")
    first = np.mean([r["loss"] for r in log[:5]])
    last = np.mean([r["loss"] for r in log[-10:]])
    assert len(log) == 300 and log[-1]["step"] == 300
    assert first > np.log(1000) - 0.5  # starts near uniform over the vocabulary
    assert last < first - 1.5, (first, last)  # and learns much of the story (perplexity / 4.5)
    assert summary["val_loss"] > summary["train_loss"]  # on a 20 kB story it already starts to overfit
    assert isinstance(summary["sample"], str) and len(summary["sample"]) > 0
    assert "val_loss" in log[99]
    ck = resolve_model_dir(tmp_path / "run")
    assert ck.name == "step-000300"
    assert {p.name for p in ck.iterdir()} >= {"config.json", "model.safetensors", "tokenizer.json",
                                               "optimizer.safetensors", "trainer_state.json"}


def test_loss_curve_png(tmp_path, verdict):
    pytest.importorskip("matplotlib", reason="the loss curve needs the optional 'plot' extra (matplotlib)")
    small_run(tmp_path / "run", verdict, steps=6, eval_every=3)
    png = (tmp_path / "run" / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_resume_equals_uninterrupted(tmp_path, verdict, monkeypatch):
    small_run(tmp_path / "a", verdict, steps=20, checkpoint_every=10)
    straight = [r["loss"] for r in read_log(tmp_path / "a")]

    real_step = Trainer.train_step

    def crash_after_10(self, x, y):
        if self.step == 10:
            raise KeyboardInterrupt  # killed between step 10 and 11
        return real_step(self, x, y)

    monkeypatch.setattr(Trainer, "train_step", crash_after_10)
    with pytest.raises(KeyboardInterrupt):
        small_run(tmp_path / "b", verdict, steps=20, checkpoint_every=10)
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert json.loads((tmp_path / "b" / "latest.json").read_text())["step"] == 10
    pretrain(tmp_path / "b", text_files=[verdict], resume=True, progress=False, log=quiet,
             train_cfg=TrainConfig(steps=20))
    resumed = [r["loss"] for r in read_log(tmp_path / "b")]
    assert len(resumed) == 20
    assert resumed == straight  # identical to the last digit


def test_failed_save_keeps_the_last_good_checkpoint(tmp_path, verdict, monkeypatch):
    out = tmp_path / "run"
    small_run(out, verdict, steps=10, checkpoint_every=5)
    good_dir = resolve_model_dir(out)
    model_before, _, _, state_before = load_checkpoint(out)
    assert state_before["step"] == 10

    import minigpt.train.loop as P

    real = P.atomic_write_bytes

    def failing(path, data):
        if path.name == "optimizer.safetensors":
            raise OSError("disk full (simulated)")
        return real(path, data)

    monkeypatch.setattr(P, "atomic_write_bytes", failing)
    with pytest.raises(OSError, match="disk full"):
        pretrain(out, text_files=[verdict], resume=True, progress=False, log=quiet, train_cfg=TrainConfig(steps=15))
    monkeypatch.undo()
    assert resolve_model_dir(out) == good_dir
    model_after, _, _, state_after = load_checkpoint(out)
    assert state_after["step"] == 10
    for (n, a), (_, b) in zip(model_before.named_parameters(), model_after.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)


def test_nan_loss_stops_and_keeps_checkpoint(tmp_path, verdict, monkeypatch):
    real_save = Trainer.save

    def save_then_poison(self):
        path = real_save(self)
        if self.step == 5:
            self.model.final_norm.weight.data[:] = np.nan
        return path

    monkeypatch.setattr(Trainer, "save", save_then_poison)
    with pytest.raises(TrainingDiverged, match="step 6: the loss became nan"):
        small_run(tmp_path / "run", verdict, steps=10, checkpoint_every=5)
    model, _, _, state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 5 and np.all(np.isfinite(model.final_norm.weight.data))


def test_cli_train_then_generate(tmp_path, verdict, capsys):
    out = tmp_path / "cli"
    rc = main(["train", "--text", str(verdict), "--config", "nano", "--context-length", "32", "--vocab-size", "300",
               "--steps", "12", "--batch-size", "4", "--eval-every", "6", "--eval-batches", "1", "--out", str(out),
               "--quiet", "--prompt", "I had", "--sample-tokens", "5"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "trained 12 steps" in printed and "--- generated text ---" in printed
    assert (out / "log.jsonl").exists()
    rc = main(["generate", "--model", str(out), "--prompt", "I had always", "--max-new-tokens", "6", "--seed", "1"])
    assert rc == 0
    assert capsys.readouterr().out.startswith("I had always")
    # the same folder again without --resume must not clobber the run
    rc = main(["train", "--text", str(verdict), "--config", "nano", "--steps", "2", "--out", str(out), "--quiet"])
    assert rc == 2
    assert "already holds a training run" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    assert main(["train", "--text", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "missing.txt" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "none"), "--resume", "--quiet"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["generate", "--model", str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("too short")
    assert main(["train", "--text", str(short), "--tokenizer", "bpe", "--vocab-size", "260", "--config", "nano",
                 "--out", str(tmp_path / "s"), "--quiet"]) == 2
    assert "error" in capsys.readouterr().err


def test_evaluate_and_perplexity():
    from minigpt.data import DataLoader, SlidingWindowDataset
    from minigpt.model import GPT, GPTConfig
    from minigpt.train import evaluate, perplexity

    minigpt.random.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, context_length=8, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.5))
    ids = np.random.default_rng(0).integers(0, 16, 200)
    loader = DataLoader(SlidingWindowDataset(ids, 8, 8), 4)
    a = evaluate(model, loader, 3)
    assert model.training  # mode restored
    assert a == evaluate(model, loader, 3)  # eval mode: dropout off, deterministic
    assert abs(a - np.log(16)) < 0.5
    assert perplexity(np.log(16)) == pytest.approx(16)


def test_cli_rejects_zero_steps(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "z"), "--steps", "0", "--quiet"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_resume_can_extend_a_finished_run(tmp_path, verdict):
    small_run(tmp_path / "r", verdict, steps=6, eval_every=3)
    rc = main(["train", "--out", str(tmp_path / "r"), "--text", str(verdict), "--resume", "--steps", "9", "--quiet"])
    assert rc == 0
    assert json.loads((tmp_path / "r" / "latest.json").read_text())["step"] == 9
    assert [r["step"] for r in read_log(tmp_path / "r")] == list(range(1, 10))


def test_resume_without_text_reads_the_runs_own_files(tmp_path, verdict, capsys):
    """`--resume` alone continues on the text the run started with (its checkpoint names the files); the same
    as passing --text again; a file that is gone, or other text, is a one-line error saying what to pass."""
    import shutil

    text = tmp_path / "story.txt"
    shutil.copy(verdict, text)
    small_run(tmp_path / "r", text, steps=6, eval_every=3)
    shutil.copytree(tmp_path / "r", tmp_path / "r2")
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--steps", "9", "--quiet"]) == 0
    assert main(["train", "--out", str(tmp_path / "r2"), "--text", str(text), "--resume", "--steps", "9", "--quiet"]) == 0
    def losses(out):
        return [(r["step"], r["loss"], r.get("val_loss")) for r in read_log(out)]

    assert losses(tmp_path / "r") == losses(tmp_path / "r2") and len(losses(tmp_path / "r")) == 9
    ck = tmp_path / "r" / json.loads((tmp_path / "r" / "latest.json").read_text())["checkpoint"]
    assert json.loads((ck / "trainer_state.json").read_text())["text_files"] == [str(text.resolve())]
    text.unlink()
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "r"), "--resume", "--steps", "12", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"the run's training text {text.resolve()} is gone; pass --text" in err
    other = tmp_path / "other.txt"
    other.write_text("a different story " * 400)
    assert main(["train", "--out", str(tmp_path / "r"), "--text", str(other), "--resume", "--steps", "12", "--quiet"]) == 2
    assert "the training text differs from the one this run started with" in capsys.readouterr().err


def test_resume_with_nothing_left_reports_the_last_losses_not_nan(tmp_path, verdict, capsys):
    done = small_run(tmp_path / "r", verdict, steps=6, eval_every=3)
    rc = main(["train", "--out", str(tmp_path / "r"), "--text", str(verdict), "--resume", "--quiet"])
    assert rc == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "nan" not in line
    assert line.startswith("no step ran (the run is at step 6)")
    assert f"train loss {done['train_loss']:.3f}" in line and f"val loss {done['val_loss']:.3f}" in line


def test_resume_with_steps_already_reached_does_not_run_on_to_the_saved_count(tmp_path, verdict, capsys):
    """A run stopped at step 6 of 12: `--resume --steps 6` (or fewer) leaves it at 6, never trains to 12."""
    small_run(tmp_path / "r", verdict, steps=6, eval_every=3)
    ck = tmp_path / "r" / json.loads((tmp_path / "r" / "latest.json").read_text())["checkpoint"]
    state = json.loads((ck / "trainer_state.json").read_text())
    state["train_config"]["steps"] = 12  # as if killed after step 6 of a 12-step run
    (ck / "trainer_state.json").write_text(json.dumps(state))
    for steps, said in (("6", "has already run 6 steps (all 6)"), ("4", "more than the 4 asked for")):
        capsys.readouterr()
        rc = main(["train", "--out", str(tmp_path / "r"), "--text", str(verdict), "--resume", "--steps", steps])
        assert rc == 0
        assert said in capsys.readouterr().err
        assert json.loads((tmp_path / "r" / "latest.json").read_text())["step"] == 6
        assert len(read_log(tmp_path / "r")) == 6


def test_from_pretrained_takes_a_run_folder_like_the_cli(tmp_path):
    from minigpt.data import DataLoader, SlidingWindowDataset
    from minigpt.model import GPT, GPTConfig

    minigpt.random.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, context_length=8, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.0))
    ids = np.random.default_rng(0).integers(0, 16, 200)
    loader = DataLoader(SlidingWindowDataset(ids, 8, 8), 4, drop_last=True)
    run = tmp_path / "run"
    Trainer(model, None, loader, None, TrainConfig(steps=3, warmup=1, checkpoint_every=2), run, log=quiet,
            progress=False).run()
    loaded = GPT.from_pretrained(run)  # the run folder: its latest checkpoint (step 3)
    assert resolve_model_dir(run).name == "step-000003"
    for (name, p), (name2, q) in zip(model.named_parameters(), loaded.named_parameters()):
        assert name == name2 and np.array_equal(p.data, q.data)
    x = ids[:8][None]
    assert np.array_equal(GPT.from_pretrained(resolve_model_dir(run))(x).data, loaded(x).data)
    (run / "latest.json").write_text("{}")
    with pytest.raises(minigpt.MiniGPTError, match="latest.json is damaged"):
        GPT.from_pretrained(run)


def test_gradient_norm_is_logged_with_and_without_clipping(tmp_path, verdict):
    """log.jsonl's grad_norm is the global gradient norm (before clipping) at every step, also with
    --grad-clip 0, where it scales nothing: both runs' first steps start from the same weights and batch,
    so they log the same norm; clipping at 1.0 then changes the later steps."""
    logs = {}
    for clip in (0.0, 1.0):
        small_run(tmp_path / f"c{clip}", verdict, steps=3, grad_clip=clip)
        logs[clip] = read_log(tmp_path / f"c{clip}")
        norms = [r["grad_norm"] for r in logs[clip]]
        assert len(norms) == 3 and all(isinstance(n, float) and n > 0 for n in norms), norms
    assert logs[0.0][0]["grad_norm"] == pytest.approx(logs[1.0][0]["grad_norm"], rel=1e-6)
    assert logs[1.0][0]["grad_norm"] > 1.0  # so the clipped run scaled its first step ...
    assert logs[0.0][1]["loss"] != logs[1.0][1]["loss"]  # ... and its second step starts elsewhere


def test_decay_all_puts_every_parameter_under_weight_decay(tmp_path, verdict):
    """Default: matrices decay, biases and LayerNorm parameters do not (GPT-2's practice); --decay-all: every
    parameter decays, as the book's AdamW(model.parameters(), weight_decay=0.1). The choice is saved with
    the run and kept by --resume; a bias moves differently under the two."""
    runs = {}
    for flag in (False, True):
        out = tmp_path / f"d{flag}"
        small_run(out, verdict, steps=2, decay_all=flag, weight_decay=0.5)
        model, opt_state, _, state = load_checkpoint(out)
        assert state["train_config"]["decay_all"] is flag
        decays = [g["weight_decay"] for g in opt_state["meta"]["param_groups"]]
        sizes = [g["num_params"] for g in opt_state["meta"]["param_groups"]]
        n = len([p for p in model.parameters() if p.requires_grad])
        assert (decays, sizes) == (([0.5], [n]) if flag else ([0.5, 0.0], [sizes[0], n - sizes[0]])), (decays, sizes)
        runs[flag] = dict(model.named_parameters())
    bias = "blocks.0.norm1.bias"
    assert not np.array_equal(runs[False][bias].data, runs[True][bias].data)
    assert main(["train", "--out", str(tmp_path / "dTrue"), "--resume", "--steps", "3", "--quiet"]) == 0
    _, opt_state, _, state = load_checkpoint(tmp_path / "dTrue")
    assert state["train_config"]["decay_all"] is True and len(opt_state["meta"]["param_groups"]) == 1
    with pytest.raises(Exception, match="decay-all must be true or false"):
        TrainConfig(decay_all="yes")
