"""Chapter 5, *Pretraining on unlabeled data*: the loss, the training loop, decoding, GPT-2's weights.

The functions keep the book's names, arguments and printed lines; underneath they run minigpt's own
pieces: the loss is ``F.cross_entropy`` over the flattened logits (the same value and gradients as the
fused ``model.loss``), the optimizer is minigpt's ``AdamW`` (``torch.optim.AdamW``'s update to float32
rounding), decoding is minigpt's ``generate``.

How minigpt's native API differs, and why:

- ``minigpt train`` (``Trainer``) counts optimizer steps, not epochs, evaluates on a fixed set of batches,
  writes checkpoints, a log and plots, and resumes; ``train_model_simple`` is the book's epoch loop with
  nothing saved, for following the chapter.
- Native ``generate(model, idx, max_new_tokens, temperature=1.0, ...)`` samples by default and keeps
  generating ``eos_id`` for a sequence that has finished (so batches stay rectangular); the book's
  ``generate`` is greedy by default and stops before appending ``eos_id``. Sampling draws from minigpt's
  generator (``manual_seed``), so sampled texts differ from the book's (torch's random numbers differ).
- The book's ``device`` arguments are accepted and ignored: minigpt runs on the CPU.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as _st_save

from .. import functional as F
from ..download import fetch
from ..errors import MiniGPTError
from ..io import atomic_write_bytes
from ..model.checkpoint import read_pretrained
from ..model.generation import generate as _generate
from ..random import get_rng
from ..tensor import Tensor, no_grad
from .ch04 import _ids, generate_text_simple

__all__ = ["generate", "text_to_token_ids", "token_ids_to_text", "calc_loss_batch", "calc_loss_loader",
           "train_model_simple", "evaluate_model", "generate_and_print_sample", "plot_losses",
           "load_gpt2_params", "download_and_load_gpt2", "load_weights_into_gpt", "save", "load"]


def text_to_token_ids(text: str, tokenizer) -> Tensor:
    """``text`` -> an int64 Tensor of ids, shape (1, tokens) (``<|endoftext|>`` allowed), the book's batch of
    one; ``.to(device)``, ``.squeeze(0)``, ``.tolist()`` and ``.shape`` work on it as on the book's tensor."""
    return Tensor(np.asarray(tokenizer.encode(text, allowed_special={"<|endoftext|>"}), dtype=np.int64)[None, :])


def token_ids_to_text(token_ids, tokenizer) -> str:
    """Ids of shape (1, tokens) (or (tokens,)) -> text."""
    a = token_ids.data if isinstance(token_ids, Tensor) else np.asarray(token_ids)
    if a.ndim == 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 1:
        raise MiniGPTError(f"token_ids_to_text expects one sequence, shape (1, tokens), got {a.shape}")
    return tokenizer.decode(a.tolist())


def calc_loss_batch(input_batch, target_batch, model, device=None):
    """Mean cross-entropy of one batch, a scalar Tensor (``loss.backward()``, ``loss.item()``).

    Targets of shape (batch, tokens) (chapter 5): next-token loss over every position, the book's
    ``cross_entropy(logits.flatten(0, 1), target_batch.flatten())``. Targets of shape (batch,) (chapter 6):
    the class loss of the logits at the LAST position, as the book's chapter 6 version. (minigpt's
    native ``GPTClassifier`` reads the last REAL token of each row instead, so padding never changes a
    prediction.) Targets equal to -100 are ignored (chapter 7's padding).
    """
    y = np.asarray(target_batch)
    logits = model(input_batch)  # (B, T, V)
    if y.ndim == 1:
        return F.cross_entropy(logits[:, -1, :], y)  # (B, n_classes) vs (B,)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))  # (B*T, V) vs (B*T,)


