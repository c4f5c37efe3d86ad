"""A full disk (or a run directory that refuses writes) for the TensorBoard log, the log
file and the run directory check: one clear error, no traceback from any thread, and
the checkpoints stay readable. The real command is tested in ``test_faults_cli.py``."""

from __future__ import annotations

import errno
import logging
import os
import threading

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.compat.tensorflow_stub.io import gfile

from tests.conftest import TINY, compose_cfg, toy_trainer_factory
from wgangp.cli import train
from wgangp.io import paths
from wgangp.io.checkpoint import load_checkpoint
from wgangp.io.tblog import EventLog, EventLogError
from wgangp.train.trainer import Trainer

FAST = [*TINY, "trainer.n_critic=1", "trainer.sample_every=0", "trainer.log_every=1"]
ENOSPC = "No space left on device"


class Disk:
    """TensorBoard's event-file writes (made by its writer thread) fail while ``full``."""

    def __init__(self, monkeypatch, error: BaseException | None = None) -> None:
        self.full = False
        self.error = error or OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real = gfile.LocalFileSystem._write

        def write(fs, filename, content, mode):  # type: ignore[no-untyped-def]
            if self.full and b"tfevents" in os.fsencode(filename):
                raise self.error
            return real(fs, filename, content, mode)

        monkeypatch.setattr(gfile.LocalFileSystem, "_write", write)


@pytest.fixture
def thread_errors(monkeypatch):
    """What reaches ``threading.excepthook`` (the hook that prints a thread's traceback)."""
    seen: list[tuple[str, BaseException]] = []
    monkeypatch.setattr(
        threading, "excepthook", lambda args: seen.append((args.thread.name, args.exc_value))
    )
    return seen


# ------------------------------------------------------------------ EventLog


def test_tensorboard_log_on_a_full_disk_at_creation_is_one_error_no_thread_traceback(
    tmp_path, monkeypatch, thread_errors, capfd
):
    disk = Disk(monkeypatch)
    disk.full = True
    hook = threading.excepthook
    with pytest.raises(EventLogError) as e:
        EventLog(tmp_path / "tb")
    assert str(e.value) == f"cannot write the TensorBoard log {tmp_path / 'tb'} ({ENOSPC})"
    assert thread_errors == []  # the writer thread's OSError was not printed ...
    assert threading.excepthook is hook  # ... and the hook is back as it was
    assert "Traceback" not in capfd.readouterr().err


def test_tensorboard_log_failing_later_raises_at_the_flush_then_once_at_close(
    tmp_path, monkeypatch, thread_errors, capfd
):
    disk = Disk(monkeypatch)
    hook = threading.excepthook
    log = EventLog(tmp_path / "tb", purge_step=3)
    log.add_scalar("a", 1.0, 3)
    log.flush()
    assert threading.excepthook is not hook  # quiet for tensorboard's thread while open
    disk.full = True
    log.add_scalar("a", 2.0, 4)
    with pytest.raises(EventLogError) as e:
        log.flush()
    assert str(e.value) == f"cannot write the TensorBoard log {tmp_path / 'tb'} ({ENOSPC})"
    with pytest.raises(EventLogError) as again:  # every later call: the same error
        log.add_scalar("a", 3.0, 5)
    assert again.value is e.value
    with pytest.raises(EventLogError):
        log.close()
    log.close()  # closed: nothing more to report
    log.discard()
    assert thread_errors == []
    assert threading.excepthook is hook
    assert "Traceback" not in capfd.readouterr().err
    # the events written before the failure are in the file
    (event_file,) = (tmp_path / "tb").iterdir()
    assert event_file.stat().st_size > 0


def test_tensorboard_log_discard_never_raises_and_restores_the_hook(tmp_path, monkeypatch):
    disk = Disk(monkeypatch)
    hook = threading.excepthook
    log = EventLog(tmp_path / "tb")
    disk.full = True
    log.add_scalar("a", 1.0, 1)
    log.discard()  # another error is on its way: this one must not replace it
    assert threading.excepthook is hook


