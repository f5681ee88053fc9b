"""Training-step speed with the gradient-buffer optimisations on and off (minigpt/grad_buffers.py).

One model, one process: timed blocks alternate (on, off, on, off, ...) after untimed warm-up steps, so a
busy machine slows both sides alike; each figure is the median step. Same step as bench_train.py
(forward, loss, backward, AdamW).

    python benchmarks/bench_grad_buffers.py --config tiny
    python benchmarks/bench_grad_buffers.py --config small --steps 4 --rounds 3
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # the repository root: minigpt without installing it
from common import CONFIGS, load_avg, machine_summary, setup_threads  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny", choices=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=5, help="timed steps per block")
    ap.add_argument("--rounds", type=int, default=4, help="blocks per side")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    setup_threads(args.threads, torch_first=False)
    from bench_train import import_minigpt, make_minigpt_trainer
    from minigpt.grad_buffers import grad_optimizations

    step, _ = make_minigpt_trainer(import_minigpt(), CONFIGS[args.config], CONFIGS[args.config]["batch"])
    print(f"load average before: {load_avg():.2f}")
    for on in (True, False):
        with grad_optimizations(on):
            for _ in range(args.warmup):
                step()
    times = {True: [], False: []}
    for _ in range(args.rounds):
        for on in (True, False):
            with grad_optimizations(on):
                for _ in range(args.steps):
                    t0 = time.perf_counter()
                    step()
                    times[on].append(time.perf_counter() - t0)
    med = {on: statistics.median(t) * 1e3 for on, t in times.items()}
    print(f"[{args.config}] median step: optimisations on {med[True]:.1f} ms, off {med[False]:.1f} ms "
          f"(off/on {med[False] / med[True]:.3f}x); fastest: on {min(times[True]) * 1e3:.1f} ms, "
          f"off {min(times[False]) * 1e3:.1f} ms; {len(times[True])} steps per side")
    print(f"load average after: {load_avg():.2f}; {machine_summary()}")


if __name__ == "__main__":
    main()
