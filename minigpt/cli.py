"""The `minigpt` command line: an argparse front over the library. Nothing imports this module.

Each command group has its own ``_add_<group>`` function that registers its sub-commands; the handler of
a command is the ``func`` default of its parser. Errors a user can cause (bad paths, bad options, bad
data) print one line ``minigpt: error: ...`` and exit with status 2.
"""
from __future__ import annotations

import argparse
import codecs
import sys

from .errors import MiniGPTError


# --- tokenizer -------------------------------------------------------------------------------------
def _add_tokenizer(sub):
    p = sub.add_parser("tokenizer", help="train a byte-level BPE tokenizer; encode and decode text",
                       description="Train a byte-level BPE tokenizer, or encode/decode text with one (a file "
                       "written by 'minigpt tokenizer train', or GPT-2's encoder.json + vocab.bpe).")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    actions = p.add_subparsers(dest="tokenizer_action", metavar="ACTION")

    t = actions.add_parser("train", help="learn a vocabulary from text files")
    t.add_argument("--text", nargs="+", required=True, metavar="FILE", help="UTF-8 text files (streamed)")
    t.add_argument("--vocab-size", type=int, required=True, help="tokens in total: 256 bytes + merges + specials")
    t.add_argument("--out", required=True, metavar="PATH", help="output file (JSON, the project's format); "
                   "an existing folder gets PATH/tokenizer.json")
    t.add_argument("--pattern", default="gpt2", help="split pattern: gpt2 (default), gpt4 or a regular expression")
    t.add_argument("--special", nargs="*", default=["<|endoftext|>"], metavar="TOKEN",
                   help="special tokens, given the last ids (default: <|endoftext|>; none: --special with no value)")
    t.add_argument("--gpt2-files", action="store_true", help="also write encoder.json + vocab.bpe beside --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_tokenizer_train)

    for name, helptext in (("encode", "print the token ids of a text"), ("decode", "print the text of token ids")):
        c = actions.add_parser(name, help=helptext)
        src = c.add_mutually_exclusive_group(required=True)
        src.add_argument("--tokenizer", metavar="PATH", help="a tokenizer file written by 'train' (or a folder "
                         "holding tokenizer.json, or encoder.json + vocab.bpe)")
        src.add_argument("--gpt2", metavar="DIR", help="the folder of GPT-2's encoder.json + vocab.bpe")
        if name == "encode":
            what = c.add_mutually_exclusive_group()
            what.add_argument("--text", help="the text to encode")
            what.add_argument("--file", help="a UTF-8 file to encode (default: standard input)")
            c.add_argument("--allow-special", action="store_true",
                           help="encode special-token text such as <|endoftext|> as its special token")
            c.set_defaults(func=_cmd_tokenizer_encode)
        else:
            c.add_argument("ids", nargs="*", help="token ids (separated by spaces or commas; default: stdin)")
            c.set_defaults(func=_cmd_tokenizer_decode)


def _load_tokenizer_arg(args):
    from pathlib import Path

    from .tokenizer import BPETokenizer

    if args.gpt2:
        return BPETokenizer.from_gpt2(Path(args.gpt2))
    path = Path(args.tokenizer)
    if path.is_dir():
        if (path / "tokenizer.json").is_file():
            return BPETokenizer.load(path / "tokenizer.json")
        if (path / "encoder.json").is_file():
            return BPETokenizer.from_gpt2(path)
        raise MiniGPTError(f"{path} holds neither tokenizer.json nor encoder.json + vocab.bpe")
    if not path.is_file():
        raise MiniGPTError(f"tokenizer file not found: {path}")
    return BPETokenizer.load(path)


def _cmd_tokenizer_train(args):
    import time
    from pathlib import Path

    from .tokenizer import BPETokenizer

    files = [Path(f) for f in args.text]
    for f in files:
        if not f.is_file():
            raise MiniGPTError(f"training file not found: {f}")
    out = Path(args.out)
    if out.is_dir():
        out = out / "tokenizer.json"
    t0 = time.perf_counter()
    tok = BPETokenizer.train(files, vocab_size=args.vocab_size, special_tokens=tuple(args.special),
                             pattern=args.pattern, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    tok.save(out)
    print(f"trained {tok.vocab_size} tokens ({len(tok.merges)} merges, pattern {tok.pattern_name}, special "
          f"{list(tok.special_tokens) or 'none'}) in {seconds:.2f} s -> {out}", file=sys.stderr)
    if args.gpt2_files:
        tok.to_gpt2(out.parent)
        print(f"wrote {out.parent / 'encoder.json'} and {out.parent / 'vocab.bpe'}", file=sys.stderr)
    return 0


def _cmd_tokenizer_encode(args):
    from pathlib import Path

    tok = _load_tokenizer_arg(args)
    if args.text is not None:
        text = args.text
    elif args.file is not None:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise MiniGPTError(f"{args.file} is not UTF-8 text ({e})") from None
    else:
        text = sys.stdin.read()
    ids = tok.encode(text, allowed_special="all" if args.allow_special else ())
    print(" ".join(map(str, ids)))
    return 0


def _cmd_tokenizer_decode(args):
    import re

    tok = _load_tokenizer_arg(args)
    raw = " ".join(args.ids) if args.ids else sys.stdin.read()
    parts = [x for x in re.split(r"[\s,]+", raw.strip().strip("[]")) if x]
    try:
        ids = [int(x) for x in parts]
    except ValueError:
        bad = next(x for x in parts if not x.lstrip("-").isdigit())
        raise MiniGPTError(f"token ids must be integers, got {bad!r}") from None
    sys.stdout.write(tok.decode(ids) + "\n")
    return 0


# --- model: generate ---------------------------------------------------------------------------------
def _add_generate(sub):
    p = sub.add_parser("generate", help="generate text from a trained model, streaming tokens to stdout")
    p.add_argument("--model", required=True, help="a training output folder or a GPT-2 model folder "
                   "(config.json + model.safetensors)")
    p.add_argument("--prompt", default="", help="text to continue (default: <|endoftext|>)")
    p.add_argument("--max-new-tokens", type=int, default=100)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--tokenizer", default=None, help="tokenizer .json or GPT-2 vocabulary folder (default: the "
                   "model folder's tokenizer.json, else its encoder.json + vocab.bpe, else GPT-2's)")
    p.add_argument("--no-cache", action="store_true", help="recompute the whole window for every token")
    p.add_argument("--stop-at-eos", action="store_true", help="stop at <|endoftext|>")
    p.set_defaults(func=_cmd_generate)


def _load_model_and_tokenizer(model_arg, tokenizer_arg):
    from .model import GPT
    from .train import make_tokenizer, resolve_model_dir

    folder = resolve_model_dir(model_arg)
    model = GPT.from_pretrained(folder)
    if tokenizer_arg:
        tok = make_tokenizer(tokenizer_arg, "", 0)
    elif (folder / "tokenizer.json").exists() or (folder / "encoder.json").exists():
        tok = make_tokenizer(str(folder), "", 0)
    else:
        tok = make_tokenizer("gpt2", "", 0)
    if tok.vocab_size > model.config.vocab_size:
        raise MiniGPTError(f"the tokenizer has {tok.vocab_size} tokens but the model only {model.config.vocab_size}")
    return model, tok


def _cmd_generate(args):
    import numpy as np

    from .model import generate_stream

    model, tok = _load_model_and_tokenizer(args.model, args.tokenizer)
    eos = tok.special_tokens.get("<|endoftext|>")
    ids = tok.encode(args.prompt, allowed_special="all") if args.prompt else []
    if not ids:
        if eos is None:
            raise MiniGPTError("an empty prompt needs a tokenizer with <|endoftext|>; pass --prompt")
        ids = [eos]
    else:
        sys.stdout.write(args.prompt)
    out = sys.stdout
    # Print whole characters only: a multi-byte UTF-8 character may span tokens.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for step in generate_stream(model, np.array([ids]), args.max_new_tokens, temperature=args.temperature,
                                top_k=args.top_k, top_p=args.top_p, seed=args.seed, use_cache=not args.no_cache,
                                eos_id=eos if args.stop_at_eos else None):
        tid = int(step[0])
        if args.stop_at_eos and tid == eos:
            break
        out.write(decoder.decode(tok.decode_bytes([tid])))
        out.flush()
    out.write(decoder.decode(b"", final=True))
    out.write("\n")
    return 0


# --- training ------------------------------------------------------------------------------------
def _add_train(sub):
    from .train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="pretrain a GPT on text (default: the built-in corpus) and print a sample",
                       description="Pretrain a GPT from scratch. Without --text it trains on the built-in corpus "
                       "(the docstrings of Python's standard library, extracted offline).")
    p.add_argument("--text", nargs="+", default=None, metavar="FILE", help="UTF-8 text files (joined with "
                   "<|endoftext|>)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, log.jsonl, loss.png)")
    p.add_argument("--config", default="mini", help="model preset: nano, tiny, mini, small, gpt2-small, ... "
                   "(default mini)")
    p.add_argument("--context-length", type=int, default=None)
    p.add_argument("--dropout", type=float, default=None, help="drop rate (default: the preset's)")
    p.add_argument("--tokenizer", default="bpe", help="bpe (train one on the text), gpt2, or a tokenizer file")
    p.add_argument("--vocab-size", type=int, default=2048, help="vocabulary size of a trained BPE")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default {d.steps})")
    length.add_argument("--epochs", type=float, default=None, help="passes over the training windows")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    p.add_argument("--min-lr", type=float, default=None, help="floor of the cosine decay (default lr/10)")
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear warmup steps")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="clip the global gradient norm (0: off)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--eval-every", type=int, default=d.eval_every)
    p.add_argument("--eval-batches", type=int, default=d.eval_batches)
    p.add_argument("--sample-every", type=int, default=d.sample_every, help="print a sample every N steps")
    p.add_argument("--prompt", default=d.sample_prompt, help="prompt of the printed samples")
    p.add_argument("--sample-tokens", type=int, default=d.sample_tokens)
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="save every N steps (default: at every evaluation and at the end)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint, "
                   "with its saved settings (a larger --steps extends it)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)


