"""What does ``sae eval --corpus`` (the ΔCE step) cost, chunked against full logits?

On the embedded default model and SAE, each mode runs in its own process (so peak memory
is its own) on the same documents of ``--corpus``:

* chunked: auditor's path — the model runs with ``logits_to_keep=1`` and the final hidden
  states at the target positions go through the output embedding 256 positions at a time;
* full: the model's full ``[batch, length, vocab]`` logits per forward (the old path).

Prints seconds, target tokens/s, peak RSS of each process and the ratios to the full
path, and checks that the two give the same losses.

Usage::

    .venv/bin/python bench/ce.py [--docs 8] [--max-length 256] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
import auditor.sae.evaluate as ev
from auditor.defaults import default_model_dir, default_sae_path
from auditor.jobs.sae import read_corpus_texts
from auditor.sae import delta_ce, load_sae

mode, corpus, docs, max_length, batch_size = sys.argv[1:6]
torch.set_num_threads(1)
if mode == "full":
    ev._final_norm = lambda model: None
model_dir = default_model_dir(progress=False)
model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(model_dir)
sae = load_sae(default_sae_path())
texts = list(read_corpus_texts(corpus, limit=int(docs)))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t = time.perf_counter()
m = delta_ce(sae, model, tokenizer, texts, max_length=int(max_length),
             batch_size=int(batch_size))
s = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"s": s, "targets": m.n_targets, "base": base, "peak": peak,
                  "ce": [m.ce_clean, m.ce_sae, m.ce_zero]}))
"""


def _run(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode, str(args.corpus),
                          str(args.docs), str(args.max_length), str(args.batch_size)],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=REPO / "samples" / "audit-sample.jsonl")
    ap.add_argument("--docs", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    args = ap.parse_args()
    results = {mode: _run(mode, args) for mode in ("full", "chunked")}
    full = results["full"]
    print(f"{args.docs} documents, windows of {args.max_length}, batches of "
          f"{args.batch_size}: {full['targets']:,} target tokens")
    print(f"{'path':<8} {'s':>7} {'tokens/s':>9} {'peak RSS':>9} {'growth':>8} {'x full':>7}")
    for mode, r in results.items():
        growth = (r["peak"] - r["base"]) / 1e9
        print(f"{mode:<8} {r['s']:7.1f} {r['targets'] / r['s']:9.1f} {r['peak'] / 1e9:8.2f}G "
              f"{growth:7.2f}G {r['s'] / full['s']:7.2f}")
    same = all(abs(a - b) <= 1e-4 * max(1.0, abs(a))
               for a, b in zip(full["ce"], results["chunked"]["ce"], strict=True))
    print(f"losses (clean, sae, zero) agree: {same} {results['chunked']['ce']}")


if __name__ == "__main__":
    main()
