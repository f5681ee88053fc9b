"""Tokenizer speed: minigpt's byte-level BPE beside tiktoken (encode) and HF tokenizers (training), one thread.

    python benchmarks/bench_tokenizer.py [--mb 5] [--repeats 3] [--extra FILE ...]

The corpus is built from the English text in the shared data folder (nothing downloaded): tiny-shakespeare
without its last 10%, the SMS messages and the instruction data set (instruction, input and output fields),
about 1.6 MB of distinct text, plus any ``--extra`` UTF-8 files; it is repeated until it reaches ``--mb``
megabytes. The held-out text (never trained on) is the last 10% of tiny-shakespeare and the-verdict.

Warm start (``--warm-only`` runs only this): a fresh tokenizer from GPT-2's encoder.json + vocab.bpe, then its
first encode of 0.5 MB of the corpus, in this process after the Numba code was loaded once. minigpt twice: loading
its vocabulary cache (the default; written by the untimed first load) and parsing the two files
(``cache=False``); tiktoken: ``tiktoken.Encoding`` built from the same encoder.json. Medians of
``--warm-repeats`` rounds, the three side by side in each round. ``--cold`` adds the same in fresh processes,
imports and Numba's start-up included (which the warm figures leave out).

Encode (GPT-2's vocabulary, ids checked identical to tiktoken's):
  - "distinct, cold": the distinct corpus once, from an empty cache (every pre-token is new the first time);
  - "5 MB, cold": the repeated corpus from an empty cache;  "5 MB, warm": the same again, every pre-token cached.
  tiktoken has no cache, so its figure is the same text encoded the same way.
Training (vocab 5,000 and 32,000 incl. <|endoftext|>, GPT-2 split pattern, on the repeated corpus): minigpt vs
HF ``tokenizers`` ByteLevel BPE (RAYON_NUM_THREADS=1), then the token count of each trained vocabulary on the
held-out text. Numba's one-time compilation is excluded (a warm-up run loads the cached machine code).
Each figure is the best of ``--repeats`` runs, ours and the reference alternating in the same process.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ["RAYON_NUM_THREADS"] = "1"  # before HF tokenizers starts its pool
os.environ["TOKENIZERS_PARALLELISM"] = "false"
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import format_table, load_avg, setup_threads  # noqa: E402

setup_threads(1)

from minigpt.data.shared import shared_data_dir  # noqa: E402
from minigpt.tokenizer import GPT2_PATTERN, BPETokenizer, gpt2_bytes_to_unicode  # noqa: E402


def build_corpus(data: Path, extra):
    ts = (data / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    cut = ts.rfind("\n\n", 0, int(len(ts) * 0.9)) + 2
    sms = (data / "sms-spam" / "SMSSpamCollection").read_text(encoding="utf-8", errors="replace")
    sms = "\n".join(line.split("\t", 1)[-1] for line in sms.splitlines())
    inst = json.loads((data / "instruction-data" / "instruction-data.json").read_text(encoding="utf-8"))
    inst = "\n\n".join("\n".join(x for x in (e["instruction"], e["input"], e["output"]) if x) for e in inst)
    docs = [ts[:cut], sms, inst] + [Path(f).read_text(encoding="utf-8") for f in extra]
    held_out = ts[cut:] + (data / "the-verdict" / "the-verdict.txt").read_text(encoding="utf-8")
    return "\n\n".join(docs), held_out


def chunks(text, size=1 << 16):
    """Pieces of about ``size`` characters cut after a newline (the documents both trainers see)."""
    out, i = [], 0
    while i < len(text):
        j = text.find("\n", i + size)
        j = len(text) if j == -1 else j + 1
        out.append(text[i:j])
        i = j
    return out


def best(fn, repeats, before=None):
    t = float("inf")
    result = None
    for _ in range(repeats):
        if before is not None:
            before()
        t0 = time.perf_counter()
        result = fn()
        t = min(t, time.perf_counter() - t0)
    return t, result


def tiktoken_gpt2(data: Path):
    try:
        import tiktoken
    except ImportError:
        return None
    u2b = {c: b for b, c in gpt2_bytes_to_unicode().items()}
    enc = json.loads((data / "gpt2" / "encoder.json").read_text(encoding="utf-8"))
    eot = enc.pop("<|endoftext|>")
    ranks = {bytes(u2b[c] for c in s): i for s, i in enc.items()}
    return tiktoken.Encoding("gpt2-offline", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": eot})


_COLD_MINIGPT = """
import sys, time
t0 = time.perf_counter()
import numpy, numba
t1 = time.perf_counter()
from minigpt.kernels import bpe as kb
from minigpt.tokenizer import BPETokenizer
t2 = time.perf_counter()
kb.pretoken_ends(numpy.frombuffer(b"a b", numpy.uint8), 0)  # the first call of any cached Numba kernel
t3 = time.perf_counter()
tok = BPETokenizer.from_gpt2(sys.argv[1])
t4 = time.perf_counter()
ids = tok.encode(open(sys.argv[2], encoding="utf-8").read())
t5 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t5 - t0, len(ids))
"""
_COLD_TIKTOKEN = """
import json, sys, time
t0 = time.perf_counter()
import tiktoken
t1 = time.perf_counter()
keep = [b for b in range(256) if 0x21 <= b <= 0x7E or 0xA1 <= b <= 0xAC or 0xAE <= b <= 0xFF]
b2u, nxt = {b: chr(b) for b in keep}, 0x100
for b in range(256):
    if b not in b2u:
        b2u[b], nxt = chr(nxt), nxt + 1
