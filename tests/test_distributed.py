"""Data-parallel training: gradient accumulation, the same run on 1 or 2 MPI ranks, resume, faults.

The MPI tests start ``mpiexec -n 2`` themselves (mpi4py and mpich's mpiexec come with the ``test``
extra) and skip only when no MPI is installed.
"""
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from minigpt import MiniGPTError
from minigpt.cli import main
from minigpt.distributed import MPIContext, Single, launch_env
from minigpt.model.checkpoint import latest_checkpoint
from minigpt.train import Trainer, TrainConfig, pretrain
from minigpt.train.run import split_global_batch

REPO = Path(__file__).resolve().parents[1]
MPIEXEC = shutil.which("mpiexec", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                         os.environ.get("PATH", "")]))
HAVE_MPI = MPIEXEC is not None and importlib.util.find_spec("mpi4py") is not None
requires_mpi = pytest.mark.skipif(not HAVE_MPI, reason="no MPI installed (mpi4py and an mpiexec): "
                                  "pip install -e '.[test]' brings both (mpi4py + the mpich wheel)")
LAUNCHER_VARS = re.compile(r"^(PMI_|PMIX_|OMPI_|MV2_|MPI_LOCAL|HYDRA_)")


def quiet(_msg):
    pass


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    """A small synthetic corpus (the tests must not depend on the shared data folder)."""
    rng = np.random.default_rng(0)
    words = ("the cat sat on a mat while dogs ran far away from home and birds sang in tall green trees "
             "every morning").split()
    path = tmp_path_factory.mktemp("corpus") / "text.txt"
    path.write_text("\n".join(" ".join(rng.choice(words, size=12)) + "." for _ in range(600)))
    return path


def args(out, text, quiet=True, **kw):
    opts = {"config": "nano", "context-length": 32, "vocab-size": 300, "steps": 5, "lr": 3e-3, "warmup": 2,
            "eval-every": 5, "eval-batches": 2, "sample-tokens": 4, "seed": 7, **kw}
    argv = ["--out", str(out), "--text", str(text)] + (["--quiet"] if quiet else [])
    for k, v in opts.items():
        argv += [f"--{k}"] if v is True else [f"--{k}", str(v)]
    return argv


def run_1(out, text, **kw):
    assert main(["train", *args(out, text, **kw)]) == 0


def clean_env():
    env = {k: v for k, v in os.environ.items() if not LAUNCHER_VARS.match(k)}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def mpirun(n, argv, timeout=240, extra=()):  # argv: args(..., quiet=False) to read rank 0's messages
    cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "minigpt", "train", *argv, *extra]
    return subprocess.run(cmd, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=timeout)


def log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def params(out):
    from safetensors.numpy import load_file

    latest = json.loads((Path(out) / "latest.json").read_text())["checkpoint"]
    return load_file(str(Path(out) / latest / "model.safetensors"))


def rel_err(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def assert_same_run(a, b, loss_tol, param_tol, val=True):
    """Runs ``a`` and ``b`` made the same steps on the same tokens, up to float32 summation order."""
    la, lb = log(a), log(b)
    assert [r["step"] for r in la] == [r["step"] for r in lb]
    for ra, rb in zip(la, lb):
        assert ra["tokens"] == rb["tokens"]
        assert ra["loss"] == pytest.approx(rb["loss"], rel=loss_tol, abs=2e-6)  # the log rounds to 6 digits
        # AdamW hardly sees a gradient scaled by a constant, the gradient norm does
        if rb["grad_norm"] is not None:
            assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=10 * loss_tol, abs=2e-6)
        if val and "val_loss" in rb:
            assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=loss_tol, abs=2e-6)
    pa, pb = params(a), params(b)
    assert pa.keys() == pb.keys()
    flat = lambda p: np.concatenate([p[k].ravel() for k in sorted(p)])  # noqa: E731
    assert rel_err(flat(pa), flat(pb)) < param_tol  # all the weights, as one vector
    # each weight too, in units of how far AdamW can move it: about lr per step whatever the gradient's size,
    # so a wrong gradient moves some weights by a good part of that. Rounding alone moved them up to ~1e-4 of
    # it (the tied embedding's rare-token rows): AdamW divides each gradient entry by its own size, which
    # magnifies the float32 rounding of entries that are sums of cancelling terms, so a relative per-tensor
    # bound would hang on the machine's summation order. The float64 test below checks the gradient exactly.
    reach = sum(r["lr"] for r in lb)
    for k in pb:
        worst = float(np.max(np.abs(pa[k].astype(np.float64) - pb[k])))
        assert worst < 1e-2 * reach, (k, worst, reach)