def calc_loss_loader(data_loader, model, device=None, num_batches=None) -> float:
    """Mean of ``calc_loss_batch`` over the first ``num_batches`` batches (all when None; NaN for an
    empty loader), as the book: each batch counts once, whatever its size."""
    if len(data_loader) == 0:
        return float("nan")
    n = len(data_loader) if num_batches is None else min(num_batches, len(data_loader))
    total = 0.0
    with no_grad():
        for i, (input_batch, target_batch) in enumerate(data_loader):
            if i >= n:
                break
            total += calc_loss_batch(input_batch, target_batch, model, device).item()
    return total / n


def evaluate_model(model, train_loader, val_loader, device, eval_iter):
    """(train loss, validation loss) over the first ``eval_iter`` batches of each, in eval mode."""
    model.eval()
    try:
        train_loss = calc_loss_loader(train_loader, model, device, num_batches=eval_iter)
        val_loss = calc_loss_loader(val_loader, model, device, num_batches=eval_iter)
    finally:
        model.train()
    return train_loss, val_loss


def generate_and_print_sample(model, tokenizer, device, start_context):
    """Print 50 greedy tokens after ``start_context`` on one line (newlines shown as spaces)."""
    model.eval()
    context_size = model.pos_emb.weight.shape[0]
    encoded = text_to_token_ids(start_context, tokenizer)
    token_ids = generate_text_simple(model=model, idx=encoded, max_new_tokens=50, context_size=context_size)
    print(token_ids_to_text(token_ids, tokenizer).replace("\n", " "))
    model.train()


