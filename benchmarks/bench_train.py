"""Training-step speed: minigpt beside a plain eager PyTorch GPT-2 of the same shape, in one process.

One step = forward, mean cross-entropy over the (B*T, V) logits, backward, AdamW(lr=1e-4,
weight_decay=0.1) on every parameter, float32, on a fresh random batch of token ids. Both sides use the
same number of threads (2 by default: OpenBLAS, OpenMP, Numba and torch are all set before they start).
The timed steps run in alternating blocks (torch, minigpt, torch, minigpt, ...) after untimed warm-up
steps, so slow drifts of the machine hit both sides alike; each figure uses the median step time.

    python benchmarks/bench_train.py --config tiny
    python benchmarks/bench_train.py --config all --steps 8 --threads 2
    python benchmarks/bench_train.py --config small --no-torch      # minigpt alone
    python benchmarks/bench_train.py --config gpt2-small --attn sdpa --json out.json

The ratio is minigpt tokens/s divided by torch tokens/s (higher is better for minigpt); the project's
targets are >= 1.0x on tiny and >= 1.5x on small and gpt2-small.
"""
import argparse
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # the repository root: minigpt without installing it
from common import (CONFIGS, fmt_rate, fmt_ratio, format_table, load_avg, machine_summary, setup_threads,  # noqa: E402
                    summarize, train_flops_per_token, wait_for_idle)

