"""The CLI end to end on a tiny model: extract, sae info/convert, store info, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from auditor.cli import main
from auditor.store import read_features, read_metadata
from auditor.testing import make_random_sae

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "sample.jsonl"


@pytest.fixture(scope="module")
def sae_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_random_sae(layer=2, d_sae=128, k=8).save(tmp_path_factory.mktemp("sae") / "s")


def test_extract_bundled_sample(tiny_llama_dir: Path, sae_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "store"
    code = main(["extract", str(SAMPLE), "--model", str(tiny_llama_dir), "--sae", str(sae_dir),
                 "--out", str(out), "--pool", "max", "--pool", "mean", "--id-column", "id",
                 "--keep", "genre", "--max-length", "64", "--shard-size", "16"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "tokens/s" in printed and "active features per document" in printed
    n_docs = sum(1 for line in SAMPLE.read_text().splitlines() if line.strip())
    fm = read_features(out, pooling="mean", columns=["genre"])
    assert fm.X.shape == (n_docs, 128)
    assert fm.doc_ids[:2] == ["news-1", "news-2"]
    assert fm.extra is not None and fm.extra["genre"][0] == "news"
    assert (np.diff(fm.X.indptr) > 0).all()  # every document has active features
    meta = read_metadata(out)
    assert meta["saes"]["layer2"]["format"] == "auditor"
    assert meta["input"]["fingerprint"].startswith("sha256:")

    # a second run returns the recorded job: nothing is computed or written again
    args = ["extract", str(SAMPLE), "--model", str(tiny_llama_dir), "--sae", str(sae_dir),
            "--out", str(out), "--pool", "max", "--pool", "mean", "--id-column", "id",
            "--keep", "genre", "--max-length", "64", "--shard-size", "16", "--json"]
    shards = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["docs"] == n_docs
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")} == shards
    # without its job record (say, a killed run), the store resumes from its shard markers
    (out / "_job.json").unlink()
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["docs"] == 0 and summary["docs_skipped_done"] == n_docs

    assert main(["store", "info", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["documents"] == n_docs and "layer2.mean" in info["columns"]
    assert info["state"]["complete"] and info["state"]["expected_shards"] == 3


def test_named_sae_and_conflicting_layer(tiny_llama_dir: Path, sae_dir: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "store"
    base = ["extract", str(SAMPLE), "--model", str(tiny_llama_dir), "--out", str(out), "--json"]
    assert main([*base, "--sae", f"mine={sae_dir}"]) == 0
    capsys.readouterr()
    assert read_metadata(out)["saes"]["mine"]["layer"] == 2
    # an SAE that says which layer it reads is never silently moved to another one
    assert main([*base, "--sae", str(sae_dir), "--layer", "1", "--overwrite"]) != 0
    assert "reads layer 2" in capsys.readouterr().err


def test_sae_info_and_convert(sae_dir: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sae", "info", str(sae_dir)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "auditor" and info["config"]["d_sae"] == 128
    assert len(info["sha256"]) == 64
    assert main(["sae", "convert", str(sae_dir), str(tmp_path / "copy")]) == 0
    assert "wrote" in capsys.readouterr().out
    # into a folder that is not empty: refused before the source is read, nothing mixed
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    assert main(["sae", "convert", str(tmp_path / "missing-source"),
                 str(tmp_path / "full")]) == 2
    err = capsys.readouterr().err
    assert "full" in err and "is not empty" in err and "(--overwrite)" not in err
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["notes.txt"]
    assert main(["sae", "convert", str(sae_dir), str(tmp_path / "full"), "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("mutate", "code", "needle"),
    [
        ("missing_column", 3, "'body'"),
        ("bad_json", 3, "row 1"),
        ("width_mismatch", 5, "W_enc"),
        ("missing_model", 4, "nope"),
        ("bad_pooling", 2, "median"),
    ],
)
def test_exit_codes_and_messages(mutate: str, code: int, needle: str, tiny_llama_dir: Path,
                                 sae_dir: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "in.jsonl"
    data.write_text('{"text": "hello there"}\n{"text": "general kenobi"}\n')
    args = ["extract", str(data), "--model", str(tiny_llama_dir), "--sae", str(sae_dir),
            "--out", str(tmp_path / "out")]
    if mutate == "missing_column":
        args += ["--text-column", "body"]
    elif mutate == "bad_json":
        data.write_text('{"text": "fine"}\n{"text": broken\n')
    elif mutate == "width_mismatch":
        wide = make_random_sae(d_in=40, layer=1).save(tmp_path / "wide")
        args[args.index(str(sae_dir))] = str(wide)
    elif mutate == "missing_model":
        args[args.index(str(tiny_llama_dir))] = str(tmp_path / "nope")
    elif mutate == "bad_pooling":
        args += ["--pool", "median"]
        code = 2  # click's own usage error
    got = main(args)
    err = capsys.readouterr().err
    assert got == code, err
    assert needle in err


def test_defaults_are_refused_clearly(tiny_llama_dir: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    # a custom model needs an explicit SAE: the shipped one is trained for the default model
    assert main(["extract", str(SAMPLE), "--model", str(tiny_llama_dir),
                 "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert "an SAE is required with a model other than the default" in err and "(--sae)" in err
    # no default SAE installed → a clear message, before any model is loaded
    monkeypatch.setenv("AUDITOR_MODELS_DIR", str(tmp_path / "no-models"))
    assert main(["extract", str(SAMPLE), "--out", str(tmp_path / "b")]) == 2
    assert "default SAE is not installed" in capsys.readouterr().err


def test_models_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "models"
    make_random_sae(d_in=32, d_sae=64, layer=1).save(root / "sae" / "tiny")
    monkeypatch.setenv("AUDITOR_MODELS_DIR", str(root))
    assert main(["models", "list", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    sae = [r for r in records if r["kind"] == "sae"]
    assert len(sae) == 1 and sae[0]["d_sae"] == 64 and len(sae[0]["sha256"]) == 64
    assert any(r["kind"] == "gguf" for r in records)
    assert main(["models", "list"]) == 0
    assert "sae" in capsys.readouterr().out


def test_an_input_errors_field_is_a_column_not_a_flag(
        tiny_llama_dir: Path, sae_dir: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A data error names the column; the flag hint is for settings errors only."""
    import polars as pl

    data = tmp_path / "int.parquet"
    pl.DataFrame({"text": [1, 2]}).write_parquet(data)
    assert main(["extract", str(data), "--out", str(tmp_path / "s"), "--model",
                 str(tiny_llama_dir), "--sae", str(sae_dir)]) == 3
    err = capsys.readouterr().err
    assert "row 0, field 'text': text must be a string, got int" in err and "(--" not in err


