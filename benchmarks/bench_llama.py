"""Training speed of a Llama-style model (RoPE, RMSNorm, SwiGLU, no biases) beside GPT-2's block at the same
size, and beside PyTorch eager (transformers' LlamaForCausalLM) on the same shape.

Each side runs forward + backward + AdamW steps; the sides alternate in rounds so that the machine's noise
hits them alike; the figure is the median step time over all timed steps. The Llama-style model has GPT-2
small's width, depth and heads, and a SwiGLU width of 2048 (three 768 x 2048 matrices hold as many weights as
GPT-2's two 768 x 3072 ones).

    python benchmarks/bench_llama.py                    # gpt2-small shape, B=2, T=256
    python benchmarks/bench_llama.py --shape small --rounds 3
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import setup_threads  # noqa: E402

SHAPES = {
    "gpt2-small": dict(vocab=50257, dim=768, layers=12, heads=12, hidden=2048, batch=2, seq=256),
    "small": dict(vocab=50257, dim=384, layers=6, heads=6, hidden=1024, batch=8, seq=256),
    "tiny": dict(vocab=512, dim=128, layers=4, heads=4, hidden=352, batch=16, seq=128),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="gpt2-small", choices=SHAPES)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per side per round")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-torch", action="store_true")
    args = ap.parse_args(argv)
    setup_threads(args.threads)
    import numpy as np

    from minigpt.model import GPT, GPTConfig
    from minigpt.optim import AdamW

    s = SHAPES[args.shape]
    B, T = s["batch"], s["seq"]
    base = dict(vocab_size=s["vocab"], context_length=T, emb_dim=s["dim"], n_heads=s["heads"], n_layers=s["layers"],
                drop_rate=0.0)
    rng = np.random.default_rng(0)
    x = rng.integers(0, s["vocab"], (B, T))
    y = rng.integers(0, s["vocab"], (B, T))
    sides = {}
    for name, cfg in (("minigpt GPT-2 block", GPTConfig(**base, qkv_bias=True)),
                      ("minigpt Llama block", GPTConfig(**base, norm="rmsnorm", ffn="swiglu", hidden_dim=s["hidden"],
                                                        pos_encoding="rope", qkv_bias=False, bias=False))):
        model = GPT(cfg)
        opt = AdamW(model.parameters(), lr=1e-4)

        def step(model=model, opt=opt):
            loss = model.loss(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sides[name] = (step, sum(p.data.size for p in model.parameters()))
    if not args.no_torch:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        tcfg = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["dim"], intermediate_size=s["hidden"],
                           num_hidden_layers=s["layers"], num_attention_heads=s["heads"], max_position_embeddings=T,
                           tie_word_embeddings=True, attn_implementation="sdpa")
        tmodel = LlamaForCausalLM(tcfg)
        topt = torch.optim.AdamW(tmodel.parameters(), lr=1e-4)
        tx, ty = torch.tensor(x), torch.tensor(y)

        def tstep():
            logits = tmodel(tx).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, s["vocab"]), ty.reshape(-1))
            topt.zero_grad()
            loss.backward()
            topt.step()
        sides["PyTorch eager Llama (sdpa)"] = (tstep, sum(p.numel() for p in tmodel.parameters()))
    times = {k: [] for k in sides}
    for fn, _ in sides.values():
        fn()  # warm-up: compilation, buffers
    for _ in range(args.rounds):
        for name, (fn, _) in sides.items():
            for _ in range(args.steps):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    ref = statistics.median(times["minigpt GPT-2 block"])
    print(f"shape {args.shape}: B={B} T={T}, {args.threads} threads, median of {args.rounds * args.steps} steps")
    print(f"{'side':30s} {'params':>12s} {'ms/step':>9s} {'tokens/s':>9s} {'vs GPT-2 block':>15s}")
    for name, (_, n) in sides.items():
        med = statistics.median(times[name])
        print(f"{name:30s} {n:12,d} {1000 * med:9.0f} {B * T / med:9.0f} {ref / med:14.2f}x")


if __name__ == "__main__":
    main()