TARGETS = {"tiny": 1.0, "small": 1.5, "gpt2-small": 1.5}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", default="tiny", choices=[*CONFIGS, "all"])
    ap.add_argument("--steps", type=int, help="timed steps per side (default: per config, 6-30)")
    ap.add_argument("--warmup", type=int, help="untimed steps per side first (default: per config)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating blocks the timed steps are split into")
    ap.add_argument("--batch", type=int, help="override the config's batch size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--attn", default="both", choices=["manual", "sdpa", "both"],
                    help="torch attention: manual masked softmax, F.scaled_dot_product_attention, or both")
    ap.add_argument("--no-torch", action="store_true", help="measure minigpt only")
    ap.add_argument("--no-minigpt", action="store_true", help="measure torch only")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="before each config, wait up to this long for the CPUs to be idle (shared machines)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--loss-path", default="fused", choices=["fused", "book", "both"],
                    help="minigpt's loss: model.loss(x, y) (fused), the book's F.cross_entropy(model(x).reshape("
                         "-1, V), y.reshape(-1)), or both side by side")
    ap.add_argument("--memory", action="store_true",
                    help="peak resident memory of training steps instead of speed: minigpt and eager PyTorch, "
                         "each config and side in a fresh child process")
    ap.add_argument("--memory-child", nargs=2, metavar=("CONFIG", "SIDE"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def import_minigpt():
    """The minigpt pieces of a training step, or None with the reason printed."""
    try:
        import minigpt  # noqa: F401  (first: selects Numba's threading layer)
        import minigpt.functional as MF
        from minigpt.model import GPT, GPTConfig
        from minigpt.optim import AdamW
    except Exception as e:  # noqa: BLE001 - any failure means: not available yet
        print(f"minigpt model not available yet ({type(e).__name__}: {e})")
        return None
    return dict(GPT=GPT, GPTConfig=GPTConfig, AdamW=AdamW, F=MF)


def _loss_value(loss):
    try:
        return float(loss.item())
    except Exception:  # noqa: BLE001
        import numpy as np

        return float(np.asarray(getattr(loss, "data", loss)))


def make_minigpt_trainer(mg, cfg, batch, seed=0, book=False):
    """``(step, model)`` for minigpt; ``step.loss`` holds the last loss, ``step.path`` how the loss is made.
    ``book``: the loss as the book computes it, ``F.cross_entropy`` over ``model(x)``'s logits."""
    import numpy as np

    B, T, V = batch, cfg["seq_len"], cfg["vocab_size"]
    gcfg = mg["GPTConfig"](vocab_size=V, context_length=cfg["context_length"], emb_dim=cfg["emb_dim"],
                           n_heads=cfg["n_heads"], n_layers=cfg["n_layers"], drop_rate=0.0, qkv_bias=True)
    model = mg["GPT"](gcfg)
    if hasattr(model, "train"):
        model.train()
    opt = mg["AdamW"](model.parameters(), lr=1e-4, weight_decay=0.1)
    rng = np.random.default_rng(seed)
    fused = callable(getattr(model, "loss", None)) and not book
    cross_entropy = mg["F"].cross_entropy

    def step():
        x = rng.integers(0, V, size=(B, T), dtype=np.int64)
        y = rng.integers(0, V, size=(B, T), dtype=np.int64)
        if fused:
            loss = model.loss(x, y)
        else:
            logits = model(x)
            loss = cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        step.loss = _loss_value(loss)

    step.loss = None
    step.tokens = B * T
    step.path = "model.loss(x, y)" if fused else "F.cross_entropy(model(x))"
    return step, model


def bench_config(name, args, mg, torch_ref):
    cfg = dict(CONFIGS[name], name=name)
    B = args.batch or cfg["batch"]
    steps = args.steps or cfg["steps"]
    warmup = cfg["warmup"] if args.warmup is None else args.warmup
    rounds = max(1, min(args.rounds, steps))
    sides = {}  # label -> step function
    notes = []
    if mg is not None:
        try:
            t0 = time.perf_counter()
            for book in {"fused": [False], "book": [True], "both": [False, True]}[args.loss_path]:
                step, _ = make_minigpt_trainer(mg, cfg, B, book=book)
                step()  # first step: includes Numba compilation / cache loading
                label = "minigpt" if not book or args.loss_path == "book" else "minigpt-book"
                notes.append(f"{label} first step {time.perf_counter() - t0:.1f} s (incl. build + compile), "
                             f"loss via {step.path}")
                sides[label] = step
        except Exception as e:  # noqa: BLE001
            print(f"[{name}] minigpt failed: {type(e).__name__}: {e}")
    if torch_ref is not None:
        for attn in (["manual", "sdpa"] if args.attn == "both" else [args.attn]):
            step, _ = torch_ref.make_torch_trainer(cfg, B, attn)
            sides[f"torch-{attn}"] = step
    for step in sides.values():
        for _ in range(warmup):
            step()
    busy = wait_for_idle(args.wait_idle)
    times = {k: [] for k in sides}
    per_round = [steps // rounds + (1 if r < steps % rounds else 0) for r in range(rounds)]
    for r, n in enumerate(per_round):
        if r:  # between blocks too: other work on a shared machine comes and goes
            wait_for_idle(args.wait_idle, quiet=True)
        for label, step in sides.items():
            for _ in range(n):
                t0 = time.perf_counter()
                step()
                times[label].append(time.perf_counter() - t0)
    flops = train_flops_per_token(dict(cfg, batch=B))
    res = dict(config=name, batch=B, seq_len=cfg["seq_len"], steps=steps, warmup=warmup, threads=args.threads,
               notes=notes, sides={}, cpu_busy_before=busy)
    if busy is not None:
        notes.append(f"CPUs {busy:.0%} busy just before the timed steps")
    for label, ts in times.items():
        r = summarize(ts, B * cfg["seq_len"])
        r.update(gflops=r["tokens_per_s"] * flops / 1e9, loss=sides[label].loss)
        res["sides"][label] = r
    return res


def print_results(results):
    rows = []
    for res in results:
        s = res["sides"]
        mg = s.get("minigpt", {}).get("tokens_per_s")
        tm = s.get("torch-manual", {}).get("tokens_per_s")
        ts = s.get("torch-sdpa", {}).get("tokens_per_s")
        best = max([v for v in (tm, ts) if v is not None], default=None)
        tok = res["batch"] * res["seq_len"]
        fast = {k: tok / v["step_min_s"] for k, v in s.items()}
        best_fast = max([v for k, v in fast.items() if k.startswith("torch")], default=None)
        rows.append([res["config"], f"{res['batch']}x{res['seq_len']}", fmt_rate(mg), fmt_rate(tm), fmt_rate(ts),
                     fmt_ratio(mg, tm), fmt_ratio(mg, ts), fmt_ratio(mg, best),
                     fmt_ratio(fast.get("minigpt"), best_fast), f">= {TARGETS[res['config']]:.1f}x"])
    print()
    print(format_table(rows, ["config", "B x T", "minigpt tok/s", "torch manual tok/s", "torch SDPA tok/s",
                              "vs manual", "vs SDPA", "vs best torch", "same, fastest steps", "target"]))
    print()
    detail = []
    for res in results:
        for label, r in res["sides"].items():
            detail.append([res["config"], label, f"{r['step_s'] * 1e3:.1f}", f"{r['step_min_s'] * 1e3:.1f}",
                           fmt_rate(res["batch"] * res["seq_len"] / r["step_min_s"]),
                           f"{r['gflops']:.0f}", f"{r['loss']:.3f}" if r["loss"] is not None else "n/a",
                           r["steps"]])
    print(format_table(detail, ["config", "side", "median step ms", "min step ms", "tok/s at min step",
                                "model GFLOP/s", "last loss", "timed steps"]))
    print("tok/s and ratios use the median step; 'fastest steps' uses each side's fastest step, which is less "
          "sensitive to other work on the machine.")
    for res in results:
        s = res["sides"]
        if "minigpt-book" in s and "minigpt" in s:
            print(f"  [{res['config']}] book loss path / model.loss: median step "
                  f"{s['minigpt-book']['step_s'] / s['minigpt']['step_s']:.3f}x, fastest step "
                  f"{s['minigpt-book']['step_min_s'] / s['minigpt']['step_min_s']:.3f}x (target <= 1.10x); "
                  f"last losses {s['minigpt']['loss']:.6f} / {s['minigpt-book']['loss']:.6f}")
        for n in res["notes"]:
            print(f"  [{res['config']}] {n}")


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def memory_child(name, side, args):
    """(in a fresh process) peak resident memory of training steps of one side, as JSON on stdout."""
    cfg = dict(CONFIGS[name], name=name)
    B = args.batch or cfg["batch"]
    setup_threads(args.threads, torch_first=side.startswith("torch"))
    if side.startswith("torch"):
        import torch_reference as torch_ref

        step, model = torch_ref.make_torch_trainer(cfg, B, side.split("-", 1)[1])
        est = None
    else:
        mg = import_minigpt()
        step, model = make_minigpt_trainer(mg, cfg, B, book=side == "minigpt-book")
        est = None
        if hasattr(model, "memory_estimate"):
            try:
                est = model.memory_estimate(B, cfg["seq_len"], loss_path="book" if side == "minigpt-book" else "fused")
            except TypeError:  # an older model without loss_path
                est = model.memory_estimate(B, cfg["seq_len"])
    base = _status_kb("VmRSS")  # the process with its libraries and the model, before any step
    try:  # reset the peak (VmHWM) to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    for _ in range(3):
        step()
    peak = _status_kb("VmHWM")
    print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024, "estimate": est}))