def _cmd_train(args):
    from .train import TrainConfig, pretrain

    overrides = {}
    if args.context_length is not None:
        overrides["context_length"] = args.context_length
    if args.dropout is not None:
        overrides["drop_rate"] = args.dropout
    if args.steps is not None and args.steps < 1:
        raise MiniGPTError(f"--steps must be >= 1, got {args.steps}")
    cfg = TrainConfig(steps=args.steps if args.steps is not None else TrainConfig.steps,
                      batch_size=args.batch_size, lr=args.lr,
                      min_lr=args.min_lr, warmup=args.warmup, weight_decay=args.weight_decay,
                      grad_clip=args.grad_clip, eval_every=args.eval_every, eval_batches=args.eval_batches,
                      sample_every=args.sample_every, sample_prompt=args.prompt, sample_tokens=args.sample_tokens,
                      checkpoint_every=args.checkpoint_every, seed=args.seed)
    if args.resume:  # a resumed run keeps its saved settings; only a larger --steps extends it
        cfg = TrainConfig(steps=args.steps) if args.steps is not None else None
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    summary = pretrain(args.out, text_files=args.text, config=args.config, config_overrides=overrides,
                       tokenizer=args.tokenizer, vocab_size=args.vocab_size, train_cfg=cfg, epochs=args.epochs,
                       val_fraction=args.val_fraction, resume=args.resume, progress=not args.quiet, log=log)
    val = summary.get("val_loss")
    print(f"trained {summary['step']} steps; final train loss {summary.get('train_loss') or float('nan'):.3f}"
          + (f", val loss {val:.3f}" if val is not None else "") + f"; model in {args.out}")
    print("--- generated text ---")
    print(summary["sample"])
    return 0


