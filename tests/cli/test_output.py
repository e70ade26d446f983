"""What the CLI prints: piped into a reader that stops early, headers, help texts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("args", [["--help"], ["heads", "--help"], ["heads", "list"]],
                         ids=" ".join)
def test_a_reader_that_stops_early_is_not_an_error(args: list[str], tmp_path: Path) -> None:
    """`auditor … | head`: the reader is gone before we write; exit 0, nothing on stderr."""
    read, write = os.pipe()
    os.close(read)  # every write to the pipe now fails with EPIPE
    env = {**os.environ, "PYTHONPATH": str(REPO), "AUDITOR_MODELS_DIR": str(tmp_path)}
    try:
        done = subprocess.run([sys.executable, "-m", "auditor", *args], stdout=write,
                              stderr=subprocess.PIPE, cwd=tmp_path, env=env, timeout=120,
                              check=False)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr.decode()) == (0, "")


def test_every_group_names_all_its_commands_in_its_one_line_help() -> None:
    """`auditor --help` lists each group with one line: it names every subcommand, whole."""
    import re

    import click

    from auditor.cli import cli

    groups = {n: c for n, c in cli.commands.items() if isinstance(c, click.Group)}
    assert {"sae", "probe", "heads", "features", "store", "models", "jobs"} <= set(groups)
    width = 80 - 6 - max(len(n) for n in cli.commands)  # what click's listing leaves
    for name, group in groups.items():
        line = group.get_short_help_str(limit=width)
        assert not line.endswith("..."), f"{name}: {line!r} is cut at {width} characters"
        words = set(re.findall(r"[a-z][a-z-]*", line))
        missing = set(group.commands) - words
        assert not missing, f"'auditor {name}' help {line!r} does not name {sorted(missing)}"


def test_error_hints_name_the_commands_flags(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Library messages name settings (`set overwrite`); the CLI says its flag instead."""
    from auditor.cli import _for_cli, main
    from auditor.errors import ConfigError, JobConflict
    from auditor.jobs import probe as jobs
    from auditor.jobs import sae as sae_jobs
    from auditor.testing import make_random_sae

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(JobConflict, match=r"set overwrite to replace it$"):
        jobs.run_probe_train({"features": "s", "labels": "l.jsonl"}, out=foreign,
                             options=jobs.ProbeTrainOptions(head="h"))
    assert main(["probe", "train", "--features", "s", "--labels", "l.jsonl", "--head", "h",
                 "--out", str(foreign)]) == 7
    err = capsys.readouterr().err
    assert err.rstrip().endswith("use --overwrite to replace it") and err.count("overwrite") == 1

    src = make_random_sae(d_in=32, d_sae=64, layer=1).save(tmp_path / "src")
    with pytest.raises(ConfigError, match=r"or set overwrite\)$"):
        sae_jobs.sae_convert(src, foreign)
    assert main(["sae", "convert", str(src), str(foreign)]) == 2
    assert capsys.readouterr().err.rstrip().endswith("(choose an empty folder, or use "
                                                     "--overwrite)")
    # a flag the command does not have is not offered; a field that is one is
    needs_k = ConfigError("cannot tell k; set k", field="k")
    assert _for_cli(needs_k, ["heads", "list"]).endswith("; set k")
    assert _for_cli(needs_k, ["sae", "info", "x"]).endswith("; use --k")
    ids = ConfigError("set id_column to '#row', or set overwrite to replace it")
    assert str(_for_cli(ids, ["probe", "train"])) == (
        "use --id-column '#row', or use --overwrite to replace it")
    assert _for_cli(ConfigError("no SAE", field="sae"), ["extract", "f"]).endswith(
        "no SAE (--sae)")
    assert _for_cli(ConfigError("no SAE", field="sae"), ["heads", "list"]).endswith("no SAE")


def test_no_progress_prints_no_bar(tiny_llama_dir: Path, tmp_path: Path,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    """`--no-progress`: neither auditor's bars nor transformers' `Loading weights`."""
    from auditor.cli import main
    from auditor.testing import make_random_sae

    sae = make_random_sae(layer=2, d_sae=64, k=4).save(tmp_path / "sae")
    data = tmp_path / "d.jsonl"
    data.write_text('{"text": "a few words"}\n{"text": "and some more words"}\n')
    assert main(["extract", str(data), "--model", str(tiny_llama_dir), "--sae", str(sae),
                 "--out", str(tmp_path / "s"), "--max-length", "16", "--no-progress"]) == 0
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err, err
