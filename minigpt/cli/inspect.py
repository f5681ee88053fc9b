"""`minigpt inspect`, `graph`, `gradcheck`, `profile`, `plot`: instruments for seeing backprop at work."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import MiniGPTError
from .options import seed_value


def add(sub):
    p = sub.add_parser("inspect", help="attention maps and logit lens of a model on a prompt",
                       description="Run one prompt through a model and write what happens inside: the attention "
                       "weights of every layer and head (attention.npy, attention.png), the logit lens (the top "
                       "next tokens read out after every layer), residual-stream norms and the next-token "
                       "distribution (inspect.json and PNGs).")
    p.add_argument("--model", required=True, help="a training output folder or a model folder")
    p.add_argument("--prompt", required=True, help="the text to look at (at most the model's context)")
    p.add_argument("--out", required=True, help="output folder for the JSON, arrays and pictures")
    p.add_argument("--layer", type=int, default=None, help="draw only this layer's attention maps (large)")
    p.add_argument("--head", type=int, default=None, help="draw only this head's attention maps (large)")
    p.add_argument("--top-k", type=int, default=5, help="tokens per position in the logit lens (default 5)")
    p.add_argument("--tokenizer", default=None, help="tokenizer file or folder (default: the model's)")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("graph", help="draw the autograd graph of one training step",
                       description="Build a model of a preset, run one training step's forward and backward on a "
                       "random batch and write its autograd graph: .dot (text, no Graphviz needed), .svg, .png "
                       "or .pdf (needs Graphviz's `dot`). Parameters are named, ops grouped in module boxes, "
                       "gradient norms annotated. The module boxes come from forward hooks, and a module with hooks "
                       "runs its unfused ops; --as-trained draws the fused ops training runs.")
    p.add_argument("--config", default="nano", help="model preset (default nano)")
    p.add_argument("--out", required=True, help="output file: .dot, .svg, .png or .pdf")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=8, help="tokens per sequence (default 8)")
    p.add_argument("--collapse", type=int, default=None, metavar="DEPTH",
                   help="draw each module DEPTH names deep as one node (2: one per transformer block)")
    p.add_argument("--no-grads", action="store_true", help="do not annotate gradient norms")
    p.add_argument("--as-trained", action="store_true",
                   help="draw the fused ops training runs (FeedForwardOp, residuals added inside LinearOp); by "
                   "default the module boxes come from forward hooks, which switch fusion off")
    p.add_argument("--op-grads", action="store_true",
                   help="annotate |grad| on every op's output too, not only on the parameters")
    p.add_argument("--seed", type=seed_value, default=0)
    p.set_defaults(func=_cmd_graph)

    p = sub.add_parser("gradcheck", help="check an op's backward by finite differences",
                       description="Gradcheck any function of minigpt.functional by name on random float64 "
                       "inputs: the analytic and numeric gradients side by side for the worst elements of each "
                       "input, the maximum errors and PASS/FAIL (exit status 1 on FAIL).")
    p.add_argument("op", help="a minigpt.functional function, e.g. layer_norm, gelu, causal_attention; or your "
                   "own op as FILE.py:NAME (a Function subclass or a function, one input per --shape)")
    p.add_argument("--shape", action="append", default=[], metavar="N,M,...",
                   help="shape of a tensor input, once per input in order (later ones default from the first)")
    p.add_argument("--kw", action="append", default=[], metavar="NAME=VALUE",
                   help="a keyword argument, e.g. --kw eps=1e-5 --kw n_heads=2")
    p.add_argument("--worst", type=int, default=5, help="elements shown per input (default 5)")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--eps", type=float, default=1e-6, help="finite-difference step (default 1e-6)")
    p.add_argument("--atol", type=float, default=1e-8)
    p.add_argument("--rtol", type=float, default=1e-6)
    p.set_defaults(func=_cmd_gradcheck)

    p = sub.add_parser("profile", help="time every op's forward and backward",
                       description="Run a few training steps (forward, backward, AdamW) of a preset on random "
                       "token ids and print each op's calls, total and mean time, share of the steps and bytes "
                       "of its outputs, sorted by time.")
    p.add_argument("--config", default="small", help="model preset (default small)")
    p.add_argument("--steps", type=int, default=3, help="profiled steps (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="unprofiled steps first (compiles the kernels; default 1)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default: the context length)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--seed", type=seed_value, default=0)
    p.set_defaults(func=_cmd_profile)

    p = sub.add_parser("plot", help="draw a run's training dashboards (--stats-every)",
                       description="Draw a run's dashboards from log.jsonl and stats.jsonl (written by `minigpt "
                       "train --stats-every N`): loss, gradient norms, update ratios (with the 1e-3 reference line) "
                       "and grad:data ratios per weight matrix, activation histograms, attention entropy per head "
                       "(with the uniform-attention line), and the gradient flow: dL/d(residual stream) per block "
                       "over training and its histograms.")
    p.add_argument("run", help="a training output folder")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: the run folder)")
    p.add_argument("--hist-steps", default=None, metavar="S1,S2,...",
                   help="sampled steps whose activation histograms to draw (default: first, middle, last)")
    p.set_defaults(func=_cmd_plot)


def _token_label(tok, i: int) -> str:
    """A token's text with spaces shown as ␣ and control characters escaped (\\n)."""
    if not 0 <= int(i) < tok.vocab_size:  # a model's vocabulary may be padded beyond its tokenizer's
        return f"<{int(i)}>"
    s = tok.decode([int(i)])
    return "".join(c if c.isprintable() and c != " " else "␣" if c == " " else repr(c)[1:-1] for c in s)


