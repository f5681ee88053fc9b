"""Training statistics every N steps (``minigpt train --stats-every N``) and their dashboards
(``minigpt plot RUN``).

:class:`StatsRecorder` is a callback of the training loop. On a sampled step it snapshots the weights
before the optimizer step and watches the forward pass through module forward hooks; after the step it
appends one JSON line to ``stats.jsonl`` in the run folder::

    {"step": 100, "stats_seconds": 0.004,
     "params": {"blocks.0.attn.qkv.weight": {"grad_norm": 0.031, "weight_norm": 4.5, "update_ratio": -3.1,
                                             "grad_ratio": -2.2}, ...},
     "layers": [{"layer": 0, "resid_mean": 0.001, "resid_std": 0.61, "gelu_tail": 0.02,
                 "attn_entropy": [1.9, 2.3, ...], "attn_uniform": 2.1,
                 "resid_hist": {"edges": [...], "counts": [...], "stride": 1}, "gelu_hist": {...},
                 "grad_out_norm": 0.8, "grad_in_norm": 0.9, "grad_hist": {...}}, ...]}

- ``grad_norm``: L2 norm of the parameter's gradient as the optimizer used it (after clipping);
- ``update_ratio``: log10(|w_after - w_before| / |w_before|), the size of the AdamW step relative to the
  weight (around -3 is the usual healthy value);
- ``grad_ratio``: log10(|grad| / |w_before|), the gradient's size relative to the weight's (the grad:data
  ratio; AdamW's division by the running RMS is what turns it into an update of size ``update_ratio``);
- ``resid_mean`` / ``resid_std``: the residual stream after the block (the whole batch);
- ``gelu_tail``: the fraction of the feed-forward's GELU inputs below -3, where GELU is flat (its slope is
  under 0.012 in magnitude) and passes almost no gradient;
- ``attn_entropy``: per head, the mean entropy (nats) of the attention rows of the batch's first sequence
  (0: every query looks at one key; log(t+1) for query t: uniform); ``attn_uniform``: that mean for uniform
  attention, the value every head starts near;
- ``grad_out_norm`` / ``grad_in_norm``: the L2 norms of dL/d(residual stream) after and before the block
  (the whole batch), seen by a backward hook on the block: how the gradient flows down the stack;
  ``grad_hist``: a histogram of dL/d(residual stream after the block).

The per-layer numbers of GELU inputs and attention are computed from the first sequence of the batch
only (from the q/k/v projection and the GELU inputs that the recorded graph already holds; recomputed when
there is none), and histograms from at most ~16k evenly strided values (``stride``), which keeps the cost of a
sampled step small next to the step itself (``stats_seconds`` records it).
"""
from __future__ import annotations

import json
import sys
import math
import time
from pathlib import Path

import numpy as np

from ..errors import MiniGPTError
from ..io import atomic_write_text
from .maps import causal_softmax_weights
from .plots import _plt, _save, line_styles, set_step_axis

GELU_TAIL = -3.0
HIST_BINS = 40


HIST_SAMPLE = 16384  # histograms of larger arrays use an evenly strided sample of about this many values


