"""The plain user loop, as a learner writes it, in fresh processes: is it as fast as the tuned command?

One step is the book's loop: build a ``GPT`` and an ``AdamW``, then ``F.cross_entropy(model(x)...)``,
``backward()``, ``step()`` on random token ids. Each variant runs in its own fresh Python process, because
thread pools and their settings are chosen once per process:

- ``plain``: ``import minigpt`` and go (what a script or a notebook does);
- ``numpy-torch-first``: ``import numpy, torch`` before minigpt (a notebook that already uses them);
- ``configured``: ``minigpt.runtime.configure()`` first thing, before NumPy loads (what the ``minigpt``
  command does): the reference;
- ``off``: ``MINIGPT_RUNTIME=0``, the untouched process (shown for scale; no target).

The variants' processes run in alternating rounds (plain, numpy-torch-first, configured, off, plain, ...)
so that other work on a shared machine hits them alike; each figure is the median over rounds of a
process's median step, and beside it the fastest step of all rounds (less sensitive to other work).
The target: every variant but ``off`` within 10% of ``configured``.

    python benchmarks/bench_default.py --config tiny
    python benchmarks/bench_default.py --config all --rounds 3
    python benchmarks/bench_default.py --config tiny --variants plain,configured --steps 10

Threads are left as a user would find them (one per core); ``--threads N`` sets ``OMP_NUM_THREADS``,
``OPENBLAS_NUM_THREADS`` and ``NUMBA_NUM_THREADS`` for every variant alike.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CONFIGS = {
    # 2 layers, d=64, vocab 512, batch 16 x 128; 6 layers, d=384, vocab 8192, batch 8 x 256 (issue 20's shapes)
    "tiny": dict(vocab_size=512, context_length=128, emb_dim=64, n_layers=2, n_heads=4, batch=16, seq_len=128,
                 steps=30, warmup=3),
    "small": dict(vocab_size=8192, context_length=256, emb_dim=384, n_layers=6, n_heads=6, batch=8, seq_len=256,
                  steps=6, warmup=2),
}

PRELUDES = {
    "plain": "",
    "numpy-torch-first": "import numpy, torch\n",
    "configured": "import minigpt.runtime\nminigpt.runtime.configure()\n",
    "off": "",
}
ENVIRON = {"off": {"MINIGPT_RUNTIME": "0"}}

LOOP = r"""
import json, sys, time
import numpy as np
import minigpt
import minigpt.functional as F
from minigpt import GPT, GPTConfig
from minigpt.optim import AdamW

c = json.loads(sys.argv[1])
minigpt.random.manual_seed(0) if hasattr(minigpt, "random") else None
model = GPT(GPTConfig(vocab_size=c["vocab_size"], context_length=c["context_length"], emb_dim=c["emb_dim"],
                      n_layers=c["n_layers"], n_heads=c["n_heads"], drop_rate=0.0, qkv_bias=True))
opt = AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
rng = np.random.default_rng(0)
B, T, V = c["batch"], c["seq_len"], c["vocab_size"]
times = []
for i in range(c["warmup"] + c["steps"]):
    x = rng.integers(0, V, size=(B, T))
    y = rng.integers(0, V, size=(B, T))
    t0 = time.perf_counter()
    logits = model(x)
    loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    opt.step()
    if i >= c["warmup"]:
        times.append(time.perf_counter() - t0)
import minigpt.runtime
d = minigpt.runtime.describe()
print(json.dumps({"times": times, "loss": float(loss.item()), "layer": d["threading_layer"],
                  "configured": d["configured"], "notes": d["notes"]}))
