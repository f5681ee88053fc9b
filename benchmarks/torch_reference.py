"""The PyTorch side of the benchmarks: a plain GPT-2-style model in eager PyTorch, and HF ``generate``.

The model is what a careful PyTorch user writes for GPT-2 (nanoGPT-style): token + position embeddings,
pre-LayerNorm blocks with one fused q|k|v ``Linear``, causal attention, a 4x MLP with tanh-GELU, a final
LayerNorm and an LM head tied to the token embedding; every Linear has a bias, dropout is 0. Attention is
either the manual composition (scores, a causal mask, softmax, weighted sum) or
``F.scaled_dot_product_attention(is_causal=True)``.

    python benchmarks/torch_reference.py --config small --attn sdpa   # torch alone
    python benchmarks/torch_reference.py --generate                   # HF generate, cache on and off

The side-by-side comparison with minigpt is ``bench_train.py`` / ``bench_generate.py``.
"""
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (CONFIGS, set_torch_threads, summarize, time_steps, train_flops_per_token,  # noqa: E402
                    wait_for_idle)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class CausalSelfAttention(nn.Module):
    def __init__(self, d, n_heads, attn="manual", context_length=1024):
        super().__init__()
        if d % n_heads:
            raise ValueError(f"emb_dim {d} is not divisible by n_heads {n_heads}")
        if attn not in ("manual", "sdpa"):
            raise ValueError(f"attn must be 'manual' or 'sdpa', not {attn!r}")
        self.n_heads, self.attn = n_heads, attn
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        mask = torch.triu(torch.ones(context_length, context_length, dtype=torch.bool), diagonal=1)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        hd = C // self.n_heads
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, hd).transpose(1, 2) for t in (q, k, v))
        if self.attn == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))
            att = att.masked_fill(self.mask[:T, :T], float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))


class Block(nn.Module):
    def __init__(self, d, n_heads, attn, context_length):
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, n_heads, attn, context_length)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.fc_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class TorchGPT(nn.Module):
    def __init__(self, vocab_size, context_length, emb_dim, n_layers, n_heads, attn="manual", **_):
        super().__init__()
        self.context_length = context_length
        self.wte = nn.Embedding(vocab_size, emb_dim)
        self.wpe = nn.Embedding(context_length, emb_dim)
        self.blocks = nn.ModuleList(Block(emb_dim, n_heads, attn, context_length) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(emb_dim)
        self.lm_head = nn.Linear(emb_dim, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx):
        T = idx.shape[1]
        if T > self.context_length:
            raise ValueError(f"sequence length {T} exceeds context_length {self.context_length}")
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.lm_head(self.ln_f(x))


def get_config(cfg):
    """A config dict from a name of ``CONFIGS`` or a dict (missing training keys filled from 'tiny')."""
    if isinstance(cfg, str):
        if cfg not in CONFIGS:
            raise ValueError(f"unknown config {cfg!r}; choose from {', '.join(CONFIGS)}")
        return dict(CONFIGS[cfg], name=cfg)
    out = dict(CONFIGS["tiny"], name="custom")
    out.update(cfg)
    out.setdefault("seq_len", out["context_length"])
    return out


def make_torch_trainer(cfg, batch=None, attn="manual", seed=0):
    """Build the model and AdamW; return ``(step, model)`` where ``step()`` runs one training step on a fresh
    random batch and returns nothing (the last loss is kept in ``step.loss``)."""
    cfg = get_config(cfg)
    B = cfg["batch"] if batch is None else batch
    T, V = cfg["seq_len"], cfg["vocab_size"]
    torch.manual_seed(seed)
    model = TorchGPT(attn=attn, **cfg)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    gen = torch.Generator().manual_seed(seed)

    def step():
        x = torch.randint(0, V, (B, T), generator=gen)
        y = torch.randint(0, V, (B, T), generator=gen)
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, V), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step.loss = loss.item()

    step.loss = None
    step.tokens = B * T
    return step, model


