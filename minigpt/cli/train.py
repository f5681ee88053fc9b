"""`minigpt train`: pretrain a GPT."""
from __future__ import annotations

import dataclasses
import sys
import traceback

from ..errors import MiniGPTError
from .options import add_dataclass_options, dataclass_from_args


def add(sub):
    from ..settings import TrainConfig

    p = sub.add_parser("train", help="pretrain a GPT on text files or the built-in corpus",
                       description="Pretrain a GPT from scratch. Without --text it trains on the built-in corpus "
                       "(the docstrings of Python's standard library, extracted offline).")
    p.add_argument("--text", nargs="+", default=None, metavar="FILE", help="UTF-8 text files (joined with "
                   "<|endoftext|>), or data set names (the-verdict, tiny-shakespeare) found in $MINIGPT_DATA, the "
                   "download cache or ../shared/data")
    p.add_argument("--out", required=True, help="output folder (checkpoints, log.jsonl, loss.png)")
    p.add_argument("--config", default="mini", help="model preset: nano, tiny, mini, small, gpt2-small, ...")
    p.add_argument("--init", default=None, metavar="DIR", help="start from these weights and their tokenizer "
                   "instead of a new model: a run folder, a checkpoint folder or a GPT-2 folder (keep pretraining; "
                   "--config is then ignored, --context-length may only lower the model's)")
    p.add_argument("--context-length", type=int, default=None)
    p.add_argument("--dropout", type=float, default=None, help="drop rate (default: the preset's)")
    p.add_argument("--tokenizer", default="bpe", help="bpe (train one on the text), gpt2, or a tokenizer file")
    p.add_argument("--vocab-size", type=int, default=2048, help="vocabulary size of a trained BPE")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the text held out for validation")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint, "
                   "with its saved settings and training text (a larger --steps extends it)")
    p.add_argument("--ddp", action="store_true", help="data parallel over MPI (fails when MPI is missing); "
                   "under mpiexec with several ranks it is on by itself")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--stats-every", type=int, default=0, metavar="N",
                   help="every N steps append gradient/weight/update-ratio and activation statistics to "
                   "stats.jsonl (draw them with `minigpt plot OUT`)")
    # The training settings: generated from TrainConfig's fields. --steps is written here because it
    # shares a group with --epochs and, on --resume, only counts when given.
    settings = p.add_argument_group("training settings (TrainConfig)")
    length = settings.add_mutually_exclusive_group()
    steps = next(f for f in dataclasses.fields(TrainConfig) if f.name == "steps")
    length.add_argument("--steps", type=int, default=None, metavar="N",
                        help=f"{steps.metadata['help']} (default: {steps.default})")
    length.add_argument("--epochs", type=float, default=None, metavar="X", help="passes over the training windows")
    dests = add_dataclass_options(p, TrainConfig, exclude=("steps",), rename=RENAME, group=settings)
    p.set_defaults(func=_cmd_train, train_config_dests=dests)


RENAME = {"sample_prompt": "prompt"}  # TrainConfig field -> option name (without dashes)


def _cmd_train(args):
    from .. import distributed
    from ..train import TrainConfig, pretrain

    overrides = {}
    if args.context_length is not None:
        overrides["context_length"] = args.context_length
    if args.dropout is not None:
        overrides["drop_rate"] = args.dropout
    if args.steps is not None and args.steps < 1:
        raise MiniGPTError(f"--steps must be >= 1, got {args.steps}")
    cfg = dataclass_from_args(TrainConfig, args, args.train_config_dests,
                              steps=args.steps if args.steps is not None else TrainConfig.steps)
    if args.resume:  # a resumed run keeps its saved settings; only a larger --steps extends it
        cfg = TrainConfig(steps=args.steps) if args.steps is not None else None
    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    callbacks = []
    if args.stats_every:
        from ..inspect.stats import StatsRecorder

        callbacks.append(StatsRecorder(args.stats_every))
    dist = distributed.init(require=args.ddp)  # several ranks under mpiexec; mpi4py imported only then
    try:
        summary = pretrain(args.out, text_files=args.text, config=args.config, config_overrides=overrides,
                           tokenizer=args.tokenizer, vocab_size=args.vocab_size, train_cfg=cfg, epochs=args.epochs,
                           val_fraction=args.val_fraction, resume=args.resume, progress=not args.quiet, log=log,
                           dist=dist, callbacks=callbacks, init=args.init)
    except BaseException as e:
        if dist.world_size == 1:
            raise
        _stop_ranks(dist, e)
        return 2
    finally:
        dist.close()
    if not dist.is_main:
        return 0
    print(_summary_line(summary, args.out))
    print("--- generated text ---")
    print(summary["sample"])
    return 0


def _stop_ranks(dist, e: BaseException) -> None:
    """Under MPI: an error every rank raised at the same point (a refused start, a diverged loss) is printed
    once by rank 0 and every rank exits normally; an error of one rank alone is printed with its rank and
    aborts the whole job (the others may be waiting for it in an Allreduce)."""
    if getattr(e, "all_ranks", False):
        if dist.is_main:
            raise e
        return
    if isinstance(e, KeyboardInterrupt):
        print(f"minigpt: rank {dist.rank} interrupted", file=sys.stderr)
        dist.abort(130)
    if isinstance(e, (MiniGPTError, OSError)):
        print(f"minigpt: error: rank {dist.rank}: {e}", file=sys.stderr)
    else:
        print(f"minigpt: rank {dist.rank} failed:", file=sys.stderr)
        traceback.print_exception(e, file=sys.stderr)
    dist.abort(2)


def _summary_line(summary: dict, out) -> str:
    """The run's last line: steps, the last logged losses; never a made-up ``nan`` when no step ran."""
    train, val = summary.get("train_loss"), summary.get("val_loss")
    losses = "" if train is None else f"final train loss {train:.3f}" + (f", val loss {val:.3f}" if val is not None
                                                                          else "")
    if summary.get("steps_run", summary["step"]) == 0:
        head = f"no step ran (the run is at step {summary['step']})"
        return head + (f"; its last {losses[len('final '):]}" if losses else "") + f"; model in {out}"
    return f"trained {summary['step']} steps" + (f"; {losses}" if losses else "") + f"; model in {out}"
