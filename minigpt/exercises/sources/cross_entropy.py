"""Exercise `cross_entropy`: back-propagate through softmax and cross-entropy, one step at a time.

The logits of N examples over C classes become probabilities probs (shifted by each row's maximum m for
numerical safety: m is a constant here, no gradient flows into it), then the loss is the mean of
-log probs[i, y[i]] over the rows. Fill in `backward` from the loss back to the logits: `dX` is the
derivative of the loss with respect to the forward's `X` and has the shape of `X`. At the end, write
the same dlogits again in one line (`dlogits_fused`): what do the steps simplify to?
Check your answers with:  minigpt exercises check cross_entropy cross_entropy.py
"""
import numpy as np


def forward(p):
    """p: the inputs (logits float64, y the target classes). Returns every intermediate by name."""
    logits, y = p["logits"], p["y"]
    N = logits.shape[0]
    m = logits.max(axis=1, keepdims=True)    # (N, 1)  a constant: no gradient flows into it
    shifted = logits - m                     # (N, C)
    e = np.exp(shifted)                      # (N, C)
    s = e.sum(axis=1, keepdims=True)         # (N, 1)
    probs = e / s                            # (N, C)  the probabilities
    logp = np.log(probs)                     # (N, C)
    picked = logp[np.arange(N), y]           # (N,)    log p of each row's target class
    loss = -picked.mean()                    # ()
    return dict(shifted=shifted, e=e, s=s, probs=probs, logp=logp, picked=picked, loss=loss)


def backward(p, c):
    """p: the inputs, c: every intermediate of forward(p). Returns the gradients of the loss."""
    y = p["y"]
    N = y.shape[0]
    # TODO dpicked (N,): loss = -mean(picked)
    dpicked = -np.ones(N) / N
    # END
    # TODO dlogp (N, C): picked takes one element of each row; every other element gets no gradient
    dlogp = np.zeros_like(c["logp"])
    dlogp[np.arange(N), y] = dpicked
    # END
    # TODO dprobs (N, C): logp = log(probs)
    dprobs = dlogp / c["probs"]
    # END
    # TODO ds (N, 1): probs = e / s, and s is broadcast over the C classes
    ds = (dprobs * -c["e"] / c["s"] ** 2).sum(axis=1, keepdims=True)
    # END
    # TODO de (N, C): e feeds probs = e / s and s = e.sum(1): two branches that add
    de = dprobs / c["s"] + ds
    # END
    # TODO dshifted (N, C): e = exp(shifted)
    dshifted = de * c["e"]
    # END
    # TODO dlogits (N, C): shifted = logits - m, m a constant
    dlogits = dshifted
    # END
    # TODO dlogits_fused (N, C): from c["probs"] and y alone, in a few lines: what do the steps above simplify to?
    dlogits_fused = c["probs"].copy()
    dlogits_fused[np.arange(N), y] -= 1
    dlogits_fused /= N
    # END
    return dict(dpicked=dpicked, dlogp=dlogp, dprobs=dprobs, ds=ds, de=de, dshifted=dshifted, dlogits=dlogits,
                dlogits_fused=dlogits_fused)