def torch_train_tokens_per_s(cfg, batch=None, steps=None, warmup=None, attn="manual", threads=2, seed=0):
    """Tokens/s of an eager PyTorch training step: forward, mean cross-entropy, backward, AdamW step.

    AdamW is ``torch.optim.AdamW(lr=1e-4, weight_decay=0.1)`` with its default (foreach) implementation.
    Each step runs on a fresh random batch (B, seq_len) of ids; the figure uses the median step time of
    ``steps`` steps after ``warmup`` untimed ones. Returns a dict with ``tokens_per_s``, ``step_s``
    (median), ``step_min_s``, ``gflops`` (model FLOPs, see ``common.train_flops_per_token``), ``loss``
    (last step) and the settings used.
    """
    cfg = get_config(cfg)
    B = cfg["batch"] if batch is None else batch
    steps = cfg["steps"] if steps is None else steps
    warmup = cfg["warmup"] if warmup is None else warmup
    if threads is not None:
        set_torch_threads(threads)
    step, model = make_torch_trainer(cfg, B, attn, seed)
    times = time_steps(step, steps, warmup)
    res = summarize(times, step.tokens)
    res.update(config=cfg["name"], attn=attn, batch=B, seq_len=cfg["seq_len"], threads=torch.get_num_threads(),
               loss=step.loss, params=sum(p.numel() for p in model.parameters()),
               gflops=res["tokens_per_s"] * train_flops_per_token(cfg) / 1e9)
    return res


def hf_model(cfg, seed=0):
    """A random-initialised transformers ``GPT2LMHeadModel`` of the given shape (float32, eval mode)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = get_config(cfg)
    torch.manual_seed(seed)
    hf_cfg = GPT2Config(vocab_size=cfg["vocab_size"], n_positions=cfg["context_length"], n_embd=cfg["emb_dim"],
                        n_layer=cfg["n_layers"], n_head=cfg["n_heads"], activation_function="gelu_new",
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5)
    model = GPT2LMHeadModel(hf_cfg)
    model.eval()
    return model


def hf_generate(model, prompt, new_tokens, use_cache=True):
    """Greedy generation of exactly ``new_tokens`` tokens after ``prompt`` ((1, P) int64 tensor)."""
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, use_cache=use_cache,
                             pad_token_id=0, num_beams=1)
    return out[0, prompt.shape[1]:]


def hf_generate_tokens_per_s(cfg="gpt2-small", prompt_len=16, new_tokens=32, use_cache=True, repeats=3,
                             threads=2, seed=0, model=None, prompt=None, return_tokens=False):
    """New tokens/s of HF ``generate`` (greedy, ``do_sample=False``) on a random model of shape ``cfg``.

    The time covers the whole call (prompt + ``new_tokens`` new tokens), median of ``repeats`` calls after
    one untimed warm-up call. Pass ``model``/``prompt`` to reuse them; with ``return_tokens`` the result is
    ``(tokens_per_s, generated_ids)``.
    """
    import time
    import statistics

    if threads is not None:
        set_torch_threads(threads)
    if model is None:
        model = hf_model(cfg, seed)
    if prompt is None:
        g = torch.Generator().manual_seed(seed)
        prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len), generator=g)
    hf_generate(model, prompt, 2, use_cache)  # warm-up
    times, toks = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        toks = hf_generate(model, prompt, new_tokens, use_cache)
        times.append(time.perf_counter() - t0)
    rate = new_tokens / statistics.median(times)
    return (rate, toks.numpy()) if return_tokens else rate


def main(argv=None):
    import argparse

    ap = argparse.ArgumentParser(description="PyTorch reference figures alone (see bench_train.py for the "
                                             "side-by-side comparison with minigpt).")
    ap.add_argument("--config", default="all", choices=[*CONFIGS, "all"])
    ap.add_argument("--attn", default="both", choices=["manual", "sdpa", "both"])
    ap.add_argument("--steps", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--generate", action="store_true", help="measure HF generate (gpt2-small shape) instead")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="SECONDS",
                    help="before each measurement, wait up to this long for the CPUs to be idle")
    args = ap.parse_args(argv)
    set_torch_threads(args.threads)
    if args.generate:
        for use_cache in (True, False):
            wait_for_idle(args.wait_idle)
            r = hf_generate_tokens_per_s("gpt2-small", 16, 32, use_cache, threads=args.threads)
            print(f"HF generate gpt2-small, prompt 16, 32 new, cache {'on ' if use_cache else 'off'}: "
                  f"{r:.1f} new tokens/s")
        return
    names = list(CONFIGS) if args.config == "all" else [args.config]
    attns = ["manual", "sdpa"] if args.attn == "both" else [args.attn]
    for name in names:
        for attn in attns:
            wait_for_idle(args.wait_idle)
            r = torch_train_tokens_per_s(name, steps=args.steps, attn=attn, threads=args.threads)
            print(f"{name:10s} {attn:6s} {r['tokens_per_s']:10,.0f} tokens/s  step {r['step_s'] * 1e3:8.1f} ms  "
                  f"(min {r['step_min_s'] * 1e3:.1f})  {r['gflops']:.0f} GFLOP/s  loss {r['loss']:.3f}")


if __name__ == "__main__":
    main()
