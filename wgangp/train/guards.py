"""What stops a run, or lets it go on: a non-finite update (``trainer.nan_policy``),
SIGINT/SIGTERM (a checkpoint of the current step, then stop), and a TensorBoard log that
cannot be written (a checkpoint of the current step when it can be had, then one line
saying what was kept and how to continue)."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Protocol

import torch

from wgangp.errors import CheckpointError, UserError
from wgangp.io.tblog import EventLogError
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


class StopSignals:
    """SIGINT and SIGTERM while in the block: the first asks for a checkpoint after the
    current step (:attr:`received`), a second stops at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # second signal: stop now
            raise KeyboardInterrupt
        self.received = signum
        log.warning("%s received: saving a checkpoint after this step", signal.Signals(signum).name)

    def agreed(self, distributed_run: bool, device: torch.device) -> bool:
        """Whether to stop at this step: under torchrun when any rank received a signal,
        since the ranks must stop together, at the same step, or hang."""
        stop = self.received is not None
        if distributed_run:
            stop = distributed.any_true(stop, device)
        return stop

    def __enter__(self) -> StopSignals:
        for s in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread (some launchers)
                self._previous[s] = signal.signal(s, self._request_stop)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def event_log_failure(
    error: EventLogError,
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
    """The error to stop with when the TensorBoard log cannot be written at ``step``.

    A checkpoint of the current step is saved first (``save``) when this process trained
    since ``start_step`` and its last checkpoint (``saved_step``), as on SIGINT, so that
    a log-only problem costs no training; when that save fails too (a full disk), the
    previous checkpoint ``last`` is intact (atomic writes) and the message says so.
    """
    msg = f"cannot write the TensorBoard log {error.log_dir} at step {step} ({error.reason})"
    if start_step < step < steps:
        msg += "; training stopped"
    fix = f"; free disk space or fix the permissions of {run_dir}"
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
    return EventLogError(error.log_dir, error.error, msg)


__all__ = ["NonFiniteError", "NonFiniteUpdate", "StopSignals", "event_log_failure", "skip_or_stop"]