def train_model_simple(model, train_loader, val_loader, optimizer, device, num_epochs, eval_freq, eval_iter,
                       start_context, tokenizer):
    """The book's training loop: ``num_epochs`` passes over ``train_loader``; every ``eval_freq`` steps the
    losses over ``eval_iter`` batches are printed and recorded; after each epoch a greedy sample of
    ``start_context`` is printed. Returns ``(train_losses, val_losses, track_tokens_seen)``."""
    train_losses, val_losses, track_tokens_seen = [], [], []
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        model.train()
        for input_batch, target_batch in train_loader:
            optimizer.zero_grad()
            loss = calc_loss_batch(input_batch, target_batch, model, device)
            loss.backward()
            optimizer.step()
            tokens_seen += np.asarray(input_batch).size
            global_step += 1
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                track_tokens_seen.append(tokens_seen)
                print(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
        generate_and_print_sample(model, tokenizer, device, start_context)
    return train_losses, val_losses, track_tokens_seen


def plot_losses(epochs_seen, tokens_seen, train_losses, val_losses):
    """Training and validation loss against epochs (bottom axis) and tokens seen (top axis); shows the
    figure and returns it. (The book also writes ``loss-plot.pdf`` into the working folder; here nothing is
    written unless you call ``fig.savefig(...)``.) Needs matplotlib."""
    try:
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise MiniGPTError("plot_losses needs matplotlib: pip install matplotlib") from None
    fig, ax1 = plt.subplots(figsize=(5, 3))
    ax1.plot(epochs_seen, train_losses, label="Training loss")
    ax1.plot(epochs_seen, val_losses, linestyle="-.", label="Validation loss")
    ax1.set_xlabel("Epochs")
    ax1.set_ylabel("Loss")
    ax1.legend(loc="upper right")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2 = ax1.twiny()
    ax2.plot(tokens_seen, train_losses, alpha=0)  # invisible: aligns the top axis's ticks
    ax2.set_xlabel("Tokens seen")
    fig.tight_layout()
    plt.show()
    return fig


def generate(model, idx, max_new_tokens: int, context_size: int, temperature: float = 0.0, top_k=None,
             eos_id=None) -> np.ndarray:
    """The book's decoding: greedy when ``temperature`` is 0 (the default), else softmax sampling of the
    logits divided by ``temperature`` after keeping the ``top_k`` largest; stops early, WITHOUT appending
    it, when the next token is ``eos_id`` (one sequence at a time, as the book's loop). Runs minigpt's
    ``generate`` (KV cache; the seed drawn from minigpt's generator, so ``manual_seed`` repeats a sample).
    """
    ids = _ids(idx)
    if eos_id is not None and ids.shape[0] != 1:
        raise MiniGPTError("generate: the book's eos_id stop is for one sequence at a time; for batches use "
                           "minigpt.model.generate (it keeps the end-of-text id in finished rows)")
    if context_size < model.config.context_length:  # a window shorter than the model's: the plain loop
        if temperature == 0.0 and eos_id is None:
            return generate_text_simple(model, ids, max_new_tokens, context_size)
        raise MiniGPTError(f"generate: a context_size ({context_size}) below the model's context length "
                           f"({model.config.context_length}) is supported for greedy decoding without eos_id only")
    seed = int(get_rng().integers(2**63))
    out = _generate(model, ids, max_new_tokens, temperature=float(temperature), top_k=top_k, eos_id=eos_id, seed=seed)
    if eos_id is not None and out.shape[1] > ids.shape[1] and out[0, -1] == eos_id:
        out = out[:, :-1]  # the book stops before appending the end-of-sequence id
    return out


# --- saving and loading (section 5.4) ------------------------------------------------------------------
_SAVE_KEY = "minigpt.book.save"  # the safetensors metadata entry that holds the saved object's structure


def save(obj, f) -> None:
    """The book's ``torch.save(obj, f)`` for what chapter 5 saves: a state dict (``model.state_dict()``), an
    optimizer's state dict, or a dict of those (``{"model_state_dict": ..., "optimizer_state_dict": ...}``).

    The file is a safetensors file, whatever its name (``"model.pth"`` works): every array is a tensor of
    it, everything else (nested dicts, lists, numbers, strings, None: the optimizer's settings) is JSON in
    its header. Nothing is pickled, so a file from elsewhere can never run code when loaded; PyTorch's
    ``torch.load`` cannot read these files (safetensors' ``load_file`` reads the arrays). The file is
    written atomically (a crash leaves the old file or the new one, never half of one) and replaced if it
    exists, as ``torch.save`` does. Tensors are saved as their arrays; tuples come back as lists.
    """
    tensors: dict = {}

    def encode(x, path):
        if isinstance(x, Tensor):
            x = x.data
        if isinstance(x, np.ndarray):
            if x.dtype == object or x.dtype.kind not in "biuf":
                raise MiniGPTError(f"save: {'/'.join(path) or 'the object'} is an array of dtype {x.dtype}; "
                                   "only numeric arrays can be saved")
            name = "/".join(path) or "tensor"
            while name in tensors:
                name += "'"
            tensors[name] = np.ascontiguousarray(x)
            return {"__tensor__": name}
        if isinstance(x, dict):
            bad = next((k for k in x if not isinstance(k, str)), None)
            if bad is not None:
                raise MiniGPTError(f"save: dict keys must be strings, got {bad!r} in {'/'.join(path) or 'the object'}")
            return {"__dict__": [[k, encode(v, path + [k])] for k, v in x.items()]}
        if isinstance(x, (list, tuple)):
            return [encode(v, path + [str(i)]) for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, str)):
            return x
        if isinstance(x, (int, float, np.integer, np.floating)):
            v = x.item() if isinstance(x, np.generic) else x
            if isinstance(v, float) and not math.isfinite(v):
                raise MiniGPTError(f"save: {'/'.join(path)} is {v}; only finite numbers can be saved")
            return v
        hint = "; save its .state_dict()" if hasattr(x, "state_dict") else ""
        raise MiniGPTError(f"save: cannot save {'/'.join(path) or 'the object'} of type {type(x).__name__} "
                           f"(state dicts: arrays, dicts, lists, numbers, strings){hint}")

    structure = encode(obj, [])
    atomic_write_bytes(f, _st_save(tensors, metadata={_SAVE_KEY: json.dumps(structure)}))