def _cmd_inspect(args):
    import numpy as np

    from ..inspect import attention_maps, logit_lens, residual_stream
    from ..inspect import plots
    from ..io import atomic_write_bytes, atomic_write_json
    from .generate import _load_model_and_tokenizer

    model, tok = _load_model_and_tokenizer(args.model, args.tokenizer)
    cfg = model.config
    if not args.prompt:
        raise MiniGPTError("--prompt is empty")
    ids = tok.encode(args.prompt, allowed_special="all")
    if len(ids) > cfg.context_length:
        raise MiniGPTError(f"--prompt is {len(ids)} tokens, longer than the model's context of {cfg.context_length} "
                           "tokens; shorten it")
    for flag, v, n, what in (("--layer", args.layer, cfg.n_layers, "layers"), ("--head", args.head, cfg.n_heads, "heads")):
        if v is not None and not 0 <= v < n:
            raise MiniGPTError(f"{flag} {v} is out of range: the model has {n} {what} (0..{n - 1})")
    if args.top_k < 1:
        raise MiniGPTError(f"--top-k must be >= 1, got {args.top_k}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    stream = residual_stream(model, ids)
    maps = attention_maps(model, ids, stream=stream)                 # (L, H, T, T)
    lens = logit_lens(model, ids, k=args.top_k, stream=stream)
    tokens = [_token_label(tok, i) for i in ids]
    label = {}
    for i in np.unique(np.concatenate([lens["top_ids"].ravel(), np.argsort(-lens["next_token_probs"])[:20]])):
        label[int(i)] = _token_label(tok, i)
    nxt = np.argsort(-lens["next_token_probs"], kind="stable")[:20]
    import io

    buf = io.BytesIO()
    np.save(buf, maps)
    atomic_write_bytes(out / "attention.npy", buf.getvalue())
    report = {
        "prompt": args.prompt, "ids": [int(i) for i in ids], "tokens": tokens,
        "attention_shape": list(maps.shape),
        "logit_lens": {
            "layers": lens["layers"],
            "top": [[[{"token": label[int(t)], "id": int(t), "prob": round(float(p), 6)}
                      for t, p in zip(lens["top_ids"][l, j], lens["top_probs"][l, j])]
                     for j in range(len(ids))] for l in range(len(lens["layers"]))],
        },
        "residual_norm": np.round(lens["residual_norm"], 6).tolist(),
        "next_token": [{"token": label[int(t)], "id": int(t), "prob": round(float(lens["next_token_probs"][t]), 6)}
                       for t in nxt],
    }
    atomic_write_json(out / "inspect.json", report)

    # the table
    width = max(12, *(len(t) for t in tokens[-8:]))
    print(f"logit lens (top-1 next token after each layer; last {min(8, len(ids))} positions)")
    cols = range(max(0, len(ids) - 8), len(ids))
    print(f"{'':<12}" + "".join(f"{tokens[j][:width]:>{width + 2}}" for j in cols))
    for l, name in enumerate(lens["layers"]):
        cells = ""
        for j in cols:
            cell = label[int(lens["top_ids"][l, j, 0])][:width - 6] + f" {lens['top_probs'][l, j, 0]:.2f}"
            cells += f"{cell:>{width + 2}}"
        print(f"{name:<12}{cells}")
    print("next token: " + ", ".join(f"{d['token']} {d['prob']:.3f}" for d in report["next_token"][:5]))

    written = ["inspect.json", "attention.npy"]
    if plots.have_matplotlib():
        layers = None if args.layer is None else [args.layer]
        heads = None if args.head is None else [args.head]
        name = "attention.png"
        if layers or heads:
            name = "attention" + (f"-layer{args.layer}" if layers else "") + (f"-head{args.head}" if heads else "") + ".png"
        plots.attention_grid(maps, tokens, out / name, layers=layers, heads=heads)
        plots.logit_lens_picture(lens, tokens, label, out / "logit_lens.png")
        plots.residual_norm_picture(lens, tokens, out / "residual_norm.png")
        plots.next_token_picture([(d["token"], d["prob"]) for d in report["next_token"][:15]], out / "next_token.png",
                                 prompt=args.prompt)
        written += [name, "logit_lens.png", "residual_norm.png", "next_token.png"]
    else:
        print(f"note: {plots.MISSING}; the numbers are in inspect.json and attention.npy", file=sys.stderr)
    print(f"wrote {', '.join(written)} to {out}")
    return 0


def _cmd_graph(args):
    import numpy as np

    from .. import random as mrandom
    from ..inspect.graph import INSTALL_DOT, graph, retain_all, trace
    from ..model import GPT, GPTConfig

    out = Path(args.out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("dot", "gv", "svg", "png", "pdf"):
        raise MiniGPTError(f"--out {out}: use a .dot, .svg, .png or .pdf file")
    import shutil

    if fmt not in ("dot", "gv") and shutil.which("dot") is None:
        raise MiniGPTError(f"{INSTALL_DOT}; or write the DOT text with --out {out.with_suffix('.dot')}")
    cfg = GPTConfig.preset(args.config)
    if not 1 <= args.seq_len <= cfg.context_length:
        raise MiniGPTError(f"--seq-len must be in 1..{cfg.context_length} (the {args.config} context), got {args.seq_len}")
    if args.batch_size < 1:
        raise MiniGPTError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.no_grads and args.op_grads:
        raise MiniGPTError("--op-grads annotates gradient norms and --no-grads turns them off: give one of them")
    mrandom.manual_seed(args.seed)
    model = GPT(cfg)
    rng = np.random.default_rng(args.seed)
    x = rng.integers(0, cfg.vocab_size, (args.batch_size, args.seq_len))
    y = rng.integers(0, cfg.vocab_size, (args.batch_size, args.seq_len))
    with trace(model, fused=args.as_trained):
        loss = model.loss(x, y)
    if args.op_grads:
        retain_all(loss)
    loss.backward()
    g = graph(loss, modules=model, grads=not args.no_grads, collapse=args.collapse)
    out.parent.mkdir(parents=True, exist_ok=True)
    g.render(out)
    n_ops = sum(n["kind"] == "op" for n in g.nodes)
    kind = "as trained (fused ops)" if args.as_trained else "unfused (traced with hooks)"
    print(f"{args.config}: one training step, {kind}, batch {args.batch_size} x {args.seq_len} tokens, "
          f"loss {loss.item():.4f}: {n_ops} op nodes, {len(g.nodes) - n_ops} other nodes, {len(g.edges)} edges -> {out}")
    return 0


def _cmd_gradcheck(args):
    from ..inspect.checkgrad import check_op, format_report, parse_kw, parse_shape

    shapes = [parse_shape(s) for s in args.shape]
    rep = check_op(args.op, shapes, parse_kw(args.kw), seed=args.seed, eps=args.eps, atol=args.atol,
                   rtol=args.rtol)
    print(format_report(rep, worst=max(1, args.worst)))
    return 0 if rep["ok"] else 1


def _cmd_plot(args):
    from ..inspect.stats import dashboards

    steps = None
    if args.hist_steps:
        try:
            steps = [int(v) for v in args.hist_steps.split(",") if v.strip()]
        except ValueError:
            raise MiniGPTError(f"--hist-steps {args.hist_steps!r}: expected step numbers such as 1,50,100") from None
    for path in dashboards(args.run, args.out, steps):
        print(path)
    return 0


def _cmd_profile(args):
    import numpy as np

    from .. import random as mrandom
    from ..inspect.profiler import profile
    from ..io import atomic_write_json
    from ..model import GPT, GPTConfig
    from ..optim import AdamW

    cfg = GPTConfig.preset(args.config)
    T = args.seq_len if args.seq_len is not None else cfg.context_length
    if not 1 <= T <= cfg.context_length:
        raise MiniGPTError(f"--seq-len must be in 1..{cfg.context_length} (the {args.config} context), got {T}")
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        raise MiniGPTError("--steps and --batch-size must be >= 1 and --warmup >= 0")
    mrandom.manual_seed(args.seed)
    model = GPT(cfg)
    opt = AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    rng = np.random.default_rng(args.seed)

    def step():
        x = rng.integers(0, cfg.vocab_size, (args.batch_size, T))
        y = rng.integers(0, cfg.vocab_size, (args.batch_size, T))
        loss = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    with profile() as prof:
        for _ in range(args.steps):
            step()
    print(f"{args.config}: {args.steps} training step(s) of batch {args.batch_size} x {T} tokens, "
          f"{prof.total_seconds / args.steps * 1e3:.1f} ms per step")
    print(prof.table())
    if args.json:
        atomic_write_json(args.json, {"config": args.config, "steps": args.steps, "batch_size": args.batch_size,
                                      "seq_len": T, "total_seconds": prof.total_seconds, "rows": prof.rows(),
                                      "runtime": prof.runtime})
    return 0
