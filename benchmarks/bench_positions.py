"""Position encodings compared on the same data and budget: learned (GPT-2), sinusoidal, rotary (RoPE), ALiBi.

Each model (the `tiny` shape, GPT-2's blocks for learned, sinusoidal and ALiBi positions, the same blocks
with rotary attention for RoPE) trains the same steps on the same batches of tiny-shakespeare (characters'
bytes through a small BPE vocabulary trained on the training split), with sequences of T tokens. Then the
validation loss is measured at T (the trained length) and at 2T and 4T (extrapolation: positions never seen
in training). Every model is built with room for 4T positions; the learned table's rows beyond T simply
never receive a gradient.

    python benchmarks/bench_positions.py                        # T=64, 400 steps
    python benchmarks/bench_positions.py --steps 1000 --seq 128
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import setup_threads  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data", default=None, help="tiny-shakespeare's input.txt (default: the shared data folder)")
    args = ap.parse_args(argv)
    setup_threads(args.threads)
    import numpy as np

    from minigpt.data.shared import shared_data_dir
    from minigpt.model import GPT, GPTConfig
    from minigpt.optim import AdamW
    from minigpt.random import manual_seed
    from minigpt.tensor import no_grad
    from minigpt.tokenizer import BPETokenizer

    shared = shared_data_dir()
    if args.data is None and shared is None:
        sys.exit("bench_positions.py: give --data input.txt, or set MINIGPT_DATA to the shared data folder")
    path = args.data or (shared / "tinyshakespeare" / "input.txt")
    text = open(path, encoding="utf-8").read()
    cut = int(0.9 * len(text))
    tok = BPETokenizer.train(text[:200_000], vocab_size=512)
    train = np.array(tok.encode_ordinary(text[:cut]))
    val = np.array(tok.encode_ordinary(text[cut:]))
    T, B = args.seq, args.batch
    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(train) - T - 1, (args.steps, B))
    configs = {
        "learned": dict(pos_encoding="learned"),
        "sinusoidal": dict(pos_encoding="sinusoidal"),
        "rope": dict(pos_encoding="rope", n_kv_groups=4),
        "alibi": dict(pos_encoding="alibi"),
    }
    print(f"tiny shape, vocab {tok.vocab_size}, trained on T={T} for {args.steps} steps of batch {B}")
    print(f"{'positions':12s} {'val@T':>8s} {'val@2T':>8s} {'val@4T':>8s} {'train s':>8s}")
    for name, extra in configs.items():
        manual_seed(0)
        model = GPT(GPTConfig.preset("tiny", vocab_size=tok.vocab_size, context_length=4 * T, **extra))
        opt = AdamW(model.parameters(), lr=1e-3)
        t0 = time.perf_counter()
        for s in starts:
            x = np.stack([train[i:i + T] for i in s])
            y = np.stack([train[i + 1:i + T + 1] for i in s])
            loss = model.loss(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        secs = time.perf_counter() - t0
        model.eval()
        out = []
        with no_grad():
            for L in (T, 2 * T, 4 * T):
                n = (len(val) - 1) // L
                x = val[: n * L].reshape(n, L)[:32]
                y = val[1: n * L + 1].reshape(n, L)[:32]
                out.append(float(model.loss(x, y).data))
        print(f"{name:12s} {out[0]:8.3f} {out[1]:8.3f} {out[2]:8.3f} {secs:8.1f}")


if __name__ == "__main__":
    main()
