"""What does the filter's streaming cost against reading the same file?

One process writes a synthetic JSONL corpus (``--rows`` documents, a tenth of them exact
duplicates, some short) and times, over the same file:

* read: :class:`auditor.filter.rows.RowReader` alone (every batch parsed, nothing decided);
* length: ``auditor filter`` with a length step (parse, decide, write kept/ and dropped/);
* dedup: length + exact dedup;
* near: length + near-duplicate dedup (MinHash LSH, online);
* keep: length + a keep expression on two columns.

Prints rows/s, MB/s and the ratio of each run's time to the plain read (machines are noisy:
compare ratios, not seconds), and the peak RSS growth of the process.

Usage::

    .venv/bin/python bench/filter.py [--rows 200000] [--out runs/bench-filter]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import time
from pathlib import Path
from typing import Any

from auditor.filter.rows import RowReader
from auditor.jobs.extract import ExtractOptions
from auditor.jobs.filter import FilterOptions, run_filter

WORDS = ("data model train text filter audit sparse feature head label report drift safety "
         "quality topic corpus token layer window shard store worker queue").split()


def _corpus(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    kept: list[str] = []
    with open(path, "w") as f:
        for i in range(rows):
            if kept and rng.random() < 0.1:
                text = rng.choice(kept)
            elif rng.random() < 0.05:
                text = "short"
            else:
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 200)))
                if len(kept) < 1000:
                    kept.append(text)
            f.write(json.dumps({"id": f"d{i}", "text": text, "lang": rng.choice("ab"),
                                "score": rng.random()}) + "\n")


def _rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-filter"))
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    data = args.out / "corpus.jsonl"
    _corpus(data, args.rows)
    mb = data.stat().st_size / 1e6
    base_rss = _rss()

    t = time.perf_counter()
    n = sum(len(b) for b in RowReader(data, id_column="id").batches(columns=["lang"]))
    read_s = time.perf_counter() - t
    print(f"{args.rows:,} rows, {mb:.0f} MB")
    print(f"{'run':<8} {'s':>7} {'rows/s':>10} {'MB/s':>7} {'x read':>7} {'kept':>9}")
    print(f"{'read':<8} {read_s:7.2f} {n / read_s:10,.0f} {mb / read_s:7.1f} {1.0:7.2f}")
    length: dict[str, Any] = {"type": "length", "min_chars": 20}
    runs = {"length": ((length,), None),
            "dedup": ((length, {"type": "dedup"}), None),
            "near": ((length, {"type": "dedup", "method": "near"}), None),
            "keep": ((length,), "lang == 'a' and score < 0.5")}
    for name, (steps, keep) in runs.items():
        t = time.perf_counter()
        result = run_filter(data, out=args.out / name, options=FilterOptions(
            steps=steps, keep=keep, formats=("json",), extract=ExtractOptions(id_column="id")))
        s = time.perf_counter() - t
        print(f"{name:<8} {s:7.2f} {args.rows / s:10,.0f} {mb / s:7.1f} {s / read_s:7.2f} "
              f"{result.kept_documents:9,}")
    print(f"peak RSS growth over the runs: {(_rss() - base_rss) / 1e6:.0f} MB "
          f"(input {mb:.0f} MB)")


if __name__ == "__main__":
    main()
