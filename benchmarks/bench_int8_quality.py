"""Quality of int8 weight-only quantization on held-out text: perplexity and top-1 agreement.

A model trained by ``minigpt train`` is evaluated on the held-out end of a text (by default its last 10%,
the part ``minigpt train --val-fraction 0.1`` keeps for validation) in float32 and after
``model.quantize("int8")`` (per output row, and per group of inputs for each ``--group-sizes``). With the
same context at every position (teacher forcing over the text), it reports the perplexity of each and the
share of positions where int8 picks float32's top-1 next token.

    python -m minigpt train --text ../shared/data/tinyshakespeare/input.txt --out runs/shakes --config mini
    python benchmarks/bench_int8_quality.py --model runs/shakes --text ../shared/data/tinyshakespeare/input.txt

Targets: perplexity changes by < 1% relative; top-1 agreement >= 97%.
"""
import argparse
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))
from common import format_table, machine_summary, setup_threads  # noqa: E402

PPL_TARGET, AGREE_TARGET = 0.01, 0.97


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", required=True, help="training output folder or model folder")
    ap.add_argument("--text", required=True, help="UTF-8 text whose end is held out")
    ap.add_argument("--heldout-fraction", type=float, default=0.1)
    ap.add_argument("--max-tokens", type=int, default=50_000, help="evaluate at most this many positions")
    ap.add_argument("--group-sizes", type=int, nargs="*", default=[0, 64], help="0: one scale per output row")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    return ap.parse_args(argv)


def evaluate(model, ids, ctx, batch):
    """(negative log-likelihoods, argmax ids) at every position of ``ids`` in windows of ``ctx``."""
    import numpy as np

    from minigpt.tensor import no_grad

    n = (len(ids) - 1) // ctx
    x = ids[:n * ctx].reshape(n, ctx)
    y = ids[1:n * ctx + 1].reshape(n, ctx)
    nll, top = [], []
    with no_grad():
        for i in range(0, n, batch):
            logits = model(x[i:i + batch]).data.astype(np.float64)
            m = logits.max(axis=-1, keepdims=True)
            lse = (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))[..., 0]
            tgt = np.take_along_axis(logits, y[i:i + batch, :, None], axis=-1)[..., 0]
            nll.append((lse - tgt).reshape(-1))
            top.append(logits.argmax(axis=-1).reshape(-1))
    return np.concatenate(nll), np.concatenate(top)


def main(argv=None):
    args = parse_args(argv)
    setup_threads(args.threads, torch_first=False)
    import numpy as np

    from minigpt.model import GPT
    from minigpt.train import make_tokenizer, resolve_model_dir

    folder = resolve_model_dir(args.model)
    tok = make_tokenizer(str(folder), "", 0) if ((folder / "tokenizer.json").exists()
                                                 or (folder / "encoder.json").exists()) else make_tokenizer("gpt2", "", 0)
    with open(args.text, encoding="utf-8") as f:
        text = f.read()
    held = text[int(len(text) * (1 - args.heldout_fraction)):]
    ids = np.asarray(tok.encode(held, allowed_special="all"), dtype=np.int64)[:args.max_tokens + 1]
    ref = GPT.from_pretrained(folder)
    ctx = ref.config.context_length
    print(f"model {folder} ({ref.config.n_layers} layers, dim {ref.config.emb_dim}, vocab {ref.config.vocab_size}); "
          f"held-out: last {args.heldout_fraction:.0%} of {args.text}, {len(ids) - 1:,} positions in windows of {ctx}")
    t0 = time.perf_counter()
    nll32, top32 = evaluate(ref, ids, ctx, args.batch)
    t32 = time.perf_counter() - t0
    ppl32 = math.exp(nll32.mean())
    rows = [["float32", "-", f"{ppl32:.4f}", "-", "-", f"{ref.weight_bytes() / 1e6:.1f}", f"{t32:.1f}"]]
    results = {}
    for gs in args.group_sizes:
        q = GPT.from_pretrained(folder).quantize("int8", gs)
        t0 = time.perf_counter()
        nll8, top8 = evaluate(q, ids, ctx, args.batch)
        t8 = time.perf_counter() - t0
        ppl8 = math.exp(nll8.mean())
        rel = ppl8 / ppl32 - 1
        agree = float(np.mean(top8 == top32))
        results[gs] = (rel, agree)
        rows.append([f"int8 {'per row' if gs == 0 else f'groups of {gs}'}", f"{gs}", f"{ppl8:.4f}",
                     f"{100 * rel:+.3f}%", f"{100 * agree:.2f}%", f"{q.weight_bytes() / 1e6:.1f}", f"{t8:.1f}"])
    print()
    print(format_table(rows, ["weights", "group", "perplexity", "change", "top-1 agreement", "weight MB", "eval s"]))
    print(f"targets: perplexity change < {PPL_TARGET:.0%} relative, top-1 agreement >= {AGREE_TARGET:.0%}")
    for gs, (rel, agree) in results.items():
        ok = abs(rel) < PPL_TARGET and agree >= AGREE_TARGET
        print(f"  group {gs}: {'met' if ok else 'NOT met'}")
    print(machine_summary())


if __name__ == "__main__":
    main()
