"""Heads found by name along the search path: shipped, user, $AUDITOR_HEADS_PATH, ./heads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditor.cli import main
from auditor.defaults import heads_search_path
from auditor.errors import ConfigError
from auditor.heads import find_heads, load_heads, resolve_head, save_head, train_head


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Every search-path directory under ``tmp_path``, the working directory included."""
    p = {"models": tmp_path / "models", "home": tmp_path / "home",
         "extra1": tmp_path / "extra1", "extra2": tmp_path / "extra2", "cwd": tmp_path / "cwd"}
    p["cwd"].mkdir()
    monkeypatch.setenv("AUDITOR_MODELS_DIR", str(p["models"]))
    monkeypatch.setenv("XDG_DATA_HOME", str(p["home"]))
    monkeypatch.setenv("AUDITOR_HEADS_PATH", os.pathsep.join([str(p["extra1"]),
                                                              str(p["extra2"])]))
    monkeypatch.chdir(p["cwd"])
    return p


def test_search_path_order(places: dict[str, Path]) -> None:
    got = [(d.path, d.origin) for d in heads_search_path()]
    assert got == [(places["models"] / "heads", "shipped"),
                   (places["home"] / "auditor" / "heads", "user"),
                   (places["extra1"], "$AUDITOR_HEADS_PATH"),
                   (places["extra2"], "$AUDITOR_HEADS_PATH"),
                   (places["cwd"] / "heads", "working directory")]


def test_first_head_of_a_name_wins_and_the_rest_are_shadowed(
        split, places: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    head = train_head("domain", split, candidate="sae-max-log1p", folds=3)
    shipped = save_head(head, places["models"] / "heads" / "domain")
    mine = save_head(head, places["cwd"] / "heads" / "domain")
    user = save_head(head, places["home"] / "auditor" / "heads" / "personal")
    extra = save_head(head, places["extra2"] / "other")
    found = {(f.name, f.origin): f for f in find_heads()}
    assert set(found) == {("domain", "shipped"), ("personal", "user"),
                          ("other", "$AUDITOR_HEADS_PATH"), ("domain", "working directory")}
    assert found["domain", "shipped"].shadowed_by is None
    assert found["domain", "working directory"].shadowed_by == shipped
    assert resolve_head("domain") == shipped
    assert resolve_head("personal") == user and resolve_head("other") == extra
    # a directory is taken as given, shadowed or not
    assert resolve_head("heads/domain") == Path("heads/domain")
    assert load_heads(["heads/domain"])[0].path == Path("heads/domain")
    assert [h.path for h in load_heads(["domain", "other"])] == [shipped, extra]
    # without names: the shipped heads only, wherever the command runs
    assert [h.path for h in load_heads()] == [shipped]

    assert main(["heads", "list"]) == 0
    out = capsys.readouterr().out
    assert f"1. {places['models'] / 'heads'} (shipped)" in out
    assert f"{places['home'] / 'auditor' / 'heads'} (user)" in out
    assert f"{mine} (working directory)" in out
    assert f"shadowed by {shipped}" in out
    assert out.count("shadowed by") == 1
    assert main(["heads", "show", "personal", "--features", "0"]) == 0
    assert "personal" not in capsys.readouterr().err


def test_an_unknown_name_says_where_it_looked(places: dict[str, Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"no head named nope; heads found: none; "
                                          r"searched: .*working directory"):
        load_heads(["nope"])
    with pytest.raises(ConfigError, match="no head directory"):
        resolve_head("./nope")
    assert main(["heads", "show", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no head named nope" in err and str(places["extra1"]) in err
    assert "$AUDITOR_HEADS_PATH" in err
    assert main(["heads", "list"]) == 0
    assert "no heads found" in capsys.readouterr().out


def test_a_head_trained_with_the_cli_is_found_by_its_name(
        stores, places: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The issue's path: `probe train --head mine` then `heads show mine`, `probe eval
    mine`; a trained head whose name a shipped head takes is pointed to by directory."""
    store, data, _ = stores["train"]
    train = ["probe", "train", "--features", str(store), "--labels", str(data),
             "--representation", "sae-max-log1p", "--folds", "3"]
    assert main([*train, "--head", "mine"]) == 0
    out = capsys.readouterr().out
    assert "wrote head 'mine' to heads/mine" in out and "name it as: --head mine" in out
    assert main(["heads", "show", "mine", "--features", "0"]) == 0
    assert "# Head `mine`" in capsys.readouterr().out
    test_store, test_data, _ = stores["test"]
    assert main(["probe", "eval", "mine", "--features", str(test_store),
                 "--labels", str(test_data)]) == 0
    assert [h.name for h in load_heads(["mine"])] == ["mine"]
    # the same name shipped: the new head is named by its directory
    save_head(load_heads(["mine"])[0], places["models"] / "heads" / "mine")
    assert main([*train, "--head", "mine", "--overwrite"]) == 0
    out = capsys.readouterr().out
    assert f"the name 'mine' finds {places['models'] / 'heads' / 'mine'} first" in out
    assert "--head heads/mine" in out
    # written outside the search path
    assert main([*train, "--head", "fresh", "--out", str(places["cwd"] / "elsewhere" / "f")]
                ) == 0
    assert "is not on the heads search path" in capsys.readouterr().out


def test_a_queued_job_gets_heads_it_can_find(places: dict[str, Path],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker runs elsewhere: a head of this working directory, or named by a relative
    directory, is sent as an absolute path; other names go as they are."""
    from auditor import queue

    for where in (places["cwd"] / "heads" / "mine", places["models"] / "heads" / "safety"):
        where.mkdir(parents=True)
        (where / "head.json").write_text("{}")  # found by name; not loaded here
    sent: list[tuple[str, ...]] = []

    def submit(verb: str, input: str, *, out: object, options: object) -> str:
        sent.append(options.heads)  # type: ignore[attr-defined]
        return "job-1"

    monkeypatch.setattr(queue, "submit", submit)
    data = places["cwd"] / "in.jsonl"
    data.write_text('{"text": "a"}\n')
    assert main(["jobs", "submit", "classify", str(data), "--out", "o", "--head", "mine",
                 "--head", "safety", "--head", "elsewhere", "--head", "heads/mine"]) == 0
    mine = str(places["cwd"] / "heads" / "mine")
    assert sent == [(mine, "safety", "elsewhere", mine)]
