"""Sweeps through Hydra's own launchers and sweepers, for real, on the CPU.

joblib (2 jobs in parallel), submitit_local, an Optuna study of 3 tiny trials, and
``wgangp-sweep-report`` over a finished sweep.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import TINY, cli
from wgangp.checkpoint import load_checkpoint
from wgangp.sweep_report import main as report_main
from wgangp.sweep_report import read_scalars
from wgangp.train import _short_dirname

EXTRA = "needs the sweep extra: pip install 'wgangp[sweep]'"
QUICK = [
    *TINY,
    "critic.dim=16",
    "generator.dim=16",
    "trainer.batch_size=32",
    "trainer.log_every=1",
    "trainer.steps=2",
    "trainer.sample_every=0",
]


def sweep_dir(root: Path) -> Path:
    (d,) = [p for p in (root / "multirun").glob("*/*") if p.is_dir()]
    return d


def jobs_of(sweep: Path) -> list[Path]:
    return sorted(
        (p for p in sweep.iterdir() if p.is_dir() and p.name[0].isdigit()),
        key=lambda p: int(p.name.split("_", 1)[0]),
    )


def assert_complete(job: Path, steps: int = 2) -> dict:
    """A job directory holds everything a single run leaves."""
    assert {"config.yaml", "hydra.yaml", "overrides.yaml"} <= {
        p.name for p in (job / ".hydra").iterdir()
    }
    assert (job / "config.yaml").is_file()
    assert f"step {steps} |" in (job / "train.log").read_text()
    assert list((job / "tb").glob("events.out.tfevents.*"))
    assert list((job / "samples").glob("step_*.png"))
    ck = load_checkpoint(job / "checkpoints" / "last.pt")
    assert ck["step"] == steps
    return ck


def test_joblib_launcher_runs_two_jobs_in_parallel_and_the_report_gathers_them(tmp_path, capsys):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason=EXTRA)
    proc = cli(
        "-m", "hydra/launcher=parallel", *QUICK, "gp.lambda=0.1,10", cwd=tmp_path, check=True
    )
    assert "Joblib.Parallel(n_jobs=2" in proc.stdout + proc.stderr
    sweep = sweep_dir(tmp_path)
    jobs = jobs_of(sweep)
    assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1"]
    lambdas = [assert_complete(j)["config"]["gp"]["lambda"] for j in jobs]
    assert lambdas == [0.1, 10.0]
    hydra_cfg = OmegaConf.load(jobs[0] / ".hydra" / "hydra.yaml")
    assert hydra_cfg.hydra.launcher.n_jobs == 2

    # the report: one table (Markdown + CSV) and a plot
    assert report_main([str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "| job | overrides | steps | final_wasserstein | best_wasserstein |" in out
    assert "gp.lambda=0.1" in out and "gp.lambda=10" in out
    with open(sweep / "sweep_report.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["overrides"] for r in rows] == ["gp.lambda=0.1", "gp.lambda=10"]
    for r in rows:
        assert r["steps"] == "2" and float(r["steps_per_sec"]) > 0
        assert r["final_wasserstein"] and r["best_wasserstein"]
    assert (sweep / "sweep_report.png").stat().st_size > 5000
    # TensorBoard pointed at the sweep directory finds every job as a run
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    runs = EventMultiplexer().AddRunsFromDirectory(str(sweep)).Runs()
    assert len(runs) == 2


def test_submitit_local_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason=EXTRA)
    cli(
        "-m", "hydra/launcher=slurm_local", *QUICK, "trainer.n_critic=1,2", cwd=tmp_path, check=True
    )
    sweep = sweep_dir(tmp_path)
    jobs = jobs_of(sweep)
    assert [assert_complete(j)["config"]["trainer"]["n_critic"] for j in jobs] == [1, 2]
    # submitit's own bookkeeping: one folder per job with its result
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2


def test_optuna_sweep_of_three_trials(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason=EXTRA)
    proc = cli(
        "-m",
        "hparams_search=toy_optuna",
        "hydra.sweeper.n_trials=3",
        *QUICK,
        cwd=tmp_path,
        check=True,
    )
    sweep = sweep_dir(tmp_path)
    jobs = jobs_of(sweep)
    assert len(jobs) == 3
    values = []
    for job in jobs:
        ck = assert_complete(job)
        cfg = ck["config"]
        sampled = dict(o.split("=", 1) for o in ck["overrides"])
        # the sampled values reached the run's config
        assert cfg["gp"]["lambda"] == float(sampled["gp.lambda"])
        assert cfg["trainer"]["n_critic"] == int(sampled["trainer.n_critic"])
        betas = [float(b) for b in sampled["optim.critic.betas"].strip("[]").split(",")]
        assert cfg["optim"]["critic"]["betas"] == betas  # a list, not its text
        assert 1e-5 <= cfg["optim"]["critic"]["lr"] <= 1e-3
        assert 0.01 <= cfg["gp"]["lambda"] <= 10
        assert cfg["optimized_metric"] == "wasserstein"
        values.append(read_scalars(job / "tb")["wasserstein"][-1][1])
    res = OmegaConf.load(sweep / "optimization_results.yaml")
    assert res.name == "optuna" and set(res.best_params) == {
        "optim.critic.lr",
        "optim.generator.lr",
        "optim.critic.betas",
        "optim.generator.betas",
        "gp.lambda",
        "trainer.n_critic",
    }
    assert "Best value:" in proc.stdout + proc.stderr
    # the study minimised what the task returned: the final Wasserstein estimate
    assert res.best_value == pytest.approx(min(values), rel=1e-5, abs=1e-7)


def test_long_job_names_are_shortened_and_distinct():
    short = "gp.lambda=0.1,trainer.n_critic=5"
    assert _short_dirname(short) == short
    a = _short_dirname("x" * 300 + "a")
    b = _short_dirname("x" * 300 + "b")
    assert len(a) <= 120 and a != b and a.startswith("xxx")
