"""Which layer should the default SAE read? Compare candidate layers on equal budgets.

For each candidate layer, on the same activation cache (one collection pass captured all of
them) this trains a quick TopK SAE with the same width, k and token budget, scores it on
held-out documents (FVU, FVU without the top principal direction, dead latents), then
extracts max-pooled features of labelled probe data with all the quick SAEs in one forward
pass and fits a logistic regression per data set (5-fold CV; AUROC for binary tasks,
accuracy and macro AUROC for topics).

Probe data (never in the SAE training mix): insults (train split), SpamAssassin (test
split), 20 Newsgroups coarse topics (test split), a stratified sample of ``--docs`` each.

Usage::

    .venv/bin/python bench/layers.py --cache /path/to/activations --layers 4 6 9 \\
        --out runs/layers            # prints a Markdown table, writes layers.json
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler

from auditor.corpora import load as load_corpus
from auditor.extract import ExtractConfig, extract_features
from auditor.io import Document
from auditor.lm import load_model
from auditor.sae import TrainConfig, evaluate_sae, load_sae, open_cache, train_sae
from auditor.store import read_features

TASKS = {  # name: (source, split, label field)
    "insults": ("insults", "train", "label"),
    "spam": ("spamassassin", "test", "label"),
    "topic": ("newsgroups", "test", "label"),
}


def _sample(source: str, split: str, field: str, n: int, seed: int) -> list[dict[str, Any]]:
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in load_corpus(source, split=split):
        if doc.get(field) is not None and len(doc["text"].strip()) >= 10:
            by_label[str(doc[field])].append(doc)
    rng = random.Random(seed)
    total = sum(len(v) for v in by_label.values())
    out: list[dict[str, Any]] = []
    for docs in by_label.values():  # stratified: keep the label shares
        rng.shuffle(docs)
        out += docs[: max(5, round(n * len(docs) / total))]
    rng.shuffle(out)
    return out


def _probe_scores(X: Any, y: np.ndarray, seed: int) -> dict[str, float]:
    clf = make_pipeline(FunctionTransformer(lambda m: m.log1p(), accept_sparse=True),
                        MaxAbsScaler(), LogisticRegression(C=1.0, max_iter=2000))
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    proba = cross_val_predict(clf, X, y, cv=cv, method="predict_proba")
    classes = np.unique(y)
    if len(classes) == 2:
        return {"auroc": float(roc_auc_score(y == classes[1], proba[:, 1]))}
    return {"accuracy": float(accuracy_score(y, classes[proba.argmax(1)])),
            "macro_auroc": float(roc_auc_score(y, proba, multi_class="ovr", average="macro"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", required=True, help="activation cache holding all layers")
    ap.add_argument("--model", help="model dir (default: the embedded default)")
    ap.add_argument("--layers", type=int, nargs="+", default=[4, 6, 9])
    ap.add_argument("--width", type=int, default=5120)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--train-tokens", type=int, default=600_000)
    ap.add_argument("--lr", type=float, default=1e-3, help="short runs need more than the "
                    "width-scaled default tuned for billion-token runs")
    ap.add_argument("--docs", type=int, default=800, help="probe documents per task")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cache = open_cache(args.cache)
    rows: dict[int, dict[str, Any]] = {}

    for layer in args.layers:  # 1. equal-budget quick SAEs
        run = out / f"layer{layer}"
        start = time.perf_counter()
        cfg = TrainConfig(layer=layer, d_sae=args.width, k=args.k, n_tokens=args.train_tokens,
                          warmup_steps=20, checkpoint_every=10_000, seed=args.seed,
                          lr=args.lr)
        result = train_sae(cache, config=cfg, out=run, progress=True)
        metrics = evaluate_sae(result.sae, cache, hook=f"layer{layer}.resid_post")
        rows[layer] = {"train_minutes": round((time.perf_counter() - start) / 60, 1),
                       "fvu": metrics.fvu,
                       "fvu_without_top_direction": metrics.fvu_without_top_direction,
                       "top_direction_variance": metrics.top_direction_variance,
                       "dead_frac": metrics.dead_frac, "l0": metrics.l0}
        print(f"layer {layer}: {rows[layer]}", flush=True)

    # 2. pooled features of the probe data, all layers in one pass
    from auditor.defaults import default_model_dir

    lm = load_model(args.model or default_model_dir(), device="cpu")
    saes = {f"layer{layer}": load_sae(out / f"layer{layer}") for layer in args.layers}
    for task, (source, split, field) in TASKS.items():
        docs = _sample(source, split, field, args.docs, args.seed)
        store = out / f"features-{task}"
        extract_features(
            [Document(row=i, doc_id=str(i), text=d["text"], extra={}) for i, d in
             enumerate(docs)],
            lm=lm, saes=saes, out=store, overwrite=True,
            config=ExtractConfig(poolings=("max",), max_length=args.max_length,
                                 shard_size=10_000))
        y = np.array([str(d[field]) for d in docs])
        for layer in args.layers:
            X = read_features(store, sae=f"layer{layer}", pooling="max").X
            rows[layer][task] = _probe_scores(X, y, args.seed)
            print(f"layer {layer} {task}: {rows[layer][task]}", flush=True)

    (out / "layers.json").write_text(json.dumps(
        {"settings": vars(args), "layers": rows}, indent=2) + "\n")
    head = ("| layer | FVU | FVU w/o top dir. | dead | insults AUROC | spam AUROC | "
            "topic acc. | topic macro-AUROC |")
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for layer, r in rows.items():
        print(f"| {layer} | {r['fvu']:.4f} | {r['fvu_without_top_direction']:.4f} | "
              f"{r['dead_frac']:.2%} | {r['insults']['auroc']:.3f} | {r['spam']['auroc']:.3f} | "
              f"{r['topic']['accuracy']:.3f} | {r['topic']['macro_auroc']:.3f} |")


if __name__ == "__main__":
    torch.set_grad_enabled(True)
    main()
