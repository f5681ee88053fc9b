"""Exercise `attention`: back-propagate through one causal self-attention head.

T positions of C features each are projected to queries, keys and values (head size hs); each position
attends to itself and the positions before it (the mask sets the future to -inf before the softmax).
The loss is sum(o * R) for fixed random weights R, so do = R. Fill in `backward`: `dX` is the derivative
of the loss with respect to the forward's `X` and has the shape of `X`. x feeds q, k and v: three
gradients that add.
Check your answers with:  minigpt exercises check attention attention.py
"""
import numpy as np


def forward(p):
    """p: the input x, the projections Wq, Wk, Wv and the loss weights R. Returns every intermediate."""
    x, Wq, Wk, Wv, R = p["x"], p["Wq"], p["Wk"], p["Wv"], p["R"]
    T, hs = x.shape[0], Wq.shape[1]
    q = x @ Wq                                          # (T, hs)
    k = x @ Wk                                          # (T, hs)
    v = x @ Wv                                          # (T, hs)
    att = (q @ k.T) / np.sqrt(hs)                       # (T, T)   att[i, j]: how much i looks at j
    future = np.triu(np.ones((T, T), dtype=bool), k=1)  # (T, T)   True where j > i
    masked = np.where(future, -np.inf, att)             # (T, T)
    P = np.exp(masked - masked.max(axis=-1, keepdims=True))
    P = P / P.sum(axis=-1, keepdims=True)               # (T, T)   softmax over each row
    o = P @ v                                           # (T, hs)
    loss = np.sum(o * R)                                # ()
    return dict(q=q, k=k, v=v, att=att, masked=masked, P=P, o=o, loss=loss)


def backward(p, c):
    """p: the inputs, c: every intermediate of forward(p). Returns the gradients of the loss."""
    x, Wq, Wk, Wv, R = p["x"], p["Wq"], p["Wk"], p["Wv"], p["R"]
    T, hs = x.shape[0], Wq.shape[1]
    q, k, v, P = c["q"], c["k"], c["v"], c["P"]
    # TODO do (T, hs): loss = sum(o * R)
    do = R
    # END
    # TODO dP (T, T): o = P @ v
    dP = do @ v.T
    # END
    # TODO dv (T, hs): o = P @ v
    dv = P.T @ do
    # END
    # TODO dmasked (T, T): P = softmax(masked) row by row: dmasked = P * (dP - rowsum(P * dP))
    dmasked = P * (dP - (P * dP).sum(axis=-1, keepdims=True))
    # END
    # TODO datt (T, T): masked = att where allowed, -inf (a constant) in the future
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    datt = np.where(future, 0.0, dmasked)
    # END
    # TODO dq (T, hs): att = q @ k.T / sqrt(hs)
    dq = datt @ k / np.sqrt(hs)
    # END
    # TODO dk (T, hs): att = q @ k.T / sqrt(hs): k enters transposed
    dk = datt.T @ q / np.sqrt(hs)
    # END
    # TODO dWq (C, hs): q = x @ Wq
    dWq = x.T @ dq
    # END
    # TODO dWk (C, hs): k = x @ Wk
    dWk = x.T @ dk
    # END
    # TODO dWv (C, hs): v = x @ Wv
    dWv = x.T @ dv
    # END
    # TODO dx (T, C): x feeds q, k and v: three gradients that add
    dx = dq @ Wq.T + dk @ Wk.T + dv @ Wv.T
    # END
    return dict(do=do, dP=dP, dv=dv, dmasked=dmasked, datt=datt, dq=dq, dk=dk, dWq=dWq, dWk=dWk, dWv=dWv, dx=dx)
