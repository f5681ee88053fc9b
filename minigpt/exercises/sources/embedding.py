"""Exercise `embedding`: back-propagate into a token embedding that is tied to the output head.

A table W (V tokens, C features) turns token ids into vectors (emb = W[ids]), a position vector P is added,
a tanh mixes them (the stand-in for the transformer), and the same W reads the logits out (logits =
h @ W.T, GPT-2's tied head); the loss is the cross-entropy against the next tokens. W is used twice, so
its gradient is the sum of the head's part and the embedding's part; and an id that occurs several times
collects the gradient of every occurrence (a scatter-add). Fill in `backward`: `dX` is the derivative of
the loss with respect to the forward's `X` and has the shape of `X`.
Check your answers with:  minigpt exercises check embedding embedding.py
"""
import numpy as np


def forward(p):
    """p: the ids, the table W, the positions P and the targets. Returns every intermediate by name."""
    ids, W, P, targets = p["ids"], p["W"], p["P"], p["targets"]
    N = ids.shape[0]
    emb = W[ids]                                        # (N, C)  row ids[i] of W for position i
    x = emb + P                                         # (N, C)
    h = np.tanh(x)                                      # (N, C)
    logits = h @ W.T                                    # (N, V)  the tied head: the same W
    z = logits - logits.max(axis=1, keepdims=True)
    logprobs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -logprobs[np.arange(N), targets].mean()      # ()
    return dict(emb=emb, x=x, h=h, logits=logits, loss=loss)


def backward(p, c):
    """p: the inputs, c: every intermediate of forward(p). Returns the gradients of the loss."""
    ids, W, targets = p["ids"], p["W"], p["targets"]
    N = ids.shape[0]
    # TODO dlogits (N, V): cross-entropy's gradient, (softmax(logits) - onehot) / N
    probs = np.exp(c["logits"] - c["logits"].max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    dlogits = probs.copy()
    dlogits[np.arange(N), targets] -= 1
    dlogits /= N
    # END
    # TODO dh (N, C): logits = h @ W.T
    dh = dlogits @ W
    # END
    # TODO dx (N, C): h = tanh(x)
    dx = dh * (1 - c["h"] ** 2)
    # END
    # TODO dP (N, C): x = emb + P
    dP = dx
    # END
    # TODO demb (N, C): x = emb + P
    demb = dx
    # END
    # TODO dW (V, C): the head's part (logits = h @ W.T) plus the embedding's, a scatter-add of demb's rows
    dW = dlogits.T @ c["h"]
    np.add.at(dW, ids, demb)
    # END
    return dict(dlogits=dlogits, dh=dh, dx=dx, dP=dP, demb=demb, dW=dW)
