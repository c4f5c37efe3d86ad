"""Evaluation during training (metrics.jsonl, TensorBoard, best.pt), wgangp-eval, and
the image path with a stand-in feature extractor (no Inception download)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import TINY, compose_cfg
from tests.test_images_e2e import IMG, make_folder
from wgangp.cli.eval import main as eval_main
from wgangp.config.optimized import optimized_value
from wgangp.config.validate import validate
from wgangp.errors import ConfigError
from wgangp.io.checkpoint import load_checkpoint
from wgangp.metrics import evaluator as evaluate
from wgangp.metrics.evaluator import Evaluator, resolve_metrics
from wgangp.train.trainer import Trainer

CPU = torch.device("cpu")
TOY_EVAL = [
    *TINY,
    "trainer.sample_every=0",
    "trainer.ckpt_every=0",
    "trainer.n_critic=2",
    "eval.every=3",
    "eval.num_samples=300",
    "eval.keep_best=wasserstein",
]


def jsonl(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> tuple[Path, dict]:
    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("toy")
    tr = Trainer(compose_cfg(*TOY_EVAL, "trainer.steps=8"), run, CPU)
    return run, tr.fit()


def test_eval_writes_jsonl_tensorboard_and_best(toy_run):
    run, last = toy_run
    lines = jsonl(run)
    # every 3 steps, and once at the end (step 8 is not a multiple of 3)
    assert [r["step"] for r in lines] == [3, 6, 8]
    for r in lines:
        assert {
            "time",
            "modes_captured",
            "high_quality",
            "reverse_kl",
            "wasserstein",
            "wasserstein_real",
        } <= set(r)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert {
        "metrics/modes_captured",
        "metrics/high_quality",
        "metrics/reverse_kl",
        "metrics/wasserstein",
        "metrics/wasserstein_real",
    } <= set(tags)
    assert [e.step for e in acc.Scalars("metrics/wasserstein")] == [3, 6, 8]
    # best.pt holds the lowest wasserstein of metrics.jsonl, and the step it was seen
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    w = [r["wasserstein"] for r in lines]
    i = min(range(len(w)), key=w.__getitem__)
    assert best["best"] == {"metric": "wasserstein", "value": w[i], "step": lines[i]["step"]}
    assert best["step"] == lines[i]["step"]
    # and its generator really scores that value
    cfg = OmegaConf.create(best["config"])
    tr = Trainer(cfg, run / "scratch", CPU)
    tr.load_state_dict(best)
    again = Evaluator(cfg.eval, cfg.dataset, tr.data, CPU)(tr.sampling_generator())
    assert again["wasserstein"] == pytest.approx(w[i], rel=1e-6)
    # the task returns the kept (best) value for sweepers
    assert last["metrics/wasserstein"] == w[-1]
    assert optimized_value(cfg, last) == pytest.approx(w[i])


def test_wgangp_eval_prints_table_and_json_matches(toy_run, tmp_path, capsys):
    run, _ = toy_run
    out = tmp_path / "m.json"
    eval_main([f"checkpoint={run}", f"json={out}"])
    text = capsys.readouterr().out
    assert "| metric | value | better |" in text
    for name in ("modes_captured", "high_quality", "reverse_kl", "wasserstein"):
        assert f"| {name} |" in text
    got = json.loads(out.read_text())
    assert got["step"] == 8
    # same samples and real data as the run's own evaluation at its last step
    final = jsonl(run)[-1]
    for k, v in got["metrics"].items():
        if v is None:
            assert final[k] is None, k
        else:
            assert v == pytest.approx(final[k], rel=1e-6, abs=1e-12), k
    eval_main([f"checkpoint={run}", "metrics=wasserstein", "num_samples=100"])
    assert "| modes_captured |" not in capsys.readouterr().out


def test_wgangp_eval_clean_errors(toy_run, tmp_path, capsys):
    run, _ = toy_run
    for argv, needle in (
        ([f"checkpoint={tmp_path / 'nope'}"], "no such file"),
        ([f"checkpoint={run}", "metrics=fidd"], "fid, kid"),
        ([f"checkpoint={run}", "metrics=fid"], "point metrics"),
        (["checkpoint"], "key=value"),
    ):
        with pytest.raises(SystemExit) as e:
            eval_main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("wgangp-eval: error:") and needle in err, err


def test_resume_keeps_best(tmp_path):
    torch.set_num_threads(1)
    a = Trainer(compose_cfg(*TOY_EVAL, "trainer.steps=3"), tmp_path, CPU)
    a.fit()
    first = dict(a.best)
    ck = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ck["best"] == first
    b = Trainer(compose_cfg(*TOY_EVAL, "trainer.steps=6"), tmp_path, CPU)
    b.load_state_dict(ck)
    assert b.best == first
    b.fit()
    lines = jsonl(tmp_path)
    assert [r["step"] for r in lines] == [3, 6]
    w = [r["wasserstein"] for r in lines]
    assert b.best["value"] == min(w)
    assert load_checkpoint(tmp_path / "checkpoints" / "best.pt")["best"] == b.best


def test_validation_names_the_valid_metrics():
    with pytest.raises(ConfigError, match="high_quality.*fid"):
        validate(compose_cfg("eval.every=5", "eval.metrics=[fidd]"))
    with pytest.raises(ConfigError, match="eval.keep_best"):
        validate(compose_cfg("eval.every=5", "eval.metrics=[wasserstein]", "eval.keep_best=fid"))
    with pytest.raises(ConfigError, match="eval.every"):
        validate(compose_cfg("eval.keep_best=wasserstein"))
    validate(compose_cfg("eval.every=5", "eval.keep_best=high_quality"))
    # metrics that do not fit the data are refused when the run starts
    cfg = compose_cfg("dataset=swissroll", "eval.every=5", "eval.metrics=[modes_captured]")
    with pytest.raises(ConfigError, match="known modes"):
        Trainer(cfg, "unused", CPU)


def test_task_returns_keep_best_metric(monkeypatch):
    from wgangp.cli import train

    monkeypatch.setattr(
        train,
        "run",
        lambda cfg: {"wasserstein": 0.5, "metrics/high_quality": 0.9, "best/high_quality": 0.97},
    )
    assert train.task(compose_cfg("eval.every=5", "eval.keep_best=high_quality")) == 0.97
    assert train.task(compose_cfg()) == 0.5
    monkeypatch.setattr(train, "run", lambda cfg: {"wasserstein": 0.5})
    assert math.isnan(train.task(compose_cfg("eval.every=5", "eval.keep_best=reverse_kl")))


# ---------------------------------------------------------------------- images


class StandIn:
    """A fixed random projection standing in for Inception (tests only)."""

    name = "standin-test-v1"

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.w = torch.randn(16 * 16, 12, generator=g)
        self.c = torch.randn(16 * 16, 5, generator=g)
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 127.5 - 1
        x = x.mean(1).flatten(1)
        return {"pool": x @ self.w, "logits": x @ self.c}


def image_cfg(root: Path, *extra: str):
    return compose_cfg(
        *IMG,
        f"dataset.root={root}",
        "trainer.sample_every=0",
        "trainer.ckpt_every=0",
        "trainer.steps=2",
        "eval.every=2",
        *extra,
    )


def test_image_metrics_with_stand_in_extractor(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    data = make_folder(tmp_path / "images", n=40)
    ext = StandIn()
    monkeypatch.setattr(evaluate, "make_extractor", lambda cfg, device: ext)
    cache = tmp_path / "stats"
    cfg = image_cfg(
        data,
        "eval.metrics=[fid,kid,is,precision,recall]",
        "eval.num_samples=32",
        f"eval.stats_cache={cache}",
        "eval.keep_best=fid",
    )
    assert resolve_metrics(None, Trainer(cfg, tmp_path / "r0", CPU).data) == ["fid", "kid", "is"]
    tr = Trainer(cfg, tmp_path / "run", CPU)
    last = tr.fit()
    (line,) = jsonl(tmp_path / "run")
    for k in ("fid", "kid", "kid_std", "is", "is_std", "precision", "recall"):
        assert math.isfinite(line[k]), k
    assert line["fid"] > 0 and 1 <= line["is"] <= 5 and 0 <= line["precision"] <= 1
    assert last["best/fid"] == line["fid"]
    (stats,) = cache.glob("*.pt")
    assert "image_folder" in stats.name and "16px" in stats.name and "standin-test-v1" in stats.name
    # a second run reuses the cached real statistics: only the fakes go through the network
    ext.calls = 0
    tr2 = Trainer(cfg, tmp_path / "run2", CPU)
    vals = tr2.evaluator(tr2.sampling_generator())
    assert ext.calls == 1  # 32 fakes in one batch; the real stats came from the cache
    assert set(vals) >= {"fid", "kid", "is"}


def test_missing_inception_weights_warn_once_and_training_completes(tmp_path, monkeypatch, caplog):
    torch.set_num_threads(1)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # empty cache
    data = make_folder(tmp_path / "images", n=40)
    cfg = image_cfg(
        data,
        "trainer.steps=4",
        "eval.every=1",
        "eval.metrics=[fid,kid]",
        "eval.download=false",
        "eval.num_samples=16",
        f"eval.stats_cache={tmp_path / 'stats'}",
    )
    with caplog.at_level(logging.WARNING):
        tr = Trainer(cfg, tmp_path / "run", CPU)
        last = tr.fit()
    assert tr.step == 4 and (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "eval.inception_weights" in msg and "\n" not in msg
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    assert not any(k.startswith("metrics/") for k in last)


def test_linear_lr_decay_is_a_function_of_the_step(tmp_path):
    torch.set_num_threads(1)
    cfg = compose_cfg(
        *TINY,
        "trainer.steps=4",
        "trainer.sample_every=0",
        "trainer.ckpt_every=0",
        "trainer.n_critic=1",
        "optim.lr_decay=linear",
        "optim.critic.lr=4e-4",
    )
    tr = Trainer(cfg, tmp_path, CPU)
    tr.fit()
    # the last update (step 4) ran at lr · (1 − 3/4)
    assert tr.opt_c.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert tr.opt_g.param_groups[0]["lr"] == pytest.approx(cfg.optim.generator.lr / 4)
    with pytest.raises(ConfigError, match="optim.lr_decay"):
        validate(compose_cfg("optim.lr_decay=cosine"))


def test_evaluation_says_whether_keep_best_improved_in_the_metrics_direction(tmp_path):
    """Evaluator.evaluate returns the values and, for eval.keep_best, whether the value
    beats the best so far (wasserstein: lower is better) and the best so far after it;
    keeping the run's best is the training loop's business."""
    cfg = compose_cfg(*TOY_EVAL)
    tr = Trainer(cfg, tmp_path / "run", CPU)
    ev = Evaluator(cfg.eval, cfg.dataset, tr.data, CPU)
    first = ev.evaluate(tr.generator)
    w = first.values["wasserstein"]
    assert first.best_metric == "wasserstein" and first.is_new_best and first.best_value == w
    worse = ev.evaluate(tr.generator, best_value=w / 2)  # the same samples: the same value
    assert worse.values == first.values
    assert not worse.is_new_best and worse.best_value == w / 2
    better = ev.evaluate(tr.generator, best_value=2 * w)
    assert better.is_new_best and better.best_value == w
    cfg.eval.keep_best = None
    untracked = Evaluator(cfg.eval, cfg.dataset, tr.data, CPU).evaluate(tr.generator)
    assert untracked.best_metric is None and not untracked.is_new_best
    assert untracked.best_value is None


def test_metrics_import_nothing_of_train():
    """The evaluator returns values; the trainer keeps the best: metrics/ imports no
    module of train/ (type-only imports included)."""
    import ast

    import wgangp.metrics

    for path in Path(wgangp.metrics.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not [n for n in names if n.startswith("wgangp.train")], path.name