def _hist(a: np.ndarray) -> dict:
    flat = a.ravel()
    stride = max(1, flat.size // HIST_SAMPLE)
    counts, edges = np.histogram(flat[::stride], bins=HIST_BINS)
    return {"edges": [round(float(e), 5) for e in edges], "counts": counts.tolist(), "stride": stride}


class StatsRecorder:
    """Samples every ``every``-th step (and the first) of a ``Trainer`` into ``<run>/stats.jsonl``."""

    def __init__(self, every: int):
        if not isinstance(every, int) or every < 1:
            raise MiniGPTError(f"--stats-every must be a positive number of steps, got {every!r}")
        self.every = every
        self._before = None
        self._handles = []
        self._layers = {}
        self._cost = 0.0

    def due(self, step: int) -> bool:
        return step == 1 or step % self.every == 0

    # --- the three calls the training loop makes -------------------------------------------------------
    def begin(self, trainer) -> None:
        """Drop records of steps after the one the run (re)starts from."""
        path = Path(trainer.out_dir) / "stats.jsonl"
        if path.exists():
            keep = []
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except (json.JSONDecodeError, RecursionError):
                    continue  # a line torn by a kill: dropped
                step = rec.get("step") if isinstance(rec, dict) else None
                if isinstance(step, int) and not isinstance(step, bool) and step <= trainer.step:
                    keep.append(line)
            atomic_write_text(path, "".join(line + "\n" for line in keep))

    def before_step(self, trainer) -> None:
        if not self.due(trainer.step + 1):
            return
        t0 = time.perf_counter()
        model = trainer.model
        self._before = {n: p.data.copy() for n, p in model.named_parameters() if p.requires_grad}
        self._layers = {}
        blocks = getattr(model, "blocks", None) or []
        for i, blk in enumerate(blocks):
            self._handles.append(blk.register_forward_hook(self._on_block(i)))
            self._handles.append(blk.register_backward_hook(self._on_block_grad(i)))
            if hasattr(blk, "attn") and hasattr(blk.attn, "qkv"):
                self._handles.append(blk.attn.register_forward_hook(self._on_attn(i)))
            if hasattr(blk, "ff") and hasattr(blk.ff, "fc"):
                self._handles.append(blk.ff.register_forward_hook(self._on_ff(i)))
        self._cost = time.perf_counter() - t0

    def after_step(self, trainer, record: dict) -> None:
        if self._before is None:
            return
        t0 = time.perf_counter()
        for h in self._handles:
            h.remove()
        self._handles = []
        params = {}
        for n, p in trainer.model.named_parameters():
            if n not in self._before:
                continue
            old = self._before[n]
            # norms in the parameters' own dtype (BLAS nrm2 scales as it sums: no overflow, and cheap)
            w = float(np.linalg.norm(old.ravel()))
            upd = float(np.linalg.norm(np.subtract(p.data, old, out=old).ravel()))
            g = None if p.grad is None else round(float(np.linalg.norm(np.asarray(p.grad).ravel())), 8)
            params[n] = {"grad_norm": g, "weight_norm": round(float(np.linalg.norm(p.data.ravel())), 6),
                         "update_ratio": round(math.log10(upd / w), 4) if upd > 0 and w > 0 else None,
                         "grad_ratio": round(math.log10(g / w), 4) if g and w > 0 else None}
        self._before = None
        layers = [dict(layer=i, **self._layers[i]) for i in sorted(self._layers)]
        rec = {"step": trainer.step, "loss": record.get("loss"), "params": params, "layers": layers}
        self._cost += time.perf_counter() - t0
        rec["stats_seconds"] = round(self._cost, 6)
        with open(Path(trainer.out_dir) / "stats.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    # --- forward hooks ------------------------------------------------------------------------------
    def _timed(self, fn):
        def hook(module, args, out):
            t0 = time.perf_counter()
            fn(module, args, out)
            self._cost += time.perf_counter() - t0
        return hook

    def _on_block(self, i):
        def fn(module, args, out):
            r = out.data.reshape(-1)                                          # the whole batch
            mean = float(r.sum(dtype=np.float64)) / r.size
            var = max(0.0, float(r @ r) / r.size - mean * mean)               # one BLAS dot, no temporaries
            self._layers.setdefault(i, {}).update(
                resid_mean=round(mean, 6), resid_std=round(math.sqrt(var), 6), resid_hist=_hist(out.data[0]))
        return self._timed(fn)

    def _on_block_grad(self, i):
        def fn(module, grad_in, grad_out):
            t0 = time.perf_counter()
            g_out = np.asarray(grad_out[0])                                   # dL/d(block output): (B, T, C)
            rec = self._layers.setdefault(i, {})
            rec.update(grad_out_norm=round(float(np.linalg.norm(g_out.ravel())), 8), grad_hist=_hist(g_out))
            if grad_in and grad_in[0] is not None:                            # dL/d(block input): (B, T, C)
                rec["grad_in_norm"] = round(float(np.linalg.norm(np.asarray(grad_in[0]).ravel())), 8)
            self._cost += time.perf_counter() - t0
        return fn

    def _on_attn(self, i):
        def fn(attn, args, out):
            x = args[0].data[0]                                               # (T, C): first sequence
            T = x.shape[0]
            qkv = _recorded_input(out, 3 * x.shape[1])                        # the graph's q/k/v, if recorded
            if qkv is not None:
                qkv = qkv[0]
            else:                                                             # (no graph): recompute them
                qkv = x @ attn.qkv.weight.data                                # (T, 3C)
                if attn.qkv.bias is not None:
                    qkv = qkv + attn.qkv.bias.data
            H, D = attn.n_heads, attn.head_dim
            packed = qkv.reshape(T, 3, H, D)
            p = causal_softmax_weights(packed[:, 0], packed[:, 1], 1.0 / math.sqrt(D), dtype=np.float32,
                                       alibi_slopes=getattr(attn, "alibi_slopes", None))
            ent = -(p * np.log(np.maximum(p, 1e-30))).sum(-1).mean(-1)                   # (H,)
            self._layers.setdefault(i, {}).update(
                attn_entropy=[round(float(e), 5) for e in ent],
                attn_uniform=round(float(np.log(np.arange(1, T + 1)).mean()), 5))  # mean log(t+1): uniform rows
        return self._timed(fn)

    def _on_ff(self, i):
        def fn(ff, args, out):
            x = args[0].data[0]                                               # (T, C)
            T, hidden = x.shape[0], ff.fc.weight.shape[1]
            h = _saved_preactivation(out, hidden)
            if h is not None:
                pre = h[:T]                                                   # the fused op kept them: (T, 4C)
            else:
                pre = x @ ff.fc.weight.data + ff.fc.bias.data                 # (T, 4C): GELU's inputs
            self._layers.setdefault(i, {}).update(gelu_tail=round(float((pre < GELU_TAIL).mean()), 6),
                                                  gelu_hist=_hist(pre))
        return self._timed(fn)


def _recorded_input(out, width: int):
    """The packed q/k/v the attention op received, read from the recorded graph (out = proj(attention(qkv)))
    instead of being recomputed; None when there is no graph or it has another shape."""
    try:
        att = out._op.inputs[0]._op
        qkv = att.inputs[0].data
    except (AttributeError, IndexError):
        return None
    return qkv if qkv.ndim == 3 and qkv.shape[-1] == width else None


def _saved_preactivation(out, hidden: int):
    """The GELU inputs (N, hidden) that the fused feed-forward op (out = feed_forward(x)) or the fused
    linear + GELU op (out = proj(linear_gelu(x))) kept for its backward; None when there is no graph or no
    such array."""
    try:
        op = out._op
        h = op.h if hasattr(op, "h") else op.inputs[0]._op.h
    except (AttributeError, IndexError):
        return None
    return h if isinstance(h, np.ndarray) and h.ndim == 2 and h.shape[1] == hidden else None


# --- reading a run and drawing it ---------------------------------------------------------------------
def _warn(msg: str) -> None:
    print(f"minigpt: warning: {msg}", file=sys.stderr)


def _read_jsonl(path: Path, need: tuple = (), warn=_warn) -> list:
    """The JSON objects of a .jsonl file, one per line. A last line cut short (a run killed while writing
    it: no final newline, not valid JSON) is skipped with a warning; any other bad line is an error naming
    it. ``need``: keys every object must have (with a number as value)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MiniGPTError(f"{path} is not UTF-8 text") from None
    lines = text.splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if n == len(lines) and not text.endswith("\n"):
                warn(f"{path}, line {n}: skipped a torn last line (the run was stopped while writing it)")
                continue
            raise MiniGPTError(f"{path}, line {n}: not valid JSON") from None
        if not isinstance(rec, dict):
            raise MiniGPTError(f"{path}, line {n}: expected a JSON object, got a {type(rec).__name__}")
        for key in need:
            v = rec.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise MiniGPTError(f"{path}, line {n}: {key!r} must be a number, got {json.dumps(v)[:40]}")
        out.append(rec)
    return out


def load_run(run, warn=_warn) -> dict:
    """``{"log": [...] (log.jsonl), "stats": [...] (stats.jsonl)}`` of a training output folder."""
    run = Path(run)
    if not run.exists():
        raise MiniGPTError(f"run folder {run} does not exist")
    if not run.is_dir():
        raise MiniGPTError(f"{run} is a file, not a run folder (give the --out folder of `minigpt train "
                           "--stats-every N`)")
    stats = run / "stats.jsonl"
    if not stats.is_file():
        raise MiniGPTError(f"{run} has no stats.jsonl: train with `minigpt train --stats-every N` to record "
                           "the statistics these dashboards draw")
    log = run / "log.jsonl"
    return {"log": _read_jsonl(log, ("step",), warn) if log.is_file() else [],
            "stats": _check_stats(stats, _read_jsonl(stats, ("step",), warn))}


def _check_stats(path: Path, records: list) -> list:
    """Refuse stats records without the fields the dashboards read, naming the record's step."""
    for rec in records:
        if not isinstance(rec.get("params"), dict) or not isinstance(rec.get("layers"), list) \
                or not all(isinstance(v, dict) for v in rec["params"].values()) \
                or not all(isinstance(v, dict) for v in rec["layers"]):
            raise MiniGPTError(f"{path}: the record of step {rec['step']} lacks its 'params' object or 'layers' "
                               "list; the file is damaged")
    return records


def dashboards(run, out=None, hist_steps=None) -> list:
    """Draw the dashboards of a run folder into ``out`` (default: the run folder); returns the paths."""
    data = load_run(run)
    stats, log = data["stats"], data["log"]
    if not stats:
        raise MiniGPTError(f"{Path(run) / 'stats.jsonl'} is empty: the run recorded no statistics yet")
    plt = _plt()
    out = Path(out or run)
    out.mkdir(parents=True, exist_ok=True)
    steps = [r["step"] for r in stats]
    names = [n for n in stats[-1]["params"] if n.endswith("weight") and "norm" not in n]  # the matrices
    paths = []

    # 1. loss
    fig, ax = plt.subplots(figsize=(7, 4))
    if log:
        ax.plot([r["step"] for r in log], [r["loss"] for r in log], lw=1, label="train")
        val = [(r["step"], r["val_loss"]) for r in log if r.get("val_loss") is not None]
        if val:
            ax.plot(*zip(*val), "o-", label="validation")
    else:
        ax.plot(steps, [r.get("loss") for r in stats], "o-", label="train (sampled steps)")
    set_step_axis(ax)
    ax.set_ylabel("cross-entropy loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(_save(fig, out / "dash-loss.png"))

    # 2. gradient norms and 3. update ratios, one line per weight tensor
    for key, fname, ylabel, ref in (("grad_norm", "dash-grad-norm.png", "gradient L2 norm", None),
                                    ("update_ratio", "dash-update-ratio.png", "log10(|update| / |weight|)", -3.0)):
        fig, ax = plt.subplots(figsize=(9, 5))
        for n, style in zip(names, line_styles(len(names))):  # 18+ lines: colour x line style tells them apart
            ys = [r["params"].get(n, {}).get(key) for r in stats]
            ax.plot(steps, [np.nan if y is None else y for y in ys], lw=1, label=n, **style)
        if ref is not None:
            ax.axhline(ref, color="k", ls="--", lw=1, label="1e-3 reference")
        if key == "grad_norm":
            ax.set_yscale("log")
        set_step_axis(ax)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6, ncol=2, loc="best")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(_save(fig, out / fname))

    # 4. activation histograms (residual stream and GELU inputs per layer) at chosen steps
    chosen = _pick_steps(steps, hist_steps)
    n_layers = len(stats[-1]["layers"])
    if n_layers:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
        for col, key, title in ((0, "resid_hist", "residual stream after each block"),
                                (1, "gelu_hist", f"GELU inputs (legend: the share below {GELU_TAIL:g}, the flat tail)")):
            ax = axes[0][col]
            curves = [(s, lay) for s in chosen for lay in stats[steps.index(s)]["layers"] if lay.get(key)]
            for (s, lay), style in zip(curves, line_styles(len(curves))):
                h = lay[key]
                e = np.asarray(h["edges"])
                label = f"step {s}, layer {lay['layer']}"
                if key == "gelu_hist" and lay.get("gelu_tail") is not None:
                    label += f": {lay['gelu_tail']:.1%} < {GELU_TAIL:g}"  # the share GELU passes no gradient to
                ax.plot((e[:-1] + e[1:]) / 2, h["counts"], lw=1, label=label, **style)
            if key == "gelu_hist":
                ax.axvline(GELU_TAIL, color="k", ls="--", lw=1)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("value")
            ax.set_ylabel("count")
            ax.legend(fontsize=6)
            ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(_save(fig, out / "dash-activations.png"))

        # 5. attention entropy per head over training
        n_heads = max((len(lay.get("attn_entropy", [])) for lay in stats[-1]["layers"]), default=0)
        fig, axes = plt.subplots(1, n_layers, figsize=(4 * n_layers, 3.5), squeeze=False, sharey=True)
        for l in range(n_layers):
            ax = axes[0][l]
            for h, style in zip(range(n_heads), line_styles(n_heads)):
                ax.plot(steps, [r["layers"][l]["attn_entropy"][h] if l < len(r["layers"]) and
                                "attn_entropy" in r["layers"][l] else np.nan for r in stats], lw=1, label=f"head {h}",
                        **style)
            ax.set_title(f"layer {l}", fontsize=10)
            set_step_axis(ax)
            ax.grid(alpha=0.3)
            uni = [r["layers"][l].get("attn_uniform") for r in stats if l < len(r["layers"])]
            uni = [u for u in uni if u is not None]
            if uni:                                   # where every head starts: uniform attention
                ax.axhline(uni[-1], color="k", ls="--", lw=1, label="uniform attention")
        axes[0][0].set_ylabel("attention entropy (nats)")
        axes[0][0].legend(fontsize=7)
        fig.suptitle("attention entropy per head (lower: more selective)", fontsize=10)
        fig.tight_layout()
        paths.append(_save(fig, out / "dash-attention-entropy.png"))

        # 6. gradient flow: dL/d(residual stream) per block over training, and its histograms
        if any("grad_out_norm" in lay for r in stats for lay in r["layers"]):
            paths.append(_grad_flow(plt, stats, steps, chosen, n_layers, out / "dash-grad-flow.png"))

    # 7. grad:data ratio per weight matrix over training
    if any(v.get("grad_ratio") is not None for r in stats for v in r["params"].values()):
        fig, ax = plt.subplots(figsize=(9, 5))
        for n in names:
            ys = [r["params"].get(n, {}).get("grad_ratio") for r in stats]
            ax.plot(steps, [np.nan if y is None else y for y in ys], lw=1, label=n)
        ax.set_xlabel("step")
        ax.set_ylabel("log10(|grad| / |weight|)")
        ax.set_title("grad:data ratio per weight matrix", fontsize=10)
        ax.legend(fontsize=6, ncol=2, loc="best")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        paths.append(_save(fig, out / "dash-grad-ratio.png"))
    return paths


def _grad_flow(plt, stats, steps, chosen, n_layers, path):
    """Left: |dL/d(residual stream)| after and before each block over the sampled steps; right: the
    histograms of dL/d(residual stream after the block) at the chosen steps."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), squeeze=False)
    ax = axes[0][0]
    for l in range(n_layers):
        for key, ls, what in (("grad_out_norm", "-", "after"), ("grad_in_norm", ":", "before")):
            ys = [r["layers"][l].get(key, np.nan) if l < len(r["layers"]) else np.nan for r in stats]
            ax.plot(steps, ys, ls, lw=1, color=f"C{l % 10}", label=f"block {l}, {what}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("|dL/d residual stream|")
    ax.set_title("gradient norm entering (after) and leaving (before) each block", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    ax.grid(alpha=0.3)
    ax = axes[0][1]
    for s in chosen:
        for lay in stats[steps.index(s)]["layers"]:
            h = lay.get("grad_hist")
            if h:
                e = np.asarray(h["edges"])
                ax.plot((e[:-1] + e[1:]) / 2, h["counts"], lw=1, label=f"step {s}, layer {lay['layer']}")
    ax.set_yscale("log")
    ax.set_title("dL/d(residual stream after each block)", fontsize=10)
    ax.set_xlabel("gradient value")
    ax.set_ylabel("count")
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def _pick_steps(steps: list, wanted) -> list:
    if not wanted:
        idx = sorted({0, len(steps) // 2, len(steps) - 1})
        return [steps[i] for i in idx]
    missing = [s for s in wanted if s not in steps]
    if missing:
        raise MiniGPTError(f"--hist-steps {','.join(map(str, missing))}: not a sampled step; stats.jsonl has steps "
                           f"{', '.join(map(str, steps[:12]))}{' ...' if len(steps) > 12 else ''}")
    return list(wanted)
