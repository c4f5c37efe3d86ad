"""The installed command: a default run, a -m sweep, TensorBoard files, packaging."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import REPO, TINY, cli, pythonpath
from wgangp.io.checkpoint import load_checkpoint

SCALARS = {
    "loss/critic",
    "loss/generator",
    "wasserstein",
    "gp",
    "grad_norm",
    "lr/critic",
    "lr/generator",
    "perf/steps_per_sec",
}


def scalars(run_dir: Path) -> dict[str, list[float]]:
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_a_run_leaves_a_complete_run_directory(tmp_path):
    proc = cli(
        *TINY,
        "trainer.steps=20",
        "trainer.sample_every=10",
        "trainer.ckpt_every=10",
        cwd=tmp_path,
        check=True,
    )
    (run,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "config.yaml").is_file()
    assert (run / "train.log").read_text().count("step 20") >= 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "last.pt",
        "step_0000010.pt",
        "step_0000020.pt",
    ]
    assert (run / "samples" / "step_0000010.png").stat().st_size > 1000
    assert (run / "samples" / "step_0000020.png").is_file()
    tb = scalars(run)
    assert set(tb) >= SCALARS, set(tb)
    assert len(tb["wasserstein"]) == 4  # log_every=5 over 20 steps
    ck = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ck["step"] == 20
    assert {"critic", "generator", "opt_critic", "opt_generator", "rng", "config"} <= set(ck)
    assert "Traceback" not in proc.stderr


def test_multirun_sweep_gives_one_run_directory_per_job(tmp_path):
    # TINY but trainer.log_every: the names stay under the 120 characters past which
    # they are shortened with a hash
    cli(
        "-m",
        *(o for o in TINY if not o.startswith("trainer.log_every")),
        "trainer.steps=4",
        "gp.lambda=0.1,10",
        "trainer.n_critic=1,5",
        cwd=tmp_path,
        check=True,
    )
    jobs = sorted(p for p in (tmp_path / "multirun").glob("*/*/*") if p.is_dir())
    assert len(jobs) == 4
    for job, (lam, nc) in zip(jobs, [("0.1", 1), ("0.1", 5), ("10", 1), ("10", 5)], strict=False):
        # readable, override-based names: <job num>_<overrides>
        assert job.name.startswith(f"{jobs.index(job)}_")
        assert f"gp.lambda={lam}," in job.name and f"trainer.n_critic={nc}," in job.name
    seen = set()
    for job in jobs:
        ck = load_checkpoint(job / "checkpoints" / "last.pt")
        cfg = ck["config"]
        seen.add((cfg["gp"]["lambda"], cfg["trainer"]["n_critic"]))
        assert ck["step"] == 4
        assert "wasserstein" in scalars(job)
    assert seen == {(0.1, 1), (0.1, 5), (10.0, 1), (10.0, 5)}


def test_user_config_dir_is_searched(tmp_path):
    extra = tmp_path / "my_configs" / "dataset"
    extra.mkdir(parents=True)
    # a data set config names its kind's schema first (wgangp/config/schema_data.py)
    (extra / "ring_wide.yaml").write_text(
        "defaults:\n  - points_schema\nname: gaussians8\nscale: 4.0\n"
    )
    cli(
        "--config-dir",
        str(tmp_path / "my_configs"),
        *TINY,
        "dataset=ring_wide",
        "trainer.steps=2",
        cwd=tmp_path,
        check=True,
    )
    (ck,) = tmp_path.rglob("last.pt")
    assert load_checkpoint(ck)["config"]["dataset"]["scale"] == 4.0


def pip(*args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", *args], check=True, capture_output=True, timeout=300
    )


def test_plain_wheel_install_finds_its_configs(tmp_path):
    """A non-editable install run from an unrelated directory ships configs/ inside."""
    wheels = tmp_path / "wheels"
    pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(REPO))
    (whl,) = wheels.glob("wgangp-*.whl")
    target = tmp_path / "site"
    pip("install", "--no-deps", "-q", "--target", str(target), str(whl))
    assert (target / "wgangp" / "configs" / "config.yaml").is_file()
    assert (target / "wgangp" / "configs" / "experiment" / "toy_paper.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = (
        "import sys, wgangp, wgangp.cli.train as t; "
        "print(wgangp.__file__); print(t.config_dir()); sys.argv=['wgangp-train', "
        "'experiment=toy_paper', 'dataset=gaussians25', '--cfg', 'job']; t.main()"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": pythonpath(target), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(str(target)) and lines[1] == str(target / "wgangp" / "configs")
    assert "name: gaussians25" in proc.stdout and "lambda: 0.1" in proc.stdout


def test_a_config_error_is_reported_before_the_heavy_imports(tmp_path):
    """A bad value is refused before torchvision, scipy, matplotlib or the trainer load
    (together ~4 s of a 7 s start on 2 cores); the toy runs never need torchvision."""
    code = (
        "import runpy, sys\n"
        "sys.argv = ['wgangp-train', 'gp.lambda=-1', 'trainer.device=cpu']\n"
        "try:\n"
        "    runpy.run_module('wgangp.cli.train', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('exit', e.code)\n"
        "heavy = ('torchvision', 'scipy', 'matplotlib', 'wgangp.train.trainer', 'wgangp.metrics')\n"
        "print('loaded', sorted(m for m in heavy if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": pythonpath(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert "invalid value for gp.lambda: -1.0" in proc.stderr
    assert proc.stdout.splitlines()[-2:] == ["exit 2", "loaded []"], proc.stdout + proc.stderr
