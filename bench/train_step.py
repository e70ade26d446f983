"""How fast is one SAE training step: float32 TopK against a bfloat16 encoder product and
against BatchTopK?

Times ``--steps`` optimizer steps of the trainer (:mod:`auditor.sae.trainer`) at the
shipped SAE's shape (d_in 640, width 10,240, k 64, 4,096 tokens a step) on random
activations, alternating the settings in this one process (so a noisy machine slows all
alike), and prints seconds per step, tokens/s and the ratio to float32 TopK. The FVU
after the timed steps is printed too: the settings must descend alike. Whether the CPU
multiplies bfloat16 natively is printed first: where it does not, bfloat16 is slower.

Usage::

    .venv/bin/python bench/train_step.py [--steps 10] [--rounds 2] [--batch-size 4096]
                                         [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from auditor.lm import native_bfloat16, resolve_device_dtype
from auditor.sae import TrainConfig
from auditor.sae.trainer import Trainer

#: (activation, encoder dtype); the first is the baseline.
VARIANTS = (("topk", "float32"), ("topk", "bfloat16"), ("batchtopk", "float32"))


def time_steps(variant: tuple[str, str], x: torch.Tensor, *, width: int, k: int,
               steps: int, device: torch.device) -> tuple[float, float]:
    """Seconds per step (after two warm-up steps) and the last step's FVU."""
    activation, dtype = variant
    cfg = TrainConfig(layer=9, d_sae=width, k=k, batch_size=x.shape[0],
                      n_tokens=x.shape[0] * (steps + 2), encoder_dtype=dtype,
                      activation=activation)
    trainer = Trainer(d_in=x.shape[1], config=cfg, device=device)
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
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 …")
    args = ap.parse_args()
    device, _ = resolve_device_dtype(args.device, "float32")
    g = torch.Generator().manual_seed(0)
    # Sparse combinations of dictionary directions plus noise: an SAE-shaped input.
    dirs = torch.randn(4 * args.width, 640, generator=g) / 25
    idx = torch.randint(0, dirs.shape[0], (args.batch_size, 48), generator=g)
    x = (torch.rand(args.batch_size, 48, 1, generator=g) * dirs[idx]).sum(1)
    x += 0.05 * torch.randn(x.shape, generator=g)
    x = x.to(device)
    seconds: dict[tuple[str, str], list[float]] = {v: [] for v in VARIANTS}
    fvu: dict[tuple[str, str], float] = {}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            # A step ends in float(loss), which waits for the device: the timing is honest.
            s, f = time_steps(variant, x, width=args.width, k=args.k, steps=args.steps,
                              device=device)
            seconds[variant].append(s)
            fvu[variant] = f
    base = min(seconds[VARIANTS[0]])
    print(f"device {device}, native bfloat16: {native_bfloat16(device)}; threads "
          f"{torch.get_num_threads()}, batch {args.batch_size}, width {args.width}, k {args.k}, "
          f"best of {args.rounds} rounds of {args.steps} steps")
    print("| activation | encoder dtype | s/step | tokens/s | speed vs float32 TopK "
          "| FVU after |")
    print("|---|---|---|---|---|---|")
    for variant in VARIANTS:
        s = min(seconds[variant])
        print(f"| {variant[0]} | {variant[1]} | {s:.3f} | {args.batch_size / s:,.0f} "
              f"| {base / s:.2f}x | {fvu[variant]:.4f} |")


if __name__ == "__main__":
    main()
