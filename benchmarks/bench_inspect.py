"""Cost of the instruments of minigpt/inspect on a training step (minigpt alone, no reference library).

For the `tiny` shapes of bench_train.py (or --config), the timed steps alternate in blocks between:

- plain: the training step (forward, backward, AdamW) with nothing registered;
- hooks: the same step with one forward hook and one backward hook on every transformer block (no-ops);
- stats: the step as `minigpt train --stats-every 1` samples it (StatsRecorder), with its own cost
  (``stats_seconds``) reported as a share of the step;
- profile: the step inside ``minigpt.profile()``.

    python benchmarks/bench_inspect.py --config tiny --steps 30
    python benchmarks/bench_inspect.py --overhead [--repo OTHER_CHECKOUT]

``--overhead`` times the most Python-bound step there is instead (nano, one sequence of 8 tokens, forward
+ backward, best of 5 x 100) with no hook registered, for the minigpt of this checkout or of ``--repo``
(e.g. a checkout of the commit before the hooks): run both, alternating, to see what the no-hook path
costs.

The "plain" step is what runs with no hook and no profiler: the instruments add nothing to it (they are
checked for that with bench_train.py on this branch and on the commit before them).
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))
from common import CONFIGS, load_avg, machine_summary, setup_threads  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="tiny", choices=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--overhead", action="store_true", help="time a nano 1 x 8 forward + backward instead")
    ap.add_argument("--repo", default=None, help="import minigpt from this checkout (with --overhead)")
    args = ap.parse_args(argv)
    if args.repo:
        sys.path.insert(0, os.path.abspath(args.repo))
    setup_threads(args.threads, torch_first=False)
    if args.overhead:
        return overhead()
    import numpy as np

    import minigpt
    from minigpt.inspect.stats import StatsRecorder
    from minigpt.model import GPT, GPTConfig
    from minigpt.optim import AdamW

    c = CONFIGS[args.config]
    B, T, V = c["batch"], c["seq_len"], c["vocab_size"]
    model = GPT(GPTConfig(vocab_size=V, context_length=c["context_length"], emb_dim=c["emb_dim"],
                          n_heads=c["n_heads"], n_layers=c["n_layers"], drop_rate=0.0, qkv_bias=True))
    opt = AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    rng = np.random.default_rng(0)

    def step():
        x, y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
        loss = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    class Tr:  # what StatsRecorder reads of a Trainer
        pass

    tr = Tr()
    tr.model, tr.out_dir, tr.step = model, tempfile.mkdtemp(), 0
    rec = StatsRecorder(1)
    costs = []

    def stats_step():
        rec.before_step(tr)
        step()
        tr.step += 1
        rec.after_step(tr, {})
        costs.append(rec._cost)

    def hooked_step():
        hs = []
        for blk in model.blocks:
            hs.append(blk.register_forward_hook(lambda m, a, o: None))
            hs.append(blk.register_backward_hook(lambda m, gi, go: None))
        step()
        for h in hs:
            h.remove()

    def profiled_step():
        with minigpt.profile():
            step()

    variants = {"plain": step, "hooks": hooked_step, "stats": stats_step, "profile": profiled_step}
    for f in variants.values():
        for _ in range(2):
            f()
    costs.clear()
    times = {k: [] for k in variants}
    per = max(1, args.steps // args.rounds)
    for _ in range(args.rounds):
        for k, f in variants.items():
            for _ in range(per):
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    print(f"{args.config}: batch {B} x {T}; {machine_summary()}; load average {load_avg():.1f}")
    base = statistics.median(times["plain"])
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"  {k:<8} median step {med * 1e3:8.1f} ms  ({med / base:5.2f}x plain)")
    print(f"  stats_seconds (the recorder's own work) median {statistics.median(costs) * 1e3:.1f} ms = "
          f"{statistics.median(costs) / base:.1%} of a plain step")


def overhead():
    import numpy as np

    import minigpt
    from minigpt.model import GPT, GPTConfig

    m = GPT(GPTConfig.preset("nano"))
    x = np.random.default_rng(0).integers(0, 512, (1, 8))
    for _ in range(20):
        m.loss(x, x).backward()
    best = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(100):
            m.zero_grad()
            m.loss(x, x).backward()
        best.append((time.perf_counter() - t0) / 100)
    print(f"minigpt from {os.path.dirname(os.path.dirname(os.path.abspath(minigpt.__file__)))}: nano 1 x 8 "
          f"forward + backward, best {min(best) * 1e6:.0f} us (load average {load_avg():.1f})")


if __name__ == "__main__":
    main()
