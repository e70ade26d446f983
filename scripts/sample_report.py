"""Print a short report of a feature store whose input had a ``source`` column.

Per source: documents, tokens, active features per document, outlier tokens excluded,
and the features that most distinguish it (mean max-activation in the source minus the
mean over the other documents), with how often each fires there and elsewhere. The full
HTML/JSON/Markdown reports with feature labels and explanations are a later issue.

    .venv/bin/python scripts/sample_report.py out/audit-sample
"""

from __future__ import annotations

import sys

import numpy as np

from auditor.store import read_features


def main(path: str) -> None:
    fm = read_features(path, pooling="max", columns=["source", "n_tokens"])
    assert fm.extra is not None
    X = fm.X.tocsc()
    sources = np.array(fm.extra["source"].to_list())
    tokens = np.array(fm.extra["n_tokens"].to_list())
    meta = fm.metadata
    sae = next(iter(meta["saes"].values()))
    print(f"\n== report: {path}")
    print(f"model {meta['model']['id']} (weights {str(meta['model']['weights_sha256'])[:12]}…), "
          f"SAE layer {sae['layer']} width {sae['d_sae']} k {sae['k']} "
          f"(sha256 {sae['sha256'][:12]}…), pooling {', '.join(meta['pooling'])}")
    print(f"{X.shape[0]} documents, {tokens.sum():,} tokens, "
          f"{np.diff(fm.X.indptr).mean():.0f} active features per document\n")
    print(f"{'source':<14}{'docs':>6}{'tokens':>9}  distinctive features "
          "(feature: Δ mean max-activation, fires here / elsewhere)")
    for src in sorted(set(sources)):
        inside = sources == src
        mean_in = np.asarray(X[inside].mean(axis=0)).ravel()
        mean_out = np.asarray(X[~inside].mean(axis=0)).ravel()
        top = np.argsort(mean_out - mean_in)[:4]
        fire_in = np.asarray((X[inside] > 0).mean(axis=0)).ravel()
        fire_out = np.asarray((X[~inside] > 0).mean(axis=0)).ravel()
        feats = ", ".join(f"f{f}: +{mean_in[f] - mean_out[f]:.2f} "
                          f"({fire_in[f]:.0%}/{fire_out[f]:.0%})" for f in top)
        print(f"{src:<14}{inside.sum():>6}{tokens[inside].sum():>9,}  {feats}")


if __name__ == "__main__":
    main(sys.argv[1])