# --- without MPI ------------------------------------------------------------------------------------
def test_launcher_detection_reads_the_environment_only():
    assert launch_env({}) is None
    assert launch_env({"PMI_RANK": "1", "PMI_SIZE": "4"}) == (1, 4)
    assert launch_env({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}) == (0, 2)
    assert launch_env({"PMIX_RANK": "3"}) == (3, None)


def test_ranks_on_one_machine_share_its_cores():
    from minigpt.runtime import mpi_local_ranks, threads_per_rank

    assert threads_per_rank({"MPI_LOCALNRANKS": "2"}, cpus=8) == 4
    assert threads_per_rank({"OMPI_COMM_WORLD_LOCAL_SIZE": "4"}, cpus=2) == 1
    assert threads_per_rank({}, cpus=8) is None and mpi_local_ranks({}) == 1
    # under mpiexec -n 2 each rank's pools get one of the two cores (unless the environment says otherwise)
    code = ("import minigpt.runtime as r; r.configure(); import numba, os; "
            "print('T', numba.get_num_threads(), os.environ['OPENBLAS_NUM_THREADS'])")
    env = {**clean_env(), "MPI_LOCALNRANKS": "2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert f"T {max(1, len(os.sched_getaffinity(0)) // 2)} {max(1, len(os.sched_getaffinity(0)) // 2)}" \
        in out.stdout, out.stderr


def test_split_global_batch_keeps_the_global_batch():
    assert split_global_batch(16, 4, 4) == (4, 1)
    assert split_global_batch(16, 1, 4) == (4, 4)
    assert split_global_batch(12, 2, 4) == (3, 2)
    with pytest.raises(Exception, match="cannot be shared by 3 ranks"):
        split_global_batch(16, 3, 4)


def test_grad_accum_equals_a_batch_twice_as_large(tmp_path, text):
    run_1(tmp_path / "big", text, **{"batch-size": 8})
    run_1(tmp_path / "acc", text, **{"batch-size": 4, "grad-accum": 2})
    la = log(tmp_path / "acc")
    assert len(la) == 5 and la[0]["tokens"] == 8 * 32
    # the validation batches differ (4 vs 8 windows): compare the training losses and the parameters. The
    # whole-vector bound is float32 rounding after 5 AdamW steps: measured 1.5e-6 on an AMD EPYC, below 1e-6 on
    # an Intel Xeon (summation order); a missing 1/k weight is not caught by it anyway (AdamW hardly sees a
    # constant gradient scale), but by the gradient norms compared per step and by the float64 test below
    assert_same_run(tmp_path / "acc", tmp_path / "big", loss_tol=1e-6, param_tol=1e-5, val=False)


@pytest.mark.parametrize("k", [2, 4])
def test_grad_accum_gradient_is_the_big_batch_gradient_in_float64(tmp_path, k):
    """The exact statement behind the run-level test above, without float32 rounding or AdamW in the way:
    after one step, the gradient summed over ``k`` weighted micro-batches equals one batch's gradient."""
    from minigpt.model import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=50, context_length=16, emb_dim=32, n_heads=4, n_layers=2, drop_rate=0.0)
    rng = np.random.default_rng(3)
    x = rng.integers(0, 50, (8, 16))
    y = rng.integers(0, 50, (8, 16))
    grads, losses = [], []
    for accum in (1, k):
        model = GPT(cfg, dtype=np.float64)
        if accum == 1:
            start = {n: p.data.copy() for n, p in model.named_parameters()}
        else:  # the same starting weights
            for n, p in model.named_parameters():
                p.data[...] = start[n]
        tc = TrainConfig(steps=1, lr=1e-3, warmup=0, grad_accum=accum, grad_clip=0.0)
        trainer = Trainer(model, None, None, None, tc, tmp_path / f"run{accum}", log=quiet, progress=False)
        loss, _ = trainer.train_step(x, y)
        losses.append(loss)
        grads.append({n: p.grad.copy() for n, p in model.named_parameters()})
    assert losses[1] == pytest.approx(losses[0], rel=1e-13)
    for n, g in grads[0].items():
        np.testing.assert_allclose(grads[1][n], g, rtol=1e-10, atol=1e-14, err_msg=n)


def test_one_process_never_imports_mpi4py(tmp_path, text):
    code = ("import sys; from minigpt.cli import main; "
            f"rc = main(['train', *{args(tmp_path / 'one', text, steps=2, **{'grad-accum': 2})!r}]); "
            "print('RC', rc, 'mpi4py' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                       timeout=300)
    assert "RC 0 False" in r.stdout, r.stderr


def test_ddp_without_mpi_fails_clearly(tmp_path, text, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # `import mpi4py` now raises ImportError
    assert main(["train", *args(tmp_path / "x", text, ddp=True)]) == 2
    err = capsys.readouterr().err
    assert "minigpt: error: --ddp needs MPI" in err and "pip install 'minigpt[mpi]'" in err
    assert not (tmp_path / "x").exists()


def test_single_context_changes_nothing():
    s = Single()
    x = np.arange(6).reshape(3, 2)
    assert s.shard(x) is x and s.allreduce_grads(1.5) == 1.5 and s.is_main and s.world_size == 1


# --- under mpiexec -----------------------------------------------------------------------------------
@requires_mpi
def test_two_ranks_equal_one_process_with_the_global_batch(tmp_path, text):
    r = mpirun(2, args(tmp_path / "mpi", text, quiet=False, **{"batch-size": 4}))
    assert r.returncode == 0, r.stderr
    assert "data parallel: 2 MPI ranks" in r.stderr
    assert r.stdout.count("trained 5 steps") == 1  # rank 0 alone reports
    assert "drifted apart" not in r.stderr  # the ranks' weights were bit-identical at the checkpoint
    run_1(tmp_path / "one", text, **{"batch-size": 8})
    assert_same_run(tmp_path / "mpi", tmp_path / "one", loss_tol=1e-6, param_tol=1e-5, val=False)
    # same per-rank batch: the sharded validation loss equals one process's as well
    run_1(tmp_path / "acc", text, **{"batch-size": 4, "grad-accum": 2})
    assert_same_run(tmp_path / "mpi", tmp_path / "acc", loss_tol=1e-6, param_tol=1e-5)
    assert "val_loss" in log(tmp_path / "mpi")[-1]
    # rank 0 alone writes: one checkpoint folder per save, no stray temporary folders
    assert sorted(p.name for p in (tmp_path / "mpi" / "checkpoints").iterdir()) == ["step-000005"]


@requires_mpi
def test_resumed_two_rank_run_continues_exactly(tmp_path, text):
    common = {"batch-size": 2, "grad-accum": 2, "steps": 6, "checkpoint-every": 3, "eval-every": 3}
    r = mpirun(2, args(tmp_path / "a", text, **common))
    assert r.returncode == 0, r.stderr
    # the same run stopped after step 3: its checkpoint of step 3 is the latest, the log ends there
    b = tmp_path / "b"
    shutil.copytree(tmp_path / "a", b)
    shutil.rmtree(b / "checkpoints" / "step-000006")
    (b / "latest.json").write_text(json.dumps({"checkpoint": "checkpoints/step-000003", "step": 3}))
    c, d = tmp_path / "c", tmp_path / "d"
    shutil.copytree(b, c)
    shutil.copytree(b, d)
    r = mpirun(2, args(b, text, quiet=False, resume=True, steps=6))
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stderr
    a = tmp_path / "a"
    assert len(log(b)) == 6
    assert log(b) == [{**x, "tokens_per_s": y["tokens_per_s"]} for x, y in zip(log(a), log(b))]
    pa, pb = params(a), params(b)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)  # bit for bit
    # resumed on one process (batch 2 x grad-accum 4: the same global batch of 8 windows)
    run_1(c, text, resume=True, steps=6)
    assert_same_run(c, a, loss_tol=1e-6, param_tol=1e-5)
    # ... and on 4 ranks (batch 2 x grad-accum 1 each)
    r = mpirun(4, args(d, text, quiet=False, resume=True, steps=6))
    assert r.returncode == 0, r.stderr
    assert "global batch of 8 is now batch 2 x 4 rank(s) x grad-accum 1" in r.stderr
    assert_same_run(d, a, loss_tol=1e-6, param_tol=1e-5)


@requires_mpi
def test_mismatched_ranks_are_refused_at_start(tmp_path, text):
    a = args(tmp_path / "m", text, seed=1)
    b = args(tmp_path / "m", text, seed=2)
    cmd = [MPIEXEC, "-n", "1", sys.executable, "-m", "minigpt", "train", *a, ":",
           "-n", "1", sys.executable, "-m", "minigpt", "train", *b]
    r = subprocess.run(cmd, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode != 0
    assert ("the ranks were started with different configurations: rank 1 differs from rank 0 in train.seed "
            "(2 vs 1)") in r.stderr
    assert r.stderr.count("minigpt: error:") == 1
    assert not (tmp_path / "m" / "latest.json").exists()


@requires_mpi
def test_one_rank_failing_stops_the_job_with_its_rank(tmp_path, text):
    a = args(tmp_path / "f", text)
    b = args(tmp_path / "f", tmp_path / "missing.txt")
    cmd = [MPIEXEC, "-n", "1", sys.executable, "-m", "minigpt", "train", *a, ":",
           "-n", "1", sys.executable, "-m", "minigpt", "train", *b]
    r = subprocess.run(cmd, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode != 0
    assert re.search(r"minigpt: error: rank 1: .*missing\.txt", r.stderr), r.stderr


def _kill_rank_1_mid_run(out, text, tmp_path, launcher_opts=(), sig=signal.SIGKILL, env=None):
    """Start a long 2-rank run, send rank 1 ``sig`` (SIGKILL) after a few steps; (seconds until mpiexec
    ended, its return code, its stdout + stderr, the signalled pid)."""
    errf, outf = tmp_path / "stderr.txt", tmp_path / "stdout.txt"
    argv = args(out, text, quiet=False, **{"steps": 400, "batch-size": 2, "checkpoint-every": 2, "eval-every": 0})
    with open(errf, "w") as err, open(outf, "w") as stdout:
        proc = subprocess.Popen([MPIEXEC, *launcher_opts, "-n", "2", sys.executable, "-m", "minigpt", "train",
                                 *argv], cwd=REPO, env={**clean_env(), **(env or {})}, stdout=stdout, stderr=err,
                                text=True)
    pid = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            m = re.search(r"rank 1 pid (\d+)", errf.read_text())
            if m and (out / "log.jsonl").exists() and (out / "log.jsonl").read_text().count("\n") >= 5:
                pid = int(m.group(1))
                break
            assert proc.poll() is None, errf.read_text()
            time.sleep(0.2)
        assert pid is not None, "the run did not get going"
        os.kill(pid, sig)  # rank 1 dies (or stops) mid-run
        t0 = time.monotonic()
        proc.wait(timeout=30)
        return time.monotonic() - t0, proc.returncode, outf.read_text() + errf.read_text(), pid
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if pid is not None and sig == signal.SIGSTOP:
            try:  # a stopped rank the launcher did not clean up: let it go
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@requires_mpi
def test_a_killed_rank_stops_the_job_and_resume_restarts(tmp_path, text):
    out = tmp_path / "k"
    seconds, rc, output, pid = _kill_rank_1_mid_run(out, text, tmp_path)
    assert rc != 0 and seconds < 20
    # mpiexec names the dead process by its pid; rank 0's start-up line maps that pid to rank 1
    assert f"rank 1 pid {pid}" in output and f"PID {pid}" in output, output
    # the newest complete checkpoint, which --resume takes: the kill may fall between a checkpoint's rename
    # into place and the update of latest.json, which then names the one before
    step = int(latest_checkpoint(out).name.split("-")[-1])
    assert 2 <= step < 400
    params(out)  # the latest checkpoint is complete and loads
    r = mpirun(2, args(out, text, quiet=False, resume=True, steps=step + 2))
    assert r.returncode == 0, r.stderr
    assert f"resuming {out} at step {step}" in r.stderr
    assert log(out)[-1]["step"] == step + 2


@requires_mpi
def test_a_stopped_rank_stops_the_job_after_the_collective_timeout(tmp_path, text):
    """A rank that is stopped (SIGSTOP) is alive to every launcher: the other rank waits in the gradient
    Allreduce for MINIGPT_COLLECTIVE_TIMEOUT seconds, then stops the job with a one-line message."""
    out = tmp_path / "s"
    seconds, rc, output, pid = _kill_rank_1_mid_run(out, text, tmp_path, sig=signal.SIGSTOP,
                                                    env={"MINIGPT_COLLECTIVE_TIMEOUT": "3"})
    assert rc != 0 and 3 <= seconds < 25, (seconds, output)
    assert re.search(r"minigpt: error: rank 0 waited more than 3 s for the other ranks in the gradient Allreduce",
                     output), output
    latest_checkpoint(out)  # the run's checkpoints are there to resume from


def test_the_collective_timeout_setting():
    from minigpt.distributed import collective_timeout

    assert collective_timeout({}) == 600.0 and collective_timeout({"MINIGPT_COLLECTIVE_TIMEOUT": "0"}) == 0.0
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(MiniGPTError, match=f"MINIGPT_COLLECTIVE_TIMEOUT='{bad}': use a number of seconds"):
            collective_timeout({"MINIGPT_COLLECTIVE_TIMEOUT": bad})
    # a rank waiting in a collective longer than the timeout stops (run in a child: it exits)
    code = ("import os, socket, threading, time\n"
            "from minigpt.distributed import MPIContext\n"
            "ctx = MPIContext.__new__(MPIContext)\n"
            "ctx.rank, ctx._stop, ctx.timeout = 1, threading.Event(), 0.5\n"
            "ctx.peers = [(os.getpid(), socket.gethostname())]\n"
            "ctx._waiting = ('the gradient Allreduce', time.monotonic())\n"
            "ctx._watch_peers()\n"
            "print('not stopped')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "not stopped" not in r.stdout
    assert r.stderr.startswith("minigpt: error: rank 1 waited more than 0.5 s for the other ranks in the gradient "
                               "Allreduce") and r.stderr.count("\n") == 1, r.stderr


def test_the_watchdog_tells_a_dead_process_from_a_live_one():
    # MPICH's mpiexec kills the whole job when a rank dies (even with -disable-auto-cleanup the survivors'
    # Allreduce fails at once); the watchdog of each rank is the safety net for launchers that do not
    from minigpt.distributed import _alive

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _alive(child.pid) and _alive(os.getpid())
        child.kill()
        time.sleep(0.2)
        assert not _alive(child.pid)  # a zombie (not reaped yet) counts as dead
    finally:
        child.wait()
    assert not _alive(child.pid)
    # a rank whose peer on the same machine is gone stops, naming that rank (run in a child: it exits)
    code = ("import os, socket, threading, subprocess, sys\n"
            "from minigpt.distributed import MPIContext\n"
            "peer = subprocess.Popen([sys.executable, '-c', 'pass']); peer.wait()\n"
            "ctx = MPIContext.__new__(MPIContext)\n"
            "ctx.rank, ctx._stop = 0, threading.Event()\n"
            "ctx.peers = [(os.getpid(), socket.gethostname()), (peer.pid, socket.gethostname())]\n"
            "ctx._watch_peers()\n"
            "print('not stopped')\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=clean_env(), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 3 and "not stopped" not in r.stdout
    assert re.search(r"minigpt: error: rank 1 \(pid \d+ on .*\) died; rank 0 stops", r.stderr), r.stderr


@requires_mpi
def test_an_existing_run_is_refused_once_under_mpi(tmp_path, text):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "latest.json").write_text('{"checkpoint": "checkpoints/step-000001", "step": 1}')
    r = mpirun(2, args(out, text), timeout=120)
    assert r.returncode == 2
    assert r.stderr.count("minigpt: error:") == 1 and f"{out} already holds a training run" in r.stderr


@requires_mpi
@pytest.mark.parametrize("task", ["classify", "instruct"])
def test_finetuning_is_refused_under_mpiexec(tmp_path, task):
    """Two ranks would run the same finetuning into one --out: refused at once, nothing written."""
    out = tmp_path / "ft"
    cmd = [MPIEXEC, "-n", "2", sys.executable, "-m", "minigpt", "finetune", task, "--init", str(tmp_path / "m"),
           "--data", str(tmp_path / "d"), "--out", str(out)]
    r = subprocess.run(cmd, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert f"minigpt: error: finetune {task} runs in a single process, but MPI started 2 ranks" in r.stderr, r.stderr
    assert not out.exists()
