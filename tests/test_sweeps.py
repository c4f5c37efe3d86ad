"""Sweeps through Hydra's own launchers and sweepers, for real, on the CPU.

joblib (2 jobs in parallel), submitit_local, an Optuna study of 3 tiny trials, and
``wgangp-sweep-report`` over a finished sweep.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import TINY, cli, compose_cfg
from wgangp.cli.sweep_report import find_jobs, load_job, sample_sheet, sheet_layout
from wgangp.cli.sweep_report import main as report_main
from wgangp.config.compose import config_dir, short_dirname
from wgangp.config.optimized import LOGGED_SCALARS, check_optimized_metric
from wgangp.config.precheck import check_group_overrides, sweep_jobs
from wgangp.errors import ConfigError
from wgangp.io.checkpoint import load_checkpoint

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
        assert 1e-5 <= cfg["optim"]["critic"]["lr"] <= 1e-2
        assert 0.01 <= cfg["gp"]["lambda"] <= 10
        assert cfg["eval"]["keep_best"] == "wasserstein" and cfg["eval"]["every"] == 500
        # each trial's best sample-to-data distance over its evaluations (here: the end)
        rows = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == [cfg["trainer"]["steps"]]
        values.append(min(r["wasserstein"] for r in rows))
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
    # the study minimised what the task returned: the best evaluated distance
    assert res.best_value == pytest.approx(min(values), rel=1e-5, abs=1e-7)


def test_long_job_names_are_shortened_and_distinct():
    short = "gp.lambda=0.1,trainer.n_critic=5"
    assert short_dirname(short) == short
    a = short_dirname("x" * 300 + "a")
    b = short_dirname("x" * 300 + "b")
    assert len(a) <= 120 and a != b and a.startswith("xxx")


def options(group: str) -> str:
    return " | ".join(sorted(p.stem for p in (config_dir() / group).glob("*.yaml")))


def test_a_sweep_over_config_groups_runs_one_job_per_option(tmp_path):
    # a comma list and a glob over config groups: were refused as one option name
    cli("-m", *QUICK, "dataset=gaussians8,swissroll", "critic=glob(m*)", cwd=tmp_path, check=True)
    jobs = jobs_of(sweep_dir(tmp_path))
    assert [j.name.split("_", 1)[0] for j in jobs] == ["0", "1"]
    configs = [assert_complete(j)["config"] for j in jobs]
    assert [c["dataset"]["name"] for c in configs] == ["gaussians8", "swissroll"]
    assert [c["critic"]["name"] for c in configs] == ["mlp", "mlp"]
    assert "critic=mlp,dataset=swissroll" in jobs[1].name


@pytest.mark.parametrize(
    "arg",
    [
        "dataset=gaussians8,swissroll",
        "dataset=choice(gaussians8,swissroll)",
        "dataset=sort(swissroll,gaussians8)",
        "dataset=shuffle(gaussians8,swissroll)",
        "critic=glob(*)",
        "critic=glob(*,exclude=mlp)",
        "dataset=[gaussians8]",
        "critic={dim:8}",  # sets keys of the group's node: valid Hydra
        "critic={dim:8},{dim:16}",
        "hydra/launcher=parallel,basic",  # plugins' options: Hydra's to check
        "+experiment=toy_paper",
    ],
)
def test_valid_group_overrides_and_sweeps_pass_the_check(arg):
    assert check_group_overrides([arg], config_dir()) is None


def test_options_from_another_search_path_are_left_to_hydra():
    for extra in ("--config-dir=/elsewhere", "hydra.searchpath=[file:///elsewhere]"):
        assert check_group_overrides([extra, "dataset=mine,gaussians8"], config_dir()) is None


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("dataset=nope", "invalid option for dataset: 'nope' (allowed: {dataset})"),
        (
            "dataset=gaussians8,nope",
            "invalid option for dataset: 'nope' in 'gaussians8,nope' (allowed: {dataset})",
        ),
        (
            "dataset=choice(gaussians8,nope)",
            "invalid option for dataset: 'nope' in 'choice(gaussians8,nope)' (allowed: {dataset})",
        ),
        (
            "critic=glob(x*)",
            "invalid option for critic: 'glob(x*)' matches none of its options "
            "(allowed: {critic}); e.g. critic='glob(*)' sweeps them all",
        ),
        (
            "critic=range(1,3)",
            "invalid option for critic: 'range(1,3)' (allowed: {critic}); a config group "
            "takes option names, not numbers: sweep them with critic=A,B or critic='glob(*)'",
        ),
        # Hydra 1.3 itself raises a ValueError (a traceback) on group=null
        (
            "experiment=null",
            "invalid option for experiment: 'null' (allowed: {experiment}); to leave "
            "experiment out, use ~experiment",
        ),
        (
            "experiment=toy_paper,null",
            "invalid option for experiment: 'null' in 'toy_paper,null' (allowed: "
            "{experiment}); to leave experiment out, use ~experiment",
        ),
        ("dataset=0", "invalid option for dataset: '0' (allowed: {dataset})"),
        ("critic=[mlp,2]", "invalid option for critic: '2' in '[mlp,2]' (allowed: {critic})"),
    ],
)
def test_bad_group_overrides_name_the_bad_option(arg, message):
    groups = {g: options(g) for g in ("dataset", "critic", "experiment")}
    assert check_group_overrides([arg], config_dir()) == message.format(**groups)


def test_a_sweep_with_a_bad_option_is_refused_before_any_job(tmp_path):
    proc = cli("-m", *QUICK, "dataset=gaussians8,nope", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        f"wgangp: error: invalid option for dataset: 'nope' in 'gaussians8,nope' "
        f"(allowed: {options('dataset')})"
    )
    assert not (tmp_path / "multirun").exists()


def test_a_sweep_with_a_bad_value_is_refused_before_any_job(tmp_path):
    """Job #1 of three has λ = −1: without the check job #0 trains, #1 fails, #2 never runs."""
    proc = cli("-m", *QUICK, "gp.lambda=1,-1,10", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "wgangp: error: sweep job #1 (gp.lambda=-1): invalid value for gp.lambda: -1.0 "
        "(allowed: a number ≥ 0); the paper uses 10; no job was started"
    )
    assert not (tmp_path / "multirun").exists()


