"""Exercise `block`: back-propagate through one whole transformer block (GPT-2's pre-norm layout).

x1 = x + attention(layernorm1(x)) @ Wo, then out = x1 + feedforward(layernorm2(x1)), with one causal head
of size C and a GELU (tanh form) feed-forward. The loss is sum(out * R), so dout = R. Everything here was
an exercise of its own: write the three helpers first (layer norm, GELU and softmax backward, in one
function each), then the block. The lines under a `# CHECK` comment are given: they call your
layernorm_backward, and the checker checks what they compute. The residual stream is where branches
add: dx1 collects the residual's gradient and the feed-forward's, dx the residual's and the attention's.
Check your answers with:  minigpt exercises check block block.py
"""
import numpy as np

EPS = 1e-5
GELU_C = np.sqrt(2.0 / np.pi)


def layernorm(x, w, b):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * w + b


def gelu(u):
    return 0.5 * u * (1 + np.tanh(GELU_C * (u + 0.044715 * u ** 3)))


def forward(p):
    """p: the input x, the parameters and the loss weights R (float64). Returns every intermediate."""
    x = p["x"]
    T, C = x.shape
    a = layernorm(x, p["ln1_w"], p["ln1_b"])             # (T, C)
    q, k, v = a @ p["Wq"], a @ p["Wk"], a @ p["Wv"]      # (T, C) each: one head of size C
    att = (q @ k.T) / np.sqrt(C)                         # (T, T)
    future = np.triu(np.ones((T, T), dtype=bool), k=1)
    e = np.exp(np.where(future, -np.inf, att) - att.max(axis=-1, keepdims=True))
    P = e / e.sum(axis=-1, keepdims=True)                # (T, T)  causal softmax
    o = P @ v                                            # (T, C)
    x1 = x + o @ p["Wo"]                                 # (T, C)  the first residual
    m = layernorm(x1, p["ln2_w"], p["ln2_b"])            # (T, C)
    f_pre = m @ p["W1"] + p["b1"]                        # (T, H)
    f = gelu(f_pre)                                      # (T, H)
    out = x1 + f @ p["W2"] + p["b2"]                     # (T, C)  the second residual
    loss = np.sum(out * p["R"])                          # ()
    return dict(a=a, q=q, k=k, v=v, att=att, P=P, o=o, x1=x1, m=m, f_pre=f_pre, f=f, out=out, loss=loss)


def layernorm_backward(dy, x, w):
    """The gradients (dx, dw, db) of y = layernorm(x, w, b) given dy."""
    # TODO-BODY layernorm_backward: your layernorm exercise in one function: return dx, dw, db
    mu = x.mean(axis=-1, keepdims=True)
    rstd = 1 / np.sqrt(((x - mu) ** 2).mean(axis=-1, keepdims=True) + EPS)
    xhat = (x - mu) * rstd
    dxhat = dy * w
    dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    return dx, (dy * xhat).sum(axis=0), dy.sum(axis=0)
    # END


def gelu_backward(dy, u):
    """The gradient du of y = gelu(u) given dy."""
    # TODO-BODY gelu_backward: your gelu exercise in one function: return du
    th = np.tanh(GELU_C * (u + 0.044715 * u ** 3))
    return dy * (0.5 * (1 + th) + 0.5 * u * (1 - th ** 2) * GELU_C * (1 + 3 * 0.044715 * u ** 2))
    # END


def softmax_backward(dP, P):
    """The gradient of the scores given dP, for P = softmax(scores) along the last axis."""
    # TODO-BODY softmax_backward: from your attention exercise: return dscores
    return P * (dP - (P * dP).sum(axis=-1, keepdims=True))
    # END


