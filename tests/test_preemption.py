"""A cluster's warning before the time limit (SIGUSR1/SIGUSR2, as submitit sends it):
a checkpoint of the current step, then a requeue through submitit inside a submitit
job, else an exit like SIGTERM's; and the wall-clock checkpoints
(``trainer.ckpt_every_minutes``)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, cli, compose_cfg, toy_trainer_factory
from tests.test_faults_cli import LONG, logged_step, start, wait_for
from tests.test_resume import assert_same_state
from wgangp.config.validate import validate
from wgangp.errors import ConfigError, Interrupted
from wgangp.io.checkpoint import load_checkpoint
from wgangp.train import guards, preemption
from wgangp.train.trainer import Trainer

#: the step the resumed and the unbroken runs train to
FINAL_STEP = 40


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The last checkpoint of a run straight to FINAL_STEP, as the stopped runs run."""
    run = tmp_path_factory.mktemp("unbroken") / "run"
    cli(
        *LONG,
        f"trainer.steps={FINAL_STEP}",
        "trainer.ckpt_every=0",
        f"hydra.run.dir={run}",
        cwd=run.parent,
        check=True,
    )
    return load_checkpoint(run / "checkpoints" / "last.pt")


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_sigusr_saves_the_current_step_exits_128_plus_n_and_resume_auto_is_bitwise(
    tmp_path: Path, unbroken: dict, signum: int
):
    """Outside a submitit job SIGUSR1/SIGUSR2 act as SIGTERM: a checkpoint of the step
    the run stopped at (ckpt_every=0: no other save), exit 128 + N (138, 140), one line
    naming the signal; resume=auto then ends bitwise where an unbroken run does."""
    run = tmp_path / "run"
    proc = start(run, *LONG, "trainer.ckpt_every=0", "recipe=paper", "resume=auto")
    wait_for(lambda: logged_step(run) >= 3)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum == {"SIGUSR1": 138, "SIGUSR2": 140}[name], err
    assert "Traceback" not in out + err
    saved = run / "checkpoints" / "last.pt"
    assert f"wgangp][WARNING] - stopped by {name}; checkpoint: {saved}" in out + err
    stopped_at = load_checkpoint(saved)["step"]
    assert 3 <= stopped_at < FINAL_STEP
    assert stopped_at == logged_step(run)  # the step it stopped at, not an older one
    proc = cli(
        *LONG,
        "trainer.ckpt_every=0",
        f"trainer.steps={FINAL_STEP}",
        "resume=auto",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
        check=True,
    )
    assert f"at step {stopped_at}" in proc.stdout + proc.stderr
    resumed = load_checkpoint(saved)
    assert resumed["step"] == unbroken["step"] == FINAL_STEP
    assert_same_state(unbroken, resumed)


