"""`minigpt finetune classify|instruct`: finetune a pretrained model (any model folder) on labelled texts
or on instruction/response pairs."""
from __future__ import annotations

import json
import sys

from ..errors import MiniGPTError
from .options import add_dataclass_options, dataclass_from_args


def _common(p):
    """The options that are not settings: what to start from, read and write."""
    p.add_argument("--init", default=None, metavar="DIR", help="the starting model: a `minigpt train` run "
                   "folder, a checkpoint folder or a GPT-2 folder (its tokenizer comes along)")
    p.add_argument("--data", default=None, metavar="PATH", help="the training data: a file, or a data set name "
                   "(sms-spam, instruction-data) found in $MINIGPT_DATA, the download cache or ../shared/data")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (checkpoints, log.jsonl, plots, model/)")
    p.add_argument("--tokenizer", default=None, help="override the model folder's tokenizer")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add(sub):
    from ..settings import ClassifyConfig

    top = sub.add_parser("finetune", help="finetune a pretrained model (classify, instruct)",
                         description="Finetune a pretrained model: 'classify' trains a classifier on labelled "
                         "texts, 'instruct' teaches a language model to follow instructions.")
    fsub = top.add_subparsers(dest="task", metavar="TASK")
    p = fsub.add_parser("classify", help="train a classifier (e.g. spam / ham) from a pretrained model",
                        description="Replace the LM head by a classification head on the last real token and "
                        "finetune on labelled texts (SMS Spam Collection format, CSV, TSV or JSONL).")
    _common(p)
    settings = add_dataclass_options(p, ClassifyConfig, exclude=("split",))  # one option per setting
    p.add_argument("--split", default="0.7,0.1,0.2", help="train,validation,test fractions (stratified)")
    p.set_defaults(func=_cmd_classify, settings=settings)
    add_instruct(fsub)
    top.set_defaults(func=lambda args: (top.print_help(), 2)[1])


def _log(args):
    return (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))


def _cmd_classify(args):
    from ..train.classify import ClassifyConfig, finetune_classify

    try:
        split = tuple(float(x) for x in args.split.split(","))
    except ValueError:
        raise MiniGPTError(f"--split {args.split!r}: expected three fractions like 0.7,0.1,0.2") from None
    cfg = dataclass_from_args(ClassifyConfig, args, args.settings, split=split)
    rep = finetune_classify(args.out, init=args.init, data=args.data, cfg=cfg, resume=args.resume,
                            progress=not args.quiet, log=_log(args), tokenizer=args.tokenizer)
    print(f"trained {rep['trainable_parameters']:,} parameters (--train {rep['train']}) for {rep['steps']} steps")
    print(f"test accuracy {rep['accuracy']:.2%} (macro F1 {rep['macro_f1']:.3f}); labels {rep['labels']}; "
          f"confusion (rows true, columns predicted) {json.dumps(rep['confusion_matrix'])}")
    for lab, m in rep["per_class"].items():
        print(f"  {lab}: precision {m['precision']:.3f}, recall {m['recall']:.3f}, F1 {m['f1']:.3f}, "
              f"support {m['support']}")
    print(f"classifier in {rep['model_dir']} (try: minigpt classify --model {rep['model_dir']} \"some text\")")
    return 0


def add_instruct(fsub):
    from ..settings import InstructConfig

    p = fsub.add_parser("instruct", help="finetune a language model to follow instructions",
                        description="Finetune on a JSON list of {instruction, input, output} entries (seeded "
                        "85/5/10 split), then answer the test split before/after and score the answers.")
    _common(p)
    settings = add_dataclass_options(p, InstructConfig)  # one option per setting
    p.add_argument("--judge-url", default=None, help="also score the answers with an LLM judge at this "
                   "Ollama-compatible URL (e.g. http://localhost:11434)")
    p.add_argument("--judge-model", default="llama3", help="the judge's model name")
    p.set_defaults(func=_cmd_instruct, settings=settings)


def _cmd_instruct(args):
    from ..train.instruct import InstructConfig, finetune_instruct

    cfg = dataclass_from_args(InstructConfig, args, args.settings)
    s = finetune_instruct(args.out, init=args.init, data=args.data, cfg=cfg, resume=args.resume,
                          progress=not args.quiet, log=_log(args), tokenizer=args.tokenizer,
                          judge_url=args.judge_url, judge_model=args.judge_model)
    b, a = s["before"], s["after"]
    print(f"trained {s['trainable_parameters']:,} parameters (--train {args.train}) for {s['steps']} steps")
    print(f"validation loss {s['val_loss_before']:.3f} -> {s['val_loss_after']:.3f}")
    print(f"test split ({a['n']} entries): ROUGE-L F1 {b['rouge_l_f1']:.3f} -> {a['rouge_l_f1']:.3f}; exact match "
          f"{b['exact_match']:.1%} -> {a['exact_match']:.1%}; mean length {b['mean_words']:.1f} -> "
          f"{a['mean_words']:.1f} words (references {a['reference_mean_words']:.1f})")
    if "judge_mean" in a:
        print(f"judge score {b['judge_mean']} -> {a['judge_mean']}")
    print(f"answers in {args.out}/test_responses.json; model in {s['model_dir']} (try: minigpt chat --model "
          f"{s['model_dir']})")
    return 0
