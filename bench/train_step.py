"""How fast is one SAE training step, float32 against bfloat16 encoder product?

Times ``--steps`` optimizer steps of the TopK trainer (:mod:`auditor.sae.train`) at the
shipped SAE's shape (d_in 640, width 10,240, k 64, 4,096 tokens a step) on random
activations, alternating the two ``encoder_dtype`` settings in this one process (so a
noisy machine slows both alike), and prints seconds per step, tokens/s and the ratio to
float32. The FVU after the timed steps is printed too: both settings must descend alike.

Usage::

    .venv/bin/python bench/train_step.py [--steps 10] [--rounds 2] [--batch-size 4096]
"""

from __future__ import annotations

import argparse
import time

import torch

from auditor.sae.train import TrainConfig, _Trainer

DTYPES = ("float32", "bfloat16")


def time_steps(dtype: str, x: torch.Tensor, *, width: int, k: int,
               steps: int) -> tuple[float, float]:
    """Seconds per step (after two warm-up steps) and the last step's FVU."""
    cfg = TrainConfig(layer=9, d_sae=width, k=k, batch_size=x.shape[0],
                      n_tokens=x.shape[0] * (steps + 2), encoder_dtype=dtype)
    trainer = _Trainer(d_in=x.shape[1], config=cfg)
    trainer.initialise(x[:4096])
    for _ in range(2):
        trainer.step(x, lr=1e-4)
    start = time.perf_counter()
    for _ in range(steps):
        metrics = trainer.step(x, lr=1e-4)
    return (time.perf_counter() - start) / steps, metrics["fvu"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--width", type=int, default=10240)
    ap.add_argument("--k", type=int, default=64)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    # Sparse combinations of dictionary directions plus noise: an SAE-shaped input.
    dirs = torch.randn(4 * args.width, 640, generator=g) / 25
    idx = torch.randint(0, dirs.shape[0], (args.batch_size, 48), generator=g)
    x = (torch.rand(args.batch_size, 48, 1, generator=g) * dirs[idx]).sum(1)
    x += 0.05 * torch.randn(x.shape, generator=g)
    seconds: dict[str, list[float]] = {d: [] for d in DTYPES}
    fvu: dict[str, float] = {}
    for _ in range(args.rounds):
        for dtype in DTYPES:
            s, f = time_steps(dtype, x, width=args.width, k=args.k, steps=args.steps)
            seconds[dtype].append(s)
            fvu[dtype] = f
    base = min(seconds["float32"])
    print(f"threads {torch.get_num_threads()}, batch {args.batch_size}, width {args.width}, "
          f"k {args.k}, best of {args.rounds} rounds of {args.steps} steps")
    print("| encoder dtype | s/step | tokens/s | speed vs float32 | FVU after |")
    print("|---|---|---|---|---|")
    for dtype in DTYPES:
        s = min(seconds[dtype])
        print(f"| {dtype} | {s:.3f} | {args.batch_size / s:,.0f} | {base / s:.2f}x "
              f"| {fvu[dtype]:.4f} |")


if __name__ == "__main__":
    main()
