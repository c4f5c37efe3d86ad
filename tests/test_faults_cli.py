"""Faults survived by the real command: kill -9 (also mid-checkpoint-write), SIGINT,
a full disk, an unusable run directory, a NaN; ``resume=auto`` picks up the pieces.

Faults are injected from outside the product code by ``tests/faults/sitecustomize.py``.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY, cli, paper_recipe, pythonpath
from wgangp.io.checkpoint import load_checkpoint

FAULTS = Path(__file__).resolve().parent / "faults"
LONG = [
    *TINY,
    "trainer.n_critic=1",
    "trainer.steps=100000",
    "trainer.log_every=1",
    "trainer.sample_every=0",
]


def start(run: Path, *args: str, fault: str = "") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": pythonpath(FAULTS, REPO), "WGANGP_FAULT": fault}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "wgangp.cli.train", *paper_recipe(args), f"hydra.run.dir={run}"],
        cwd=run.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(cond, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def logged_step(run: Path) -> int:
    log = run / "train.log"
    if not log.is_file():
        return 0
    steps = [
        int(ln.split("step ", 1)[1].split(" ", 1)[0])
        for ln in log.read_text().splitlines()
        if "] - step " in ln
    ]
    return max(steps, default=0)


def check_checkpoint_dir(run: Path) -> int:
    """Every ``*.pt`` loads (never half-written); only our temporaries may be left over.
    Returns the newest step."""
    steps = []
    for p in (run / "checkpoints").iterdir():
        if p.suffix == ".pt":
            steps.append(load_checkpoint(p)["step"])
        else:
            assert p.name.startswith(".") and p.name.endswith(".tmp"), p
    return max(steps)


def test_kill_9_at_random_moments_loses_at_most_ckpt_every_steps(tmp_path):
    run = tmp_path / "run"
    rnd = random.Random(1234)
    args = [*LONG, "trainer.ckpt_every=1", "trainer.keep_checkpoints=2", "resume=auto"]
    newest = 0
    for _ in range(3):
        proc = start(run, *args)
        target = newest + 3
        wait_for(lambda t=target: logged_step(run) >= t)
        time.sleep(rnd.uniform(0.0, 1.0))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL
        reached = logged_step(run)
        ck_step = check_checkpoint_dir(run)
        assert ck_step >= reached - 1  # ckpt_every=1: at most the step being saved is lost
        assert ck_step >= newest
        newest = ck_step
        # the last k are kept; a kill between a write and the pruning after it can leave
        # one more, pruned at the next save
        assert len(list((run / "checkpoints").glob("step_*.pt"))) <= 3
    # a final resume=auto continues from the newest complete checkpoint
    proc = cli(
        *args[:-1],
        "trainer.steps=" + str(newest + 2),
        "resume=auto",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
        check=True,
    )
    assert f"at step {newest}" in proc.stderr + (run / "train.log").read_text()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == newest + 2
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert len(list((run / "checkpoints").glob("step_*.pt"))) == 2


def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_and_resume_auto_continues(
    tmp_path,
):
    run = tmp_path / "run"
    args = [*LONG, "trainer.ckpt_every=2", "resume=auto"]
    proc = start(run, *args, fault="slow_ckpt:1.5")
    ckdir = run / "checkpoints"
    # the second checkpoint's temporary file exists: the first is complete
    wait_for(lambda: (ckdir / "last.pt").exists() and any(ckdir.glob(".*.tmp")), timeout=180)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    leftovers = list(ckdir.glob(".*.tmp"))
    assert leftovers, "the kill did not land mid-write"
    step = check_checkpoint_dir(run)
    assert step >= 2
    out = cli(
        *args[:-1],
        f"trainer.steps={step + 1}",
        "resume=auto",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
        check=True,
    )
    assert "removed 1 incomplete checkpoint file" in out.stderr + (run / "train.log").read_text()
    assert not any(p.exists() for p in leftovers)
    assert load_checkpoint(ckdir / "last.pt")["step"] == step + 1


def test_sigint_saves_at_the_current_step_and_exits_130(tmp_path):
    run = tmp_path / "run"
    proc = start(run, *LONG, "trainer.ckpt_every=0")
    wait_for(lambda: logged_step(run) >= 3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "SIGINT" in out + err and "Traceback" not in out + err
    # the checkpoint holds the step the run stopped at (ckpt_every=0: no other save)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] >= 3


def test_full_disk_through_the_cli_is_one_clear_line_and_the_previous_checkpoint_survives(
    tmp_path,
):
    run = tmp_path / "run"
    # two saves per checkpoint (step file + last.pt): the 2nd checkpoint fails
    proc = start(run, *TINY, "trainer.steps=6", "trainer.ckpt_every=2", fault="enospc_after:2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "Traceback" not in out + err
    assert (
        f"wgangp: error: checkpoint {run}/checkpoints: cannot write a checkpoint at step 4 "
        "(No space left on device); the previous checkpoint is intact"
    ) in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_full_disk_for_the_tensorboard_log_at_start_up_is_one_line_no_thread_traceback(
    tmp_path,
):
    """tensorboard writes events from a thread: its OSError was printed as that thread's
    traceback on top of the error line."""
    run = tmp_path / "run"
    proc = start(run, *TINY, "trainer.steps=4", fault="tb_enospc_after:0")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "Traceback" not in out + err and "Exception in thread" not in out + err
    assert err.splitlines() == [
        f"wgangp: error: cannot write the TensorBoard log {run}/tb at step 0 (No space left "
        f"on device); no checkpoint was written; free disk space or fix the permissions of {run}"
    ]


def test_full_disk_for_the_tensorboard_log_mid_run_saves_that_step_and_resume_continues(
    tmp_path,
):
    run = tmp_path / "run"
    args = [*TINY, "trainer.n_critic=1", "trainer.log_every=1", "trainer.ckpt_every=2"]
    # the file-version event, then a few steps' scalars are written; then the disk is full
    proc = start(run, *args, "trainer.steps=20", fault="tb_enospc_after:28")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "Traceback" not in out + err and "Exception in thread" not in out + err
    (line,) = err.splitlines()
    m = re.fullmatch(
        rf"wgangp: error: cannot write the TensorBoard log {run}/tb at step (\d+) \(No space "
        rf"left on device\); training stopped; checkpoint of step \1 saved: "
        rf"{run}/checkpoints/last.pt; free disk space or fix the permissions of {run}, then "
        rf"continue with resume={run}",
        line,
    )
    assert m, line
    step = int(m.group(1))
    assert 2 < step < 20
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == step
    assert check_checkpoint_dir(run) == step  # every file loads, no temporary left
    # the hint works: the run continues from there once the disk has room again
    cli(*args, "trainer.steps=22", f"resume={run}", cwd=tmp_path, check=True)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 22


def test_a_full_disk_mid_run_is_one_warning_one_error_and_the_last_checkpoint_survives(
    tmp_path,
):
    """The whole disk fills up: train.log, the TensorBoard log and the checkpoint of
    the step the run stops at all fail; the previous checkpoint stays readable."""
    run = tmp_path / "run"
    proc = start(
        run,
        *TINY,
        "trainer.n_critic=1",
        "trainer.log_every=1",
        "trainer.ckpt_every=2",
        "trainer.steps=20",
        fault="log_enospc_after:0,tb_enospc_after:28,enospc_after:2",
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "Traceback" not in out + err and "Logging error" not in out + err
    warning, error = err.splitlines()
    assert warning == (
        f"wgangp: warning: cannot write the log file {run}/train.log (No space left on "
        "device); it gets no more messages (the console does)"
    )
    m = re.fullmatch(
        rf"wgangp: error: cannot write the TensorBoard log {run}/tb at step (\d+) \(No space "
        rf"left on device\); training stopped; checkpoint {run}/checkpoints: cannot write a "
        rf"checkpoint at step \1 \(No space left on device\); the previous checkpoint is "
        rf"intact — free disk space or fix permissions, then continue with resume={run}",
        error,
    )
    assert m, error
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 2
    assert check_checkpoint_dir(run) == 2
    assert not list((run / "checkpoints").glob(".*.tmp"))


def test_an_unusable_run_directory_is_one_clear_line(tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    proc = cli(*TINY, "trainer.steps=2", f"hydra.run.dir={tmp_path}/afile/run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip() == (
        f"wgangp: error: cannot create the run directory {tmp_path}/afile/run: "
        f"{tmp_path}/afile is not a directory; choose another with hydra.run.dir=PATH"
    )


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")
def test_a_run_directory_where_nothing_can_be_created_is_one_clear_line(tmp_path):
    """os.access says yes to /proc for root: the check creates a file to know."""
    proc = cli(*TINY, "trainer.steps=2", "hydra.run.dir=/proc/wgangp-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.strip().startswith(
        "wgangp: error: cannot create the run directory /proc/wgangp-run: cannot create "
        "files in /proc ("
    )
    assert proc.stderr.strip().endswith("); choose another with hydra.run.dir=PATH")


def test_a_nan_through_the_cli_stops_with_the_step_terms_and_checkpoint(tmp_path):
    run = tmp_path / "run"
    # n_critic=1: critic loss k is step k's
    proc = start(
        run,
        *TINY,
        "trainer.n_critic=1",
        "trainer.steps=10",
        "trainer.ckpt_every=2",
        "trainer.sample_every=0",
        fault="nan_critic_at:5",
    )
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and "Traceback" not in out + err
    assert "wgangp: error: non-finite critic loss at step 5 (critic loss=nan, W estimate=" in err, (
        err
    )
    assert f"last good checkpoint: {run}/checkpoints/last.pt" in err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4


def test_ctrl_c_before_training_is_one_line_and_exit_130(monkeypatch, capsys):
    """Before Trainer.fit installs its handlers, SIGINT is a KeyboardInterrupt: no
    traceback either (composing the config stands in for the slow start-up here)."""
    import wgangp.cli.train as train_mod

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod.hydra, "main", interrupted)
    monkeypatch.setattr(sys, "argv", ["wgangp-train", *TINY])
    with pytest.raises(SystemExit) as e:
        train_mod.main()
    assert e.value.code == 130
    assert capsys.readouterr().err == (
        "wgangp: interrupted before training started; no checkpoint written\n"
    )