def backward(p, c):
    """p: the inputs, c: every intermediate of forward(p). Returns the gradients of the loss."""
    x, R = p["x"], p["R"]
    T, C = x.shape
    # TODO dout (T, C): loss = sum(out * R)
    dout = R
    # END
    # TODO db2 (C,): out = x1 + f @ W2 + b2, b2 broadcast over the T rows
    db2 = dout.sum(axis=0)
    # END
    # TODO dW2 (H, C): out = x1 + f @ W2 + b2
    dW2 = c["f"].T @ dout
    # END
    # TODO df (T, H): out = x1 + f @ W2 + b2
    df = dout @ p["W2"].T
    # END
    # TODO df_pre (T, H): f = gelu(f_pre)
    df_pre = gelu_backward(df, c["f_pre"])
    # END
    # TODO db1 (H,): f_pre = m @ W1 + b1
    db1 = df_pre.sum(axis=0)
    # END
    # TODO dW1 (C, H): f_pre = m @ W1 + b1
    dW1 = c["m"].T @ df_pre
    # END
    # TODO dm (T, C): f_pre = m @ W1 + b1
    dm = df_pre @ p["W1"].T
    # END
    # CHECK dln2_w (C,): m = layernorm(x1, ln2_w, ln2_b): from your layernorm_backward
    # CHECK dln2_b (C,): m = layernorm(x1, ln2_w, ln2_b): from your layernorm_backward
    dm_x1, dln2_w, dln2_b = layernorm_backward(dm, c["x1"], p["ln2_w"])   # given: x1's share through m too
    # TODO dx1 (T, C): x1 feeds the residual (out = x1 + ...) and the feed-forward (through m): they add
    dx1 = dout + dm_x1
    # END
    # TODO dWo (C, C): x1 = x + o @ Wo
    dWo = c["o"].T @ dx1
    # END
    # TODO do (T, C): x1 = x + o @ Wo
    do = dx1 @ p["Wo"].T
    # END
    # TODO dP (T, T): o = P @ v
    dP = do @ c["v"].T
    # END
    # TODO dv (T, C): o = P @ v
    dv = c["P"].T @ do
    # END
    # TODO datt (T, T): P = softmax of att with the future masked (masked scores get no gradient)
    datt = softmax_backward(dP, c["P"])
    # END
    # TODO dq (T, C): att = q @ k.T / sqrt(C)
    dq = datt @ c["k"] / np.sqrt(C)
    # END
    # TODO dk (T, C): att = q @ k.T / sqrt(C)
    dk = datt.T @ c["q"] / np.sqrt(C)
    # END
    # TODO dWq (C, C): q = a @ Wq
    dWq = c["a"].T @ dq
    # END
    # TODO dWk (C, C): k = a @ Wk
    dWk = c["a"].T @ dk
    # END
    # TODO dWv (C, C): v = a @ Wv
    dWv = c["a"].T @ dv
    # END
    # TODO da (T, C): a feeds q, k and v: three gradients that add
    da = dq @ p["Wq"].T + dk @ p["Wk"].T + dv @ p["Wv"].T
    # END
    # CHECK dln1_w (C,): a = layernorm(x, ln1_w, ln1_b): from your layernorm_backward
    # CHECK dln1_b (C,): a = layernorm(x, ln1_w, ln1_b): from your layernorm_backward
    da_x, dln1_w, dln1_b = layernorm_backward(da, x, p["ln1_w"])         # given: x's share through a too
    # TODO dx (T, C): x feeds the residual (x1 = x + ...) and the attention (through a): they add
    dx = dx1 + da_x
    # END
    return dict(dout=dout, db2=db2, dW2=dW2, df=df, df_pre=df_pre, db1=db1, dW1=dW1, dm=dm, dln2_w=dln2_w,
                dln2_b=dln2_b, dx1=dx1, dWo=dWo, do=do, dP=dP, dv=dv, datt=datt, dq=dq, dk=dk, dWq=dWq,
                dWk=dWk, dWv=dWv, da=da, dln1_w=dln1_w, dln1_b=dln1_b, dx=dx)