def load(f, map_location=None, weights_only: bool = True):
    """The book's ``torch.load(f, map_location=..., weights_only=True)`` for a file ``save`` wrote: the same
    structure back, arrays as NumPy arrays (``model.load_state_dict(load("model.pth"))``). A plain
    safetensors file gives its ``{name: array}``. ``map_location`` is accepted and ignored (the CPU);
    ``weights_only`` too: nothing is ever unpickled, so a PyTorch ``.pth`` file (a pickle) is refused with
    an error that says so."""
    path = Path(f)
    if not path.is_file():
        raise MiniGPTError(f"load: {path} not found")
    try:  # one pass over the file: its header's metadata and every tensor
        with safe_open(str(path), "np") as sf:
            meta = sf.metadata() or {}
            arrays = {name: sf.get_tensor(name) for name in sf.keys()}
    except (SafetensorError, OSError, ValueError, TypeError, RuntimeError) as e:
        with open(path, "rb") as fh:
            head = fh.read(2)
        if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save's zip, or a bare pickle
            raise MiniGPTError(f"load: {path} is a PyTorch pickle file; minigpt never unpickles (it could run "
                               "code). Save with minigpt.book.save, or convert it to safetensors in PyTorch") from None
        raise MiniGPTError(f"load: {path} is not a file minigpt.book.save wrote nor a safetensors file ({e})") from None
    if _SAVE_KEY not in meta:
        return arrays
    try:
        structure = json.loads(meta[_SAVE_KEY])
    except ValueError:
        raise MiniGPTError(f"load: {path} has a damaged {_SAVE_KEY} header entry") from None

    def decode(x):
        if isinstance(x, list):
            return [decode(v) for v in x]
        if isinstance(x, dict):
            if set(x) == {"__tensor__"} and x["__tensor__"] in arrays:
                return arrays[x["__tensor__"]]
            if set(x) == {"__dict__"} and isinstance(x["__dict__"], list) and all(
                    isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], str) for kv in x["__dict__"]):
                return {k: decode(v) for k, v in x["__dict__"]}
            raise MiniGPTError(f"load: {path} has a damaged structure (an entry {str(x)[:60]!r})")
        return x

    return decode(structure)


# --- GPT-2's weights -----------------------------------------------------------------------------------
def load_gpt2_params(model_dir):
    """``(settings, params)`` of a GPT-2 folder (``config.json`` + ``model.safetensors``, as
    ``minigpt download gpt2`` installs it), in the layout the book's ``download_and_load_gpt2`` returns:
    ``settings`` = {"n_vocab", "n_ctx", "n_embd", "n_head", "n_layer"}, ``params`` = {"wte", "wpe", "g",
    "b", "blocks": [{"attn": {"c_attn": {"w", "b"}, "c_proj": ...}, "mlp": {"c_fc", "c_proj"}, "ln_1":
    {"g", "b"}, "ln_2": ...}, ...]}. Nothing is downloaded: minigpt needs no network; fetch the files with
    ``minigpt download gpt2`` first."""
    cfg, state = read_pretrained(model_dir)
    settings = {"n_vocab": cfg.vocab_size, "n_ctx": cfg.context_length, "n_embd": cfg.emb_dim,
                "n_head": cfg.n_heads, "n_layer": cfg.n_layers}
    params = {"wte": state["tok_emb.weight"], "wpe": state["pos_emb.weight"], "g": state["final_norm.weight"],
              "b": state["final_norm.bias"], "blocks": []}
    for i in range(cfg.n_layers):
        p = f"blocks.{i}."

        def wb(name, p=p):
            return {"w": state[p + name + ".weight"], "b": state.get(p + name + ".bias")}

        params["blocks"].append({
            "attn": {"c_attn": wb("attn.qkv"), "c_proj": wb("attn.proj")},
            "mlp": {"c_fc": wb("ff.fc"), "c_proj": wb("ff.proj")},
            "ln_1": {"g": state[p + "norm1.weight"], "b": state[p + "norm1.bias"]},
            "ln_2": {"g": state[p + "norm2.weight"], "b": state[p + "norm2.bias"]},
        })
    return settings, params


GPT2_SIZES = ("124M", "355M", "774M", "1558M")


