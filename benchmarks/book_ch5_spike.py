"""The spike of `minigpt train --config book-124m` on The Verdict (docs/book.md, "The chapter 5 table"),
checked against PyTorch: train the chapter 5 command's run for 19 steps, then take step 20 from its
checkpoint in minigpt and in PyTorch (transformers' GPT2LMHeadModel with the same weights, torch.optim.AdamW
with the same moments, the same batch; dropout off on both sides) and compare the updated weights and the
validation loss after the step. Then show what the step did: the probability the model puts on tokens
that never occur in the text, before and after.

    python benchmarks/book_ch5_spike.py [--work DIR] [--step 20]

Needs torch and transformers (the reference) and the shared data (MINIGPT_DATA or ../shared/data); the
19-step run takes about 1.5 minutes on 2 cores and writes a 2 GB checkpoint into --work (default: a
temporary folder, removed at the end).
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", help="folder for the run (kept); default: a temporary folder")
    ap.add_argument("--step", type=int, default=20, help="the step to check (default: 20, the spike's)")
    args = ap.parse_args(argv)
    try:
        import torch
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        print("needs torch and transformers: pip install torch==2.13.0 transformers", file=sys.stderr)
        return 2
    from minigpt.data import dataset_path
    from minigpt.model import GPT
    from minigpt.model.checkpoint import to_hf_name
    from minigpt.optim import AdamW, split_decay_groups
    from minigpt.train import load_checkpoint, pretrain
    from minigpt.train.loop import TrainConfig
    from minigpt.train.run import build_loaders

    torch.set_num_threads(2)
    text_file = dataset_path("the-verdict")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="ch5-spike-"))
    run = work / "run"
    try:
        if not (run / "latest.json").exists():
            # the chapter 5 command of docs/book.md, stopped one step before the step to check
            cfg = TrainConfig(steps=args.step - 1, batch_size=2, lr=4e-4, min_lr=4e-4, warmup=0, grad_clip=0.0,
                              eval_every=5, weight_decay=0.1)
            pretrain(run, text_files=[text_file], config="book-124m", config_overrides={"context_length": 256},
                     tokenizer="gpt2", train_cfg=cfg, progress=False, log=lambda m: None)
        model, opt_state, tok, state = load_checkpoint(run)
        ids = np.asarray(tok.encode(text_file.read_text(encoding="utf-8"), allowed_special="all"), dtype=np.int64)
        train_loader, val_loader = build_loaders(ids, 256, 2, state["val_fraction"], state["loader"]["seed"])
        train_loader.load_state_dict(state["loader"])
        x, y = next(iter(train_loader))  # the batch of the step to check
        vx, vy = next(iter(val_loader))
        before = {n: p.data.copy() for n, p in model.named_parameters()}

        # minigpt: the Trainer's optimizer (matrices decayed, vectors not), dropout off
        cfg = dataclasses.replace(model.config, drop_rate=0.0)
        m = GPT(cfg)
        m.load_state_dict(before)
        opt = AdamW(split_decay_groups(m.named_parameters(), 0.1), lr=4e-4)
        opt.load_state_dict(opt_state)
        m.train()
        loss = m.loss(x, y)
        loss.backward()
        opt.step()
        m.eval()
        ours = {n: p.data.copy() for n, p in m.named_parameters()}
        our_val = float(m.loss(vx, vy).item())

        # PyTorch: the same weights, moments and settings
        V, E = before["out_head"].shape
        hc = GPT2Config(vocab_size=V, n_positions=cfg.context_length, n_embd=E, n_layer=cfg.n_layers, n_head=cfg.n_heads,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False,
                        activation_function="gelu_new", layer_norm_epsilon=cfg.layer_norm_eps)
        tm = GPT2LMHeadModel(hc).float()
        # transformers' name of each minigpt parameter (minigpt's own GPT-2 name table; the head is lm_head)
        hf_names = {n: to_hf_name(n) for n in before}
        names = {(hf if hf == "lm_head.weight" else "transformer." + hf): n for n, hf in hf_names.items()}
        name_of = {id(p): n for n, p in m.named_parameters()}
        index = {name_of[id(p)]: k for k, _, p in opt._params()}  # the optimizer state's parameter numbers
        decay, no_decay = [], []
        with torch.no_grad():
            for tn, p in tm.named_parameters():
                mn = names.get(tn)
                if mn is None:  # GPT-2's q/k/v bias, absent from the book's model: zero and frozen
                    p.zero_()
                    p.requires_grad_(False)
                    continue
                p.copy_(torch.from_numpy(before[mn]))
                (decay if before[mn].ndim >= 2 else no_decay).append((tn, p))
        topt = torch.optim.AdamW([{"params": [p for _, p in decay], "weight_decay": 0.1},
                                  {"params": [p for _, p in no_decay], "weight_decay": 0.0}], lr=4e-4)
        arrays, steps = opt_state["arrays"], opt_state["meta"]["steps"]
        for tn, p in decay + no_decay:
            k = index[names[tn]]
            topt.state[p] = {"step": torch.tensor(float(steps[k])),
                             "exp_avg": torch.from_numpy(arrays[f"state.{k}.exp_avg"].copy()),
                             "exp_avg_sq": torch.from_numpy(arrays[f"state.{k}.exp_avg_sq"].copy())}
        assert len(index) == len(decay) + len(no_decay)

        def torch_loss(a, b):
            logits = tm(torch.from_numpy(np.asarray(a))).logits
            return torch.nn.functional.cross_entropy(logits.reshape(-1, V), torch.from_numpy(np.asarray(b)).reshape(-1))

        tm.train()
        tl = torch_loss(x, y)
        topt.zero_grad()
        tl.backward()
        topt.step()
        tm.eval()
        with torch.no_grad():
            torch_val = float(torch_loss(vx, vy))
        tparams = dict(tm.named_parameters())
        diff = max(float(np.abs(tparams[tn].detach().numpy() - ours[mn]).max()) for tn, mn in names.items())

        seen = np.zeros(V, bool)
        seen[np.unique(ids)] = True

        def absent_mass(weights):
            m.load_state_dict(weights)
            z = m(vx).data.astype(np.float64)
            z -= z.max(-1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(-1, keepdims=True)
            return float(p[..., ~seen].sum(-1).mean())

        print(f"step {args.step} of `minigpt train --config book-124m` on The Verdict, dropout off on both sides")
        print(f"  batch loss before the step: minigpt {float(loss.item()):.6f}, PyTorch {tl.item():.6f}")
        print(f"  validation loss after it:    minigpt {our_val:.4f}, PyTorch {torch_val:.4f}")
        print(f"  largest difference of the updated weights: {diff:.2e}")
        print(f"  tokens of GPT-2's vocabulary in the text: {int(seen.sum()):,} of {V:,}")
        print(f"  probability on tokens absent from the text: {absent_mass(before):.1%} before the step, "
              f"{absent_mass(ours):.1%} after")
        return 0
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
