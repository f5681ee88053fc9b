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
    python benchmarks/bench_generate.py --no-cache-off --wait-idle 60     # int8 targets only
    python benchmarks/bench_generate.py --no-cache-off --no-rss --threads 1 --clock cpu   # loaded machine

int8 (``--int8``, on by default): the same weights quantized with ``model.quantize("int8")`` generate beside
float32 and HF (targets: >= 2.5x HF's new tokens/s and >= 1.8x minigpt float32, KV cache on). The script
also times the weight-read bound of one generated token -- a chain of NumPy matrix-vector products over
the model's own float32 weights (every block linear and the LM head), in the same run -- and compares the
float32 decode step with it (target: within 1.15x); the bytes per second both decode steps read, beside
the bandwidth of a plain memory copy in the same run (what the memory delivers at that moment); and, each
in a fresh child process, the resident
memory a loaded float32 and int8 model adds (target: int8 <= 0.35x float32).
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
INT8_VS_HF, INT8_VS_F32, BOUND_RATIO, RSS_RATIO = 2.5, 1.8, 1.15, 0.35


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--config", default="gpt2-small", choices=list(CONFIGS), help="model shape")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-torch", action="store_true", help="minigpt only (random minigpt weights)")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="before each measurement, wait up to this long for the CPUs to be idle")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--no-int8", dest="int8", action="store_false", help="skip the int8 model")
    ap.add_argument("--group-size", type=int, default=0, help="int8 scales per this many inputs (0: per row)")
    ap.add_argument("--no-cache-off", dest="cache_off", action="store_false",
                    help="skip the runs without KV cache (slow)")
    ap.add_argument("--no-rss", dest="rss", action="store_false", help="skip the resident-memory children")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="time the calls and the per-token split by the wall clock, or by the process's CPU time "
                         "(use with --threads 1 on a loaded machine: other processes barely change it)")
    ap.add_argument("--rss-child", nargs=2, metavar=("FOLDER", "QUANT"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def rss_child(folder, quant):
    """(in a fresh process) resident memory added by loading the model folder, as JSON on stdout."""
    import gc

    import numpy as np

    from minigpt.model import GPT, GPTConfig, generate

    # warm-up on a tiny model: every module and kernel is loaded before the baseline
    warm = GPT(GPTConfig.preset("nano"))
    generate(warm, np.array([[1, 2, 3]]), 2, temperature=0.0)
    generate(warm.quantize("int8"), np.array([[1, 2, 3]]), 2, temperature=0.0)
    del warm
    gc.collect()
    before = rss_bytes()
    model = GPT.from_pretrained(folder)
    if quant != "none":
        model.quantize(quant)
    loaded = rss_bytes()
    generate(model, np.array([[1, 2, 3]]), 1, temperature=0.0)
    print(json.dumps({"loaded": loaded - before, "weights": model.weight_bytes()}))


def child_rss(folder, quant, threads):
    import subprocess

    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--rss-child", str(folder), quant],
                         capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def weight_matrices(model):
    """The float32 weight matrices a generated token reads, in order, as (in, out) arrays (x @ W)."""
    mats = []
    for blk in model.blocks:
        for lin in (blk.attn.qkv, blk.attn.proj, blk.ff.fc, blk.ff.proj):
            mats.append(lin.weight.data)
    mats.append(model.head_weight.data.T)  # the LM head: h @ wte.T
    return mats


def gemv_chain_ms(mats, repeats=30):
    """Median time of one pass of x @ W over every matrix (a GEMV each): reading the weights once."""
    import numpy as np

    xs = {n: np.random.default_rng(0).normal(size=(1, n)).astype(np.float32) for n in {m.shape[0] for m in mats}}
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for w in mats:
            xs[w.shape[0]] @ w
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def copy_gbs(nbytes, repeats=10):
    """Memory bandwidth of a plain copy of ``nbytes`` (bytes read + bytes written per second, best of
    ``repeats``): what the machine's memory delivers right now, beside the weight-read figures."""
    import numpy as np

    a = np.ones(int(nbytes), dtype=np.uint8)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best / 1e9


def decode_step_ms(mg, model, prompt, new_tokens):
    """Median time of one KV-cache decoding step (the steps after the prompt's), in ms."""
    stamps = [time.perf_counter()]
    for _ in mg["generate_stream"](model, prompt, new_tokens, temperature=0.0):
        stamps.append(time.perf_counter())
    steps = [b - a for a, b in zip(stamps[1:-1], stamps[2:])]
    return 1e3 * statistics.median(steps)


CLOCK = time.perf_counter  # --clock cpu: time.process_time


def split_ms(model, prompt, new_tokens, repeats=3):
    """Where a generated token's time goes, from the same pieces ``generate`` runs (KV cache, greedy):
    the prompt pass (prefill, once per call), one decoding step (median over the steps of a call) and
    greedy sampling of one row of logits; each the median over ``repeats`` calls, in ms."""
    import numpy as np

    from minigpt.model.decode import decoder, prefiller
    from minigpt.model.generation import sample_next
    from minigpt.tensor import no_grad

    prefill, step = prefiller(model), decoder(model)
    rng = np.random.default_rng(0)
    pre, steps, samp = [], [], []
    with no_grad():
        for _ in range(repeats):
            caches = model.new_caches(prompt.shape[0])
            t0 = CLOCK()
            logits = prefill(prompt, caches)
            pre.append(CLOCK() - t0)
            per = []
            for _ in range(new_tokens - 1):
                t0 = CLOCK()
                nxt = sample_next(logits, 0.0, None, None, rng)
                t1 = CLOCK()
                logits = step(nxt, caches)
                t2 = CLOCK()
                samp.append(t1 - t0)
                per.append(t2 - t1)
            steps.append(statistics.median(per))
    med = lambda v: 1e3 * statistics.median(v)  # noqa: E731
    return dict(prefill_ms=med(pre), step_ms=med(steps), sample_ms=med(samp),
                fused_prefill=prefill.__name__ == "prefill")


def import_minigpt():
    try:
        import minigpt  # noqa: F401  (first: selects Numba's threading layer)
        from minigpt.model import GPT, GPTConfig, generate, generate_stream
    except Exception as e:  # noqa: BLE001 - any failure means: not available yet
        print(f"minigpt model not available yet ({type(e).__name__}: {e})")
        return None
    return dict(GPT=GPT, GPTConfig=GPTConfig, generate=generate, generate_stream=generate_stream)


def minigpt_model(mg, cfg, hf=None, folder=None):
    """minigpt's model: the HF model's weights when given (through a GPT-2 folder), else random. With
    ``folder``, the model is also saved there (for the int8 copy and the memory children)."""
    if hf is not None and hasattr(mg["GPT"], "from_pretrained"):
        with tempfile.TemporaryDirectory() as d:
            hf.save_pretrained(d, safe_serialization=True)
            model = mg["GPT"].from_pretrained(d)
        same = True
    else:
        gcfg = mg["GPTConfig"](vocab_size=cfg["vocab_size"], context_length=cfg["context_length"],
                               emb_dim=cfg["emb_dim"], n_heads=cfg["n_heads"], n_layers=cfg["n_layers"],
                               drop_rate=0.0, qkv_bias=True)
        model, same = mg["GPT"](gcfg), False
    if folder is not None:
        model.save_pretrained(folder)
    return model, same


def main(argv=None):
    global CLOCK
    args = parse_args(argv)
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.rss_child:
        setup_threads(args.threads, torch_first=False)
        return rss_child(*args.rss_child)
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
    rates, best, toks, notes = {}, {}, {}, []
    hf, same = None, False
    sides = {}  # label -> a call generating args.new_tokens ids; timed in alternation below
    if torch_ref is not None:
        hf = torch_ref.hf_model(cfg, args.seed)
        tprompt = torch.from_numpy(prompt)
        for use_cache in (True, False) if args.cache_off else (True,):
            sides[f"hf-cache-{'on' if use_cache else 'off'}"] = (
                lambda n, c=use_cache: torch_ref.hf_generate(hf, tprompt, n, c).numpy())
    extra = {}
    tmp = tempfile.TemporaryDirectory()
    model = q8 = None
    if mg is not None:
        try:
            f32_dir = os.path.join(tmp.name, "f32")
            model, same = minigpt_model(mg, cfg, hf, folder=f32_dir)
            notes.append("same weights as HF (save_pretrained -> GPT.from_pretrained)" if same
                         else "random minigpt weights (not the HF model's)")
            gen = mg["generate"]
            for use_cache in (True, False) if args.cache_off else (True,):
                sides[f"minigpt-cache-{'on' if use_cache else 'off'}"] = (
                    lambda n, c=use_cache: gen(model, prompt, n, temperature=0.0, use_cache=c)[0, prompt.shape[1]:])
            if args.int8:
                q8 = mg["GPT"].from_pretrained(f32_dir).quantize("int8", args.group_size)
                sides["minigpt-int8"] = lambda n: gen(q8, prompt, n, temperature=0.0)[0, prompt.shape[1]:]
        except Exception as e:  # noqa: BLE001
            print(f"minigpt failed: {type(e).__name__}: {e}")
    # every side: one warm-up call (compiles / loads kernels), then the timed calls in alternating rounds
    # (hf, minigpt, int8, hf, minigpt, ...) so that other work on the machine hits them alike
    for f in sides.values():
        f(2)
    times = {k: [] for k in sides}
    for _ in range(args.repeats):
        wait_for_idle(args.wait_idle, quiet=True)
        for label, f in sides.items():
            t0 = CLOCK()
            out = f(args.new_tokens)
            times[label].append(CLOCK() - t0)
            toks[label] = np.asarray(out).reshape(-1)
    for label, ts in times.items():
        rates[label] = args.new_tokens / statistics.median(ts)
        best[label] = args.new_tokens / min(ts)
    short = {"hf-cache-on": "hf", "minigpt-cache-on": "minigpt-on", "minigpt-cache-off": "minigpt-off"}
    toks = {short.get(k, k): v for k, v in toks.items()}
    if model is not None:
        try:
            wait_for_idle(args.wait_idle)
            mats = weight_matrices(model)
            extra["bound_ms"] = gemv_chain_ms(mats)
            extra["weight_mb"] = sum(m.nbytes for m in mats) / 1e6
            extra["f32_step_ms"] = decode_step_ms(mg, model, prompt, args.new_tokens)
            extra["f32_split"] = split_ms(model, prompt, args.new_tokens, args.repeats)
            del mats
            if q8 is not None:
                extra["int8_step_ms"] = decode_step_ms(mg, q8, prompt, args.new_tokens)
                extra["int8_split"] = split_ms(q8, prompt, args.new_tokens, args.repeats)
                extra["int8_weight_mb"] = q8.weight_bytes() / 1e6
                extra["copy_gbs"] = copy_gbs(q8.weight_bytes())
                agree = int(np.sum(toks["minigpt-int8"] == toks["minigpt-on"]))
                notes.append(f"int8 and float32 agree on {agree}/{args.new_tokens} new ids (random weights: "
                             "near-ties of flat logits flip; quality is measured by bench_int8_quality.py)")
                q8.save_pretrained(os.path.join(tmp.name, "int8"))
                del q8
            if args.rss:
                extra["rss_f32"] = child_rss(f32_dir, "none", args.threads)
                if args.int8:
                    extra["rss_int8"] = child_rss(os.path.join(tmp.name, "int8"), "none", args.threads)
        except Exception as e:  # noqa: BLE001
            print(f"minigpt failed: {type(e).__name__}: {e}")
    tmp.cleanup()
    if "minigpt-on" in toks and "minigpt-off" in toks and args.cache_off:
        notes.append(f"minigpt cache on/off generate the same ids: {np.array_equal(toks['minigpt-on'], toks['minigpt-off'])}")
    if "hf" in toks and "minigpt-on" in toks and same:
        agree = int(np.sum(toks["hf"] == toks["minigpt-on"]))
        first = next((i for i in range(args.new_tokens) if toks["hf"][i] != toks["minigpt-on"][i]), None)
        notes.append(f"minigpt and HF agree on {agree}/{args.new_tokens} new ids"
                     + ("" if first is None else f" (first difference at new token {first})"))

    g = rates.get
    rows = [["KV cache on", fmt_rate(g("minigpt-cache-on"), 1), fmt_rate(g("hf-cache-on"), 1),
             fmt_ratio(g("minigpt-cache-on"), g("hf-cache-on")), f">= {TARGET:.1f}x"]]
    if args.cache_off:
        rows.append(["KV cache off", fmt_rate(g("minigpt-cache-off"), 1), fmt_rate(g("hf-cache-off"), 1),
                     fmt_ratio(g("minigpt-cache-off"), g("hf-cache-off")), ""])
    if "minigpt-int8" in rates:
        rows.append([f"int8 (KV cache on){' g' + str(args.group_size) if args.group_size else ''}",
                     fmt_rate(g("minigpt-int8"), 1), fmt_rate(g("hf-cache-on"), 1),
                     fmt_ratio(g("minigpt-int8"), g("hf-cache-on")), f">= {INT8_VS_HF:.1f}x"])
    print()
    print(format_table(rows, ["", "minigpt new tok/s", "HF generate new tok/s", "ratio", "target"]))
    print(f"(median of {args.repeats} calls per side by the {args.clock} clock, sides timed in alternating rounds; "
          "with each side's fastest "
          f"call: float32 {fmt_ratio(best.get('minigpt-cache-on'), best.get('hf-cache-on'))} HF"
          + (f", int8 {fmt_ratio(best.get('minigpt-int8'), best.get('hf-cache-on'))}" if "minigpt-int8" in best
             else "") + ")")
    if args.cache_off:
        print(f"cache speed-up: minigpt {fmt_ratio(g('minigpt-cache-on'), g('minigpt-cache-off'))}, "
              f"HF {fmt_ratio(g('hf-cache-on'), g('hf-cache-off'))}")
    if "minigpt-int8" in rates:
        print(f"int8 vs minigpt float32 (KV cache on): {fmt_ratio(g('minigpt-int8'), g('minigpt-cache-on'))} "
              f"(target >= {INT8_VS_F32:.1f}x)")
    if "bound_ms" in extra:
        e = extra
        print(f"weight-read bound (GEMV chain over the {e['weight_mb']:.0f} MB of float32 weights): "
              f"{e['bound_ms']:.2f} ms; float32 decode step {e['f32_step_ms']:.2f} ms = "
              f"{e['f32_step_ms'] / e['bound_ms']:.2f}x the bound (target <= {BOUND_RATIO:.2f}x)"
              + (f"; int8 decode step {e['int8_step_ms']:.2f} ms = {e['int8_step_ms'] / e['bound_ms']:.2f}x"
                 if "int8_step_ms" in e else ""))
    for kind in ("f32", "int8"):
        sp = extra.get(f"{kind}_split")
        if sp is None:
            continue
        n = args.new_tokens
        per_token = (sp["prefill_ms"] + (n - 1) * sp["step_ms"] + n * sp["sample_ms"]) / n
        rate = g("minigpt-cache-on" if kind == "f32" else "minigpt-int8")
        print(f"{'float32' if kind == 'f32' else 'int8'} per-token split ({n} new tokens, prompt {args.prompt_len}): "
              f"prefill {sp['prefill_ms']:.2f} ms once ({'fused' if sp['fused_prefill'] else 'the forward'}; "
              f"{sp['prefill_ms'] / n / per_token:.1%} of a token's share), decode step {sp['step_ms']:.2f} ms "
              f"({(n - 1) * sp['step_ms'] / n / per_token:.1%}), greedy sampling {sp['sample_ms']:.3f} ms "
              f"({sp['sample_ms'] / per_token:.1%}); sum {per_token:.2f} ms per new token"
              + (f" vs the whole call's {1e3 / rate:.2f} ms" if rate else ""))
    if "copy_gbs" in extra:
        e = extra
        print(f"int8 decode step reads {e['int8_weight_mb']:.0f} MB of weights: "
              f"{e['int8_weight_mb'] / e['int8_step_ms']:.1f} GB/s; float32 step {e['weight_mb'] / e['f32_step_ms']:.1f} "
              f"GB/s; a memory copy in this run moves {e['copy_gbs']:.1f} GB/s (read + write)")
    if "rss_f32" in extra:
        e = extra
        line = f"resident memory added by loading: float32 {e['rss_f32']['loaded'] / 1e6:.0f} MB"
        if "rss_int8" in e:
            line += (f", int8 {e['rss_int8']['loaded'] / 1e6:.0f} MB = "
                     f"{e['rss_int8']['loaded'] / e['rss_f32']['loaded']:.2f}x (target <= {RSS_RATIO:.2f}x)")
        print(line)
    for n in notes:
        print("  " + n)
    print(machine_summary())
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(machine=machine_summary(), config=args.config, prompt_len=args.prompt_len,
                           new_tokens=args.new_tokens, rates=rates, best_rates=best, notes=notes, extra=extra), f,
                      indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
