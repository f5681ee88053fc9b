"""AdamW step on a gpt2-small-sized parameter set (124,439,808 float32 values in GPT-2's 148 tensors):
minigpt's fused Numba kernel beside torch.optim.AdamW (foreach, for-loop and fused implementations).

    python benchmarks/bench_adamw.py [--threads 2] [--repeats 10]

Bandwidth counts the bytes an ideal single pass moves per step: read p, g, m, v and write p, m, v
(7 x 4 bytes per float32 value). Two param groups as in training: weight decay on matrices, none on vectors.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import setup_threads  # noqa: E402


def gpt2_small_shapes(vocab=50257, ctx=1024, d=768, layers=12):
    shapes = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    return shapes + [(d,), (d,)]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    setup_threads(args.threads)

    import numpy as np

    import minigpt  # noqa: F401  (threading layer first)
    from minigpt.kernels import use_backend
    from minigpt.optim import AdamW

    shapes = gpt2_small_shapes()
    n = sum(int(np.prod(s)) for s in shapes)
    bytes_per_step = 7 * 4 * n
    rng = np.random.default_rng(0)

    class P:
        def __init__(self, shape):
            self.data = (rng.standard_normal(shape, dtype=np.float32) * 0.02)
            self.grad = rng.standard_normal(shape, dtype=np.float32) * 1e-3
            self.requires_grad = True

    params = [P(s) for s in shapes]

    def groups(ps):
        return [{"params": [p for p in ps if p.data.ndim >= 2], "weight_decay": 0.1},
                {"params": [p for p in ps if p.data.ndim < 2], "weight_decay": 0.0}]

    impls = []  # (label, step function, context manager factory)
    opt = AdamW(groups(params), lr=3e-4, betas=(0.9, 0.95))
    impls.append(("minigpt AdamW (fused Numba kernel)", opt.step))
    opt_np = AdamW(groups(params), lr=3e-4, betas=(0.9, 0.95))

    def numpy_step():
        with use_backend("numpy"):
            opt_np.step()

    impls.append(("minigpt AdamW, NumPy reference path", numpy_step))

    torch_version = None
    try:
        import torch

        from common import set_torch_threads

        set_torch_threads(args.threads)
        torch_version = torch.__version__
        tparams = [torch.nn.Parameter(torch.from_numpy(p.data.copy())) for p in params]
        for tp, p in zip(tparams, params):
            tp.grad = torch.from_numpy(p.grad.copy())
        for label, kw in (("torch.optim.AdamW(foreach=True)", {"foreach": True}),
                          ("torch.optim.AdamW(foreach=False)", {"foreach": False}),
                          ("torch.optim.AdamW(fused=True)", {"fused": True})):
            try:
                topt = torch.optim.AdamW(groups(tparams), lr=3e-4, betas=(0.9, 0.95), **kw)
            except (RuntimeError, ValueError, TypeError) as e:
                print(f"{label}: not available ({e})")
                continue

            def torch_step(topt=topt):
                with torch.no_grad():
                    topt.step()

            impls.append((label, torch_step))
    except ImportError:
        pass

    # warm up everything, then interleave the repeats so that load drifts hit every implementation alike
    for _, fn in impls:
        fn()
        fn()
    times = {label: [] for label, _ in impls}
    for _ in range(args.repeats):
        for label, fn in impls:
            t0 = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - t0)
    rows = [(label, statistics.median(times[label])) for label, _ in impls]
    t_torch = dict(rows).get("torch.optim.AdamW(foreach=True)")

    print(f"AdamW step, gpt2-small parameter set: {n:,} float32 values in {len(shapes)} tensors, "
          f"{args.threads} threads, median of {args.repeats} interleaved repeats")
    if torch_version:
        print(f"torch {torch_version}, numpy {np.__version__}")
    print(f"{'implementation':40s} {'ms/step':>9s} {'GB/s':>7s} {'vs torch foreach':>17s}")
    for label, t in rows:
        ratio = f"{t_torch / t:.2f}x" if t_torch else "-"
        print(f"{label:40s} {t * 1e3:9.1f} {bytes_per_step / t / 1e9:7.1f} {ratio:>17s}")


if __name__ == "__main__":
    main()
