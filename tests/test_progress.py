"""Progress output: whole lines at a sane interval when not on a terminal; the first-run compile note, and
compile time kept out of the training rate."""
import io
import time

import numpy as np
import pytest

import minigpt
from minigpt.progress import LineProgress, progress_bar


class FakeClock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_a_line_every_tenth_of_the_total():
    out, clock = io.StringIO(), FakeClock()
    p = LineProgress(600, desc="train", unit="step", file=out, clock=clock)
    for _ in range(600):
        clock.t += 0.2
        p.set_postfix({"loss": "5.000"})
        p.update(1)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10  # not 600
    assert lines[0].startswith("train: 60/600 (10%), 0:12 elapsed, ~1:48 left, 5.0 step/s; loss=5.000")
    assert lines[-1].startswith("train: 600/600 (100%), 2:00 elapsed, ~0:00 left")
    assert "\r" not in out.getvalue()


def test_a_line_every_30_seconds_when_progress_is_slow_or_the_total_unknown():
    out, clock = io.StringIO(), FakeClock()
    p = LineProgress(None, desc="counting", unit="char", unit_scale=True, file=out, clock=clock)
    for _ in range(300):
        clock.t += 1.0
        p.update(1000)
    p.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0] == "counting: 30.0k char, 0:30 elapsed, 1.0k char/s"
    slow_out = io.StringIO()
    slow = LineProgress(1000, unit="step", file=slow_out, clock=clock)
    clock.t += 45.0
    slow.update(1)  # 0.1% done, but 45 s went by
    assert slow_out.getvalue().startswith("1/1,000 (0%), 0:45 elapsed, ~12:29:15 left, 45.00 s/step")


def test_resumed_report_rates_only_the_new_work():
    out, clock = io.StringIO(), FakeClock()
    p = LineProgress(100, unit="step", initial=50, file=out, clock=clock)
    for _ in range(10):
        clock.t += 1.0
        p.update(1)
    assert out.getvalue().splitlines()[0].startswith("60/100 (60%), 0:10 elapsed, ~0:40 left, 1.0 step/s")


def test_bar_kind_follows_the_stream():
    from tqdm import tqdm

    assert isinstance(progress_bar(10, file=io.StringIO()), LineProgress)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    bar = progress_bar(10, file=Tty())
    assert isinstance(bar, tqdm)
    bar.close()


def _trainer(tmp_path, steps, logs, monkeypatch, first_step_sleep=0.0):
    from minigpt.data import DataLoader, SlidingWindowDataset
    from minigpt.model import GPT, GPTConfig
    from minigpt.train import TrainConfig, Trainer

    minigpt.random.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, context_length=8, emb_dim=8, n_heads=2, n_layers=1, drop_rate=0.0))
    ids = np.random.default_rng(0).integers(0, 16, 400)
    loader = DataLoader(SlidingWindowDataset(ids, 8, 8), 4, shuffle=True, seed=0, drop_last=True)
    cfg = TrainConfig(steps=steps, warmup=1, eval_every=0, sample_tokens=2)
    trainer = Trainer(model, None, loader, None, cfg, tmp_path, log=logs.append, progress=True)
    if first_step_sleep:
        real = trainer.train_step
        calls = []

        def slow_first(x, y):
            calls.append(1)
            if len(calls) == 1:
                time.sleep(first_step_sleep)  # stands in for Numba compiling the kernels
            return real(x, y)

        monkeypatch.setattr(trainer, "train_step", slow_first)
    return trainer


def test_training_progress_in_a_log_file_and_the_compile_note(tmp_path, monkeypatch, capsys):
    from minigpt.train import kernel_cache

    stamp = tmp_path / "cache" / kernel_cache.STAMP_NAME
    monkeypatch.setattr(kernel_cache, "stamp_path", lambda: stamp)
    monkeypatch.setattr(kernel_cache, "numba_in_use", lambda: True)
    monkeypatch.setattr("minigpt.progress.MIN_GAP_SECONDS", 0.0)  # these steps take milliseconds
    logs = []
    t0 = time.monotonic()
    _trainer(tmp_path / "a", 40, logs, monkeypatch, first_step_sleep=3.0).run()
    wall = time.monotonic() - t0
    assert logs[0] == f"compiling kernels (first run only, ~{kernel_cache.DEFAULT_COMPILE_SECONDS} s)"
    lines = capsys.readouterr().err.splitlines()
    progress = [ln for ln in lines if ln.startswith("train: ")]
    assert 3 <= len(progress) <= 10, lines  # 10% of 40 steps: a line every 4 steps, from step 1 on
    assert progress[-1].startswith("train: 40/40 (100%), 0:")
    minutes, seconds = progress[-1].split(", ")[1].split()[0].split(":")
    assert int(minutes) * 60 + int(seconds) <= wall - 2.0  # the report's clock left the 3 s first step out
    assert kernel_cache.is_warm()
    assert kernel_cache.expected_compile_seconds() >= 3  # the measured first step (3 s + the step), rounded

    logs.clear()
    _trainer(tmp_path / "b", 5, logs, monkeypatch).run()  # warm now: no note
    assert not any("compiling" in m for m in logs)


