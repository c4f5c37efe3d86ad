"""A submitit job (``hydra/launcher=slurm`` or ``slurm_local``) warned of its time limit
or a preemption: the trainer has saved a checkpoint of the current step; this module
hands the job back to submitit, which requeues it, and the requeued job continues from
that checkpoint with ``resume=auto``.

submitit signals a job before its time limit (``SIGUSR2``, or the signal named by
``SUBMITIT_PREEMPT_SIGNAL``) and installs a handler for it before the task starts. That
handler is what requeues: it asks the task for a resubmission (the Hydra launcher's
``checkpoint``: the same sweep job again), counts time-outs against
``max_num_timeout``, then ``scontrol requeue`` on SLURM, or exit code 144 on the local
executor, which restarts the job. The trainer replaces the handler while it trains, so
that the signal saves a checkpoint first, and calls submitit's handler afterwards.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wgangp.train.guards import StopSignals

log = logging.getLogger("wgangp.train.trainer")  # the trainer's log lines, as users see them


def submitit_job() -> bool:
    """Whether this process runs a submitit job: submitit's job environment (the
    ``SUBMITIT_EXECUTOR`` variable its job scripts export, with the cluster's job
    variables) is present and submitit is installed."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    try:
        import submitit

        submitit.JobEnvironment()  # raises outside a job of a known cluster
    except (ImportError, RuntimeError, KeyError):
        return False
    return True


def submitit_handler(handlers: Iterable[Any]) -> Any:  # noqa: ANN401
    """submitit's signal handler (a ``submitit.core.job_environment.SignalHandler``)
    among ``handlers`` (the ones the trainer replaced), or None."""
    from submitit.core.job_environment import SignalHandler

    for handler in handlers:
        owner = getattr(handler, "__self__", None)
        if isinstance(owner, SignalHandler):
            return owner
    return None


def requeue(signum: int, handlers: Iterable[Any]) -> str:
    """Requeue this submitit job after ``signum``, the way submitit's own handler does
    (``SignalHandler.checkpoint_and_try_requeue``); ``handlers``: the signal handlers
    the trainer replaced, submitit's among them.

    When submitit requeues, this does not return: submitit ends the process (exit code
    255 after ``scontrol requeue`` on SLURM, 144 on the local executor). Otherwise it
    returns why not (submitit's own reason: time-outs used up, a rank other than 0, no
    handler of submitit's installed), and the caller stops as on SIGTERM.
    """
    from submitit.core.utils import UncompletedJobError

    handler = submitit_handler(handlers)
    if handler is None:
        return "submitit's signal handler is not installed in this process"
    try:
        handler.checkpoint_and_try_requeue(signum)
    except UncompletedJobError as e:  # submitit declined: "Job not requeued because: ..."
        return str(e)
    return f"submitit did not requeue the job from task {handler.env.global_rank}"


def requeue_if_submitit(signum: int, signals: StopSignals, step: int, saved: Path) -> None:
    """In a submitit job, after ``signum`` and the checkpoint ``saved`` of ``step``:
    :func:`requeue` with submitit's handlers back in place (its SIGTERM handler only
    logs the SIGTERM that SLURM may send while the job is requeued). Returns when the
    job is not a submitit job or was not requeued (a warning says why)."""
    if not submitit_job():
        return
    name = signal.Signals(signum).name
    log.warning(
        "%s: checkpoint of step %d saved (%s); requeueing the job through submitit",
        name,
        step,
        saved,
    )
    replaced = list(signals.previous.values())
    signals.restore()
    log.warning("the job was not requeued: %s", requeue(signum, replaced))


__all__ = ["requeue", "requeue_if_submitit", "submitit_handler", "submitit_job"]
