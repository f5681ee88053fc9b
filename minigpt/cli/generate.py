"""`minigpt generate`: stream text from a trained model."""
from __future__ import annotations

import codecs
import sys

from ..errors import MiniGPTError


def add(sub):
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


def model_dir(arg):
    """A run folder -> its newest complete checkpoint (the training loop's own rule, with its checks of
    latest.json); any other folder as given."""
    from pathlib import Path

    from ..train import resolve_model_dir

    p = Path(arg)
    return resolve_model_dir(p) if (p / "latest.json").exists() or (p / "checkpoints").is_dir() else p


def _load_model_and_tokenizer(model_arg, tokenizer_arg):
    from ..loading import load_model_and_tokenizer

    return load_model_and_tokenizer(model_dir(model_arg), tokenizer_arg, kind="lm")


def _cmd_generate(args):
    import numpy as np

    from ..model import generate_stream

    model, tok = _load_model_and_tokenizer(args.model, args.tokenizer)
    eos = tok.special_tokens.get("<|endoftext|>")
    ids = tok.encode(args.prompt, allowed_special="all") if args.prompt else []
    if not ids:
        if eos is None:
            raise MiniGPTError("an empty prompt needs a tokenizer with <|endoftext|>; pass --prompt")
        ids = [eos]
    # the arguments are checked here, before anything is printed
    steps = generate_stream(model, np.array([ids]), args.max_new_tokens, temperature=args.temperature,
                            top_k=args.top_k, top_p=args.top_p, seed=args.seed, use_cache=not args.no_cache,
                            eos_id=eos if args.stop_at_eos else None)
    if args.prompt:
        sys.stdout.write(args.prompt)
    out = sys.stdout
    # Print whole characters only: a multi-byte UTF-8 character may span tokens.
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for step in steps:
        tid = int(step[0])
        if args.stop_at_eos and tid == eos:
            break
        out.write(decoder.decode(tok.decode_bytes([tid])))
        out.flush()
    out.write(decoder.decode(b"", final=True))
    out.write("\n")
    return 0
