"""Ship a trained SAE run into models/sae/NAME: fp16 weights, training record, card.

    .venv/bin/python scripts/ship_sae.py RUN_DIR --name gemma-3-270m-l9-topk \
        --corpus-card data/sae-corpus.card.json [--layers runs/layers/layers.json]

A run chain continued on a second corpus (``build_corpora.py --exclude``) passes both cards,
in order: ``--corpus-card data/sae-corpus.card.json --corpus-card data/sae-corpus-2.card.json``.

Then evaluate the *shipped* artifact (so the card describes exactly what ships):

    .venv/bin/auditor sae eval models/sae/NAME --cache ACTS --corpus samples/audit-sample.jsonl
    .venv/bin/python scripts/ship_sae.py --card-only models/sae/NAME ...  # re-render CARD.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from auditor.jobs.sae import write_card
from auditor.sae import load_sae


def _corpus_file(index: int) -> str:
    return "corpus.card.json" if index == 0 else f"corpus-{index + 1}.card.json"


def _corpora_section(cards: list[dict[str, Any]]) -> str:
    if len(cards) == 1:
        return _corpus_section(cards[0])
    parts = []
    for i, card in enumerate(cards, 1):
        head = f"**Corpus {i}** (`{card['corpus']}`)"
        if card.get("excluded_documents"):
            head += (f": shares no document with the corpora before it "
                     f"({card['excluded_documents']:,} documents excluded)")
        parts += [head + ".", "", _corpus_section(card), ""]
    return "\n".join(parts).rstrip()


def _corpus_section(card: dict[str, Any]) -> str:
    lines = [f"{card['documents']:,} documents, {card['chars']:,} characters, train splits "
             f"only, chunks of {card['min_chars']}–{card['max_chars']} characters, at most "
             f"{card['cap_per_source']:,} per source, seed {card['seed']}. "
             f"Built by `scripts/build_corpora.py` from package registries; never committed.",
             "", "| source | registry / package | documents | characters | licence |",
             "|---|---|---|---|---|"]
    for name, s in card["sources"].items():
        pkgs = ", ".join(f"{p} {s['versions'].get(p, '')}".strip() for p in s["packages"])
        lines.append(f"| {name} | {s['registry']}: {pkgs} | {s['documents']:,} | "
                     f"{s['chars']:,} | {s['licence']} |")
    return "\n".join(lines)


def _layers_section(record: dict[str, Any]) -> str:
    st = record["settings"]
    lines = [f"Equal budget per layer: TopK width {st['width']}, k {st['k']}, "
             f"{st['train_tokens']:,} training tokens from the same activation cache; probe "
             f"data = {st['docs']} documents per task (never in the SAE mix), max-pooled "
             f"features over {st['max_length']} tokens, log1p + MaxAbs + logistic regression, "
             "5-fold CV (`bench/layers.py`).", "",
             "| layer | FVU | FVU w/o top direction | dead | insults AUROC | spam AUROC | "
             "topic accuracy | topic macro-AUROC |", "|---|---|---|---|---|---|---|---|"]
    for layer, r in record["layers"].items():
        lines.append(
            f"| {layer} | {r['fvu']:.4f} | {r['fvu_without_top_direction']:.4f} | "
            f"{r['dead_frac']:.2%} | {r['insults']['auroc']:.3f} | {r['spam']['auroc']:.3f} | "
            f"{r['topic']['accuracy']:.3f} | {r['topic']['macro_auroc']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", type=Path, help="training run dir, or the shipped dir with --card-only")
    ap.add_argument("--name", default="gemma-3-270m-l9-topk")
    ap.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[1] / "models")
    ap.add_argument("--corpus-card", type=Path, action="append", required=True,
                    help="corpus card of the training text; repeat for each corpus, in order")
    ap.add_argument("--layers", type=Path, default=None)
    ap.add_argument("--notes", type=Path, default=None, help="Markdown appended as 'Notes'")
    ap.add_argument("--model-name", default=None,
                    help="model name recorded in the SAE config (default: keep the run's)")
    ap.add_argument("--card-only", action="store_true")
    args = ap.parse_args()

    dest = args.run if args.card_only else args.models / "sae" / args.name
    if not args.card_only:
        sae = load_sae(args.run)
        changes: dict[str, Any] = {"dtype": "float16"}  # fp16 on disk: < 30 MB
        if args.model_name:
            changes["model_name"] = args.model_name
        sae.cfg = dataclasses.replace(sae.cfg, **changes)
        dest.mkdir(parents=True, exist_ok=True)
        sae.save(dest)
        training = json.loads((args.run / "training.json").read_text())
        (dest / "training.json").write_text(json.dumps(training, indent=2) + "\n")
        for old in dest.glob("corpus-*.card.json"):
            old.unlink()
        for i, card_path in enumerate(args.corpus_card):
            shutil.copy(card_path, dest / _corpus_file(i))
        if args.layers:
            shutil.copy(args.layers, dest / "layers.json")
    cards, i = [], 0
    while (dest / _corpus_file(i)).exists():
        cards.append(json.loads((dest / _corpus_file(i)).read_text()))
        i += 1
    extra = {"Training data": _corpora_section(cards)}
    if (dest / "layers.json").exists():
        extra["Which layer"] = _layers_section(json.loads((dest / "layers.json").read_text()))
    if args.notes:
        extra["Notes"] = args.notes.read_text()
    print(write_card(dest, extra=extra))


if __name__ == "__main__":
    main()