def test_a_bug_in_tensorboards_writer_thread_still_reaches_the_excepthook(
    tmp_path, monkeypatch, thread_errors
):
    """Only an OSError of the log is quiet: any other exception is reported as before."""
    disk = Disk(monkeypatch, error=RuntimeError("a bug"))
    log = EventLog(tmp_path / "tb")
    disk.full = True
    log.add_scalar("a", 1.0, 1)
    with pytest.raises(RuntimeError, match="a bug"):
        log.flush()
    log.discard()
    assert [type(e) for _, e in thread_errors] == [RuntimeError]


def test_an_oserror_in_another_thread_still_reaches_the_excepthook(tmp_path, thread_errors):
    log = EventLog(tmp_path / "tb")
    try:

        def fails() -> None:
            raise OSError(errno.ENOSPC, "not tensorboard's")

        t = threading.Thread(target=fails, name="other")
        t.start()
        t.join()
    finally:
        log.close()
    assert [(name, str(e)) for name, e in thread_errors] == [
        ("other", "[Errno 28] not tensorboard's")
    ]


# ------------------------------------------------------------------ the trainer


@pytest.fixture
def make_trainer(tmp_path, monkeypatch):
    """A tiny toy Trainer in ``tmp_path/run`` (the end-of-run picture skipped: speed)."""
    return toy_trainer_factory(tmp_path, monkeypatch, *FAST)


def full_from_step(monkeypatch, disk: Disk, step: int) -> None:
    """The disk fills up just before the TensorBoard events of ``step`` are written."""
    real = Trainer._log

    def log(self, writer, values):  # type: ignore[no-untyped-def]
        disk.full = disk.full or self.step >= step
        real(self, writer, values)

    monkeypatch.setattr(Trainer, "_log", log)


def test_tensorboard_full_disk_mid_run_saves_that_step_and_stops(
    tmp_path, make_trainer, monkeypatch, thread_errors
):
    disk = Disk(monkeypatch)
    full_from_step(monkeypatch, disk, 5)
    tr = make_trainer("trainer.ckpt_every=2", "trainer.steps=10")
    with pytest.raises(EventLogError) as e:
        tr.fit()
    run = tmp_path / "run"
    assert str(e.value) == (
        f"cannot write the TensorBoard log {run}/tb at step 5 ({ENOSPC}); training stopped; "
        f"checkpoint of step 5 saved: {run}/checkpoints/last.pt; free disk space or fix the "
        f"permissions of {run}, then continue with resume={run}"
    )
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 5
    assert load_checkpoint(run / "checkpoints" / "step_0000004.pt")["step"] == 4
    assert thread_errors == []


def test_tensorboard_and_checkpoint_full_disk_keeps_the_previous_checkpoint(
    tmp_path, make_trainer, monkeypatch, thread_errors
):
    disk = Disk(monkeypatch)
    full_from_step(monkeypatch, disk, 5)
    real_save = torch.save

    def save(obj, f, *a, **k):  # type: ignore[no-untyped-def]
        if disk.full:  # the same full disk: half a file, then ENOSPC
            f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)
    tr = make_trainer("trainer.ckpt_every=2", "trainer.steps=10")
    with pytest.raises(EventLogError) as e:
        tr.fit()
    run = tmp_path / "run"
    ckdir = run / "checkpoints"
    assert str(e.value) == (
        f"cannot write the TensorBoard log {run}/tb at step 5 ({ENOSPC}); training stopped; "
        f"checkpoint {ckdir}: cannot write a checkpoint at step 5 ({ENOSPC}); the previous "
        f"checkpoint is intact — free disk space or fix permissions, then continue with "
        f"resume={run}"
    )
    assert load_checkpoint(ckdir / "last.pt")["step"] == 4
    assert sorted(p.name for p in ckdir.iterdir()) == [
        "last.pt",
        "step_0000002.pt",
        "step_0000004.pt",
    ]  # no half-written file, no temporary
    assert thread_errors == []


def test_tensorboard_full_disk_when_a_resumed_run_starts_names_its_checkpoint(
    tmp_path, make_trainer, monkeypatch, thread_errors
):
    tr = make_trainer("trainer.ckpt_every=2", "trainer.steps=4")
    tr.fit()
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    again = make_trainer("trainer.ckpt_every=2", "trainer.steps=8")
    again.load_state_dict(load_checkpoint(last), last)
    Disk(monkeypatch).full = True
    with pytest.raises(EventLogError) as e:
        again.fit()
    run = tmp_path / "run"
    assert str(e.value) == (
        f"cannot write the TensorBoard log {run}/tb at step 4 ({ENOSPC}); last good "
        f"checkpoint: {last}; free disk space or fix the permissions of {run}, then continue "
        f"with resume={run}"
    )
    assert last.read_bytes() == before  # nothing trained: nothing rewritten
    assert thread_errors == []


