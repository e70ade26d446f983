#!/usr/bin/env python3
"""Mutation spot check: plant small bugs in numerical code and check the tests catch them.

Each mutant replaces one exact piece of text in one source file (refused unless the old
text occurs exactly once), runs only the tests named for it in a subprocess, and puts the
file back (its bytes and modification time, checked by sha256) whatever happens. A mutant
is *killed* when those tests fail and *survives* when they pass; a survivor means the tests
let that bug through. Before the mutants, the named tests run once on the untouched code
(a "kill" by tests that fail anyway means nothing).

No dependency beyond the standard library and the project's own pytest. Run from anywhere:

    python scripts/mutants.py              # all mutants; exit 1 if any survived
    python scripts/mutants.py --list       # the mutants, their files and tests
    python scripts/mutants.py --only platt-slope --only pooling-max

A change to numerical code finishes with this: add a mutant for the new code (the bug you
would most fear there), and see it killed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    """One planted bug: in ``path``, ``old`` (exactly once) becomes ``new``; ``tests``
    (pytest node ids) must fail."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str


MUTANTS: tuple[Mutant, ...] = (
    # ---- the six bugs issue 26 found passing the whole suite
    Mutant(
        "platt-slope", "auditor/probes/calibration.py",
        "return float(a / scale), float(b)", "return float(a), float(b)",
        ("tests/probes/test_metrics.py::test_fit_platt_is_a_logistic_fit_on_the_raw_scores",),
        "Platt slope fitted on standardised scores not scaled back",
    ),
    Mutant(
        "calibrate-on-train", "auditor/probes/calibration.py",
        "scores = self._scores(X[ca])\n        targets = (\n"
        "            (y_idx[ca] == 1)[:, None] if scores.shape[1] == 1\n"
        "            else y_idx[ca][:, None]",
        "scores = self._scores(X[tr])\n        targets = (\n"
        "            (y_idx[tr] == 1)[:, None] if scores.shape[1] == 1\n"
        "            else y_idx[tr][:, None]",
        ("tests/probes/test_metrics.py::test_calibrators_are_fitted_on_held_out_rows_only",),
        "calibrators fitted on the base estimator's training rows",
    ),
    Mutant(
        "rule-proba-fired", "auditor/probes/rules.py",
        "(wp[fired].sum() + wbar) / (w[fired].sum() + 2 * wbar)",
        "(wp[fired].sum() + wbar) / (w[fired].sum() + wbar)",
        ("tests/probes/test_rules.py::test_probabilities_are_the_smoothed_rates_by_hand",
         "tests/probes/test_rules.py::test_probabilities_are_the_weighted_smoothed_rates"),
        "RuleProbe.proba_fired_ over-confident (smoothing half applied)",
    ),
    Mutant(
        "resume-common-keys", "auditor/store.py",
        "for k in a.keys() | b.keys() if", "for k in a.keys() & b.keys() if",
        ("tests/test_store.py::test_resume_with_an_sae_added_is_refused_naming_it",
         "tests/test_store.py::test_resume_with_an_sae_removed_is_refused_naming_it"),
        "resume provenance compared on the keys both sides have only",
    ),
    Mutant(
        "shard-dup-indices", "auditor/store.py",
        "ok = np.diff(values.astype(np.int64)) > 0",
        "ok = np.diff(values.astype(np.int64)) >= 0",
        ("tests/test_store.py::test_write_shard_validates_table",),
        "shard writer accepts a duplicate SAE index within a row",
    ),
    Mutant(
        "labels-contexts", "auditor/report/build.py",
        'ex = value.get("examples", value.get("contexts"))', 'ex = value.get("examples")',
        ("tests/report/test_report.py::test_feature_label_files",),
        "load_feature_labels ignores the 'contexts' key",
    ),
    # ---- others in numerical code
    Mutant(
        "platt-unsmoothed", "auditor/probes/calibration.py",
        "tt = np.where(t, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))",
        "tt = np.where(t, 1.0, 0.0)",
        ("tests/probes/test_metrics.py::test_fit_platt_is_a_logistic_fit_on_the_raw_scores",),
        "Platt without its smoothed targets",
    ),
    Mutant(
        "calibrated-not-renormalised", "auditor/probes/calibration.py",
        "return np.divide(p, total, out=uniform, where=total > 0)", "return p",
        ("tests/probes/test_metrics.py::test_calibrated_probe",),
        "multiclass one-vs-rest calibrated probabilities not renormalised",
    ),
    Mutant(
        "pooling-max", "auditor/pooling.py",
        "np.maximum.reduceat(maxs[perm], starts)", "np.minimum.reduceat(maxs[perm], starts)",
        ("tests/test_pooling.py::test_pooling_matches_dense_reference",),
        "max pooling merges partial maxima with min",
    ),
    Mutant(
        "pooling-mean", "auditor/pooling.py",
        "(sums[lo:hi] / max(n_pooled, 1))", "(sums[lo:hi] / max(n_pooled + 1, 1))",
        ("tests/test_pooling.py::test_pooling_matches_dense_reference",),
        "mean pooling divides by one token too many",
    ),
    Mutant(
        "sae-topk-k", "auditor/sae/model.py",
        "torch.topk(pre, self.cfg.k, dim=-1, sorted=True)",
        "torch.topk(pre, self.cfg.k - 1, dim=-1, sorted=True)",
        ("tests/sae/test_model.py::test_encode_matches_numpy_reference",),
        "TopK keeps k - 1 latents",
    ),
    Mutant(
        "sae-jumprelu-threshold", "auditor/sae/model.py",
        "return torch.relu(pre) * (pre > threshold)",
        "return torch.relu(pre) * (pre >= threshold)",
        ("tests/sae/test_model.py::test_jumprelu_is_strict_at_threshold",),
        "JumpReLU fires at its threshold",
    ),
    Mutant(
        "contribution-rank", "auditor/explain/contributions.py",
        'order = np.argsort(-np.abs(vals[keep]), kind="stable")',
        'order = np.argsort(-vals[keep], kind="stable")',
        ("tests/explain/test_contributions.py::test_contributions_sum_to_the_base_score",),
        "top contributions ranked by signed value instead of |value|",
    ),
    Mutant(
        "shard-row-boundary", "auditor/store.py",
        "    ok[inner - 1] = True  # differences across a row boundary do not count\n", "",
        ("tests/test_store.py::test_indices_may_repeat_or_descend_across_rows",),
        "index order checked across document boundaries",
    ),
    Mutant(
        "shard-size-marker", "auditor/store.py",
        'if marker.get("bytes") not in (None, key[1]):', 'if marker.get("bytes") is None:',
        ("tests/test_store.py::test_a_shard_of_another_size_is_refused_by_its_marker",),
        "a done shard's size not checked against its marker",
    ),
    Mutant(
        "drift-total-variation", "auditor/report/drift.py",
        "return round(float(0.5 * np.abs(a - b).sum()), 12)",
        "return round(float(np.abs(a - b).sum()), 12)",
        ("tests/report/test_report.py::test_drift_statistics_hand_computed",),
        "total variation without its ½",
    ),
    Mutant(
        "drift-chi2-dof", "auditor/report/drift.py",
        "dof = len(classes) - 1", "dof = len(classes)",
        ("tests/report/test_report.py::test_drift_statistics_hand_computed",),
        "chi-square homogeneity with K degrees of freedom",
    ),
    Mutant(
        "weights-hash-chunk", "auditor/_files.py",
        "        for chunk in iter(lambda: fh.read(_CHUNK), b\"\"):\n"
        "            digest.update(chunk)\n",
        "        digest.update(fh.read(_CHUNK))\n",
        ("tests/lm/test_loading.py::test_weights_hash_matches_an_independent_computation",),
        "file hash covers the first 1 MiB only",
    ),
)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pytest(tests: tuple[str, ...] | list[str], *, timeout: float) -> tuple[str, float, str]:
    """Run pytest on ``tests``; return (outcome, seconds, last output line)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # no bytecode of a mutant left behind
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start, f"no result within {timeout:.0f} s"
    seconds = time.monotonic() - start
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    last = lines[-1] if lines else ""
    # 0: passed; 1: tests failed; 2: interrupted (an import/collection error); other codes
    # (4 usage, e.g. an unknown node id; 5 nothing collected) are errors of the mutant list
    outcome = {0: "passed", 1: "failed", 2: "failed"}.get(proc.returncode, "error")
    return outcome, seconds, last


def run_mutant(mutant: Mutant, *, timeout: float) -> tuple[str, float, str]:
    """Apply ``mutant``, run its tests, restore the file; return (status, seconds, detail).

    Status is ``killed``, ``survived``, ``timeout`` (counted as killed) or ``error``.
    """
    path = ROOT / mutant.path
    original = path.read_bytes()
    text = original.decode("utf-8")
    count = text.count(mutant.old)
    if count != 1:
        return "error", 0.0, f"old text found {count} times in {mutant.path}"
    digest = _sha256(original)
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        backup = Path(tmp) / path.name
        shutil.copy2(path, backup)  # bytes and mtime, so cached bytecode stays valid
        try:
            path.write_bytes(text.replace(mutant.old, mutant.new).encode("utf-8"))
            outcome, seconds, last = _pytest(mutant.tests, timeout=timeout)
        finally:
            shutil.copy2(backup, path)
            restored = _sha256(path.read_bytes())
            if restored != digest:
                raise SystemExit(f"FATAL: {mutant.path} not restored (sha256 {restored} != "
                                 f"{digest}); its original is at {backup}")
    status = {"failed": "killed", "passed": "survived"}.get(outcome, outcome)
    return status, seconds, last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only this mutant (repeatable)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds per test run (default 600)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the named tests on the untouched code first")
    args = parser.parse_args(argv)

    names = [m.name for m in MUTANTS]
    if len(set(names)) != len(names):
        raise SystemExit("duplicate mutant names")
    chosen = list(MUTANTS)
    if args.only:
        unknown = sorted(set(args.only) - set(names))
        if unknown:
            raise SystemExit(f"unknown mutant(s): {', '.join(unknown)}; see --list")
        chosen = [m for m in MUTANTS if m.name in args.only]
    if args.list:
        for m in chosen:
            print(f"{m.name:28} {m.path}\n{'':28} {m.what}")
            for t in m.tests:
                print(f"{'':30}{t}")
        return 0

    if not args.no_baseline:
        tests = list(dict.fromkeys(t for m in chosen for t in m.tests))
        outcome, seconds, last = _pytest(tests, timeout=args.timeout)
        print(f"baseline: {len(tests)} test ids on the untouched code: {outcome} "
              f"({seconds:.1f} s) {last}")
        if outcome != "passed":
            print("the named tests must pass before mutating; fix them first", file=sys.stderr)
            return 1

    rows = []
    total = time.monotonic()
    print(f"{'mutant':28} {'status':9} {'time':>7}  file")
    for m in chosen:
        status, seconds, detail = run_mutant(m, timeout=args.timeout)
        rows.append((m, status))
        print(f"{m.name:28} {status:9} {seconds:6.1f}s  {m.path}", flush=True)
        if status in ("survived", "error"):
            print(f"{'':28} {detail}")
    bad = [m.name for m, s in rows if s in ("survived", "error")]
    killed = sum(s in ("killed", "timeout") for _, s in rows)
    print(f"{killed}/{len(rows)} killed in {time.monotonic() - total:.0f} s"
          + (f"; not killed: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