def test_extract_with_the_default_model_takes_the_heads_settings_not_given(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`auditor extract f.jsonl` (default model and SAE) extracts as the shipped heads were
    trained, except what the command line states; another model keeps the plain defaults."""
    import auditor.jobs.extract as jobs

    seen = []

    def capture(input: str, *, out: str, options: jobs.ExtractOptions, **kw: object) -> None:
        seen.append(options)
        raise SystemExit(0)

    monkeypatch.setattr(jobs, "run_extract", capture)
    for args in ([], ["--max-length", "64"], ["--model", "m", "--sae", "s"]):
        with pytest.raises(SystemExit):
            main(["extract", str(SAMPLE), "--out", str(tmp_path / "o"), *args])
    heads, stated, other = seen
    assert (heads.max_length, heads.max_windows, heads.poolings) == (128, 2, ("max", "mean"))
    assert (stated.max_length, stated.max_windows) == (64, 2)
    assert (other.max_length, other.max_windows, other.poolings) == (512, None, ("max",))


def test_extract_says_which_heads_the_store_serves(tiny_llama_dir: Path, sae_dir: Path,
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from auditor.jobs.heads import heads_serving

    out = tmp_path / "store"
    assert main(["extract", str(SAMPLE), "--model", str(tiny_llama_dir), "--sae",
                 str(sae_dir), "--out", str(out), "--max-length", "32"]) == 0
    printed = capsys.readouterr().out
    assert "serves      heads (none of the installed)" in printed
    serving = heads_serving(out)
    assert set(serving) >= {"safety", "topic", "quality"}
    assert all(why and "model.weights_sha256" in why for why in serving.values())