def test_sweep_jobs_expands_what_the_basic_sweeper_would_launch():
    jobs = sweep_jobs(["-m", "gp.lambda=1,10", "trainer.n_critic=range(1,4)", "trainer.steps=2"])
    assert jobs is not None and len(jobs) == 6
    assert jobs[0] == ["gp.lambda=1", "trainer.n_critic=1", "trainer.steps=2"]
    assert jobs[-1] == ["gp.lambda=10", "trainer.n_critic=3", "trainer.steps=2"]
    assert sweep_jobs(["gp.lambda=1,10"]) is None  # no -m: Hydra asks for --multirun
    assert sweep_jobs(["-m", "gp.lambda=10"]) is None  # one job: checked as it starts
    assert sweep_jobs(["-m", "gp.lambda=interval(0,1)"]) is None  # not enumerable
    assert sweep_jobs(["-m", "critic=glob(*)"]) is None
    assert sweep_jobs(["-m", "hydra/sweeper=optuna", "gp.lambda=1,2"]) is None
    assert sweep_jobs(["-m", "gp.lambda=range(0,1000)", "trainer.seed=1,2"]) is None  # > 512


def test_a_metric_the_run_never_logs_is_refused_before_training(tmp_path):
    proc = cli(*QUICK, "optimized_metric=nope", "hydra.run.dir=run", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "wgangp: error: invalid value for optimized_metric: 'nope' (allowed: wasserstein | "
        "gp | grad_norm | loss/critic | loss/generator | perf/steps_per_sec | "
        "perf/global_batch_size | perf/train_s); name a value the run logs, e.g. "
        "optimized_metric=wasserstein"
    )
    assert "Traceback" not in proc.stdout + proc.stderr
    log = (tmp_path / "run" / "train.log").read_text()
    assert "step " not in log and "was not logged" not in log
    assert not list(tmp_path.rglob("*.pt"))


