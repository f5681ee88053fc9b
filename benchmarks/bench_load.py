"""Memory of loading a float32 checkpoint: the peak resident memory ``GPT.from_pretrained`` adds, beside the
size of ``model.safetensors`` (target: <= 1.3x the file; the model's own weights are 1x).

A random model (gpt2-small shape by default: 124M parameters, a ~500 MB file) is written with
``save_pretrained`` to a temporary folder (GPT-2's Hugging Face layout, as minigpt's checkpoints are; a tied
head stores no ``lm_head.weight``, as transformers saves GPT-2) and loaded in a fresh child process. The child resets its peak (``/proc/self/clear_refs``, Linux >= 4.0) after its imports
and reports ``VmHWM - VmRSS before the load``: the most memory the load held at any moment. The loaded
weights are compared with the saved ones.

    python benchmarks/bench_load.py
    python benchmarks/bench_load.py --config small --untied
    python benchmarks/bench_load.py --via load_model      # minigpt.model.folders.load_model (the CLI's path)
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # the repository root: minigpt without installing it
from common import CONFIGS, format_table, machine_summary  # noqa: E402

TARGET = 1.3

CHILD = r"""
import sys, time
sys.path.insert(0, sys.argv[1])

def kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])

import numpy as np
from minigpt.model import GPT
from minigpt.model.folders import load_model
base = kb("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    base = kb("VmHWM")
t0 = time.perf_counter()
model = GPT.from_pretrained(sys.argv[2]) if sys.argv[3] == "from_pretrained" else load_model(sys.argv[2])
dt = time.perf_counter() - t0
peak = kb("VmHWM") - base
ref = np.load(sys.argv[4])
w = model.state_dict()["blocks.0.attn.qkv.weight"]
print(peak * 1024, dt, int(np.array_equal(w, ref)))
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="gpt2-small", choices=sorted(CONFIGS))
    ap.add_argument("--via", default="from_pretrained", choices=("from_pretrained", "load_model"))
    ap.add_argument("--untied", action="store_true", help="a separate LM head (lm_head.weight stored)")
    args = ap.parse_args()

    import numpy as np

    from minigpt.model import GPT, GPTConfig
    from minigpt.nn import uninitialized

    c = CONFIGS[args.config]
    cfg = GPTConfig(vocab_size=c["vocab_size"], context_length=c["context_length"], emb_dim=c["emb_dim"],
                    n_layers=c["n_layers"], n_heads=c["n_heads"], drop_rate=0.0,
                    tie_weights=not args.untied)
    print(machine_summary())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        with uninitialized():
            model = GPT(cfg)
        for p in model.parameters():  # quicker than the model's own initialisation, same sizes
            p.data[...] = rng.standard_normal(p.shape, dtype=np.float32) * 0.02
        ref = os.path.join(tmp, "ref.npy")
        np.save(ref, model.state_dict()["blocks.0.attn.qkv.weight"])
        folder = os.path.join(tmp, "model")
        model.save_pretrained(folder)
        del model, p
        size = os.path.getsize(os.path.join(folder, "model.safetensors"))
        for label in ("untied head" if args.untied else "tied head",):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", CHILD, os.path.dirname(HERE), folder, args.via, ref],
                                 capture_output=True, text=True)
            if out.returncode:
                sys.exit(out.stderr)
            peak, dt, same = out.stdout.split()
            peak, dt = int(peak), float(dt)
            rows.append([f"{args.config} {label}", f"{size / 2**20:,.0f} MB", f"{peak / 2**20:,.0f} MB",
                         f"{peak / size:.2f}x", f"{dt:.2f} s", "yes" if same == "1" else "NO"])
    print(format_table(rows, ["checkpoint", "file", "peak added", "peak / file", "load time", "weights equal"]))
    print(f"target: peak / file <= {TARGET}x ({args.via}; time includes the finiteness checks; noisy on a "
          "shared machine)")


if __name__ == "__main__":
    main()
