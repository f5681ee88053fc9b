"""Data-parallel training on one machine: 1 process x 2 threads against 2 MPI processes x 1 thread.

Both runs take the same global batch (``--batch`` windows per rank x 2) through minigpt's own training step
(``Trainer.train_step``: forward, loss, backward, one Allreduce, clipping, AdamW). Printed per config:
tokens/s of each, the Allreduce's share of the 2-process step (its time includes waiting for the slower
rank), the bytes each rank sends into the Allreduce per step, and the Allreduce bandwidth measured on a
buffer of that size. Then, on paper, the scaling efficiency of N machines on a network of a given speed:
ring allreduce time ``2 (N-1)/N x bytes / bandwidth`` against the measured compute time of a step (no
overlap of communication and backward assumed), and the global batch that keeps it above 80%.

    python benchmarks/bench_ddp.py                       # tiny and small
    python benchmarks/bench_ddp.py --config gpt2-small --batch 1 --steps 3
    python benchmarks/bench_ddp.py --config tiny --json ddp.json

Needs mpi4py and an ``mpiexec`` (``pip install -e ".[mpi]"``). Not a test.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import CONFIGS, cpu_busy_fraction, format_table, load_avg  # noqa: E402

SHAPES = {k: {kk: v[kk] for kk in ("vocab_size", "context_length", "emb_dim", "n_layers", "n_heads")}
          for k, v in CONFIGS.items()}
DEFAULT_BATCH = {"tiny": 8, "small": 4, "gpt2-small": 1}  # windows per rank (seq_len of common.CONFIGS)


# --- worker: one process, or one rank under mpiexec ---------------------------------------------------
def worker(a):
    from common import setup_threads

    setup_threads(a.threads, torch_first=False)
    import numpy as np

    from minigpt import distributed
    from minigpt.model import GPT, GPTConfig
    from minigpt.train import Trainer, TrainConfig

    dist = distributed.init(require=a.mpi)
    seq = CONFIGS[a.config]["seq_len"]
    model = GPT(GPTConfig(**SHAPES[a.config], drop_rate=0.0))
    cfg = TrainConfig(steps=10_000, batch_size=a.batch, warmup=1, lr=1e-4)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(model, None, None, None, cfg, tmp, progress=False, log=lambda m: None, dist=dist)
        rng = np.random.default_rng(0)
        global_b = a.batch * dist.world_size
        reduce_times = []
        real_reduce = dist.allreduce_grads

        def timed_reduce(loss):
            t0 = time.perf_counter()
            out = real_reduce(loss)
            reduce_times.append(time.perf_counter() - t0)
            return out

        dist.allreduce_grads = timed_reduce
        step_times = []
        for i in range(a.warmup + a.steps):
            x = rng.integers(0, SHAPES[a.config]["vocab_size"], size=(global_b, seq + 1))
            t0 = time.perf_counter()
            tr.train_step(x[:, :-1], x[:, 1:])
            step_times.append(time.perf_counter() - t0)
        step_times, reduce_times = step_times[a.warmup:], reduce_times[a.warmup:]
        nbytes = sum(b.nbytes for b in getattr(dist, "buffers", [])) or \
            sum(p.data.nbytes for p in tr.params)
        res = {"config": a.config, "ranks": dist.world_size, "threads": a.threads, "global_batch": global_b,
               "seq_len": seq, "step_s": float(np.median(step_times)), "bytes": int(nbytes),
               "params": int(sum(p.data.size for p in tr.params))}
        res["tokens_per_s"] = global_b * seq / res["step_s"]
        if dist.world_size > 1:
            res["allreduce_s"] = float(np.median(reduce_times))
            # bandwidth of a bare Allreduce of the gradient buffer (no compute around it)
            buf = np.ones(nbytes // 4, dtype=np.float32)
            comm, MPI = dist.comm, dist.MPI
            for _ in range(3):
                comm.Allreduce(MPI.IN_PLACE, buf)
            comm.Barrier()
            reps, t0 = 10, time.perf_counter()
            for _ in range(reps):
                comm.Allreduce(MPI.IN_PLACE, buf)
            bare = (time.perf_counter() - t0) / reps
            res["bare_allreduce_s"] = bare
            res["algbw_GBps"] = nbytes / bare / 1e9
            n = dist.world_size
            res["busbw_GBps"] = 2 * (n - 1) / n * nbytes / bare / 1e9
        dist.close()
        if dist.is_main:
            print("RESULT " + json.dumps(res), flush=True)


# --- driver -------------------------------------------------------------------------------------------
def run(cmd, env):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE.parent)
    for line in r.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}")


def efficiency(step_s, nbytes, machines, gbit):
    comm = 2 * (machines - 1) / machines * nbytes / (gbit * 1e9 / 8)
    return step_s / (step_s + comm), comm


def paper_rows(res, machines=(8, 64), gbits=(10, 100), target=0.8):
    """Efficiency of N machines each running the measured 1-machine step, and the global batch needed for
    ``target`` efficiency (compute grows with each machine's batch, the allreduce does not)."""
    rows = []
    per_window = res["step_s"] / res["global_batch"]  # seconds of compute per window on one machine
    for n in machines:
        for g in gbits:
            eff, comm = efficiency(res["step_s"], res["bytes"], n, g)
            need = max(1, math.ceil(target / (1 - target) * comm / per_window))  # windows per machine per step
            rows.append([res["config"], n, f"{g} Gbit/s", f"{comm * 1e3:,.1f} ms", f"{res['step_s'] * 1e3:,.0f} ms",
                         f"{eff:.0%}", f"{need} x {n} = {need * n:,} ({need * n * res['seq_len']:,} tokens)"])
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny,small", help="comma-separated: tiny, small, gpt2-small")
    p.add_argument("--batch", type=int, default=None, help="windows per rank (default per config)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return worker(a)
    mpiexec = shutil.which("mpiexec", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                             os.environ.get("PATH", "")]))
    if mpiexec is None:
        raise SystemExit("no mpiexec found: pip install -e '.[mpi]'")
    env = {**os.environ, "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):  # the workers set their own
        env.pop(var, None)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?") \
        if os.path.exists("/proc/cpuinfo") else "?"
    busy = cpu_busy_fraction()
    print(f"CPU: {cpu}, {os.cpu_count()} cpus; load average {load_avg()}, "
          f"busy before: {'?' if busy is None else f'{busy:.0%}'} (other processes make these figures noisy)")
    results = []
    for config in a.config.split(","):
        b = a.batch or DEFAULT_BATCH[config]
        common = [str(HERE / "bench_ddp.py"), "--worker", "--config", config, "--steps", str(a.steps),
                  "--warmup", str(a.warmup)]
        one = run([sys.executable, *common, "--threads", "2", "--batch", str(2 * b)], env)
        two = run([mpiexec, "-n", "2", sys.executable, *common, "--mpi", "--threads", "1", "--batch", str(b)], env)
        results.append((one, two))
        print(f"{config}: 1x2 {one['tokens_per_s']:,.0f} tok/s, 2x1 {two['tokens_per_s']:,.0f} tok/s", flush=True)
    rows = []
    for one, two in results:
        rows.append([one["config"], f"{one['global_batch']} x {one['seq_len']}", f"{one['tokens_per_s']:,.0f}",
                     f"{two['tokens_per_s']:,.0f}", f"{two['tokens_per_s'] / one['tokens_per_s']:.2f}x",
                     f"{two['allreduce_s'] * 1e3:,.1f} ms ({two['allreduce_s'] / two['step_s']:.0%})",
                     f"{two['bytes'] / 1e6:,.1f} MB", f"{two['bare_allreduce_s'] * 1e3:,.1f} ms",
                     f"{two['algbw_GBps']:.2f} / {two['busbw_GBps']:.2f} GB/s"])
    print()
    print(format_table(rows, ["config", "global batch", "1 proc x 2 thr tok/s", "2 proc x 1 thr tok/s", "ratio",
                              "allreduce in step (share)", "bytes/step/rank", "bare allreduce",
                              "algbw / busbw"]))
    print()
    print("On paper: N machines, each running the measured 1-process x 2-thread step; ring allreduce of the "
          "gradient buffer, not overlapped with compute:")
    print(format_table([r for one, _ in results for r in paper_rows(one)],
                       ["config", "machines", "network", "allreduce", "compute/step", "efficiency",
                        "global batch for 80% (windows/machine x machines)"]))
    print(f"load average after: {load_avg()}")
    if a.json:
        Path(a.json).write_text(json.dumps([{"one": o, "two": t} for o, t in results], indent=1))


if __name__ == "__main__":
    main()
