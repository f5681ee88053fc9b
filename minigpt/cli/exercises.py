"""`minigpt exercises list | start | check | solution`: backprop exercises checked against autograd."""
from __future__ import annotations


def add(sub):
    p = sub.add_parser("exercises", help="write gradients by hand, checked against autograd",
                       description="Backprop exercises: each is a Python file whose forward pass is given and whose "
                       "backward you fill in, one intermediate gradient at a time. `check` compares every one with "
                       "minigpt's autograd and says which is wrong, where, by how much, and names the mistake when "
                       "it recognises it.")
    ex = p.add_subparsers(dest="action", metavar="ACTION")
    ex.required = True

    s = ex.add_parser("list", help="the exercises, in the order to do them")
    s.set_defaults(func=_cmd_list)

    s = ex.add_parser("start", help="write a fresh template NAME.py to work in")
    s.add_argument("name", help="an exercise (see `minigpt exercises list`)")
    s.add_argument("--dir", default=".", help="folder to write NAME.py in (made if missing)")
    s.add_argument("--force", action="store_true", help="replace an existing NAME.py (its answers are lost)")
    s.add_argument("--notebook", action="store_true", help="write a Jupyter notebook NAME.ipynb instead")
    s.set_defaults(func=_cmd_start)

    s = ex.add_parser("check", help="check your gradients against autograd",
                       description="Check every gradient of your file against autograd. Exit status: 0 when every "
                       "one is right, 1 when one is wrong or missing, 2 for a file that cannot be read or run.")
    s.add_argument("name", help="the exercise")
    s.add_argument("file", help="your file (from `minigpt exercises start NAME`)")
    s.set_defaults(func=_cmd_check)

    s = ex.add_parser("solution", help="print a solution")
    s.add_argument("name", help="the exercise")
    s.add_argument("grad", nargs="?", default=None, help="print only this answer, e.g. dW2 (default: the whole file)")
    s.set_defaults(func=_cmd_solution)


def _cmd_list(args):
    from .. import exercises
    items = exercises.list_exercises()
    w = max(map(len, items))
    for name, title in items.items():
        print(f"{name:<{w}}  {title}")
    print("\nstart one with `minigpt exercises start mlp`, then `minigpt exercises check mlp mlp.py`")
    return 0


def _cmd_start(args):
    from .. import exercises
    path = exercises.start(args.name, args.dir, force=args.force, notebook=args.notebook)
    if args.notebook:
        print(f"wrote {path}: open it in Jupyter, fill in the cell under 'Your part' and run the last cell")
    else:
        print(f"wrote {path}: fill in every gradient marked TODO in backward(), then run\n"
              f"  minigpt exercises check {args.name} {path}")
    return 0


def _cmd_check(args):
    from .. import exercises
    exercises.exercise(args.name)   # an unknown name is bad input, before the file is read
    report = exercises.check(args.name, args.file)
    print(report)
    return 0 if report.ok else 1


def _cmd_solution(args):
    from .. import exercises
    print(exercises.answer(args.name, args.grad) if args.grad else exercises.solution(args.name), end="")
    return 0