def download_and_load_gpt2(model_size: str, models_dir, no_verify: bool = False) -> tuple:
    """The book's ``download_and_load_gpt2(model_size="124M", models_dir="gpt2")``: ``(settings, params)`` of
    GPT-2 at ``model_size`` (124M, 355M, 774M or 1558M), as ``load_gpt2_params`` returns them.

    The files are minigpt's GPT-2 files (Hugging Face's ``config.json`` + ``model.safetensors``), not
    OpenAI's TensorFlow checkpoint, so TensorFlow is not needed. They are read from ``models_dir/model_size``
    when that folder holds them; otherwise from minigpt's cache, where ``minigpt download gpt2 --size SIZE``
    installs them: that folder is installed first if it is missing (a checksummed download, as ``minigpt
    download``; nothing is fetched when the files are there). The manifest records no sha256 for the 355M,
    774M and 1558M files, so those are refused unless ``no_verify=True`` (``minigpt download``'s
    ``--no-verify``) accepts them unchecked.
    """
    if model_size not in GPT2_SIZES:
        raise MiniGPTError(f"download_and_load_gpt2: model_size must be one of {', '.join(GPT2_SIZES)}, got "
                           f"{model_size!r}")
    local = None if models_dir is None else Path(models_dir).expanduser() / model_size
    if local is None or not ((local / "config.json").is_file() and (local / "model.safetensors").is_file()):
        local = fetch("gpt2", size=model_size, no_verify=no_verify)
    return load_gpt2_params(local)


def load_weights_into_gpt(gpt, params) -> None:
    """Copy GPT-2's weights (``params`` from ``load_gpt2_params``, the book's layout) into ``gpt`` in place,
    every shape checked; the output head gets a copy of the token embedding (GPT-2 ties them), as the
    book's function does. GPT-2's matrices are stored (in, out), as minigpt's layers keep them, so nothing is
    transposed or split (the book transposes each into PyTorch's (out, in) and splits the fused q/k/v).
    The model must have ``qkv_bias=True`` (GPT-2 has q/k/v biases) and GPT-2's sizes; a mismatch names the
    parameter."""
    if not isinstance(params, dict) or "blocks" not in params:
        raise MiniGPTError("load_weights_into_gpt: params must be the dict load_gpt2_params returns (its second "
                           "value)")
    state = {"tok_emb.weight": params["wte"], "pos_emb.weight": params["wpe"], "final_norm.weight": params["g"],
             "final_norm.bias": params["b"]}
    for i, blk in enumerate(params["blocks"]):
        p = f"blocks.{i}."
        for name, src in (("attn.qkv", blk["attn"]["c_attn"]), ("attn.proj", blk["attn"]["c_proj"]),
                          ("ff.fc", blk["mlp"]["c_fc"]), ("ff.proj", blk["mlp"]["c_proj"])):
            state[p + name + ".weight"] = src["w"]
            if src.get("b") is not None:
                state[p + name + ".bias"] = src["b"]
        for name, src in (("norm1", blk["ln_1"]), ("norm2", blk["ln_2"])):
            state[p + name + ".weight"], state[p + name + ".bias"] = src["g"], src["b"]
    if isinstance(gpt.out_head, Tensor):  # an untied head (the book's model): GPT-2's tied table, copied
        state["out_head"] = params["wte"]
    if len(params["blocks"]) != len(gpt.blocks):
        raise MiniGPTError(f"load_weights_into_gpt: the weights have {len(params['blocks'])} blocks, the model "
                           f"{len(gpt.blocks)} (n_layers)")
    own = dict(gpt.named_parameters())
    if any(n.endswith("attn.qkv.bias") for n in state) and not any(n.endswith("attn.qkv.bias") for n in own):
        raise MiniGPTError("load_weights_into_gpt: GPT-2 has q/k/v biases but the model was built with "
                           "qkv_bias=False; build it with the config's qkv_bias set to True, as the book does")
    gpt.load_state_dict(state)
