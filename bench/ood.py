"""How often does a head's domain model call in-domain text out of domain, against far text?

For one head, prints the share of documents flagged out of domain (``in_domain`` false):

* in-domain: held-out documents like the head's training data (the baseline);
* far: documents of other sources, and random-character text;

and each far share as a ratio to the in-domain share in the same process (machines and
samples differ: compare ratios). A good domain model flags about 2 % of the in-domain
documents (its threshold is the 2 % quantile of held-out training scores) and most far ones.

Default (offline, the embedded default model and shipped SAE): extracts
``samples/audit-sample.jsonl`` (300 test-split texts of six sources) plus ``--random``
random-character texts with the head's extraction settings. The head's own source (its
card's ``data.source``: ``insults`` for ``safety``, ``spamassassin`` for ``quality``,
``newsgroups`` for ``topic``) is the in-domain set; the other sources and the random text
are far. A head trained with a domain model is scored with it; a head without one (the
heads shipped before domain models) gets one fitted here, on half of its source's
sample documents (the other half is the in-domain baseline), so the numbers then
describe the method on a small reference set, not the shipped head.

``--synthetic`` runs in seconds without any model: sparse "documents" of three clusters
over half of 512 features fit the domain model; fresh documents of the same clusters are
in domain, documents over the other half of the features (and half-and-half mixes) are far.

Usage::

    .venv/bin/python bench/ood.py --synthetic
    .venv/bin/python bench/ood.py [--head safety] [--random 40] [--out runs/bench-ood]
"""

from __future__ import annotations

import argparse
import json
import random
import string
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from auditor.heads.domain import DomainModel, fit_domain

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "samples" / "audit-sample.jsonl"


def _line(name: str, flagged: np.ndarray, base: float) -> str:
    share = float(np.mean(flagged)) if len(flagged) else float("nan")
    ratio = share / base if base > 0 else float("inf")
    return f"{name:<24} {len(flagged):>6} {share:>9.1%} {ratio:>12.1f}x"


def _print(title: str, model: DomainModel, sets: dict[str, Any], in_name: str) -> None:
    print(title)
    print(f"threshold {model.threshold:.4f} (k={model.settings['k']}, "
          f"{model.settings['n_ref']} refs, pooling {model.pooling}); held-out in-domain share "
          f"at fit: {model.settings['heldout']['in_domain_share']:.1%}")
    flagged = {name: ~model.in_domain(model.score(X)) for name, X in sets.items()}
    base = float(np.mean(flagged[in_name]))
    base_ratio = max(base, 1.0 / max(len(flagged[in_name]), 1))  # no division by 0
    print(f"{'set':<24} {'docs':>6} {'flagged':>9} {'vs in-domain':>13}")
    for name, f in flagged.items():
        line = _line(name, f, base_ratio)
        print(line if name != in_name else line[:-13] + f"{'baseline':>13}")
    if base == 0:
        print(f"(no in-domain document flagged: ratios are against 1/{len(flagged[in_name])})")


def _cluster(n: int, lo: int, hi: int, rng: np.random.Generator,
             protos: list[np.ndarray]) -> sp.csr_matrix:
    X = np.zeros((n, 512))
    for i in range(n):
        active = protos[i % len(protos)]
        keep = active[rng.random(len(active)) < 0.8]
        X[i, keep] = rng.gamma(2.0, 1.0, size=len(keep))
        noise = rng.integers(lo, hi, size=4)
        X[i, noise] += rng.gamma(1.0, 0.5, size=4)
    return sp.csr_matrix(X)


def synthetic(seed: int = 0) -> None:
    """The seconds-long model-free run."""
    rng = np.random.default_rng(seed)
    near_protos = [rng.choice(256, size=24, replace=False) for _ in range(3)]
    far_protos = [256 + rng.choice(256, size=24, replace=False) for _ in range(3)]
    mix_protos = [np.concatenate([p[:12], q[:12]]) for p, q in zip(near_protos, far_protos,
                                                                     strict=True)]
    train = _cluster(1000, 0, 256, rng, near_protos)
    t0 = time.perf_counter()
    model = fit_domain(train, [str(i % 3) for i in range(1000)], pooling="max",
                       random_state=seed)
    fit_s = time.perf_counter() - t0
    sets = {"in-domain (held out)": _cluster(500, 0, 256, rng, near_protos),
            "far (other features)": _cluster(500, 256, 512, rng, far_protos),
            "half-and-half mix": _cluster(500, 0, 512, rng, mix_protos)}
    _print(f"synthetic: 1000 training documents, fit in {fit_s:.2f} s", model, sets,
           "in-domain (held out)")


def _random_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    chars = string.ascii_letters + string.digits + string.punctuation + "      "
    return ["".join(rng.choice(chars) for _ in range(rng.randint(80, 400))) for _ in range(n)]


def real(head_name: str, *, n_random: int, out: Path, seed: int) -> None:
    """The default run: the embedded model on the bundled sample plus random text."""
    from auditor.heads import load_heads
    from auditor.jobs.classify import ClassifyOptions, classify_extract_options
    from auditor.jobs.extract import ExtractOptions, run_extract

    head = load_heads([head_name])[0]
    source = (head.card.get("data") or {}).get("source")
    rows = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    rows += [{"id": f"random-{i}", "source": "random characters", "label": "random",
              "text": t} for i, t in enumerate(_random_texts(n_random, seed))]
    if source not in {r["source"] for r in rows}:
        raise SystemExit(f"head {head_name!r}: its data source {source!r} is not in "
                         f"{SAMPLE.name}")
    out.mkdir(parents=True, exist_ok=True)
    data = out / "ood-input.jsonl"
    data.write_text("".join(json.dumps({k: r[k] for k in ("id", "text")}) + "\n"
                            for r in rows))
    options = ClassifyOptions(heads=(head_name,), extract=ExtractOptions(id_column="id"))
    t0 = time.perf_counter()
    run_extract(str(data), out=out / "store", options=classify_extract_options(options, [head]))
    print(f"extracted {len(rows)} documents in {time.perf_counter() - t0:.0f} s")
    inputs = head.read(out / "store")
    by_id = {r["id"]: r for r in rows}
    src = np.array([by_id[d]["source"] for d in inputs.doc_ids], dtype=object)
    lab = np.array([str(by_id[d]["label"]) for d in inputs.doc_ids], dtype=object)
    X = sp.csr_matrix(inputs.activations)
    own = np.flatnonzero(src == source)
    model = head.domain
    if model is None:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(own)
        fit_rows, own = perm[: len(perm) // 2], perm[len(perm) // 2:]
        pooling = head.config.pooling if head.config.representation == "sae" else "mean"
        model = fit_domain(X[fit_rows], lab[fit_rows].tolist(), pooling=pooling,
                           random_state=seed)
        title = (f"head {head_name!r} has no domain model: fitted here on {len(fit_rows)} "
                 f"{source} sample documents")
    else:
        title = f"head {head_name!r}: its own domain model"
    sets = {f"in-domain: {source}": X[own]}
    for other in dict.fromkeys(src.tolist()):
        if other != source:
            sets[f"far: {other}"] = X[np.flatnonzero(src == other)]
    _print(title, model, sets, f"in-domain: {source}")


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and run."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synthetic", action="store_true", help="model-free, seconds")
    ap.add_argument("--head", default="safety", help="installed head name or directory")
    ap.add_argument("--random", type=int, default=40, help="random-character texts")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-ood")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.synthetic:
        synthetic(args.seed)
    else:
        real(args.head, n_random=args.random, out=args.out, seed=args.seed)


if __name__ == "__main__":
    main()