def memory_main(args):
    import subprocess

    names = ["small", "gpt2-small"] if args.config == "all" else [args.config]
    sides = []
    if not args.no_minigpt:
        sides += {"fused": ["minigpt"], "book": ["minigpt-book"], "both": ["minigpt", "minigpt-book"]}[args.loss_path]
    if not args.no_torch:
        sides += ["torch-sdpa"] if args.attn in ("sdpa", "both") else ["torch-manual"]
    rows = []
    for name in names:
        res = {}
        for side in sides:
            wait_for_idle(args.wait_idle)
            cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", name, side, "--threads",
                   str(args.threads)] + (["--batch", str(args.batch)] if args.batch else [])
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode:
                print(f"[{name}] {side} failed: {out.stderr.strip().splitlines()[-1:]}")
                continue
            res[side] = json.loads(out.stdout.strip().splitlines()[-1])
        ref = next((res[k]["peak_mb"] for k in res if k.startswith("torch")), None)
        for side, r in res.items():
            est = r.get("estimate")
            est_total = est["total"] / 2**20 if est else None
            growth = r["peak_mb"] - r["base_mb"]
            rows.append([name, side, f"{r['base_mb']:,.0f}", f"{r['peak_mb']:,.0f}",
                         fmt_ratio(r["peak_mb"], ref) if not side.startswith("torch") else "",
                         f"{est_total:,.0f}" if est_total else "", f"{growth:,.0f}"])
    print()
    print(format_table(rows, ["config", "side", "RSS before steps MB", "peak RSS MB", "vs torch (target <= 0.80x)",
                              "memory_estimate MB", "peak - before MB"]))
    print("peak = VmHWM over 3 training steps (forward, loss, backward, AdamW), each side in a fresh process;")
    print("'before' = resident memory after building the model and optimizer (libraries included).")
    print(machine_summary())


def main(argv=None):
    args = parse_args(argv)
    if args.memory_child:
        return memory_child(*args.memory_child, args)
    if args.memory:
        setup_threads(args.threads, torch_first=False)
        return memory_main(args)
    setup_threads(args.threads, torch_first=not args.no_torch)
    import numpy  # noqa: F401  (after the thread setup)

    mg = None if args.no_minigpt else import_minigpt()
    torch_ref = None
    if not args.no_torch:
        try:
            import torch_reference as torch_ref
            from common import set_torch_threads

            set_torch_threads(args.threads)
        except ImportError as e:
            print(f"torch not available ({e}); measuring minigpt only")
            torch_ref = None
    if mg is None and torch_ref is None:
        sys.exit("nothing to measure: neither minigpt's model nor torch is available")
    la = load_avg()
    if la is not None:
        print(f"load average before: {la:.2f} (figures are noisy when other work runs on the machine)")
    names = list(CONFIGS) if args.config == "all" else [args.config]
    results = []
    for name in names:
        print(f"[{name}] measuring ...", flush=True)
        results.append(bench_config(name, args, mg, torch_ref))
    print_results(results)
    print(machine_summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine_summary(), results=results), f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