def test_tensorboard_full_disk_at_the_start_of_a_fresh_run(
    tmp_path, make_trainer, monkeypatch, thread_errors
):
    Disk(monkeypatch).full = True
    with pytest.raises(EventLogError) as e:
        make_trainer("trainer.steps=4").fit()
    run = tmp_path / "run"
    assert str(e.value) == (
        f"cannot write the TensorBoard log {run}/tb at step 0 ({ENOSPC}); no checkpoint was "
        f"written; free disk space or fix the permissions of {run}"
    )
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").iterdir())
    assert thread_errors == []


# ------------------------------------------------------------------ train.log


class FullDiskStream:
    def write(self, text: str) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_log_file_on_a_full_disk_is_one_warning_not_a_traceback_per_record(
    tmp_path, monkeypatch, capsys
):
    handler = logging.FileHandler(tmp_path / "train.log", delay=True)
    root = logging.getLogger()
    root.addHandler(handler)
    monkeypatch.setattr(root, "level", logging.INFO)
    try:
        train._report_log_file_write_errors()
        train._report_log_file_write_errors()  # idempotent
        handler.stream = FullDiskStream()
        for i in range(3):
            logging.getLogger("wgangp").info("step %d", i)
    finally:
        root.removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert err == (
        f"wgangp: warning: cannot write the log file {tmp_path / 'train.log'} ({ENOSPC}); it "
        "gets no more messages (the console does)\n"
    )


def test_log_file_errors_other_than_oserror_are_still_reported_by_logging(
    tmp_path, monkeypatch, capsys
):
    class ClosedStream(FullDiskStream):
        def write(self, text: str) -> int:
            raise ValueError("I/O operation on closed file")

    handler = logging.FileHandler(tmp_path / "train.log", delay=True)
    root = logging.getLogger()
    root.addHandler(handler)
    monkeypatch.setattr(root, "level", logging.INFO)
    monkeypatch.setattr(logging, "raiseExceptions", True)
    try:
        train._report_log_file_write_errors()
        handler.stream = ClosedStream()
        logging.getLogger("wgangp").info("step 1")
    finally:
        root.removeHandler(handler)
        handler.close()
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err and "ValueError: I/O operation on closed file" in err


# ------------------------------------------------------------------ the run directory


def test_run_directory_on_a_full_disk_is_refused_before_hydra_writes(tmp_path, monkeypatch, capsys):
    """An empty file fits on a full disk: the check writes some bytes to know."""

    def write(fd, data):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(paths.os, "write", write)
    assert paths.unwritable_reason(tmp_path / "run") == (
        f"the file system of {tmp_path} is full ({ENOSPC}), free some space"
    )
    assert list(tmp_path.iterdir()) == []  # the probe left nothing behind
    cfg = OmegaConf.create({"hydra": {"run": {"dir": f"{tmp_path}/run"}}})
    with pytest.raises(SystemExit) as e:
        train.RunDirCheck()._check(cfg, "hydra.run.dir")
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        f"wgangp: error: cannot create the run directory {tmp_path}/run: the file system of "
        f"{tmp_path} is full ({ENOSPC}), free some space; choose another with "
        "hydra.run.dir=PATH\n"
    )


def test_run_directory_probe_still_passes_and_leaves_nothing(tmp_path):
    assert paths.unwritable_reason(tmp_path / "new" / "run") is None
    assert list(tmp_path.iterdir()) == []


def test_a_write_error_without_a_file_name_names_the_run_directory(monkeypatch, capsys):
    """A full disk met by a write (not an open) carries no file name: say where."""

    def run(cfg):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(train, "run", run)
    monkeypatch.setattr(train, "_output_dir", lambda: "/runs/x")
    with pytest.raises(SystemExit) as e:
        train.task(compose_cfg(*TINY))
    assert e.value.code == 2
    assert capsys.readouterr().err == (
        f"wgangp: error: cannot write in /runs/x: {ENOSPC}; free disk space or fix the "
        "permissions of the run directory (checkpoints already written are intact)\n"
    )