# --- downloads -------------------------------------------------------------------------------------
def _add_download(sub):
    p = sub.add_parser(
        "download", help="fetch a data set or GPT-2's weights/vocabulary, checksummed, into the cache",
        description="Download a file set listed in data/manifest.json into the cache folder (or install it "
                    "from a local copy with --from), verify every file's sha256, and print the folder that "
                    "holds it. Files already installed and verified are not fetched again.",
        epilog="examples: minigpt download the-verdict | minigpt download gpt2 --size 124M | "
               "minigpt download sms-spam --from ../shared/data | minigpt download --list")
    p.add_argument("name", nargs="?", help="what to fetch: the-verdict, sms-spam, instruction-data, "
                                           "tiny-shakespeare, gpt2-vocab, gpt2 (see --list)")
    p.add_argument("--size", default=None, help="GPT-2 size for 'gpt2': 124M (default), 355M, 774M, 1558M")
    p.add_argument("--cache-dir", default=None,
                   help="install under this folder (default: $MINIGPT_CACHE or ~/.cache/minigpt)")
    p.add_argument("--from", dest="from_dir", default=None, metavar="DIR",
                   help="install from a local copy instead of the network (the shared/data layout, a flat "
                        "folder of the files, or the original archive)")
    p.add_argument("--no-verify", action="store_true",
                   help="accept files without checking their sha256 (needed for files the manifest has no "
                        "checksum for: GPT-2 355M, 774M, 1558M)")
    p.add_argument("--list", action="store_true", help="list what can be downloaded and exit")
    p.set_defaults(func=_run_download)


def _run_download(args) -> int:
    from .download import fetch, load_manifest

    manifest = load_manifest()
    if args.list or not args.name:
        for name, entry in sorted(manifest["entries"].items()):
            sizes = f" (sizes: {', '.join(entry['sizes'])})" if "sizes" in entry else ""
            print(f"{name:18s} {entry['description']}{sizes}\n{'':18s} licence: {entry['licence']}")
        return 0 if args.list else 2
    folder = fetch(args.name, args.size, cache_dir=args.cache_dir, from_dir=args.from_dir,
                   no_verify=args.no_verify, manifest=manifest)
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            print(f)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minigpt", description="A GPT built from scratch on NumPy, trained on a CPU.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_train, _add_generate, _add_tokenizer, _add_download):
        add(sub)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (MiniGPTError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"minigpt: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("minigpt: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
