"""`minigpt classify`: label texts with a finetuned classifier."""
from __future__ import annotations

import sys
import unicodedata

from ..errors import MiniGPTError


def shown(text: str) -> str:
    r"""``text`` safe to echo on a terminal, on one line: control characters (ANSI escape sequences, tabs,
    newlines, carriage returns) are written as Python escapes.

        >>> print(shown("\x1b[31mred\x1b[0m\tcell"))
        \x1b[31mred\x1b[0m\tcell
    """
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def add(sub):
    p = sub.add_parser("classify", help="label texts with a finetuned classifier",
                       description="Print the predicted label and its probability for each text (arguments, "
                       "or one text per line of standard input).")
    p.add_argument("--model", required=True, metavar="DIR", help="the classifier: a finetuning run folder or "
                   "its model/ folder")
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (default: read lines from stdin)")
    p.add_argument("--tokenizer", default=None, help="override the model folder's tokenizer")
    p.set_defaults(func=_cmd_classify)


def _cmd_classify(args):
    from ..train.classify import Classifier

    from .generate import model_dir

    clf = Classifier.from_pretrained(model_dir(args.model), args.tokenizer)
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise MiniGPTError("no text to classify: pass texts as arguments or lines on standard input")
    for text, (label, prob) in zip(texts, clf.predict(texts)):
        print(f"{shown(label)}\t{prob:.4f}\t{shown(text)}")
    return 0
