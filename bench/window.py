"""Which context window should the default heads use? Accuracy against tokens/s.

For each task (SpamAssassin spam, 20 Newsgroups coarse topics — the long-document tasks;
comments are short enough that the window does not matter), one stratified sample of
``--docs`` training documents is extracted with the default model + SAE under each
setting (128-token windows, the first 1 / 2 / 4 of them per document), timed in this
process, and scored by 5-fold CV of the SAE-feature head (``sae-max-log1p``) and the
raw-activation baseline on the same folds. Prints a Markdown table with tokens/s relative to
the 1-window setting and writes ``window.json``.

Usage::

    .venv/bin/python bench/window.py [--docs 600] [--windows 1 2 4] [--out runs/window]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from auditor.corpora import load as load_corpus
from auditor.extract import ExtractConfig
from auditor.heads import cross_validate_candidates, load_split
from auditor.jobs import ExtractOptions, run_extract

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from build_heads import stratified_sample

TASKS = {"quality": "spamassassin", "topic": "newsgroups"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=600)
    ap.add_argument("--windows", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--out", type=Path, default=Path("runs/window"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for task, source in TASKS.items():
        docs = stratified_sample(list(load_corpus(source, split="train")), args.docs, seed=1,
                                 key="label")
        data = args.out / f"{task}.jsonl"
        data.write_text("".join(json.dumps({"id": d["id"], "text": d["text"],
                                            "label": d["label"]}) + "\n" for d in docs))
        for n in args.windows:
            config = ExtractConfig(poolings=("max", "mean"), max_length=args.max_length,
                                   max_windows=n, raw_mean=True)
            store = args.out / f"{task}-w{n}.store"
            options = ExtractOptions(id_column="id", passthrough=("label",),
                                     overwrite=True).with_config(config.to_dict())
            summary = run_extract(str(data), out=store, options=options).summary
            seconds = summary["seconds"]  # the extraction itself, without loading the model
            split = load_split(store, "label")
            cv = cross_validate_candidates(split, candidates=("sae-max-log1p", "raw"),
                                           baseline=False)
            row = {"task": task, "windows": n, "tokens": summary["tokens"], "seconds": seconds,
                   "tokens_per_s": summary["tokens"] / seconds,
                   "docs_per_s": summary["docs"] / seconds,
                   "sae_macro_f1": cv["sae-max-log1p"]["macro_f1"],
                   "raw_macro_f1": cv["raw"]["macro_f1"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / "window.json").write_text(json.dumps(rows, indent=2))
    print("\n| task | windows × 128 | tokens | docs/s (vs 1 window) | SAE macro-F1 | "
          "raw macro-F1 |\n|---|---|---|---|---|---|")
    for r in rows:
        base = next(b for b in rows if b["task"] == r["task"] and b["windows"] == args.windows[0])
        print(f"| {r['task']} | {r['windows']} | {r['tokens']:,} | {r['docs_per_s']:.2f} "
              f"({r['docs_per_s'] / base['docs_per_s']:.2f}×) | {r['sae_macro_f1']:.3f} | "
              f"{r['raw_macro_f1']:.3f} |")


if __name__ == "__main__":
    main()
