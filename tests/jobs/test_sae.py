"""The SAE jobs under the job contract: collect, train, eval (and the CLI's face on them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from auditor.cancel import CancelToken
from auditor.cli import main
from auditor.errors import ConfigError, JobCancelled, JobConflict
from auditor.jobs import sae as jobs
from auditor.jobs._contract import read_job
from auditor.lm import HookPoint, LoadedModel, load_model
from auditor.progress import ProgressEvent
from auditor.sae import TrainConfig, load_sae, open_cache
from auditor.sae.activations import ActivationCacheWriter, collect_activations
from auditor.testing import CORPUS

D = 16
HOOK = "layer0.resid_post"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def one_thread() -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic activation cache: sparse combinations of 64 directions."""
    g = torch.Generator().manual_seed(0)
    dirs = torch.randn(64, D, generator=g)
    n = 3000
    codes = (torch.rand(n, 64, generator=g) < 0.05).float() * torch.rand(n, 64, generator=g) * 3
    x = codes @ dirs + 0.5
    writer = ActivationCacheWriter(tmp_path_factory.mktemp("cache"), hooks=[HOOK], d_model=D,
                                   shard_tokens=1000)
    writer.add(HOOK, x, pos=torch.arange(n) % 40, doc=torch.arange(n) // 40)
    return writer.close(texts={"sha256": "sha256:synthetic", "docs": n // 40})


@pytest.fixture(scope="module")
def lm(tiny_llama_dir: Path) -> LoadedModel:
    return load_model(tiny_llama_dir, device="cpu", dtype="float32")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.jsonl"
    texts = [CORPUS[i % len(CORPUS)] + f" Number {i}." for i in range(40)]
    path.write_text("".join(json.dumps({"text": t, "genre": f"g{i % 3}"}) + "\n"
                            for i, t in enumerate(texts)))
    return path


def _config(**kw: Any) -> TrainConfig:
    base: dict[str, Any] = dict(layer=0, d_sae=32, k=4, batch_size=64, n_tokens=64 * 30,
                                warmup_steps=3, lr=3e-3, log_every=5, checkpoint_every=0,
                                heldout_fraction=0.1)
    base.update(kw)
    return TrainConfig(**base)


def _stop_after(checks: int) -> CancelToken:
    """A token that says stop at its ``checks``-th check (polled at every check)."""
    seen = [0]

    def poll() -> bool:
        seen[0] += 1
        return seen[0] >= checks

    return CancelToken(poll=poll, poll_interval=0.0)


def _assert_ordered(events: list[ProgressEvent], job: str, stage: str) -> list[ProgressEvent]:
    mine = [e for e in events if e.job == job and e.stage == stage]
    assert mine, f"no {job} {stage} events"
    done = [e.done for e in mine]
    assert done == sorted(done)
    assert mine[-1].final and mine[-1].done == mine[-1].total
    assert not any(e.final for e in mine[:-1])
    return mine


def _no_work(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("a rerun with the same options recomputed")


# --------------------------------------------------------------------------- records
def test_options_and_results_round_trip_json() -> None:
    cfg = _config(auxk_k=8, dead_tokens=1000, lr=None, activation="batchtopk")
    options: list[Any] = [
        jobs.SAECollectOptions(layers=(1, 3), max_tokens=100, heldout_only=0.05,
                               device="cpu"),
        jobs.SAETrainOptions.of(cfg, source="stream", model="m", init="i", chunk_tokens=128,
                                resume=False, device="cpu", overwrite=True),
        jobs.SAEEvalOptions(cache="c", corpus="t.jsonl", split="all", whole_cache=True,
                            card=True),
        jobs.SAECollectResult(directory=".", d_model=16,
                              hooks={HOOK: {"n_tokens": 5, "n_docs": 1, "mean_norm": 1.5}},
                              thresholds={HOOK: 2.0}, texts={"sha256": "x", "docs": 1}),
        jobs.SAETrainResult(sae=".", training="training.json", sha256="ab", steps=3,
                            tokens=192, loss=0.5, fvu=None, auxk_loss=0.0, dead_frac=0.25,
                            input_scale=2.0, seconds=1.0, resumed_from=2,
                            resamples=[{"step": 2, "latents": 1}], config=cfg.to_dict()),
        jobs.SAEEvalResult(evaluation="evaluation.json", sae_sha256="ab",
                           cache={"split": "heldout"}, metrics={"fvu": 0.3, "l0": 4.0},
                           ce={"delta_ce": 0.1}, card="CARD.md"),
    ]
    for record in options:
        again = type(record).from_dict(json.loads(json.dumps(record.to_dict())))
        assert again == record
    train = options[1]
    assert train.train_config == cfg  # the TrainConfig inside, whole
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_train_options_validate_and_hash_without_runtime_settings() -> None:
    cfg = _config()
    short = jobs.SAETrainOptions(config={"layer": 0, "d_sae": 32, "k": 4, "batch_size": 64,
                                         "n_tokens": 64 * 30, "warmup_steps": 3, "lr": 3e-3,
                                         "log_every": 5, "checkpoint_every": 0,
                                         "heldout_fraction": 0.1})
    assert short == jobs.SAETrainOptions.of(cfg)  # defaults filled in
    base = jobs.SAETrainOptions.of(cfg).options_hash()
    assert jobs.SAETrainOptions.of(_config(checkpoint_every=7, keep_checkpoints=5),
                                   device="cpu", resume=False).options_hash() == base
    assert jobs.SAETrainOptions.of(_config(lr=1e-3)).options_hash() != base
    with pytest.raises(ConfigError) as info:
        jobs.SAETrainOptions(config={**cfg.to_dict(), "k": 64})
    assert info.value.field == "k"
    with pytest.raises(ConfigError, match="required"):
        jobs.SAETrainOptions()
    with pytest.raises(ConfigError) as info:
        jobs.SAETrainOptions.of(cfg, source="stream", collect_tokens=10)
    assert info.value.field == "collect_tokens" and "--" not in info.value.message
    with pytest.raises(ConfigError):
        jobs.SAECollectOptions()
    with pytest.raises(ConfigError):
        jobs.SAEEvalOptions()


# --------------------------------------------------------------------------- train
def test_train_records_reruns_refuses_and_overwrites(cache_dir: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    events: list[ProgressEvent] = []
    options = jobs.SAETrainOptions.of(_config())
    result = jobs.run_sae_train(cache_dir, out=out, options=options, progress=events.append)
    steps = _assert_ordered(events, "sae-train", "steps")
    assert steps[-1].total == 30 and steps[-1].counters["tokens"] == 30 * 64
    assert result.steps == 30 and result.sae == "." and result.training == "training.json"
    assert result.sha256 == load_sae(out).sha256
    assert result.fvu is not None and result.fvu < 1.0
    job = read_job(out)
    assert job is not None and job["state"] == "done" and job["verb"] == "sae-train"

    import auditor.sae as sae_module

    monkeypatch.setattr(sae_module, "train_sae", _no_work)
    assert jobs.run_sae_train(cache_dir, out=out, options=options) == result
    # runtime settings (checkpoints, device) are not another run
    assert jobs.run_sae_train(cache_dir, out=out, options=jobs.SAETrainOptions.of(
        _config(checkpoint_every=10), device="cpu")) == result
    other = jobs.SAETrainOptions.of(_config(lr=1e-3))
    with pytest.raises(JobConflict, match="overwrite"):
        jobs.run_sae_train(cache_dir, out=out, options=other)
    monkeypatch.undo()
    replaced = jobs.run_sae_train(cache_dir, out=out, options=jobs.SAETrainOptions.of(
        _config(lr=1e-3), overwrite=True))
    assert replaced.config["lr"] == 1e-3 and replaced.sha256 != result.sha256
    assert json.loads((out / "training.json").read_text())["config"]["lr"] == 1e-3


def test_train_cancelled_then_rerun_equals_uninterrupted(cache_dir: Path, tmp_path: Path,
                                                         one_thread: None) -> None:
    options = jobs.SAETrainOptions.of(_config(resample_every=5, dead_tokens=128,
                                              checkpoint_every=10))
    full = jobs.run_sae_train(cache_dir, out=tmp_path / "full", options=options)

    part = tmp_path / "part"
    with pytest.raises(JobCancelled, match="step 13"):  # checked before steps 0 … 13
        jobs.run_sae_train(cache_dir, out=part, options=options, cancel=_stop_after(14))
    ckpts = sorted(p.name for p in (part / "checkpoints").iterdir())
    assert ckpts == ["step-10", "step-13"]  # the cancelled step's own checkpoint
    job = read_job(part)
    assert job is not None and job["state"] == "running"
    events: list[ProgressEvent] = []
    resumed = jobs.run_sae_train(cache_dir, out=part, options=options, progress=events.append)
    assert resumed.resumed_from == 13
    assert events[0].done == 13  # the bar starts where the run is
    _assert_ordered(events, "sae-train", "steps")
    a, b = load_sae(tmp_path / "full"), load_sae(part)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert resumed.sha256 == full.sha256
    assert resumed.resamples == full.resamples
    records = [json.loads((d / "training.json").read_text()) for d in (tmp_path / "full", part)]
    assert records[0]["history"] == records[1]["history"]


def test_train_restart_starts_over(cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    options = jobs.SAETrainOptions.of(_config(checkpoint_every=10))
    with pytest.raises(JobCancelled):
        jobs.run_sae_train(cache_dir, out=out, options=options, cancel=_stop_after(15))
    restarted = jobs.run_sae_train(cache_dir, out=out, options=jobs.SAETrainOptions.of(
        _config(checkpoint_every=10), resume=False))
    assert restarted.resumed_from is None and restarted.steps == 30
    # a restart starts over whatever the run's settings were (the checkpoints are dropped)
    other = jobs.run_sae_train(cache_dir, out=out, options=jobs.SAETrainOptions.of(
        _config(lr=1e-3), resume=False))
    assert other.config["lr"] == 1e-3 and not (out / "checkpoints").exists()
    # ... but leaves another job's output alone
    evaluation = tmp_path / "eval"
    jobs.run_sae_eval(out, out=evaluation, options=jobs.SAEEvalOptions(cache=str(cache_dir)))
    with pytest.raises(JobConflict):
        jobs.run_sae_train(cache_dir, out=evaluation, options=jobs.SAETrainOptions.of(
            _config(), resume=False))
    assert (evaluation / "evaluation.json").is_file()


def test_train_refuses_an_unusable_device_before_writing(cache_dir: Path,
                                                         tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        jobs.run_sae_train(cache_dir, out=tmp_path / "run",
                           options=jobs.SAETrainOptions.of(_config(), device="gpu0"))
    assert info.value.field == "device"
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- eval
def test_eval_writes_under_out_and_the_card_only_when_asked(
        cache_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    jobs.run_sae_train(cache_dir, out=run, options=jobs.SAETrainOptions.of(_config()))
    out = tmp_path / "eval"
    events: list[ProgressEvent] = []
    options = jobs.SAEEvalOptions(cache=str(cache_dir), whole_cache=True)
    result = jobs.run_sae_eval(run, out=out, options=options, progress=events.append)
    _assert_ordered(events, "sae-eval", "evaluate")
    assert result.evaluation == "evaluation.json" and result.card is None
    written = json.loads((out / "evaluation.json").read_text())
    assert written["metrics"]["fvu"] == result.metrics["fvu"] < 1.0
    assert result.whole_cache is not None
    assert result.whole_cache["n_tokens"] == open_cache(cache_dir).n_tokens
    assert not (run / "CARD.md").exists() and not (run / "evaluation.json").exists()

    import auditor.sae as sae_module

    monkeypatch.setattr(sae_module, "evaluate_sae", _no_work)
    carded = jobs.run_sae_eval(run, out=out, options=jobs.SAEEvalOptions(
        cache=str(cache_dir), whole_cache=True, card=True))  # card is a runtime setting
    assert carded.card == str(run / "CARD.md") and carded.metrics == result.metrics
    assert "FVU" in (run / "CARD.md").read_text()
    assert json.loads((run / "evaluation.json").read_text()) == written
    with pytest.raises(JobConflict):
        jobs.run_sae_eval(run, out=out, options=jobs.SAEEvalOptions(cache=str(cache_dir),
                                                                     split="train"))
    monkeypatch.undo()
    train = jobs.run_sae_eval(run, out=out, options=jobs.SAEEvalOptions(
        cache=str(cache_dir), split="train", overwrite=True))
    assert train.cache["split"] == "train"
    assert train.metrics["n_tokens"] > result.metrics["n_tokens"]


def test_eval_cancelled_between_measurements_then_rerun(cache_dir: Path,
                                                        tmp_path: Path) -> None:
    run = tmp_path / "run"
    jobs.run_sae_train(cache_dir, out=run, options=jobs.SAETrainOptions.of(_config()))
    options = jobs.SAEEvalOptions(cache=str(cache_dir), whole_cache=True)
    with pytest.raises(JobCancelled, match="whole-cache"):
        jobs.run_sae_eval(run, out=tmp_path / "eval", options=options,
                          cancel=_stop_after(1))
    assert not (tmp_path / "eval" / "evaluation.json").exists()
    done = jobs.run_sae_eval(run, out=tmp_path / "eval", options=options)
    assert done.whole_cache is not None


# --------------------------------------------------------------------------- collect
def _cache_contents(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The manifest (less time and versions) and every shard's metadata and tensor bytes
    (the file bytes themselves differ: safetensors writes its metadata in any order)."""
    from safetensors import safe_open

    manifest = json.loads((path / "manifest.json").read_text())
    for volatile in ("created", "seconds", "libraries", "auditor_version"):
        manifest.pop(volatile)
    shards = {}
    for shard in sorted(path.rglob("*.safetensors")):
        with safe_open(str(shard), framework="pt") as f:
            shards[shard.relative_to(path).as_posix()] = (
                f.metadata(), {k: f.get_tensor(k).numpy().tobytes() for k in sorted(f.keys())})
    return manifest, shards


def test_collect_records_reruns_refuses_and_overwrites(
        corpus: Path, lm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cache"
    options = jobs.SAECollectOptions(layers=(1, 2), max_length=16)
    events: list[ProgressEvent] = []
    result = jobs.run_sae_collect(corpus, out=out, options=options, progress=events.append,
                                  model=lm)
    docs = _assert_ordered(events, "sae-collect", "docs")
    assert docs[-1].total == 40
    cache = open_cache(out)
    assert result.directory == "." and set(result.hooks) == set(cache.hooks)
    assert result.hooks["layer1.resid_post"]["n_tokens"] == cache.n_tokens > 0
    assert result.texts == cache.manifest["texts"] and result.input is not None
    assert not (out / "_resume").exists()

    import auditor.sae as sae_module

    monkeypatch.setattr(sae_module, "collect_activations", _no_work)
    assert jobs.run_sae_collect(corpus, out=out, options=options, model=lm) == result
    with pytest.raises(JobConflict, match="max_tokens"):
        jobs.run_sae_collect(corpus, out=out, model=lm, options=jobs.SAECollectOptions(
            layers=(1, 2), max_length=16, max_tokens=50))
    monkeypatch.undo()
    capped = jobs.run_sae_collect(corpus, out=out, model=lm, options=jobs.SAECollectOptions(
        layers=(1, 2), max_length=16, max_tokens=50, overwrite=True))
    assert capped.settings is not None and capped.settings["max_tokens"] == 50
    assert open_cache(out).manifest["settings"]["max_tokens"] == 50  # recomputed


@pytest.mark.parametrize("checks", [1, 5, 9])
def test_collect_cancelled_then_rerun_equals_uninterrupted(
        corpus: Path, lm: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        checks: int) -> None:
    import auditor.sae.activations as activations

    monkeypatch.setattr(activations, "_DOCS_PER_CHUNK", 6)  # seven chunks
    options = jobs.SAECollectOptions(layers=(1,), max_length=16)
    jobs.run_sae_collect(corpus, out=tmp_path / "full", options=options, model=lm)
    part = tmp_path / "part"
    with pytest.raises(JobCancelled):
        jobs.run_sae_collect(corpus, out=part, options=options, model=lm,
                             cancel=_stop_after(checks))
    assert not (part / "manifest.json").exists()
    calls: list[int] = []
    forward = activations.forward_batches

    def counting(texts: Any, **kwargs: Any) -> Any:
        calls.append(len(list(texts)))
        return forward(texts, **kwargs)

    monkeypatch.setattr(activations, "forward_batches", counting)
    jobs.run_sae_collect(corpus, out=part, options=options, model=lm)
    assert sum(calls) < 40 or checks == 1  # what was done before the cancel is not redone
    assert _cache_contents(part) == _cache_contents(tmp_path / "full")
    docs = open_cache(part).tensors("layer1.resid_post")["doc"]
    assert sorted(set(docs.tolist())) == list(range(40))  # every document, once
    assert not (part / "_resume").exists()


def test_collection_resumes_across_shard_boundaries(lm: LoadedModel, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards fill across chunk boundaries; a resumed writer continues its unwritten
    tokens and cuts the shards where an uninterrupted one does."""
    import auditor.sae.activations as activations

    monkeypatch.setattr(activations, "_DOCS_PER_CHUNK", 4)
    texts = list(CORPUS[:30])
    common: dict[str, Any] = dict(lm=lm, hooks=[HookPoint(1), HookPoint(2)], max_length=16,
                                  shard_tokens=37)
    collect_activations(texts, out=tmp_path / "full", **common)
    for checks in (3, 4, 3):  # several cancels (mid-chunk, at its end), each further on
        with pytest.raises(JobCancelled):
            collect_activations(texts, out=tmp_path / "part", cancel=_stop_after(checks),
                                **common)
    collect_activations(texts, out=tmp_path / "part", **common)
    assert _cache_contents(tmp_path / "part") == _cache_contents(tmp_path / "full")
    # a rerun with other settings does not resume another collection's chunks
    with pytest.raises(JobCancelled):
        collect_activations(texts, out=tmp_path / "other", cancel=_stop_after(8), **common)
    collect_activations(texts, out=tmp_path / "other", **{**common, "shard_tokens": 50})
    full = open_cache(tmp_path / "full").tensors("layer2.resid_post")
    other = open_cache(tmp_path / "other").tensors("layer2.resid_post")
    assert torch.equal(full["acts"], other["acts"]) and torch.equal(full["doc"], other["doc"])


# --------------------------------------------------------------------------- stream
def test_streamed_training_cancelled_between_chunks_then_resumed(
        corpus: Path, lm: LoadedModel, tmp_path: Path, one_thread: None) -> None:
    cfg = TrainConfig(layer=1, d_sae=64, k=4, batch_size=32, n_tokens=32 * 20,
                      warmup_steps=2, lr=3e-3, log_every=5, checkpoint_every=0,
                      heldout_fraction=0.25)
    options = jobs.SAETrainOptions.of(cfg, source="stream", max_length=16, chunk_tokens=96)
    full = jobs.run_sae_train(corpus, out=tmp_path / "full", options=options, model=lm)
    # The stream's groups of documents check the token as well as the steps: stop in the
    # middle of computing a later chunk.
    events: list[ProgressEvent] = []
    with pytest.raises(JobCancelled):
        jobs.run_sae_train(corpus, out=tmp_path / "part", options=options, model=lm,
                           cancel=_stop_after(12), progress=events.append)
    assert any(e.stage.startswith("activations, chunk") for e in events)
    resumed = jobs.run_sae_train(corpus, out=tmp_path / "part", options=options, model=lm)
    assert resumed.resumed_from is not None and resumed.resumed_from > 0
    assert resumed.sha256 == full.sha256


# --------------------------------------------------------------------------- the CLI face
class _Fake:
    def __init__(self, result: Any) -> None:
        self.result = result
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        return self.result


def _patch(monkeypatch: pytest.MonkeyPatch, name: str, result: Any) -> _Fake:
    fake = _Fake(result)
    monkeypatch.setattr(jobs, name, fake)
    return fake


def test_cli_collect_calls_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    fake = _patch(monkeypatch, "run_sae_collect", jobs.SAECollectResult(
        directory=".", d_model=8, hooks={"layer2.resid_post": {"n_tokens": 77}}))
    assert main(["sae", "collect", "c.jsonl", "--out", str(tmp_path / "o"), "--layer", "2",
                 "--layer", "4", "--max-tokens", "9", "--heldout-only", "--heldout-fraction",
                 "0.1", "--device", "cpu", "--no-progress"]) == 0
    (args, kwargs), = fake.calls
    assert args == (Path("c.jsonl"),) and kwargs["out"] == tmp_path / "o"
    assert kwargs["options"] == jobs.SAECollectOptions(layers=(2, 4), max_tokens=9,
                                                       heldout_only=0.1, device="cpu")
    shown = json.loads(capsys.readouterr().out)
    assert shown["hooks"]["layer2.resid_post"]["n_tokens"] == 77
    assert shown["directory"] == str(tmp_path / "o")


def test_cli_train_calls_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    cfg = TrainConfig(layer=1, d_sae=64, k=4, n_tokens=4096, batch_size=256, lr=0.01,
                      warmup_steps=2, activation="batchtopk", checkpoint_every=5)
    fake = _patch(monkeypatch, "run_sae_train", jobs.SAETrainResult(
        sae=".", training="training.json", sha256="ab", steps=16, tokens=4096, loss=0.5,
        fvu=0.25, auxk_loss=0.0, dead_frac=0.125, input_scale=2.0, seconds=1.0,
        resumed_from=None, resamples=[], config=cfg.to_dict()))
    out = tmp_path / "run"
    args = ["sae", "train", "--out", str(out), "--layer", "1", "--width", "64", "--k", "4",
            "--corpus", "c.jsonl", "--stream", "--chunk-tokens", "512", "--tokens", "4096",
            "--batch-size", "256", "--lr", "0.01", "--warmup-steps", "2", "--activation",
            "batchtopk", "--checkpoint-every", "5", "--restart", "--model", "m", "--init",
            "i"]
    assert main(args) == 0
    (call_args, kwargs), = fake.calls
    assert call_args == (Path("c.jsonl"),) and kwargs["out"] == out
    assert kwargs["options"] == jobs.SAETrainOptions.of(
        cfg, source="stream", chunk_tokens=512, resume=False, model="m", init="i")
    assert capsys.readouterr().out.strip() == (f"wrote {out}: 4,096 tokens in 16 steps, "
                                               "FVU 0.2500, dead 12.50%")
    assert main([*args, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["fvu"] == 0.25 and shown["out"] == str(out)
    assert main(["sae", "train", "--out", str(out), "--layer", "1", "--width", "64", "--k",
                 "4", "--cache", "c"]) == 0
    assert fake.calls[-1][1]["options"].source == "cache"


def test_cli_eval_calls_the_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    fake = _patch(monkeypatch, "run_sae_eval", jobs.SAEEvalResult(
        evaluation="evaluation.json", sae_sha256="ab", cache={"split": "all"},
        metrics={"fvu": 0.5}))
    sae_dir = tmp_path / "sae"
    sae_dir.mkdir()
    assert main(["sae", "eval", str(sae_dir), "--cache", "c", "--split", "all",
                 "--whole-cache", "--groups-from", "g.jsonl", "--group-column", "genre"]) == 0
    (args, kwargs), = fake.calls
    assert args == (sae_dir,) and kwargs["out"] == sae_dir / "evaluation"
    assert kwargs["options"] == jobs.SAEEvalOptions(
        cache="c", split="all", whole_cache=True, groups_from="g.jsonl", group_column="genre",
        card=True, overwrite=True)
    assert json.loads(capsys.readouterr().out)["metrics"] == {"fvu": 0.5}
    assert main(["sae", "eval", str(sae_dir), "--cache", "c", "--out", str(tmp_path / "e"),
                 "--no-card"]) == 0
    options = fake.calls[-1][1]["options"]
    assert fake.calls[-1][1]["out"] == tmp_path / "e"
    assert not options.card and not options.overwrite


def test_cli_convert_and_info_call_the_jobs(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    convert = _patch(monkeypatch, "sae_convert", {"path": "d", "activation": "topk",
                                                  "d_in": 8, "d_sae": 32, "sha256": "ab"})
    info = _patch(monkeypatch, "sae_info", {"path": "s", "format": "auditor"})
    assert main(["sae", "convert", "s", "d", "--k", "4"]) == 0
    assert convert.calls == [((Path("s"), Path("d")),
                              {"format": None, "k": 4, "layer": None, "overwrite": False})]
    assert "wrote d (topk, d_in 8, d_sae 32, sha256 ab)" in capsys.readouterr().out
    assert main(["sae", "info", "s", "--layer", "2"]) == 0
    assert info.calls[0][1]["layer"] == 2
    assert json.loads(capsys.readouterr().out) == {"path": "s", "format": "auditor"}


def test_the_cli_module_imports_no_heavy_library() -> None:
    import ast

    import auditor.cli.sae as face

    tree = ast.parse(Path(face.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {str(node.module).split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert not imported & {"torch", "numpy", "polars", "sklearn", "lightgbm", "transformers"}
    sources = [ast.unparse(node) for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module
               and node.module.startswith("auditor.")]
    assert all(not s.startswith("from auditor.sae") for s in sources)




def test_eval_delta_ce_with_a_preloaded_model(corpus: Path, lm: LoadedModel,
                                              tiny_llama_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache = tmp_path / "cache"
    jobs.run_sae_collect(corpus, out=cache, model=lm,
                         options=jobs.SAECollectOptions(layers=(1,), max_length=16))
    run = tmp_path / "run"
    jobs.run_sae_train(cache, out=run, options=jobs.SAETrainOptions.of(TrainConfig(
        layer=1, d_sae=64, k=4, batch_size=64, n_tokens=64 * 5, warmup_steps=1,
        checkpoint_every=0)))
    options = jobs.SAEEvalOptions(cache=str(cache), corpus=str(corpus), model=str(tiny_llama_dir),
                                  ce_docs=4, max_length=16, device="cpu")
    loaded = jobs.run_sae_eval(run, out=tmp_path / "a", options=options)
    full = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32).eval()
    given = jobs.run_sae_eval(run, out=tmp_path / "b", options=options,
                              causal_lm=(full, AutoTokenizer.from_pretrained(tiny_llama_dir)))
    assert loaded.ce is not None and loaded.ce["docs"] == 4
    assert given.ce == loaded.ce
