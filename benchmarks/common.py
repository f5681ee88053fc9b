"""Shared helpers of the benchmark scripts: thread setup, timing, model sizes and tables.

Call :func:`setup_threads` before NumPy, Numba, torch or minigpt are imported: the thread pools of
OpenBLAS and OpenMP read their size from the environment once, when they start. This module itself imports
nothing heavy at import time, so a script can do::

    from common import setup_threads
    setup_threads(args.threads)
    import numpy as np  # now with 2 BLAS threads
"""
import importlib.util
import os
import platform
import statistics
import sys
import time

_THREADS = None

# The training shapes of the issue. ``context_length`` is the model's; ``seq_len`` is what a batch uses.
CONFIGS = {
    "tiny": dict(vocab_size=512, context_length=128, emb_dim=128, n_layers=4, n_heads=4, batch=16, seq_len=128,
                 steps=30, warmup=3),
    "small": dict(vocab_size=50257, context_length=256, emb_dim=384, n_layers=6, n_heads=6, batch=8, seq_len=256,
                  steps=10, warmup=2),
    "gpt2-small": dict(vocab_size=50257, context_length=1024, emb_dim=768, n_layers=12, n_heads=12, batch=2,
                       seq_len=256, steps=6, warmup=2),
}


def setup_threads(threads=2, torch_first=True):
    """Set every thread pool to ``threads`` threads (environment first; torch/numba when present).

    Must run before NumPy is imported for the BLAS part to take effect; a warning is printed otherwise.
    Then applies minigpt's tuned runtime (``minigpt.runtime.configure``: Numba's threading layer, the
    OpenBLAS spin, the allocator), also before NumPy is imported.

    With ``torch_first`` (and torch installed) torch is imported *before* minigpt: torch then loads its own
    GNU OpenMP runtime with its own defaults. Imported after minigpt, torch would reuse the system's
    libgomp that minigpt loaded with a short spin for Numba's pool (same soname) and run slower than it
    does on its own -- an unfair reference.
    """
    global _THREADS
    _THREADS = int(threads)
    if "numpy" in sys.modules and os.environ.get("OPENBLAS_NUM_THREADS") != str(threads):
        print("warning: numpy was imported before setup_threads(); the BLAS thread count may differ",
              file=sys.stderr)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    if torch_first and importlib.util.find_spec("torch") is not None:
        # torch imports NumPy: set minigpt's OpenBLAS default (minigpt.runtime) before it does
        from minigpt import runtime

        os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", runtime.OPENBLAS_THREAD_TIMEOUT)
        import torch  # noqa: F401
    from minigpt import runtime

    runtime.configure()
    if "torch" in sys.modules:
        set_torch_threads(threads)
    return _THREADS


def set_torch_threads(threads=None):
    import torch

    threads = _THREADS if threads is None else threads
    if threads is not None:
        torch.set_num_threads(int(threads))
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only allowed before the first parallel work; harmless otherwise
            pass
    return torch.get_num_threads()


def time_steps(step, steps, warmup):
    """Run ``step()`` ``warmup + steps`` times; return the per-step seconds of the timed steps."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def summarize(times, tokens_per_step):
    """Median-based figures of a list of per-step seconds."""
    med = statistics.median(times)
    return dict(step_s=med, step_min_s=min(times), tokens_per_s=tokens_per_step / med, steps=len(times),
                times=list(times))


def train_flops_per_token(cfg):
    """Model FLOPs of one training token (forward + backward): 6 x matmul parameters (LM head included) plus
    12 x n_layers x seq_len x emb_dim for attention scores and weighted sums (the full square, PaLM's
    convention). Used only to express tokens/s as GFLOP/s."""
    d, L, V, T = cfg["emb_dim"], cfg["n_layers"], cfg["vocab_size"], cfg["seq_len"]
    matmul_params = L * 12 * d * d + V * d
    return 6 * matmul_params + 12 * L * T * d


def param_count(cfg, tied=True):
    d, L, V, P = cfg["emb_dim"], cfg["n_layers"], cfg["vocab_size"], cfg["context_length"]
    per_block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + (4 * d * d + 4 * d) + (4 * d * d + d)
    return V * d + P * d + L * per_block + 2 * d + (0 if tied else V * d)


def format_table(rows, headers):
    """A GitHub-markdown table of ``rows`` (lists of cells, converted with str)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    return "\n".join(out)


def fmt_rate(x, digits=0):
    return "n/a" if x is None else f"{x:,.{digits}f}"


def fmt_ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def machine_summary():
    """One line naming the machine and the library versions that matter for the figures."""
    parts = [platform.machine(), f"{os.cpu_count()} cpus", f"python {platform.python_version()}"]
    try:
        import numpy as np

        parts.append(f"numpy {np.__version__}")
    except ImportError:
        pass
    for mod in ("numba", "torch", "transformers"):
        if mod in sys.modules:
            parts.append(f"{mod} {sys.modules[mod].__version__}")
    parts.append(f"threads {_THREADS}")
    return ", ".join(parts)


def load_avg():
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def cpu_busy_fraction(interval=0.5):
    """Share of all CPUs' time spent busy during ``interval`` seconds (Linux /proc/stat; None elsewhere)."""
    def read():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
        return sum(vals), idle

    try:
        t0, i0 = read()
        time.sleep(interval)
        t1, i1 = read()
    except (OSError, ValueError, IndexError):
        return None
    return None if t1 == t0 else 1.0 - (i1 - i0) / (t1 - t0)


def wait_for_idle(max_wait, threshold=0.15, interval=1.0, quiet=False):
    """Wait up to ``max_wait`` seconds until the CPUs are less than ``threshold`` busy (other processes'
    work spoils a 2-thread benchmark far more than proportionally: a preempted BLAS thread stalls the
    other). Returns the last busy fraction seen (None when unknown)."""
    if not max_wait:
        return None
    start = time.time()
    busy = cpu_busy_fraction(interval)
    if busy is not None and busy > threshold and not quiet:
        print(f"  waiting up to {max_wait:.0f} s for idle CPUs (now {busy:.0%} busy) ...", flush=True)
    while busy is not None and busy > threshold and time.time() - start < max_wait:
        time.sleep(max(0.0, min(2.0, max_wait - (time.time() - start))))
        busy = cpu_busy_fraction(interval)
    if busy is not None and busy > threshold and not quiet:
        print(f"  CPUs still {busy:.0%} busy after {max_wait:.0f} s: figures will be noisy", flush=True)
    elif time.time() - start > 2 * interval and not quiet:
        print(f"  idle after {time.time() - start:.0f} s", flush=True)
    return busy
