"""Pictures (PNG, through matplotlib: the ``plot`` extra) of what ``maps`` and ``stats`` compute.

Every function here draws numbers that are also written as arrays or JSON; matplotlib is imported only
when a picture is asked for.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import MiniGPTError

MISSING = "matplotlib is not installed: pip install 'minigpt[plot]' (or pip install matplotlib) for the pictures"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MiniGPTError(MISSING) from None
    return plt


def _save(fig, path) -> Path:
    plt = _plt()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


LINESTYLES = ("-", "--", ":", "-.")


def line_styles(n: int) -> list[dict]:
    """``n`` distinct (colour, line style) pairs for the lines of one chart: the 10 colours of matplotlib's
    default cycle with a solid line, then again dashed, dotted and dash-dotted, so a legend of up to 40
    lines tells every line apart (past 40 the pairs repeat)."""
    return [{"color": f"C{i % 10}", "linestyle": LINESTYLES[(i // 10) % len(LINESTYLES)]} for i in range(n)]


def set_step_axis(ax, label: str = "step") -> None:
    """Label the x axis of a chart over steps or epochs and tick it at whole numbers only (no step 1.5)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def attention_grid(maps: np.ndarray, tokens: list, path, layers=None, heads=None) -> Path:
    """Heat maps of ``maps`` (L, H, T, T): one row per layer, one column per head (only ``layers`` /
    ``heads`` when given); the prompt's tokens label both axes (queries down, keys across)."""
    plt = _plt()
    layers = list(range(maps.shape[0])) if layers is None else list(layers)
    heads = list(range(maps.shape[1])) if heads is None else list(heads)
    T = maps.shape[-1]
    big = len(layers) * len(heads) == 1
    show_ticks = T <= 40 and (big or T <= 20)
    # cells wide enough for the token labels: with ticks, each map gets ~0.22 inch per token plus its labels
    cell = max(4.0, 0.35 * T) if big else (max(2.6, 0.22 * T + 1.2) if show_ticks else 2.6)
    fig, axes = plt.subplots(len(layers), len(heads), figsize=(cell * len(heads) + 1, cell * len(layers) + 0.6),
                             squeeze=False)
    for r, l in enumerate(layers):
        for c, h in enumerate(heads):
            ax = axes[r][c]
            im = ax.imshow(maps[l, h], cmap="viridis", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(f"layer {l}, head {h}", fontsize=9)
            if show_ticks:
                # token labels on the outer maps only (bottom row, left column), so that the labels of one
                # map never run into its neighbour
                ax.set_xticks(range(T))
                ax.set_yticks(range(T))
                ax.set_xticklabels(tokens if r == len(layers) - 1 else [], rotation=90, fontsize=7)
                ax.set_yticklabels(tokens if c == 0 else [], fontsize=7)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    fig.colorbar(im, ax=axes, shrink=0.6, label="attention weight")
    fig.suptitle("attention: query (rows) -> key (columns)", fontsize=10)
    return _save(fig, path)


def logit_lens_picture(lens: dict, tokens: list, vocab: list, path) -> Path:
    """Layers (rows) by positions (columns): the top-1 next token read out there, coloured by its
    probability."""
    plt = _plt()
    p = lens["top_probs"][..., 0]                                     # (L+1, T)
    top = lens["top_ids"][..., 0]
    n_rows, T = p.shape
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * T + 2), 0.5 * n_rows + 1.5))
    im = ax.imshow(p, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(n_rows):
        for j in range(T):
            ax.text(j, i, vocab[top[i, j]][:8], ha="center", va="center", fontsize=7,
                    color="white" if p[i, j] > 0.6 else "black")
    ax.set_yticks(range(n_rows))
    ax.set_yticklabels(lens["layers"], fontsize=8)
    ax.set_xticks(range(T))
    ax.set_xticklabels(tokens, rotation=90, fontsize=7)
    ax.set_xlabel("input position (its token)")
    ax.set_title("logit lens: likeliest next token after each layer", fontsize=10)
    fig.colorbar(im, ax=ax, label="probability")
    fig.tight_layout()
    return _save(fig, path)


def residual_norm_picture(lens: dict, tokens: list, path) -> Path:
    plt = _plt()
    norms = lens["residual_norm"]                                     # (L+1, T)
    fig, ax = plt.subplots(figsize=(8, 4))
    for j, style in zip(range(norms.shape[1]), line_styles(norms.shape[1])):
        ax.plot(range(norms.shape[0]), norms[:, j], marker="o", lw=1, alpha=0.7, label=tokens[j][:10], **style)
    ax.set_xticks(range(norms.shape[0]))
    ax.set_xticklabels(lens["layers"], rotation=30, fontsize=8)
    ax.set_ylabel("L2 norm of the residual stream")
    ax.set_title("residual stream norm after each layer, one line per position", fontsize=10)
    few = norms.shape[1] <= 12
    ax.legend(fontsize=6 if few else 5, title="position (token)", ncol=1 if few else 2, loc="center left",
              bbox_to_anchor=(1.01, 0.5))
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def next_token_picture(top: list, path, prompt: str | None = None) -> Path:
    """``top``: [(token text, probability), ...] likeliest first; ``prompt`` (the text they follow) is named
    in the title, shortened to its last 60 characters."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(top) + 1.6))
    if prompt is not None:
        shown = prompt if len(prompt) <= 60 else "..." + prompt[-57:]
        ax.set_title(f"next token after {shown!r}", fontsize=9)
    ax.barh(range(len(top)), [p for _, p in top], color="#4c72b0")
    ax.set_yticks(range(len(top)))
    ax.set_yticklabels([t for t, _ in top], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("probability of the next token")
    fig.tight_layout()
    return _save(fig, path)