def test_every_fixed_name_is_logged_and_returned(tmp_path):
    """The names the check accepts up front are the ones a run logs and returns, for
    each loss (one sweep over them). The baselines log no Wasserstein estimate: with
    the default optimized_metric they train, say so once and return nothing."""
    losses = ["wgan-gp", "wgan", "dcgan", "lsgan"]
    sweep = ",".join(name.replace("-", "_") for name in losses)
    proc = cli("-m", *QUICK, f"loss={sweep}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    for job, loss in zip(jobs_of(sweep_dir(tmp_path)), losses, strict=True):
        log = (job / "train.log").read_text()
        assert "was not logged" not in log
        (line,) = [ln for ln in log.splitlines() if "step 2 |" in ln]
        logged = {kv.split("=", 1)[0] for kv in line.split("step 2 | ", 1)[1].split()}
        assert logged == set(LOGGED_SCALARS[loss])
        said = f"loss.name={loss} logs no Wasserstein estimate"
        assert log.count(said) == (loss in ("dcgan", "lsgan"))
    # named explicitly, a value the baseline does not log is refused before training
    with pytest.raises(ConfigError) as e:
        check_optimized_metric(compose_cfg("loss=lsgan", "optimized_metric=gp"))
    assert e.value.key == "optimized_metric" and "d_real | d_fake" in str(e.value)


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        (["eval.every=5", "optimized_metric=fid"], "use optimized_metric=metrics/fid"),
        (["optimized_metric=metrics/fid"], "evaluation is off: set eval.every=N"),
        (
            ["eval.every=5", "eval.metrics=[wasserstein]", "optimized_metric=metrics/fid"],
            "add fid to eval.metrics to log metrics/fid",
        ),
    ],
)
def test_optimized_metric_errors_say_how_to_fix_them(overrides, fix):
    with pytest.raises(ConfigError) as e:
        check_optimized_metric(compose_cfg(*overrides))
    assert e.value.key == "optimized_metric" and fix in str(e.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["optimized_metric=gp"],
        ["eval.every=5", "optimized_metric=metrics/fid"],  # eval.metrics=null: defaults
        ["eval.every=5", "eval.metrics=[kid]", "optimized_metric=metrics/kid_std"],
        ["eval.every=5", "eval.keep_best=wasserstein", "optimized_metric=x"],  # unused
    ],
)
def test_optimized_metrics_the_run_logs_are_accepted(overrides):
    check_optimized_metric(compose_cfg(*overrides))


def test_the_sample_sheet_lays_a_two_key_sweep_out_as_a_table():
    """Figure 2's layout: the first swept key's values down, the second's across."""
    vary = [
        ["experiment=fig2_tanh", "loss=dcgan"],
        ["experiment=fig2_tanh", "loss=wgan_gp"],
        ["experiment=fig2_no_norm", "loss=dcgan"],
        ["experiment=fig2_no_norm", "loss=wgan_gp"],
        ["experiment=fig2_gated", "loss=wgan_gp"],  # a cell of the table left empty
    ]
    where, down, across = sheet_layout(vary)
    assert where == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 1)]
    assert down == ["experiment=fig2_tanh", "experiment=fig2_no_norm", "experiment=fig2_gated"]
    assert across == ["loss=dcgan", "loss=wgan_gp"]
    # one key, three keys, or a pair twice: the jobs in order, ⌈√n⌉ to a row, no titles
    assert sheet_layout([["a=1"], ["a=2"], ["a=3"]]) == ([(0, 0), (0, 1), (1, 0)], [], [])
    assert sheet_layout([["a=1", "b=1", "c=1"], ["a=2", "b=1", "c=2"]])[1:] == ([], [])
    assert sheet_layout([["a=1", "b=1"], ["a=1", "b=1"]])[1:] == ([], [])
    assert sheet_layout([["a=1", "b=1"], ["a=2"]])[1:] == ([], [])


def test_the_report_puts_every_jobs_last_picture_on_one_sheet(tmp_path, capsys):
    from PIL import Image

    cli("-m", *QUICK, "loss=dcgan,wgan_gp", "trainer.seed=0,1", cwd=tmp_path, check=True)
    sweep = sweep_dir(tmp_path)
    assert report_main([str(sweep), "--metric", "loss/critic"]) == 0
    assert "sweep_samples.png" in capsys.readouterr().out
    with Image.open(sweep / "sweep_samples.png") as im:
        assert im.size == (600, 600)  # 2 × 2 cells of 3 inches at 100 dpi
    # jobs that drew no picture (text runs write .txt samples): no sheet
    jobs = [load_job(p, sweep) for p in find_jobs(sweep)]
    for job in jobs:
        for png in (job.path / "samples").glob("*.png"):
            png.unlink()
    assert not sample_sheet(jobs, tmp_path / "sheet.png")
    assert not (tmp_path / "sheet.png").exists()


