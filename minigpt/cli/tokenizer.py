"""`minigpt tokenizer train|encode|decode`."""
from __future__ import annotations

import sys

from ..errors import DisallowedSpecialTokenError, MiniGPTError


def add(sub):
    p = sub.add_parser("tokenizer", help="train a BPE tokenizer; encode and decode text",
                       description="Train a byte-level BPE tokenizer, or encode/decode text with one (a file "
                       "written by 'minigpt tokenizer train', or GPT-2's encoder.json + vocab.bpe).")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    actions = p.add_subparsers(dest="tokenizer_action", metavar="ACTION")

    t = actions.add_parser("train", help="learn a vocabulary from text files")
    t.add_argument("--text", nargs="+", required=True, metavar="FILE", help="UTF-8 text files (streamed), or data set "
                   "names (the-verdict, tiny-shakespeare)")
    t.add_argument("--vocab-size", type=int, required=True, help="tokens in total: 256 bytes + merges + specials")
    t.add_argument("--out", required=True, metavar="PATH", help="output file (JSON, the project's format); "
                   "an existing folder gets PATH/tokenizer.json")
    t.add_argument("--pattern", default="gpt2", help="split pattern: gpt2 (default), gpt4 or a regular expression")
    t.add_argument("--special", nargs="*", default=None, metavar="TOKEN",
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

    from ..loading import tokenizer_from_spec
    from ..tokenizer import BPETokenizer

    if args.gpt2:
        return BPETokenizer.from_gpt2(Path(args.gpt2))
    # the same files every other command takes: minigpt's tokenizer.json, a Hugging Face tokenizer.json, GPT-2's
    # encoder.json + vocab.bpe, a tiktoken file
    return tokenizer_from_spec(args.tokenizer)


def _cmd_tokenizer_train(args):
    import time
    from pathlib import Path

    from ..tokenizer import BPETokenizer
    from ..tokenizer.special import ENDOFTEXT

    from ..data.shared import dataset_path

    special = [ENDOFTEXT] if args.special is None else args.special  # `--special` alone: none
    files = [dataset_path(f) for f in args.text]  # a data set name ("the-verdict") becomes its file
    for f in files:
        if not f.is_file():
            raise MiniGPTError(f"training file not found: {f}")
    out = Path(args.out)
    if out.is_dir():
        out = out / "tokenizer.json"
    t0 = time.perf_counter()
    tok = BPETokenizer.train(files, vocab_size=args.vocab_size, special_tokens=tuple(special),
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
    try:
        ids = tok.encode(text, allowed_special="all" if args.allow_special else ())
    except DisallowedSpecialTokenError as e:  # the library's advice names Python arguments; name the flag
        raise MiniGPTError(f"the text contains the special token {e.token!r}: pass --allow-special to encode "
                           "it as its special token") from None
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
