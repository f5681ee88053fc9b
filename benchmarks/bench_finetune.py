"""Time of one finetuning step (forward, loss, backward, AdamW) of a model preset with random weights, and
the time of a whole instruction finetuning run extrapolated from it.

    python benchmarks/bench_finetune.py --config gpt2-medium --batch 8 --seq-len 128 --train all
    python benchmarks/bench_finetune.py --config gpt2-medium --batch 8 --seq-len 128 --train lora

The estimate for `minigpt finetune instruct` on instruction-data.json is
``epochs * floor(935 / batch) * seconds_per_step`` (validation and the test answers come on top).
Weights are random: the step time does not depend on their values, so nothing is downloaded.
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="gpt2-medium")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--train", default="all", help="all, last-blocks:K, head or lora")
    ap.add_argument("--steps", type=int, default=2, help="timed steps (after one untimed warm-up step)")
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--train-entries", type=int, default=935)
    a = ap.parse_args(argv)

    import numpy as np

    from minigpt.model import GPT, GPTConfig
    from minigpt.optim import AdamW, split_decay_groups
    from minigpt.train.finetune import apply_train_mode

    t0 = time.perf_counter()
    model = GPT(GPTConfig.preset(a.config, drop_rate=0.0))
    n_train = apply_train_mode(model, a.train)
    opt = AdamW(split_decay_groups(model.named_parameters(), 0.1), lr=1e-5)
    print(f"{a.config}: {model.num_parameters():,} parameters, {n_train:,} trainable (--train {a.train}); "
          f"built in {time.perf_counter() - t0:.1f} s; load average {os.getloadavg()[0]:.1f}")
    rng = np.random.default_rng(0)
    times = []
    for i in range(a.steps + 1):
        x = rng.integers(0, model.config.vocab_size, (a.batch, a.seq_len))
        y = rng.integers(0, model.config.vocab_size, (a.batch, a.seq_len))
        t = time.perf_counter()
        loss = model.loss(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        dt = time.perf_counter() - t
        print(f"step {i}{' (warm-up)' if i == 0 else ''}: {dt:.1f} s")
        if i:
            times.append(dt)
    per = float(np.median(times))
    steps = int(a.epochs * (a.train_entries // a.batch))
    print(f"median {per:.1f} s/step at batch {a.batch} x {a.seq_len}; {a.epochs:g} epochs of {a.train_entries} "
          f"entries = {steps} steps = about {steps * per / 3600:.1f} h")


if __name__ == "__main__":
    main()
