"""Time each Numba kernel (forward + backward) against its NumPy reference and PyTorch's equivalent op.

    python benchmarks/bench_kernels.py                      # all three model shapes
    python benchmarks/bench_kernels.py --configs tiny --repeat 20
    python benchmarks/bench_kernels.py --kernels attention attn_decode --repeat 30   # attention only

Shapes are those of the models in issue 4 (float32):

    tiny        B 16, T 128, H 4,  D 32, C 128, V 512
    small       B 8,  T 256, H 6,  D 64, C 384, V 50257
    gpt2-small  B 2,  T 256, H 12, D 64, C 768, V 50257

Kernels: causal attention (vs ``F.scaled_dot_product_attention(is_causal=True)``), one decoding step
of attention with a KV cache (``attn_decode``: 1 query over T cached positions, forward only), layer norm over
(B*T, C), GELU over (B*T, 4C) (vs ``F.gelu(approximate="tanh")``) and softmax + cross-entropy over
(B*T, V) (vs ``F.cross_entropy``). Figures are forward + backward, the best of at least ``--repeat``
runs after a warm-up call (which also compiles the kernels); each implementation runs in blocks of
back-to-back calls and the blocks take turns (see ``best_times``). PyTorch
runs with ``torch.set_num_threads(2)`` and is skipped when it is not installed; ``--no-numpy`` skips the
(slow) NumPy references.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import setup_threads  # noqa: E402

# torch (when used) is imported before minigpt, so that each keeps its own OpenMP runtime (common.py)
setup_threads(2, torch_first="--no-torch" not in sys.argv[1:])

import minigpt  # noqa: E402,F401  (sets Numba's threading layer before numba starts)
import numpy as np  # noqa: E402

from minigpt import kernels  # noqa: E402
from minigpt.kernels import attention as KA, gelu as KG, layernorm as KL, softmax as KS  # noqa: E402

KERNELS = ["attention", "attn_decode", "layer_norm", "gelu", "cross_entropy"]
CONFIGS = {
    "tiny": dict(B=16, T=128, H=4, D=32, V=512),
    "small": dict(B=8, T=256, H=6, D=64, V=50257),
    "gpt2-small": dict(B=2, T=256, H=12, D=64, V=50257),
}


def best_times(fns, repeat, rounds=2, min_block=0.3):
    """Best-of seconds for each callable in ``fns`` (None entries give None).

    Each implementation runs in blocks of back-to-back calls -- at least ``repeat`` calls and at least
    ``min_block`` seconds -- and the blocks of the implementations take turns, ``rounds`` times, so that
    on a shared machine each gets the same chance at quiet moments. Blocks rather than single calls in
    turns: after a call, OpenBLAS's and PyTorch's worker threads keep spinning for up to ~0.1 s and slow
    down whatever runs next on a 2-core machine (a Numba kernel right after a NumPy GEMM measured up to 2x
    slower), so a call timed straight after another library's call measures that library's spinning.
    The first call of each implementation (which also compiles the Numba kernels) is not timed.
    """
    live = {k: f for k, f in fns.items() if f is not None}
    for f in live.values():
        f()
    best = {k: float("inf") for k in live}
    for _ in range(rounds):
        for k, f in live.items():
            start = time.perf_counter()
            n = 0
            while n < repeat or time.perf_counter() - start < min_block:
                t = time.perf_counter()
                f()
                best[k] = min(best[k], time.perf_counter() - t)
                n += 1
    return {k: best.get(k) for k in fns}


def make_cases(cfg, rng, torch):
    """{kernel name: {"numba": fn, "numpy": fn, "torch": fn or None}} for one model shape."""
    B, T, H, D, V = cfg["B"], cfg["T"], cfg["H"], cfg["D"], cfg["V"]
    C = H * D
    N = B * T
    f32 = np.float32
    cases = {}

    # -- causal attention on strided views of one fused qkv buffer, gradients into one dqkv buffer --
    qkv = rng.standard_normal((B, T, 3, H, D)).astype(f32)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    dout = rng.standard_normal((B, T, H, D)).astype(f32)
    scale = 1.0 / np.sqrt(D)
    dqkv = np.empty_like(qkv)

    def attn(backend):
        def run():
            with kernels.use_backend(backend):
                out, lse = KA.attention_forward(q, k, v, scale)
                KA.attention_backward(dout, q, k, v, out, lse, scale, dq=dqkv[:, :, 0], dk=dqkv[:, :, 1],
                                      dv=dqkv[:, :, 2])
        return run

    cases["attention"] = {"numba": attn("numba"), "numpy": attn("numpy"), "torch": None}
    if torch is not None:
        tq, tk, tv = (torch.from_numpy(np.ascontiguousarray(a.transpose(0, 2, 1, 3))).requires_grad_()
                      for a in (q, k, v))
        tg = torch.from_numpy(np.ascontiguousarray(dout.transpose(0, 2, 1, 3)))

        def attn_torch():
            for t in (tq, tk, tv):
                t.grad = None
            o = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
            o.backward(tg)

        cases["attention"]["torch"] = attn_torch

    # -- generation with a KV cache: one new query against T cached positions (forward only) --
    cache = rng.standard_normal((2, B, T, H, D)).astype(f32)
    q1 = rng.standard_normal((B, 1, 3, H, D)).astype(f32)[:, :, 0]

    def decode(backend):
        def run():
            with kernels.use_backend(backend):
                KA.attention_forward(q1, cache[0], cache[1], scale)
        return run

    cases["attn_decode"] = {"numba": decode("numba"), "numpy": decode("numpy"), "torch": None}
    if torch is not None:
        tq1 = torch.from_numpy(np.ascontiguousarray(q1.transpose(0, 2, 1, 3)))
        tkc, tvc = (torch.from_numpy(np.ascontiguousarray(c.transpose(0, 2, 1, 3))) for c in cache)

        def decode_torch():
            with torch.no_grad():
                torch.nn.functional.scaled_dot_product_attention(tq1, tkc, tvc)

        cases["attn_decode"]["torch"] = decode_torch

    # -- layer norm over (B*T, C) --
    x = rng.standard_normal((N, C)).astype(f32)
    gamma = rng.standard_normal(C).astype(f32)
    beta = rng.standard_normal(C).astype(f32)
    dy = rng.standard_normal((N, C)).astype(f32)

    def ln(backend):
        def run():
            with kernels.use_backend(backend):
                y, mean, rstd = KL.layer_norm_forward(x, gamma, beta)
                KL.layer_norm_backward(dy, x, gamma, mean, rstd)
        return run

    cases["layer_norm"] = {"numba": ln("numba"), "numpy": ln("numpy"), "torch": None}
    if torch is not None:
        tx = torch.from_numpy(x).requires_grad_()
        tgam = torch.from_numpy(gamma).requires_grad_()
        tbet = torch.from_numpy(beta).requires_grad_()
        tdy = torch.from_numpy(dy)

        def ln_torch():
            for t in (tx, tgam, tbet):
                t.grad = None
            torch.nn.functional.layer_norm(tx, (C,), tgam, tbet, 1e-5).backward(tdy)

        cases["layer_norm"]["torch"] = ln_torch

    # -- GELU over the MLP hidden layer (B*T, 4C) --
    h = rng.standard_normal((N, 4 * C)).astype(f32)
    dh = rng.standard_normal((N, 4 * C)).astype(f32)

    def gelu(backend):
        def run():
            with kernels.use_backend(backend):
                KG.gelu_forward(h)
                KG.gelu_backward(dh, h)
        return run

    cases["gelu"] = {"numba": gelu("numba"), "numpy": gelu("numpy"), "torch": None}
    if torch is not None:
        th = torch.from_numpy(h).requires_grad_()
        tdh = torch.from_numpy(dh)

        def gelu_torch():
            th.grad = None
            torch.nn.functional.gelu(th, approximate="tanh").backward(tdh)

        cases["gelu"]["torch"] = gelu_torch

    # -- softmax + cross-entropy over the logits (B*T, V); the gradient overwrites a logits buffer --
    logits = rng.standard_normal((N, V)).astype(f32)
    targets = rng.integers(0, V, N)
    work = np.empty_like(logits)

    def xent(backend):
        def run():
            with kernels.use_backend(backend):
                loss_sum, n_valid, lse = KS.cross_entropy_forward(logits, targets)
                KS.cross_entropy_backward(logits, targets, lse, 1.0 / n_valid, out=work)
        return run

    cases["cross_entropy"] = {"numba": xent("numba"), "numpy": xent("numpy"), "torch": None}
    if torch is not None:
        tl = torch.from_numpy(logits).requires_grad_()
        tt = torch.from_numpy(targets)

        def xent_torch():
            tl.grad = None
            torch.nn.functional.cross_entropy(tl, tt).backward()

        cases["cross_entropy"]["torch"] = xent_torch
    return cases


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--repeat", type=int, default=10, help="timed runs per figure (best is kept)")
    ap.add_argument("--no-numpy", action="store_true", help="skip the NumPy reference timings")
    ap.add_argument("--no-torch", action="store_true", help="skip PyTorch even if installed")
    ap.add_argument("--kernels", nargs="+", default=None, choices=KERNELS,
                    help="time only these kernels (default: all)")
    args = ap.parse_args(argv)

    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("(PyTorch not installed: torch columns skipped)")
    if torch is not None:
        torch.set_num_threads(2)

    import numba

    print(f"numpy {np.__version__}, numba {numba.__version__} ({numba.get_num_threads()} threads, layer "
          f"{os.environ.get('NUMBA_THREADING_LAYER')})"
          + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else ""))
    print("float32, forward + backward, best of at least", args.repeat, "runs, milliseconds\n")
    header = (f"{'config':<11} {'kernel':<14} {'numba':>9} {'numpy':>9} {'torch':>9} {'numpy/numba':>12} "
              f"{'torch/numba':>12}")
    print(header)
    print("-" * len(header))
    rng = np.random.default_rng(0)
    for name in args.configs:
        cases = make_cases(CONFIGS[name], rng, torch)
        for kname, fns in cases.items():
            if args.kernels and kname not in args.kernels:
                continue
            if args.no_numpy:
                fns = dict(fns, numpy=None)
            times = best_times(fns, args.repeat)
            t_nb, t_np, t_th = times["numba"], times["numpy"], times["torch"]
            cell = lambda t: f"{t * 1e3:9.2f}" if t is not None else f"{'-':>9}"  # noqa: E731
            ratio = lambda t: f"{t / t_nb:11.2f}x" if t is not None else f"{'-':>12}"  # noqa: E731
            print(f"{name:<11} {kname:<14} {cell(t_nb)} {cell(t_np)} {cell(t_th)} {ratio(t_np)} {ratio(t_th)}",
                  flush=True)
    print("\nratios > 1: the Numba kernel is faster by that factor.")


if __name__ == "__main__":
    main()