def test_a_changed_kernel_module_makes_the_cache_cold(tmp_path, monkeypatch):
    from minigpt.train import kernel_cache

    stamp = tmp_path / kernel_cache.STAMP_NAME
    kernel_cache.mark_warm(30.0, stamp)
    assert kernel_cache.is_warm(stamp) and kernel_cache.expected_compile_seconds(stamp) == 30
    real = kernel_cache._fingerprint
    monkeypatch.setattr(kernel_cache, "_fingerprint",
                        lambda: {**real(), "sources": {**real()["sources"], "gelu.py": [1, 2]}})
    assert not kernel_cache.is_warm(stamp)


def test_quiet_training_prints_nothing(tmp_path, monkeypatch, capsys):
    from minigpt.train import kernel_cache

    monkeypatch.setattr(kernel_cache, "numba_in_use", lambda: False)
    trainer = _trainer(tmp_path, 3, [], monkeypatch)
    trainer.progress = False
    trainer.run()
    assert capsys.readouterr().err == ""


def test_a_burst_of_progress_makes_one_line():
    out, clock = io.StringIO(), FakeClock()
    p = LineProgress(100, unit="token", file=out, clock=clock)
    clock.t += 26.0
    for _ in range(9):
        p.update(10)  # 90% arrives at once, as BPE training reports it after compiling
    clock.t += 2.0
    p.update(10)
    lines = out.getvalue().splitlines()
    assert [ln.split(",")[0] for ln in lines] == ["10/100 (10%)", "100/100 (100%)"]


@pytest.mark.parametrize("total", [1, 3])
def test_tiny_totals_still_end_with_a_line(total):
    out, clock = io.StringIO(), FakeClock()
    with LineProgress(total, file=out, clock=clock) as p:
        for _ in range(total):
            clock.t += 1
            p.update(1)
    assert out.getvalue().splitlines()[-1].startswith(f"{total}/{total} (100%)")


def test_without_matplotlib_the_run_says_once_how_to_get_the_plot(tmp_path, monkeypatch):
    import sys

    from minigpt.train import kernel_cache

    monkeypatch.setattr(kernel_cache, "numba_in_use", lambda: False)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    logs = []
    trainer = _trainer(tmp_path, 6, logs, monkeypatch)
    trainer.cfg.checkpoint_every = 2  # three saves, three plot attempts
    trainer.progress = False
    trainer.run()
    notes = [m for m in logs if "loss.png" in m]
    assert len(notes) == 1
    assert "matplotlib" in notes[0] and 'pip install -e ".[plot]"' in notes[0]
    assert not (tmp_path / "loss.png").exists() and (tmp_path / "latest.json").exists()


def test_pretrain_announces_the_compilation_before_the_tokenizer_and_times_it(tmp_path, monkeypatch):
    from minigpt.train import TrainConfig, kernel_cache, pretrain

    stamp = tmp_path / "cache" / kernel_cache.STAMP_NAME
    monkeypatch.setattr(kernel_cache, "stamp_path", lambda: stamp)
    monkeypatch.setattr(kernel_cache, "numba_in_use", lambda: True)
    text = tmp_path / "t.txt"
    text.write_text("".join(f"line {i}: a small text to learn from, again and again.\n" for i in range(200)))
    logs = []
    pretrain(tmp_path / "run", text_files=[text], config="nano", config_overrides={"context_length": 16},
             vocab_size=270, train_cfg=TrainConfig(steps=2, batch_size=2, eval_every=0, sample_tokens=2),
             progress=False, log=logs.append)
    assert logs[0] == f"compiling kernels (first run only, ~{kernel_cache.DEFAULT_COMPILE_SECONDS} s)"
    assert logs[1].startswith("corpus: ")
    assert sum("compiling kernels" in m for m in logs) == 1
    assert kernel_cache.is_warm()
