"""Generation speed: minigpt's ``generate`` with and without the KV cache beside Hugging Face ``generate``.

Both sides run the *same* random GPT-2 model (gpt2-small shape by default: 124M parameters, context 1024):
a ``GPT2LMHeadModel`` is initialised at random, written with ``save_pretrained`` to a temporary folder and
read by ``minigpt.model.GPT.from_pretrained``. Greedy decoding (temperature 0 / ``do_sample=False``) of
exactly ``--new-tokens`` tokens after a random prompt of ``--prompt-len`` ids; the time covers the whole
call (prompt + new tokens), median of ``--repeats`` calls after one warm-up call. The generated ids of the
two implementations are compared as a sanity check (near-ties of a random model's flat logits can flip a
token in float32, so this is reported, not asserted).

    python benchmarks/bench_generate.py
    python benchmarks/bench_generate.py --prompt-len 16 --new-tokens 32 --threads 2
    python benchmarks/bench_generate.py --config small --no-torch

The project's target is >= 1.5x HF's new tokens/s (KV cache on for both).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))  # the repository root: minigpt without installing it
from common import (CONFIGS, fmt_rate, fmt_ratio, format_table, load_avg, machine_summary,  # noqa: E402
                    set_torch_threads, setup_threads, wait_for_idle)

TARGET = 1.5


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", default="gpt2-small", choices=list(CONFIGS), help="model shape")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-torch", action="store_true", help="minigpt only (random minigpt weights)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="before each measurement, wait up to this long for the CPUs to be idle")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return ap.parse_args(argv)


def import_minigpt():
    try:
        import minigpt  # noqa: F401  (first: selects Numba's threading layer)
        from minigpt.model import GPT, GPTConfig, generate
    except Exception as e:  # noqa: BLE001 - any failure means: not available yet
        print(f"minigpt model not available yet ({type(e).__name__}: {e})")
        return None
    return dict(GPT=GPT, GPTConfig=GPTConfig, generate=generate)


def minigpt_model(mg, cfg, hf=None):
    """minigpt's model: the HF model's weights when given (through a GPT-2 folder), else random."""
    if hf is not None and hasattr(mg["GPT"], "from_pretrained"):
        with tempfile.TemporaryDirectory() as d:
            hf.save_pretrained(d, safe_serialization=True)
            model = mg["GPT"].from_pretrained(d)
        return model, True
    gcfg = mg["GPTConfig"](vocab_size=cfg["vocab_size"], context_length=cfg["context_length"],
                           emb_dim=cfg["emb_dim"], n_heads=cfg["n_heads"], n_layers=cfg["n_layers"],
                           drop_rate=0.0, qkv_bias=True)
    return mg["GPT"](gcfg), False


def time_minigpt(mg, model, prompt, new_tokens, use_cache, repeats):
    """(new tokens/s, generated ids) of minigpt's greedy generate."""
    import numpy as np

    gen = mg["generate"]
    gen(model, prompt, 2, temperature=0.0, use_cache=use_cache)  # warm-up (compiles / loads kernels)
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = gen(model, prompt, new_tokens, temperature=0.0, use_cache=use_cache)
        times.append(time.perf_counter() - t0)
    out = np.asarray(getattr(out, "data", out))
    return new_tokens / statistics.median(times), out.reshape(-1)[prompt.shape[1]:]


def main(argv=None):
    args = parse_args(argv)
    setup_threads(args.threads, torch_first=not args.no_torch)
    import numpy as np

    cfg = dict(CONFIGS[args.config], name=args.config)
    mg = import_minigpt()
    torch_ref = None
    if not args.no_torch:
        try:
            import torch
            import torch_reference as torch_ref

            set_torch_threads(args.threads)
        except ImportError as e:
            print(f"torch/transformers not available ({e}); measuring minigpt only")
    if mg is None and torch_ref is None:
        sys.exit("nothing to measure: neither minigpt's model nor torch is available")
    la = load_avg()
    if la is not None:
        print(f"load average before: {la:.2f} (figures are noisy when other work runs on the machine)")
    print(f"model {args.config}, prompt {args.prompt_len} ids, {args.new_tokens} new tokens, greedy, "
          f"median of {args.repeats}", flush=True)

    rng = np.random.default_rng(args.seed)
    prompt = rng.integers(0, cfg["vocab_size"], size=(1, args.prompt_len), dtype=np.int64)
    rates, toks, notes = {}, {}, []
    hf, same = None, False
    if torch_ref is not None:
        hf = torch_ref.hf_model(cfg, args.seed)
        tprompt = torch.from_numpy(prompt)
        for use_cache in (True, False):
            wait_for_idle(args.wait_idle)
            r, t = torch_ref.hf_generate_tokens_per_s(cfg, new_tokens=args.new_tokens, use_cache=use_cache,
                                                      repeats=args.repeats, threads=args.threads, model=hf,
                                                      prompt=tprompt, return_tokens=True)
            rates[f"hf-cache-{'on' if use_cache else 'off'}"], toks["hf"] = r, t
    if mg is not None:
        try:
            model, same = minigpt_model(mg, cfg, hf)
            notes.append("same weights as HF (save_pretrained -> GPT.from_pretrained)" if same
                         else "random minigpt weights (not the HF model's)")
            for use_cache in (True, False):
                wait_for_idle(args.wait_idle)
                r, t = time_minigpt(mg, model, prompt, args.new_tokens, use_cache, args.repeats)
                rates[f"minigpt-cache-{'on' if use_cache else 'off'}"] = r
                toks[f"minigpt-{'on' if use_cache else 'off'}"] = t
        except Exception as e:  # noqa: BLE001
            print(f"minigpt failed: {type(e).__name__}: {e}")
    if "minigpt-on" in toks and "minigpt-off" in toks:
        notes.append(f"minigpt cache on/off generate the same ids: {np.array_equal(toks['minigpt-on'], toks['minigpt-off'])}")
    if "hf" in toks and "minigpt-on" in toks and same:
        agree = int(np.sum(toks["hf"] == toks["minigpt-on"]))
        first = next((i for i in range(args.new_tokens) if toks["hf"][i] != toks["minigpt-on"][i]), None)
        notes.append(f"minigpt and HF agree on {agree}/{args.new_tokens} new ids"
                     + ("" if first is None else f" (first difference at new token {first})"))

    g = rates.get
    rows = [["KV cache on", fmt_rate(g("minigpt-cache-on"), 1), fmt_rate(g("hf-cache-on"), 1),
             fmt_ratio(g("minigpt-cache-on"), g("hf-cache-on")), f">= {TARGET:.1f}x"],
            ["KV cache off", fmt_rate(g("minigpt-cache-off"), 1), fmt_rate(g("hf-cache-off"), 1),
             fmt_ratio(g("minigpt-cache-off"), g("hf-cache-off")), ""]]
    print()
    print(format_table(rows, ["", "minigpt new tok/s", "HF generate new tok/s", "ratio", "target"]))
    print(f"cache speed-up: minigpt {fmt_ratio(g('minigpt-cache-on'), g('minigpt-cache-off'))}, "
          f"HF {fmt_ratio(g('hf-cache-on'), g('hf-cache-off'))}")
    for n in notes:
        print("  " + n)
    print(machine_summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine_summary(), config=args.config, prompt_len=args.prompt_len,
                           new_tokens=args.new_tokens, rates=rates, notes=notes), f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