"""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", default="tiny", choices=[*CONFIGS, "all"])
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per variant, run in alternation")
    ap.add_argument("--steps", type=int, help="timed steps per process (default: per config)")
    ap.add_argument("--variants", default=",".join(PRELUDES), help="comma-separated subset of: "
                    + ", ".join(PRELUDES))
    ap.add_argument("--threads", type=int, help="thread count for every pool (default: as the user finds it)")
    ap.add_argument("--prelude", action="append", default=[], metavar="NAME=CODE",
                    help="an extra variant: Python code run before the loop (for experiments)")
    ap.add_argument("--env", action="append", default=[], metavar="NAME:VAR=VALUE",
                    help="an environment variable for one variant (for experiments)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return ap.parse_args(argv)


def run_child(prelude, env_extra, cfg, threads):
    env = dict(os.environ)
    for var in ("MINIGPT_RUNTIME", "NUMBA_THREADING_LAYER", "GOMP_SPINCOUNT", "OMP_WAIT_POLICY",
                "OPENBLAS_THREAD_TIMEOUT", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env.pop(var, None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env[var] = str(threads)
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", prelude + LOOP, json.dumps(cfg)], env=env, capture_output=True,
                         text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"child failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    args = parse_args(argv)
    variants = {}
    for name in args.variants.split(","):
        name = name.strip()
        if name not in PRELUDES:
            raise SystemExit(f"bench_default.py: error: unknown variant {name!r}; use: {', '.join(PRELUDES)}")
        variants[name] = (PRELUDES[name], dict(ENVIRON.get(name, {})))
    for spec in args.prelude:
        name, _, code = spec.partition("=")
        variants[name] = (code.replace("\\n", "\n") + "\n", {})
    for spec in args.env:
        name, _, kv = spec.partition(":")
        var, _, value = kv.partition("=")
        if name not in variants:
            variants[name] = ("", {})
        variants[name][1][var] = value
    configs = list(CONFIGS) if args.config == "all" else [args.config]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.rounds} rounds of fresh processes, "
          "variants alternating")
    results = {}
    for cname in configs:
        cfg = dict(CONFIGS[cname])
        if args.steps:
            cfg["steps"] = args.steps
        meds = {v: [] for v in variants}
        mins = {v: [] for v in variants}  # each process's fastest step: less sensitive to other work
        info = {}
        t_start = time.time()
        for r in range(args.rounds):
            for v, (prelude, env) in variants.items():
                res = run_child(prelude, env, cfg, args.threads)
                meds[v].append(statistics.median(res["times"]))
                mins[v].append(min(res["times"]))
                info[v] = res
        ref = statistics.median(meds["configured"]) if "configured" in meds else None
        ref_min = min(mins["configured"]) if "configured" in mins else None
        print(f"\n[{cname}] V {cfg['vocab_size']}, L {cfg['n_layers']}, d {cfg['emb_dim']}, "
              f"B x T {cfg['batch']} x {cfg['seq_len']}, {cfg['steps']} timed steps per process "
              f"({time.time() - t_start:.0f} s)")
        print(f"{'variant':22s} {'ms/step':>9s} {'per round':>24s} {'vs configured':>14s} {'fastest step':>13s} "
              f"{'vs configured':>14s}  layer, notes")
        results[cname] = {}
        for v in variants:
            m = statistics.median(meds[v])
            ratio = m / ref if ref else None
            rounds = " ".join(f"{x * 1e3:.1f}" for x in meds[v])
            fast = min(mins[v])
            fratio = fast / ref_min if ref_min else None
            print(f"{v:22s} {m * 1e3:9.1f} {rounds:>24s} {(f'{ratio:.2f}x' if ratio else 'n/a'):>14s} "
                  f"{fast * 1e3:13.1f} {(f'{fratio:.2f}x' if fratio else 'n/a'):>14s}  "
                  f"{info[v]['layer']}, {'; '.join(info[v]['notes']) or '-'}")
            results[cname][v] = dict(ms_per_step=m * 1e3, rounds_ms=[x * 1e3 for x in meds[v]], ratio=ratio,
                                     fastest_ms=fast * 1e3, fastest_ratio=fratio,
                                     loss=info[v]["loss"], layer=info[v]["layer"], notes=info[v]["notes"])
        losses = {v: results[cname][v]["loss"] for v in variants}
        if len(set(losses.values())) > 1:
            print(f"  note: last losses differ between variants: {losses}")
        else:
            print(f"  last loss {next(iter(losses.values())):.6f} in every variant (same numbers)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
