"""What does training from the model (``sae train --stream``) cost against a disk cache?

On the embedded default model, one process times the same SAE training run (the shipped
SAE's shape, width 10,240, k 64, continued from it with ``--init`` so the FVU is
meaningful) fed two ways over the same corpus:

* cache: collect the corpus's layer-9 activations once (timed), then train ``--epochs``
  passes over them;
* stream: train the same steps from a :class:`auditor.sae.ModelStream`, which runs the model
  over each chunk as it needs it (every pass computes the activations again).

Prints seconds, training tokens/s and the ratio to the cached run, the last-step FVU of each,
how many tokens the stream had the model compute (a chunk is whole groups of documents and
a chunk's last part-batch is dropped, so it computes a little more than one pass per pass),
and the memory each needs for activations (the cache's training split is held in memory;
the stream holds one chunk). ``training.json`` of each run is under ``--out``.

Usage::

    .venv/bin/python bench/stream.py [--corpus samples/audit-sample.jsonl] [--epochs 1 2]
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import torch

from auditor.defaults import default_model_dir, default_sae_path
from auditor.jobs.sae import SAECollectOptions, read_corpus_texts, run_sae_collect
from auditor.lm import HookPoint, load_model
from auditor.sae import (
    ModelStream,
    StreamSettings,
    TrainConfig,
    load_sae,
    open_cache,
    train_sae,
)

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=REPO / "samples" / "audit-sample.jsonl")
    ap.add_argument("--epochs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--chunk-tokens", type=int, default=StreamSettings().chunk_tokens)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-stream"))
    args = ap.parse_args()
    sae_path = default_sae_path()
    assert sae_path is not None, "the default SAE is not installed"
    init = load_sae(sae_path)
    layer = init.cfg.hook_layer
    assert layer is not None
    lm = load_model(default_model_dir(progress=False), device="cpu")

    shutil.rmtree(args.out / "cache", ignore_errors=True)  # time a whole collection
    started = time.perf_counter()
    run_sae_collect(args.corpus, out=args.out / "cache", model=lm,
                    options=SAECollectOptions(layers=(layer,), max_length=args.max_length,
                                              overwrite=True, device="cpu"))
    cache = open_cache(args.out / "cache")
    collect_seconds = time.perf_counter() - started
    train_tokens = cache.tensors(HookPoint(layer), split="train")["acts"].shape[0]
    d_model = cache.d_model

    rows = []
    for epochs in args.epochs:
        steps = max(1, epochs * train_tokens // args.batch_size)
        config = TrainConfig(layer=layer, d_sae=init.cfg.d_sae, k=init.cfg.k or 64,
                             batch_size=args.batch_size, n_tokens=steps * args.batch_size,
                             lr=1e-4, warmup_steps=1, checkpoint_every=0)
        started = time.perf_counter()
        cached = train_sae(cache, config=config, out=args.out / f"cache-{epochs}", init=init,
                           resume=False, device="cpu")
        cached_seconds = collect_seconds + time.perf_counter() - started
        stream = ModelStream(lambda: read_corpus_texts(args.corpus), lm=lm,
                             hook=HookPoint(layer),
                             settings=StreamSettings(chunk_tokens=args.chunk_tokens,
                                                     max_length=args.max_length),
                             heldout_fraction=config.heldout_fraction, seed=config.seed)
        started = time.perf_counter()
        streamed = train_sae(stream, config=config, out=args.out / f"stream-{epochs}",
                             init=init, resume=False, device="cpu")
        stream_seconds = time.perf_counter() - started
        tokens = steps * args.batch_size
        rows.append((epochs, steps, cached_seconds, stream_seconds, cached.fvu, streamed.fvu,
                     stream.totals["tokens"], stream.totals["forward_seconds"]))
        print(f"epochs {epochs}: {tokens:,} training tokens; cache (collect + train) "
              f"{cached_seconds:.1f} s, stream {stream_seconds:.1f} s", flush=True)

    mb = d_model * 2 / 2**20
    print(f"\ncorpus {args.corpus.name}: {train_tokens:,} training tokens at layer {layer}; "
          f"collection {collect_seconds:.1f} s; torch threads {torch.get_num_threads()}")
    print(f"activation memory: cache {train_tokens * mb:.0f} MB (its training split), "
          f"stream at most one chunk: {args.chunk_tokens:,} tokens, "
          f"{args.chunk_tokens * mb:.0f} MB (fewer where the run needs fewer)")
    print("| passes | steps | cache: collect + train s | stream s | stream / cache time "
          "| tokens the stream computed (forward s) | FVU cache | FVU stream |")
    print("|---|---|---|---|---|---|---|---|")
    for epochs, steps, c_s, s_s, c_fvu, s_fvu, computed, forward_s in rows:
        print(f"| {epochs} | {steps} | {c_s:.1f} | {s_s:.1f} | {s_s / c_s:.2f}x "
              f"| {computed:,} ({forward_s:.0f}) | {c_fvu:.4f} | {s_fvu:.4f} |")


if __name__ == "__main__":
    main()
