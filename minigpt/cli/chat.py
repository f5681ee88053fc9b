"""`minigpt chat`: answer instructions typed at a prompt with an instruction-finetuned model."""
from __future__ import annotations

import sys


SEPARATOR = "---"  # between the answers to piped instructions (an answer may hold blank lines itself)


def add(sub):
    p = sub.add_parser("chat", help="answer instructions typed at a prompt",
                       description="Reads one instruction per line (standard input or an interactive prompt) and "
                       "prints the model's greedy answer, using the prompt template the model was trained with. "
                       f"When standard input is not a terminal, a line {SEPARATOR!r} separates the answers.")
    p.add_argument("--model", required=True, metavar="DIR", help="an instruction finetuning run or its model/ folder")
    p.add_argument("--template", default=None, choices=["alpaca", "phi3", "llama3", "qwen"],
                   help="the prompt format: alpaca or phi3 (minigpt's instruction finetuning), llama3 or qwen (those "
                   "chat models' own; default: the one the model was trained with)")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--tokenizer", default=None, help="override the model folder's tokenizer")
    p.add_argument("--quantize", choices=["int8"], default=None, help="answer with int8 weights (weight-only, "
                   "quantized after loading; see `minigpt generate --quantize`)")
    p.add_argument("--group-size", type=int, default=0, help="with --quantize: one scale per this many inputs "
                   "of a row (0: one scale per output row)")
    p.set_defaults(func=_cmd_chat)


def _cmd_chat(args):
    from ..train.instruct import respond, template_of

    from .generate import _load_model_and_tokenizer

    model, tok = _load_model_and_tokenizer(args.model, args.tokenizer, args.quantize, args.group_size)
    template = args.template or template_of(args.model)
    interactive = sys.stdin.isatty()
    answered = 0
    while True:
        if interactive:
            try:
                line = input("instruction> ")
            except EOFError:
                print()
                break
        else:
            line = sys.stdin.readline()
            if not line:
                break
        line = line.strip()
        if not line:
            continue
        answer = respond(model, tok, {"instruction": line, "input": ""}, template, args.max_new_tokens)
        if answered and not interactive:
            print(SEPARATOR)
        print(answer, flush=True)
        answered += 1
    return 0