def fake_submitit_job(monkeypatch: pytest.MonkeyPatch) -> None:
    """The variables a submitit SLURM job script exports (submitit reads them)."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_PROCID", "0")


def signal_at_step(monkeypatch: pytest.MonkeyPatch, signum: int, at: int) -> None:
    """The process signals itself during training step ``at`` (1-based)."""
    train_step = Trainer.train_step

    def step_and_signal(self: Trainer) -> dict:
        stats = train_step(self)
        if self.step + 1 == at:
            os.kill(os.getpid(), signum)
        return stats

    monkeypatch.setattr(Trainer, "train_step", step_and_signal)


@pytest.mark.parametrize(
    ("signum", "in_submitit", "requeued"),
    [
        (signal.SIGUSR2, True, True),
        (signal.SIGUSR1, True, True),
        (signal.SIGTERM, True, False),
        (signal.SIGUSR2, False, False),
    ],
)
def test_submitit_job_is_requeued_once_after_the_checkpoint_of_the_signalled_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int, in_submitit: bool, requeued: bool
):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    if in_submitit:
        fake_submitit_job(monkeypatch)
    assert preemption.submitit_job() is in_submitit
    calls = []

    def fake_requeue(signum: int, handlers: list) -> str:
        # what the requeued job will resume from: the signalled step, already on disk
        calls.append((signum, load_checkpoint(tmp_path / "run/checkpoints/last.pt")["step"]))
        assert submitits_handler in handlers  # what requeue() looks for submitit's among
        # the handlers found on entry are back while submitit requeues
        assert signal.getsignal(signal.SIGUSR2) is submitits_handler
        return "faked"

    def submitits_handler(signum: int, frame: object) -> None:
        raise AssertionError("the trainer's handler must win while it trains")

    monkeypatch.setattr(preemption, "requeue", fake_requeue)
    signal_at_step(monkeypatch, signum, at=3)
    trainer = toy_trainer_factory(tmp_path, monkeypatch, *TINY)(
        "trainer.steps=50", "trainer.ckpt_every=0", "trainer.sample_every=0"
    )
    before = signal.signal(signal.SIGUSR2, submitits_handler)
    try:
        with pytest.raises(Interrupted) as stopped:
            trainer.fit()
        # restored at the end of the loop
        assert signal.getsignal(signal.SIGUSR2) is submitits_handler
    finally:
        signal.signal(signal.SIGUSR2, before)
    assert (stopped.value.signum, stopped.value.exit_code) == (signum, 128 + signum)
    assert load_checkpoint(stopped.value.checkpoint)["step"] == 3
    assert calls == ([(signum, 3)] if requeued else [])  # once, after the checkpoint


def submitit_signal_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, timeout_min: float, countdown: int
) -> tuple[object, list[int]]:
    """submitit's own SignalHandler in a (faked) SLURM job, its ``scontrol requeue``
    recorded instead of run; returns it and the countdowns requeued with."""
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission, JobPaths
    from submitit.slurm.slurm import SlurmJobEnvironment

    fake_submitit_job(monkeypatch)
    requeues: list[int] = []
    monkeypatch.setattr(SlurmJobEnvironment, "_requeue", lambda env, n: requeues.append(n))
    delayed = DelayedSubmission(print)  # not checkpointable: requeued unless timed out
    delayed.set_timeout(timeout_min, countdown)
    env = SlurmJobEnvironment()
    return SignalHandler(env, JobPaths(tmp_path, job_id="4242"), delayed), requeues


def test_requeue_calls_submitits_handler_which_requeues_and_exits(tmp_path, monkeypatch):
    handler, requeues = submitit_signal_handler(tmp_path, monkeypatch, 240, 3)
    with pytest.raises(SystemExit) as ended:
        preemption.requeue(signal.SIGUSR2, [signal.SIG_DFL, handler.checkpoint_and_try_requeue])
    assert ended.value.code == -1  # submitit's exit after its `scontrol requeue`
    assert requeues == [3]  # preempted, not timed out: the countdown is kept


def test_requeue_returns_submitits_reason_when_it_declines(tmp_path, monkeypatch):
    # a 1-minute job is past submitit's guaranteed time at once: a time-out, none left
    handler, requeues = submitit_signal_handler(tmp_path, monkeypatch, 1, 0)
    why = preemption.requeue(signal.SIGUSR2, [handler.checkpoint_and_try_requeue])
    assert why == "Job not requeued because: timed-out too many times."
    assert requeues == []
    assert preemption.requeue(signal.SIGUSR2, [signal.SIG_DFL]) == (
        "submitit's signal handler is not installed in this process"
    )


@pytest.mark.parametrize(
    ("minutes", "step_files"),
    [(1.0, [3, 6, 9, 10]), (0.5, [2, 4, 6, 8, 10]), (0.0, [10])],
)
def test_wall_clock_checkpoints_are_written_when_due(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minutes: float, step_files: list[int]
):
    """A step takes 25 s on the faked clock: with 1 minute a checkpoint is due at steps
    3 (75 s), 6 (150 − 75 = 75 s) and 9; with 0.5 every 2nd step; 0: only the final
    one (ckpt_every=100000 never fires)."""
    clock = {"now": 0.0}
    monkeypatch.setattr(guards, "now", lambda: clock["now"])
    train_step = Trainer.train_step

    def step_of_25_seconds(self: Trainer) -> dict:
        clock["now"] += 25.0
        return train_step(self)

    monkeypatch.setattr(Trainer, "train_step", step_of_25_seconds)
    trainer = toy_trainer_factory(tmp_path, monkeypatch, *TINY)(
        "trainer.steps=10",
        "trainer.ckpt_every=100000",
        f"trainer.ckpt_every_minutes={minutes}",
        "trainer.keep_checkpoints=10",
        "trainer.sample_every=0",
    )
    trainer.fit()
    files = sorted((tmp_path / "run" / "checkpoints").glob("step_*.pt"))
    assert [load_checkpoint(p)["step"] for p in files] == step_files
    assert [int(p.stem.split("_")[1]) for p in files] == step_files


def test_ckpt_every_minutes_defaults_to_30():
    assert compose_cfg(*TINY).trainer.ckpt_every_minutes == 30.0
    assert compose_cfg("experiment=cifar10_dcgan_paper").trainer.ckpt_every_minutes == 30.0


def test_negative_ckpt_every_minutes_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError) as refused:
        validate(compose_cfg(*TINY, "trainer.ckpt_every_minutes=-5"))
    assert str(refused.value) == (
        "invalid value for trainer.ckpt_every_minutes: -5.0 (allowed: a number ≥ 0); "
        "0 is off, e.g. 30"
    )
    proc = cli(
        *TINY, "trainer.ckpt_every_minutes=-0.5", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        "wgangp: error: invalid value for trainer.ckpt_every_minutes: -0.5 "
        "(allowed: a number ≥ 0); 0 is off, e.g. 30"
    )
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_agreed_flags_in_one_process_are_the_flags():
    assert guards.agreed((True, False), False, torch.device("cpu")) == [True, False]