def test_the_report_draws_each_jobs_layer_gradients(tmp_path, capsys):
    """``-m loss=wgan loss.clip=... diagnostics.every=N``: the paper's Figure 1b from the
    command line. The profiles are the jobs' last logged values, layer 1 first; with
    every weight of a 6-layer, 16-wide critic at ±0.001 the gradient shrinks layer by
    layer toward the input."""
    from PIL import Image

    from wgangp.cli.sweep_report import layer_grad_profile

    clips = "loss.clip=0.1,0.001"
    deep = ["critic.depth=6", "diagnostics.every=2"]
    cli("-m", *QUICK, "loss=wgan", clips, *deep, cwd=tmp_path, check=True)
    sweep = sweep_dir(tmp_path)
    assert report_main([str(sweep), "--metric", "wasserstein"]) == 0
    assert "sweep_layer_grads.png" in capsys.readouterr().out
    with Image.open(sweep / "sweep_layer_grads.png") as im:
        assert im.size == (600, 400)
    jobs = [load_job(p, sweep) for p in find_jobs(sweep)]
    tags = sorted(t for t in jobs[1].scalars if t.startswith("layer_grad/"))
    assert tags == [f"layer_grad/0{k}_net.{2 * (k - 1)}" for k in range(1, 8)]
    small = layer_grad_profile(jobs[1])
    assert small == [jobs[1].scalars[t][-1][1] for t in tags]
    assert all(a < b for a, b in zip(small[1:], small[2:], strict=False)), small
    # runs without diagnostics: no plot
    from wgangp.cli.sweep_report import layer_grad_plot

    for job in jobs:
        job.scalars = {k: v for k, v in job.scalars.items() if not k.startswith("layer_grad/")}
    assert not layer_grad_plot(jobs, tmp_path / "lg.png") and not (tmp_path / "lg.png").exists()


def test_training_time_is_read_from_the_runs_clock():
    """--x time: the metric placed at the run's perf/train_s, linear between its
    points (from 0 s at step 0); past the last point there is no time to give."""
    from wgangp.cli.sweep_report import Job, seconds_at, training_seconds

    job = Job(Path("j"), "j", [], 20, {}, {"perf/train_s": [(10, 4.0), (20, 10.0)]})
    clock = training_seconds(job)
    assert clock == [(10, 4.0), (20, 10.0)]
    got = [seconds_at(clock, s) for s in (0, 5, 10, 15, 20, 21)]
    assert got == [0.0, 2.0, 4.0, 7.0, 10.0, None]
    assert training_seconds(Job(Path("o"), "o", [], 2, {}, {})) == []  # an older run


def test_the_report_plots_against_training_time(tmp_path, capsys, monkeypatch):
    cli("-m", *QUICK, "trainer.n_critic=1,5", cwd=tmp_path, check=True)
    sweep = sweep_dir(tmp_path)
    assert report_main([str(sweep), "--x", "time"]) == 0
    capsys.readouterr()
    with open(sweep / "sweep_report.csv") as f:
        rows = list(csv.DictReader(f))
    times = {r["overrides"]: float(r["train_s"]) for r in rows}
    assert set(times) == {"trainer.n_critic=1", "trainer.n_critic=5"} and min(times.values()) > 0
    for job in jobs_of(sweep):
        ck = load_checkpoint(job / "checkpoints" / "last.pt")
        n = ck["config"]["trainer"]["n_critic"]
        assert ck["train_seconds"] == pytest.approx(times[f"trainer.n_critic={n}"], rel=1e-6)
    assert (sweep / "sweep_report.png").stat().st_size > 0
    # runs that logged no clock (older wgangp): refused by name, nothing written
    import wgangp.cli.sweep_report as sr

    real_read = sr.read_scalars
    without = lambda d: {k: v for k, v in real_read(d).items() if k != "perf/train_s"}  # noqa: E731
    monkeypatch.setattr(sr, "read_scalars", without)
    assert report_main([str(sweep), "--x", "time", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "wgangp-sweep-report: error: invalid value for --x: 'time' (allowed: step for these "
        "jobs: none logged its training time (perf/train_s)); runs of wgangp before "
        "perf/train_s have no clock to plot against; use --x step"
    )
    assert not (tmp_path / "r" / "sweep_report.md").exists()
