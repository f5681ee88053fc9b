"""Exercise `mlp`: back-propagate through a two-layer MLP by hand.

The forward pass is given: a tanh hidden layer, a linear output layer and the mean squared error
against a target. Fill in `backward`: every gradient of the loss, from the loss back to the input.
`dX` is the derivative of the loss with respect to the forward's `X`, and has the shape of `X`.
Check your answers with:  minigpt exercises check mlp mlp.py
"""
import numpy as np


def forward(p):
    """p: the inputs and parameters (float64 arrays). Returns every intermediate by name."""
    x, W1, b1, W2, b2, target = p["x"], p["W1"], p["b1"], p["W2"], p["b2"], p["target"]
    h_pre = x @ W1 + b1          # (N, H)  N examples, D inputs, H hidden units
    h = np.tanh(h_pre)           # (N, H)
    out = h @ W2 + b2            # (N, K)  K outputs
    diff = out - target          # (N, K)
    loss = np.mean(diff ** 2)    # ()      the mean over all N*K squares
    return dict(h_pre=h_pre, h=h, out=out, diff=diff, loss=loss)


def backward(p, c):
    """p: the inputs, c: every intermediate of forward(p). Returns the gradients of the loss."""
    x, W1, W2 = p["x"], p["W1"], p["W2"]
    N, K = c["out"].shape
    # TODO ddiff (N, K): the loss is sum(diff ** 2) / (N * K)
    ddiff = 2 * c["diff"] / (N * K)
    # END
    # TODO dout (N, K): diff = out - target
    dout = ddiff
    # END
    # TODO dW2 (H, K): out = h @ W2 + b2; each W2[j, k] meets h[:, j] in every row
    dW2 = c["h"].T @ dout
    # END
    # TODO db2 (K,): b2 was broadcast over the N rows, so its gradient sums over them
    db2 = dout.sum(axis=0)
    # END
    # TODO dh (N, H): out = h @ W2 + b2
    dh = dout @ W2.T
    # END
    # TODO dh_pre (N, H): h = tanh(h_pre), and tanh'(u) = 1 - tanh(u)**2
    dh_pre = dh * (1 - c["h"] ** 2)
    # END
    # TODO dW1 (D, H): h_pre = x @ W1 + b1
    dW1 = x.T @ dh_pre
    # END
    # TODO db1 (H,): b1 was broadcast over the N rows
    db1 = dh_pre.sum(axis=0)
    # END
    # TODO dx (N, D): h_pre = x @ W1 + b1
    dx = dh_pre @ W1.T
    # END
    return dict(ddiff=ddiff, dout=dout, dW2=dW2, db2=db2, dh=dh, dh_pre=dh_pre, dW1=dW1, db1=db1, dx=dx)