u2b = {c: b for b, c in b2u.items()}
enc = json.loads(open(sys.argv[1] + "/encoder.json", encoding="utf-8").read())
eot = enc.pop("<|endoftext|>")
tt = tiktoken.Encoding("gpt2-offline", pat_str=sys.argv[3], special_tokens={"<|endoftext|>": eot},
                       mergeable_ranks={bytes(u2b[c] for c in s): i for s, i in enc.items()})
t2 = time.perf_counter()
ids = tt.encode_ordinary(open(sys.argv[2], encoding="utf-8").read())
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, t3 - t0, len(ids))
"""


def cold_start(data: Path, half: str, rounds: int) -> None:
    """Fresh processes: imports, the first Numba call, load and first encode of 0.5 MB (minigpt with its
    vocabulary cache in place), beside tiktoken's imports, load and encode; medians of ``rounds``."""
    import subprocess
    import tempfile

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "half.txt"
        text.write_text(half, encoding="utf-8")
        args = [str(data / "gpt2"), str(text), GPT2_PATTERN]
        ours, ref = [], []
        for _ in range(rounds):
            out = subprocess.run([sys.executable, "-c", _COLD_MINIGPT, *args], env=env, capture_output=True,
                                 text=True, check=True).stdout.split()
            ours.append([float(x) for x in out[:6]])
            try:
                out = subprocess.run([sys.executable, "-c", _COLD_TIKTOKEN, *args], env=env, capture_output=True,
                                     text=True, check=True).stdout.split()
                ref.append([float(x) for x in out[:4]])
            except subprocess.CalledProcessError:
                pass  # tiktoken not installed
    m = [statistics.median(r[i] for r in ours) for i in range(6)]
    print(f"\ncold start in a fresh process (medians of {rounds}): minigpt: import numpy + numba {m[0]:.3f} s, "
          f"minigpt's modules {m[1]:.3f} s, first call of a cached Numba kernel {m[2]:.3f} s, load (cached "
          f"vocabulary) {m[3]:.3f} s, first encode {m[4]:.3f} s; total {m[5]:.3f} s")
    if ref:
        r = [statistics.median(x[i] for x in ref) for i in range(4)]
        print(f"tiktoken: import {r[0]:.3f} s, load {r[1]:.3f} s, first encode {r[2]:.3f} s; total {r[3]:.3f} s "
              f"({r[3] / m[5]:.2f}x minigpt's; minigpt without Numba's import and start-up: "
              f"{m[5] - m[0] - m[2]:.3f} s)")


