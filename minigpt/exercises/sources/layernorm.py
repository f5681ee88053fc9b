"""Exercise `layernorm`: back-propagate through layer norm built from basic ops.

Each row of x is centred (xc), scaled by the inverse standard deviation (rstd) and then by a weight w,
and shifted by a bias b. The loss is sum(out * R) for fixed random weights R, so that every element of
out gets its own gradient, dout = R. Fill in `backward`, from the loss back to x: `dX` is the derivative
of the loss with respect to the forward's `X` and has the shape of `X`. Where a variable feeds two
places (xc feeds var and xhat; x feeds xc and mu), its gradient is the sum of the two.
Check your answers with:  minigpt exercises check layernorm layernorm.py
"""
import numpy as np

EPS = 1e-5


def forward(p):
    """p: the inputs and parameters (float64 arrays). Returns every intermediate by name."""
    x, w, b, R = p["x"], p["w"], p["b"], p["R"]
    mu = x.mean(axis=-1, keepdims=True)                # (N, 1)  N rows of D features
    xc = x - mu                                        # (N, D)
    var = (xc ** 2).mean(axis=-1, keepdims=True)       # (N, 1)  the biased variance (divides by D)
    rstd = (var + EPS) ** -0.5                         # (N, 1)
    xhat = xc * rstd                                   # (N, D)
    out = xhat * w + b                                 # (N, D)
    loss = np.sum(out * R)                             # ()
    return dict(mu=mu, xc=xc, var=var, rstd=rstd, xhat=xhat, out=out, loss=loss)


def backward(p, c):
    """p: the inputs, c: every intermediate of forward(p). Returns the gradients of the loss."""
    x, w, R = p["x"], p["w"], p["R"]
    D = x.shape[-1]
    # TODO dout (N, D): loss = sum(out * R)
    dout = R
    # END
    # TODO dw (D,): out = xhat * w + b, and w is broadcast over the N rows
    dw = (dout * c["xhat"]).sum(axis=0)
    # END
    # TODO db (D,): b is broadcast over the N rows
    db = dout.sum(axis=0)
    # END
    # TODO dxhat (N, D): out = xhat * w + b
    dxhat = dout * w
    # END
    # TODO drstd (N, 1): xhat = xc * rstd, and rstd is broadcast over the D features
    drstd = (dxhat * c["xc"]).sum(axis=-1, keepdims=True)
    # END
    # TODO dvar (N, 1): rstd = (var + EPS) ** -0.5
    dvar = drstd * -0.5 * (c["var"] + EPS) ** -1.5
    # END
    # TODO dxc (N, D): xc feeds xhat = xc * rstd and var = mean(xc ** 2): two branches that add
    dxc = dxhat * c["rstd"] + dvar * 2 * c["xc"] / D
    # END
    # TODO dmu (N, 1): xc = x - mu, and mu is broadcast over the D features
    dmu = -dxc.sum(axis=-1, keepdims=True)
    # END
    # TODO dx (N, D): x feeds xc = x - mu and mu = mean(x): two branches that add
    dx = dxc + dmu / D
    # END
    return dict(dout=dout, dw=dw, db=db, dxhat=dxhat, drstd=drstd, dvar=dvar, dxc=dxc, dmu=dmu, dx=dx)
