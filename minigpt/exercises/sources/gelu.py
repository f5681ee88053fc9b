"""Exercise `gelu`: back-propagate through GELU in its tanh form, as GPT-2 computes it.

gelu(x) = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x**3))). The loss is sum(out * R) for fixed
random weights R, so dout = R. x reaches out by three roads (directly as the factor 0.5 * x, through
inner's own x term, and through x3), and the three gradients add. Fill in `backward`: `dX` is the
derivative of the loss with respect to the forward's `X` and has the shape of `X`.
Check your answers with:  minigpt exercises check gelu gelu.py
"""
import numpy as np

C = np.sqrt(2.0 / np.pi)


def forward(p):
    """p: the input x and the loss weights R (float64 arrays). Returns every intermediate by name."""
    x, R = p["x"], p["R"]
    x3 = x ** 3                              # (N, D)
    inner = C * (x + 0.044715 * x3)          # (N, D)
    th = np.tanh(inner)                      # (N, D)
    out = 0.5 * x * (1 + th)                 # (N, D)
    loss = np.sum(out * R)                   # ()
    return dict(x3=x3, inner=inner, th=th, out=out, loss=loss)


def backward(p, c):
    """p: the inputs, c: every intermediate of forward(p). Returns the gradients of the loss."""
    x, R = p["x"], p["R"]
    # TODO dout (N, D): loss = sum(out * R)
    dout = R
    # END
    # TODO dth (N, D): out = 0.5 * x * (1 + th)
    dth = dout * 0.5 * x
    # END
    # TODO dinner (N, D): th = tanh(inner), and tanh'(u) = 1 - tanh(u)**2
    dinner = dth * (1 - c["th"] ** 2)
    # END
    # TODO dx3 (N, D): inner = C * (x + 0.044715 * x3)
    dx3 = dinner * C * 0.044715
    # END
    # TODO dx (N, D): three roads add: out's factor 0.5 * x, inner's x term, and x3 = x ** 3
    dx = dout * 0.5 * (1 + c["th"]) + dinner * C + dx3 * 3 * x ** 2
    # END
    return dict(dout=dout, dth=dth, dinner=dinner, dx3=dx3, dx=dx)
