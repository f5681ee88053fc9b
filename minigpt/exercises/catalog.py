"""What each exercise is made of, besides its source file: the inputs (seeded, float64, small), the
reference forward pass in minigpt's own ops (the checker marks every intermediate with ``retain_grad()``
and lets autograd compute the true gradients), and the typical mistakes worth naming.

A mistake is a function ``(p, c, g) -> {gradient name: [(label, wrong array), ...]}`` of the inputs ``p``,
the forward's intermediates ``c`` and the true gradients ``g`` (``g["dh"]``): the array a student gets by
making that mistake. When a student's gradient equals one of them, the checker names the mistake.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import functional as F
from ..tensor import Tensor


@dataclass(frozen=True)
class Exercise:
    name: str
    title: str          # one line, for `minigpt exercises list`
    inputs: object      # rng -> {name: float64 or int array}
    reference: object   # {name: Tensor} -> {intermediate name: Tensor}, with "loss" last
    mistakes: object = None               # (p, c, g) -> {grad name: [(label, array)]}
    means: dict = field(default_factory=dict)   # {n: "what a 1/n averages over"}, to name a forgotten 1/n
    aliases: dict = field(default_factory=dict)  # gradient name -> the variable it is the gradient of


def _rows_weights(rng, shape):
    """The fixed random weights R of a loss sum(out * R): every element of out gets its own gradient."""
    return rng.standard_normal(shape)


# --- mlp -------------------------------------------------------------------------------------------------
def _mlp_inputs(rng):
    N, D, H, K = 4, 3, 5, 2
    return {"x": rng.standard_normal((N, D)), "W1": rng.standard_normal((D, H)) * 0.5,
            "b1": rng.standard_normal(H) * 0.1, "W2": rng.standard_normal((H, K)) * 0.5,
            "b2": rng.standard_normal(K) * 0.1, "target": rng.standard_normal((N, K))}


def _mlp_reference(t):
    h_pre = t["x"] @ t["W1"] + t["b1"]
    h = h_pre.tanh()
    out = h @ t["W2"] + t["b2"]
    diff = out - t["target"]
    loss = (diff ** 2).mean()
    return dict(h_pre=h_pre, h=h, out=out, diff=diff, loss=loss)


def _mlp_mistakes(p, c, g):
    return {
        "dh_pre": [("used tanh(h_pre) itself instead of its derivative 1 - h**2", g["dh"] * c["h"]),
                   ("forgot the tanh: its local derivative 1 - h**2 is missing", g["dh"])],
    }


# --- layernorm ---------------------------------------------------------------------------------------------
EPS = 1e-5


def _ln_inputs(rng):
    N, D = 3, 5
    return {"x": rng.standard_normal((N, D)) * 2 + 1, "w": 1 + 0.3 * rng.standard_normal(D),
            "b": 0.3 * rng.standard_normal(D), "R": _rows_weights(rng, (N, D))}


def _ln_reference(t):
    x = t["x"]
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc ** 2).mean(axis=-1, keepdims=True)
    rstd = (var + EPS) ** -0.5
    xhat = xc * rstd
    out = xhat * t["w"] + t["b"]
    loss = (out * t["R"]).sum()
    return dict(mu=mu, xc=xc, var=var, rstd=rstd, xhat=xhat, out=out, loss=loss)


def _ln_mistakes(p, c, g):
    D = p["x"].shape[-1]
    via_var = 2 * c["xc"] * g["dvar"] / D             # the part of dxc that comes through var
    return {
        "dxc": [("missed the branch through var: xc feeds both xhat and var, and the two gradients add",
                 g["dxc"] - via_var),
                ("kept only the branch through var, missed the one through xhat = xc * rstd", via_var)],
        "dx": [("missed the branch through mu: x feeds both xc = x - mu and mu, and the two gradients add",
                g["dxc"]),
               ("summed dmu over the wrong axis (the batch, not the features)",
                g["dxc"] - np.broadcast_to(g["dxc"].sum(axis=0, keepdims=True) / D, g["dxc"].shape))],
    }


# --- cross_entropy ------------------------------------------------------------------------------------------
def _ce_inputs(rng):
    N, C = 4, 5
    return {"logits": rng.standard_normal((N, C)) * 2, "y": rng.integers(0, C, size=N)}


def _ce_reference(t):
    logits, y = t["logits"], t["y"].data
    N = logits.shape[0]
    m = Tensor(logits.data.max(axis=1, keepdims=True))   # a constant: no gradient flows into it
    shifted = logits - m
    e = shifted.exp()
    s = e.sum(axis=1, keepdims=True)
    probs = e / s
    logp = probs.log()
    picked = logp[np.arange(N), y]
    loss = -picked.mean()
    return dict(shifted=shifted, e=e, s=s, probs=probs, logp=logp, picked=picked, loss=loss)


def _ce_mistakes(p, c, g):
    N = p["logits"].shape[0]
    onehot = np.zeros_like(c["probs"])
    onehot[np.arange(N), p["y"]] = 1
    via_s = np.broadcast_to(g["ds"], c["e"].shape)   # the part of de that comes through s
    return {
        "de": [("missed the branch through s: e feeds both probs = e / s and s = e.sum(1), and the gradients add",
                g["de"] - via_s),
               ("kept only the branch through s, missed the one through probs = e / s", via_s)],
        "dlogits_fused": [("wrote probs - onehot but forgot the 1/N of the mean", c["probs"] - onehot),
                          ("wrote onehot - probs: the sign is flipped", (onehot - c["probs"]) / N)],
    }


# --- gelu -------------------------------------------------------------------------------------------------
GELU_C = float(np.sqrt(2.0 / np.pi))


def _gelu_inputs(rng):
    return {"x": rng.standard_normal((3, 4)) * 1.5, "R": _rows_weights(rng, (3, 4))}


def _gelu_reference(t):
    x = t["x"]
    x3 = x ** 3
    inner = GELU_C * (x + 0.044715 * x3)
    th = inner.tanh()
    out = 0.5 * x * (1 + th)
    loss = (out * t["R"]).sum()
    return dict(x3=x3, inner=inner, th=th, out=out, loss=loss)


def _gelu_mistakes(p, c, g):
    x = p["x"]
    direct = g["dout"] * 0.5 * (1 + c["th"])                 # out = 0.5 * x * (1 + th): x's own factor
    via_inner = g["dinner"] * GELU_C                         # inner = C * (x + 0.044715 * x3): x's own term
    via_x3 = g["dx3"] * 3 * x ** 2
    return {
        "dx": [("missed the direct branch: x also multiplies (1 + th) in out = 0.5 * x * (1 + th)",
                via_inner + via_x3),
               ("missed the branch through x3 = x ** 3", direct + via_inner),
               ("missed the branch through inner's own x term", direct + via_x3),
               ("kept only the direct branch 0.5 * (1 + th): x also reaches out through th", direct)],
        "dinner": [("used tanh(inner) instead of its derivative 1 - th**2", g["dth"] * c["th"])],
    }


# --- attention ------------------------------------------------------------------------------------------
def _attn_inputs(rng):
    T, C, hs = 4, 4, 3
    return {"x": rng.standard_normal((T, C)), "Wq": rng.standard_normal((C, hs)) * 0.7,
            "Wk": rng.standard_normal((C, hs)) * 0.7, "Wv": rng.standard_normal((C, hs)) * 0.7,
            "R": _rows_weights(rng, (T, hs))}


def _causal_mask(T):
    return np.triu(np.ones((T, T), dtype=bool), k=1)   # True above the diagonal: the future


def _attn_reference(t):
    x = t["x"]
    T, hs = x.shape[0], t["Wq"].shape[1]
    q = x @ t["Wq"]
    k = x @ t["Wk"]
    v = x @ t["Wv"]
    att = (q @ k.T) * (1.0 / np.sqrt(hs))
    masked = F.masked_fill(att, _causal_mask(T), -np.inf)
    P = F.softmax(masked, axis=-1)
    o = P @ v
    loss = (o * t["R"]).sum()
    return dict(q=q, k=k, v=v, att=att, masked=masked, P=P, o=o, loss=loss)


def _attn_mistakes(p, c, g):
    hs = p["Wq"].shape[1]
    scale = 1.0 / np.sqrt(hs)
    dq, dk, dv = g["dq"], g["dk"], g["dv"]
    return {
        "dmasked": [("used P * dP without subtracting the row sum (P * dP).sum(-1): that is the gradient of "
                     "exp, not of softmax", c["P"] * g["dP"])],
        "dq": [("forgot the scale 1/sqrt(hs) of att = q @ k.T / sqrt(hs)", dq / scale)],
        "dk": [("forgot the scale 1/sqrt(hs) of att = q @ k.T / sqrt(hs)", dk / scale),
               ("used datt @ q instead of datt.T @ q: k enters att transposed", g["datt"] @ c["q"] * scale)],
        "dx": [("missed a branch: x feeds q, k and v, and the three gradients add", dq @ p["Wq"].T + dk @ p["Wk"].T),
               ("missed a branch: x feeds q, k and v, and the three gradients add", dq @ p["Wq"].T + dv @ p["Wv"].T),
               ("missed a branch: x feeds q, k and v, and the three gradients add", dk @ p["Wk"].T + dv @ p["Wv"].T)],
    }


# --- embedding ----------------------------------------------------------------------------------------------
def _emb_inputs(rng):
    V, C, N = 6, 4, 7
    ids = np.array([1, 3, 1, 0, 5, 3, 1])          # repeats on purpose: their gradients must add up
    return {"ids": ids[:N], "W": rng.standard_normal((V, C)), "P": rng.standard_normal((N, C)) * 0.5,
            "targets": rng.integers(0, V, size=N)}


def _emb_reference(t):
    emb = F.embedding(t["ids"], t["W"])
    x = emb + t["P"]
    h = x.tanh()
    logits = h @ t["W"].T                           # the tied head: the same W reads the logits out
    loss = F.cross_entropy(logits, t["targets"])
    return dict(emb=emb, x=x, h=h, logits=logits, loss=loss)


def _emb_mistakes(p, c, g):
    V = p["W"].shape[0]
    head = g["dlogits"].T @ c["h"]                      # the head's part of dW
    scatter = np.zeros_like(p["W"])
    np.add.at(scatter, p["ids"], g["demb"])             # the embedding's part: a scatter-add
    assigned = np.zeros_like(p["W"])
    assigned[p["ids"]] = g["demb"]                      # fancy assignment: a repeated id keeps only its last row
    return {
        "dW": [("missed the embedding's branch: W is both the embedding table and the head, and the two "
                "gradients add", head),
               ("missed the head's branch: W is both the embedding table and the head, and the two gradients add",
                scatter),
               ("wrote dW[ids] = demb (or +=): a repeated id keeps one row; scatter-add with np.add.at",
                head + assigned)],
    }


# --- block --------------------------------------------------------------------------------------------------
def _block_inputs(rng):
    T, C, H = 4, 4, 8
    s = 0.5
    return {"x": rng.standard_normal((T, C)), "ln1_w": 1 + 0.2 * rng.standard_normal(C),
            "ln1_b": 0.2 * rng.standard_normal(C), "Wq": rng.standard_normal((C, C)) * s,
            "Wk": rng.standard_normal((C, C)) * s, "Wv": rng.standard_normal((C, C)) * s,
            "Wo": rng.standard_normal((C, C)) * s, "ln2_w": 1 + 0.2 * rng.standard_normal(C),
            "ln2_b": 0.2 * rng.standard_normal(C), "W1": rng.standard_normal((C, H)) * s,
            "b1": 0.1 * rng.standard_normal(H), "W2": rng.standard_normal((H, C)) * s,
            "b2": 0.1 * rng.standard_normal(C), "R": _rows_weights(rng, (T, C))}


def _gelu_tanh(u):
    return 0.5 * u * (1 + (GELU_C * (u + 0.044715 * u ** 3)).tanh())


def _block_reference(t):
    x = t["x"]
    T, C = x.shape
    a = F.layer_norm(x, t["ln1_w"], t["ln1_b"], eps=EPS)
    q, k, v = a @ t["Wq"], a @ t["Wk"], a @ t["Wv"]
    att = (q @ k.T) * (1.0 / np.sqrt(C))
    P = F.softmax(F.masked_fill(att, _causal_mask(T), -np.inf), axis=-1)
    o = P @ v
    x1 = x + o @ t["Wo"]
    m = F.layer_norm(x1, t["ln2_w"], t["ln2_b"], eps=EPS)
    f_pre = m @ t["W1"] + t["b1"]
    f = _gelu_tanh(f_pre)
    out = x1 + f @ t["W2"] + t["b2"]
    loss = (out * t["R"]).sum()
    return dict(a=a, q=q, k=k, v=v, att=att, P=P, o=o, x1=x1, m=m, f_pre=f_pre, f=f, out=out, loss=loss)


def _block_mistakes(p, c, g):
    return {
        "dx1": [("missed the residual branch: out = x1 + ffn(x1), so dx1 = dout + the feed-forward's part",
                 g["dx1"] - g["dout"]),
                ("missed the feed-forward's branch: out = x1 + ffn(x1)", g["dout"])],
        "dx": [("missed the residual branch: x1 = x + attn(x), so dx = dx1 + the attention's part",
                g["dx"] - g["dx1"]),
               ("missed the attention's branch: x1 = x + attn(x)", g["dx1"])],
    }


EXERCISES = {e.name: e for e in [
    Exercise("mlp", "a two-layer MLP (tanh, mean squared error) by hand", _mlp_inputs, _mlp_reference,
             _mlp_mistakes, means={8: "the N * K elements of the mean"}),
    Exercise("layernorm", "layer norm from basic ops: mean, variance, 1/sqrt, scale and shift", _ln_inputs,
             _ln_reference, _ln_mistakes, means={5: "the D features of the mean"}),
    Exercise("cross_entropy", "softmax and cross-entropy step by step, then the fused probs - onehot", _ce_inputs,
             _ce_reference, _ce_mistakes, means={4: "the N rows of the mean"}, aliases={"dlogits_fused": "logits"}),
    Exercise("gelu", "GELU in its tanh form: three branches that add", _gelu_inputs, _gelu_reference,
             _gelu_mistakes),
    Exercise("attention", "one causal self-attention head: q, k, v, scores, mask, softmax", _attn_inputs,
             _attn_reference, _attn_mistakes),
    Exercise("embedding", "a token embedding tied to the output head: a scatter-add and two gradients that add",
             _emb_inputs, _emb_reference, _emb_mistakes, means={7: "the N rows of the mean"}),
    Exercise("block", "one whole transformer block: layer norms, attention, feed-forward, two residuals",
             _block_inputs, _block_reference, _block_mistakes),
]}
