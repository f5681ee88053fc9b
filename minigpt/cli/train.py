"""`minigpt train`: pretrain a GPT."""
from __future__ import annotations

import sys

from ..errors import MiniGPTError


def add(sub):
    from ..train import TrainConfig

    d = TrainConfig()
    p = sub.add_parser("train", help="pretrain a GPT on text (default: the built-in corpus) and print a sample",
                       description="Pretrain a GPT from scratch. Without --text it trains on the built-in corpus "
                       "(the docstrings of Python's standard library, extracted offline).")
    p.add_argument("--text", nargs="+", default=None, metavar="FILE", help="UTF-8 text files (joined with "
                   "<|endoftext|>)")
    p.add_argument("--out", required=True, help="output folder (checkpoints, log.jsonl, loss.png)")
    p.add_argument("--config", default="mini", help="model preset: nano, tiny, mini, small, gpt2-small, ... "
                   "(default mini)")
    p.add_argument("--init", default=None, metavar="DIR", help="start from these weights and their tokenizer "
                   "instead of a new model: a run folder, a checkpoint folder or a GPT-2 folder (keep pretraining; "
                   "--config is then ignored, --context-length may only lower the model's)")
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
    from ..train import TrainConfig, pretrain

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
                       val_fraction=args.val_fraction, resume=args.resume, progress=not args.quiet, log=log,
                       init=args.init)
    val = summary.get("val_loss")
    print(f"trained {summary['step']} steps; final train loss {summary.get('train_loss') or float('nan'):.3f}"
          + (f", val loss {val:.3f}" if val is not None else "") + f"; model in {args.out}")
    print("--- generated text ---")
    print(summary["sample"])
    return 0
