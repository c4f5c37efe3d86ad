"""What stops a run, or lets it go on: a non-finite update (``trainer.nan_policy``),
SIGINT/SIGTERM/SIGUSR1/SIGUSR2 (a checkpoint of the current step, then stop; a submitit
job is requeued), a TensorBoard log that cannot be written (a checkpoint of the current
step when it can be had, then one line saying what was kept and how to continue), and
the wall-clock checkpoints (``trainer.ckpt_every_minutes``) that bound what a kill -9
or a node failure can lose."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol

import torch

from wgangp.errors import CheckpointError, UserError
from wgangp.io.tblog import EventLogError
from wgangp.io.trackers.base import TrackerError
from wgangp.train import distributed

log = logging.getLogger("wgangp.train.trainer")  # the trainer's log lines, as users see them


class NonFiniteError(UserError):
    """A loss or gradient became NaN/Inf; the bad update was not applied."""


class NonFiniteUpdate(Protocol):
    """A critic/generator update whose loss (``cause="loss"``) or gradient was NaN/Inf:
    ``terms`` are the update's loss terms by name, for the message."""

    who: str
    value: float
    terms: dict[str, float]
    cause: str


def skip_or_stop(
    bad: NonFiniteUpdate, step: int, skips: int, policy: str, max_skips: int, last: Path
) -> int:
    """The run's count of skipped steps after ``bad`` at ``step`` (0-based): one more
    under ``policy="skip"`` while fewer than ``max_skips`` were skipped; otherwise
    :class:`NonFiniteError`, naming the last good checkpoint ``last`` if it exists."""
    where = f"last good checkpoint: {last}" if last.exists() else "no checkpoint written yet"
    terms = ", ".join(f"{k}={v:.4g}" for k, v in bad.terms.items()) or f"loss={bad.value}"
    msg = (
        f"non-finite {bad.who} {bad.cause} at step {step + 1} ({terms}); "
        f"the update was not applied; {where}"
    )
    if policy == "skip" and skips < max_skips:
        skips += 1
        log.warning("%s — skipping (%d/%d)", msg, skips, max_skips)
        return skips
    if policy == "skip":  # the allowance is used up
        fix = (
            f"{skips} such steps were skipped already "
            f"(trainer.max_nan_skips={max_skips}); lower the learning rate, or "
            "raise trainer.max_nan_skips"
        )
    else:
        fix = "lower the learning rate or set trainer.nan_policy=skip to skip such steps"
    raise NonFiniteError(f"{msg}; {fix}")


#: the signals that stop a run after a checkpoint of the current step; SLURM (through
#: submitit) warns a job of its time limit with SIGUSR2, or SIGUSR1 on some set-ups
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
#: the signals after which a submitit job is requeued rather than ended
REQUEUE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


class StopSignals:
    """:data:`STOP_SIGNALS` while in the block: the first asks for a checkpoint after
    the current step (:attr:`received`), a second stops at once (KeyboardInterrupt).
    The handlers found on entry (submitit's, in a submitit job) are put back on exit,
    or earlier by :meth:`restore`; :attr:`previous` holds them."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.received = signum
        log.warning("%s received: saving a checkpoint after this step", signal.Signals(signum).name)

    def restore(self) -> None:
        """Put the handlers found on entry back (idempotent)."""
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}

    def __enter__(self) -> StopSignals:
        for s in STOP_SIGNALS:
            with contextlib.suppress(ValueError):  # not the main thread (some launchers)
                self.previous[s] = signal.signal(s, self._request_stop)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()


def agreed(flags: tuple[bool, ...], distributed_run: bool, device: torch.device) -> list[bool]:
    """Each of ``flags`` true on every rank when it is true on any rank (under torchrun
    one all-reduce for all of them: the ranks must checkpoint and stop together, at the
    same step, or hang); in a single process the flags themselves."""
    if not distributed_run:
        return list(flags)
    return distributed.any_true_each(flags, device)


def now() -> float:
    """The clock of the wall-clock checkpoints, in seconds (monotonic)."""
    return time.monotonic()


class CheckpointClock:
    """``trainer.ckpt_every_minutes``: a checkpoint is :meth:`due` once ``minutes`` of
    wall time have passed since the last one (or since training started); 0: never."""

    def __init__(self, minutes: float) -> None:
        self.seconds = 60.0 * float(minutes)
        self.since = now() if self.seconds > 0 else 0.0

    def due(self) -> bool:
        return self.seconds > 0 and now() - self.since >= self.seconds

    def restart(self) -> None:
        """A checkpoint was just written: the next is due ``minutes`` from now."""
        if self.seconds > 0:
            self.since = now()


def event_log_failure(
    error: EventLogError | TrackerError,
    *,
    step: int,
    start_step: int,
    steps: int,
    saved_step: int | None,
    distributed_run: bool,
    run_dir: Path,
    last: Path,
    save: Callable[[], Path],
) -> EventLogError:
    """The error to stop with when the TensorBoard log (or another tracker,
    ``logger=``) cannot be written at ``step``.

    A checkpoint of the current step is saved first (``save``) when this process trained
    since ``start_step`` and its last checkpoint (``saved_step``), as on SIGINT, so that
    a log-only problem costs no training; when that save fails too (a full disk), the
    previous checkpoint ``last`` is intact (atomic writes) and the message says so.
    """
    if isinstance(error, TrackerError):
        msg = f"cannot log to {error.name} at {error.where} at step {step} ({error.reason})"
        fix = f"; fix logger.{error.name} (or drop {error.name} from logger=)"
    else:
        msg = f"cannot write the TensorBoard log {error.log_dir} at step {step} ({error.reason})"
        fix = f"; free disk space or fix the permissions of {run_dir}"
    if start_step < step < steps:
        msg += "; training stopped"
    # under torchrun a save gathers every rank's state: rank 0 cannot save alone
    if step not in (start_step, saved_step) and not distributed_run:
        try:
            msg += f"; checkpoint of step {step} saved: {save()}{fix}"
        except CheckpointError as e:  # the disk is full for checkpoints too
            msg += f"; {e}"  # ends with its own fix
    elif last.is_file():
        msg += f"; last good checkpoint: {last}{fix}"
    else:
        msg += f"; no checkpoint was written{fix}"
    if last.is_file():
        msg += f", then continue with resume={run_dir}"
    if isinstance(error, TrackerError):
        return TrackerError(error.name, error.where, error.error, msg)
    return EventLogError(error.log_dir, error.error, msg)


__all__ = [
    "REQUEUE_SIGNALS",
    "STOP_SIGNALS",
    "CheckpointClock",
    "NonFiniteError",
    "NonFiniteUpdate",
    "StopSignals",
    "agreed",
    "event_log_failure",
    "now",
    "skip_or_stop",
]