def hf_train(docs, vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer)
    return tok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=5.0, help="size of the repeated corpus in MB (default 5)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--vocab", type=int, nargs="+", default=[5000, 32000])
    ap.add_argument("--extra", nargs="*", default=[], help="more UTF-8 text files for the corpus")
    ap.add_argument("--warm-only", action="store_true", help="only the warm-start measurement (load + first encode)")
    ap.add_argument("--warm-repeats", type=int, default=5, help="rounds of the warm-start measurement (default 5)")
    ap.add_argument("--cold", action="store_true", help="also the cold start: fresh processes, imports included")
    args = ap.parse_args()
    data = shared_data_dir()
    if data is None:
        sys.exit("shared data folder not found: set MINIGPT_DATA or place it at ../shared/data")
    distinct, held_out = build_corpus(data, args.extra)
    reps = max(1, round(args.mb * 1e6 / len(distinct.encode("utf-8"))))
    big = "\n\n".join([distinct] * reps)
    mb_distinct = len(distinct.encode("utf-8")) / 1e6
    mb_big = len(big.encode("utf-8")) / 1e6
    print(f"corpus: {mb_distinct:.2f} MB distinct x {reps} = {mb_big:.2f} MB; held-out {len(held_out):,} chars; "
          f"load average {load_avg():.2f}")

    # --- warm start: load + first encode of 0.5 MB ---------------------------------------------------
    # not part of the timing: loads the cached Numba code, and writes the vocabulary cache when it is missing
    BPETokenizer.from_gpt2(data / "gpt2").encode("load the cached Numba code first")
    half = distinct.encode("utf-8")[:500_000].decode("utf-8", errors="ignore")
    tt_ok = tiktoken_gpt2(data) is not None
    runs = {"cached": [], "parsed": [], "tiktoken": []}
    for _ in range(args.warm_repeats):  # the three side by side in each round; medians reported
        for label in runs:
            t0 = time.perf_counter()
            if label == "tiktoken":
                if not tt_ok:
                    continue
                fresh = tiktoken_gpt2(data)
                t1 = time.perf_counter()
                ids = fresh.encode_ordinary(half)
            else:
                fresh = BPETokenizer.from_gpt2(data / "gpt2", cache=label == "cached")
                t1 = time.perf_counter()
                ids = fresh.encode(half)
            t2 = time.perf_counter()
            runs[label].append((t1 - t0, t2 - t1, t2 - t0))
            if label == "cached":
                ref_ids = ids
            elif ids != ref_ids:
                raise AssertionError(f"ids differ between minigpt (cached vocabulary) and {label}")
            del fresh
    med = {k: [statistics.median(x[i] for x in v) for i in range(3)] for k, v in runs.items() if v}
    print(f"\nwarm start, load + first encode of 0.5 MB (medians of {args.warm_repeats} rounds; Numba code "
          "already loaded):")
    rows = []
    for label, name in (("cached", "minigpt, vocabulary cache"), ("parsed", "minigpt, cache=False"),
                        ("tiktoken", "tiktoken")):
        if label in med:
            load, enc, total = med[label]
            ratio = f"{med['tiktoken'][2] / total:.2f}x" if "tiktoken" in med else "n/a"
            rows.append([name, f"{load:.3f}", f"{enc:.3f}", f"{total:.3f}", ratio])
    print(format_table(rows, ["", "load s", "first encode s", "total s", "tiktoken's total / this"]))
    print(f"target: minigpt (cached) >= 1.0x.  load average now {load_avg():.2f}")
    if args.cold:
        cold_start(data, half, args.warm_repeats)
    if args.warm_only:
        return

    # --- encode -------------------------------------------------------------------------------------
    ours = BPETokenizer.from_gpt2(data / "gpt2")
    ours.encode("warm up the kernels: zqxjv")  # loads the cached Numba code (compiles on the very first run)
    tt = tiktoken_gpt2(data)
    rows = []
    for label, text, mb, warm in (("distinct, cold", distinct, mb_distinct, False),
                                  (f"{mb_big:.1f} MB, cold", big, mb_big, False),
                                  (f"{mb_big:.1f} MB, warm", big, mb_big, True)):
        t_ours = t_tt = float("inf")
        for _ in range(args.repeats):
            if not warm:
                ours.clear_cache()
            else:
                ours.encode(text)
            t0 = time.perf_counter()
            ids = ours.encode(text)
            t_ours = min(t_ours, time.perf_counter() - t0)
            if tt is not None:
                t0 = time.perf_counter()
                ref = tt.encode_ordinary(text)
                t_tt = min(t_tt, time.perf_counter() - t0)
                assert ids == ref, "ids differ from tiktoken"
        r_ours, r_tt = mb / t_ours, (mb / t_tt if tt is not None else None)
        rows.append([label, f"{r_ours:.1f}", "n/a" if r_tt is None else f"{r_tt:.1f}",
                     "n/a" if r_tt is None else f"{r_ours / r_tt:.2f}x"])
    print("\nencode, GPT-2 vocabulary, one thread (MB/s; ids identical to tiktoken's)")
    print(format_table(rows, ["text", "minigpt", "tiktoken", "ratio"]))

    # --- training -----------------------------------------------------------------------------------
    docs = chunks(big)
    BPETokenizer.train(distinct[:20000], 300)  # warm-up: load the cached Numba code
    try:
        import tokenizers  # noqa: F401
        have_hf = True
    except ImportError:
        have_hf = False
    rows = []
    for v in args.vocab:
        t_ours, tok = best(lambda: BPETokenizer.train(docs, v), args.repeats)
        n_ours = len(tok.encode(held_out, disallowed_special=()))
        assert tok.decode(tok.encode(held_out, disallowed_special=())) == held_out
        if have_hf:
            t_hf, hf = best(lambda: hf_train(docs, v), args.repeats)
            n_hf = len(hf.encode(held_out).ids)
            rows.append([f"{v:,}", f"{t_ours:.2f}", f"{t_hf:.2f}", f"{t_ours / t_hf:.2f}x",
                         f"{n_ours:,}", f"{n_hf:,}", f"{n_ours / n_hf:.4f}x", f"{hf.get_vocab_size():,}"])
        else:
            rows.append([f"{v:,}", f"{t_ours:.2f}", "n/a", "n/a", f"{n_ours:,}", "n/a", "n/a", "n/a"])
    print(f"\nBPE training on {mb_big:.1f} MB, one thread (seconds; tokens of the held-out text)")
    print(format_table(rows, ["vocab", "minigpt s", "HF s", "time ratio", "minigpt tokens", "HF tokens",
                              "token ratio", "HF vocab"]))
    print("\nfloors: encode >= 0.8x tiktoken cold and >= 1.0x warm; training <= 0.5x HF's time at <= 1.01x "
          f"HF's token count.  load average now {load_avg():.2f}")


if __name__ == "__main__":
    main()
