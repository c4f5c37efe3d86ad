"""What a run reports as it goes: the TensorBoard event log and the other trackers of
``logger`` (rank 0's, one :class:`~wgangp.io.trackers.fanout.RunLog`), the means of the
step statistics every ``trainer.log_every`` steps with their log line and progress bar,
and each evaluation (``metrics/<name>`` scalars, one JSON line in ``metrics.jsonl``)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from wgangp.io.tblog import EventLog
from wgangp.io.trackers.base import Scalar, Tracker, flatten
from wgangp.io.trackers.fanout import RunLog
from wgangp.metrics.evaluator import METRICS_FILE, Evaluation
from wgangp.train import distributed

# the logger names a run's log file has always shown for these lines
log = logging.getLogger("wgangp.train.trainer")
eval_log = logging.getLogger("wgangp.metrics.evaluator")


class NullWriter:
    """Stands in for the event log on ranks > 0, which write nothing."""

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401
        return lambda *args, **kwargs: None


def open_event_log(run_dir: Path, step: int, is_main: bool) -> EventLog | NullWriter:
    """Rank 0's event log in ``run_dir/tb``; events past ``step`` (a resume's start)
    are dropped from it, as a crashed run may have written some."""
    return EventLog(run_dir / "tb", purge_step=step or None) if is_main else NullWriter()


def config_params(cfg: Any) -> dict[str, Scalar]:  # noqa: ANN401
    """The composed config as flat parameters (``gp.lambda``: 10.0, ...)."""
    from omegaconf import OmegaConf

    try:
        tree = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation only Hydra's running app resolves
        tree = OmegaConf.to_container(cfg, resolve=False)
    return flatten(tree)


def open_run_log(run_dir: Path, step: int, is_main: bool, cfg: Any) -> RunLog | NullWriter:  # noqa: ANN401
    """Rank 0's record of the run: the trackers of ``logger`` (the TensorBoard event log
    as :func:`open_event_log`), the config logged as parameters. A resumed run (``step``
    > 0) continues its MLflow and W&B runs. Ranks > 0 record nothing."""
    if not is_main:
        return NullWriter()
    chosen = cfg.get("logger") or {}
    params = config_params(cfg)
    trackers: list[Tracker] = []
    events = None
    try:
        if chosen.get("mlflow") is not None:
            from wgangp.io.trackers.mlflow_run import MlflowTracker

            m = chosen.mlflow
            trackers.append(MlflowTracker(run_dir, m.tracking_uri, m.experiment, step > 0))
        if chosen.get("wandb") is not None:
            from wgangp.io.trackers.wandb_run import WandbTracker

            w = chosen.wandb
            trackers.append(WandbTracker(run_dir, params, w.mode, w.project, w.entity, step > 0))
        tb = chosen.get("tensorboard")
        events = open_event_log(run_dir, step, True) if tb is not None else None
        log_ = RunLog(events, trackers, hparams=bool(tb is not None and tb.hparams))
        log_.log_params(params)
    except BaseException:
        for t in trackers:
            t.discard()
        if events is not None:
            events.discard()
        raise
    return log_


def final_values(values: dict[str, float]) -> dict[str, float]:
    """The values a run ends with, as its final metrics: the last step statistics,
    ``metrics/*`` and ``best/*`` (not the timings ``perf/*`` nor ``lr/*``)."""
    return {k: float(v) for k, v in values.items() if not k.startswith(("perf/", "lr/"))}


def progress_bar(steps: int, step: int, enabled: bool) -> tqdm:
    return tqdm(total=steps, initial=step, disable=not enabled, dynamic_ncols=True, desc="wgangp")


class StepMeans:
    """Sums of the step statistics since the last :meth:`take`, kept on the device so
    that the host syncs once per log, not once per step."""

    def __init__(self, device: torch.device) -> None:
        self.sums: dict[str, Tensor] = defaultdict(lambda: torch.zeros((), device=device))
        self.count = 0
        self.tick = time.perf_counter()

    def add(self, stats: dict[str, Tensor]) -> None:
        for k, v in stats.items():
            self.sums[k] += v
        self.count += 1

    def take(self, train_seconds: float, global_batch: int) -> tuple[dict[str, float], float]:
        """The means since the last take, averaged over ranks, with
        ``perf/steps_per_sec``, ``perf/train_s`` (``train_seconds``, the run's training
        time before, plus the time since the last take: resumes included, the pauses
        between them not, what the paper's Figure 3, right, plots quality against) and
        ``perf/global_batch_size``; and that new training time. The sums start again."""
        now = time.perf_counter()
        means = distributed.mean_over_ranks(dict(self.sums))
        values = {k: float(v) / self.count for k, v in means.items()}  # the one host sync
        values["perf/steps_per_sec"] = self.count / max(now - self.tick, 1e-9)
        train_seconds += now - self.tick
        values["perf/train_s"] = train_seconds
        values["perf/global_batch_size"] = float(global_batch)
        self.sums.clear()
        self.count, self.tick = 0, now
        return values, train_seconds


def bar_postfix(values: dict[str, float]) -> dict[str, str]:
    """The step statistics shown beside the progress bar."""
    return {k: f"{values[k]:.3g}" for k in ("wasserstein", "gp", "d_real", "d_fake") if k in values}


def write_step_log(
    writer: EventLog | RunLog | NullWriter,
    step: int,
    values: dict[str, float],
    lrs: dict[str, float | Tensor],
) -> None:
    """``values`` and the learning rates (``lr/<network>``) as TensorBoard scalars, and
    the ``step N | name=value ...`` log line."""
    for k, v in values.items():
        writer.add_scalar(k, v, step)
    for who, lr in lrs.items():
        writer.add_scalar(f"lr/{who}", lr, step)
    writer.flush()  # written now: a full disk stops the run at this step, not later
    log.info("step %d | %s", step, " ".join(f"{k}={v:.4g}" for k, v in sorted(values.items())))


def write_evaluation(
    result: Evaluation,
    step: int,
    run_dir: Path,
    writer: EventLog | RunLog | NullWriter,
    keep_best: Callable[[dict[str, Any]], Path],
) -> dict[str, float]:
    """``metrics/<name>`` and ``perf/eval_seconds`` scalars, a line ``{"step", "time",
    metrics…}`` appended to ``run_dir/metrics.jsonl`` (non-finite values as null) and the
    ``eval step`` log line; a new best ``eval.keep_best`` value goes to ``keep_best`` as
    the run's ``best``, ``{metric, value, step}``, which returns where it saved it, then
    ``best/<metric>`` is written. Returns the values keyed ``metrics/<name>`` and
    ``best/<metric>``."""
    values = result.values
    if not values:
        return {}
    for k, v in values.items():
        writer.add_scalar(f"metrics/{k}", v, step)
    writer.add_scalar("perf/eval_seconds", result.seconds, step)
    line: dict[str, Any] = {"step": step, "time": time.time()}
    line.update({k: v if math.isfinite(v) else None for k, v in values.items()})
    with open(run_dir / METRICS_FILE, "a") as f:
        f.write(json.dumps(line) + "\n")
    eval_log.info(
        "eval step %d (%.1fs) | %s",
        step,
        result.seconds,
        " ".join(f"{k}={v:.4g}" for k, v in values.items()),
    )
    out = {f"metrics/{k}": v for k, v in values.items()}
    name = result.best_metric
    if name is not None and result.is_new_best:
        best = {"metric": name, "value": float(values[name]), "step": step}
        path = keep_best(best)
        eval_log.info("new best %s=%.4g at step %d: %s", name, values[name], step, path)
    if name is not None and result.best_value is not None:
        out[f"best/{name}"] = float(result.best_value)
        writer.add_scalar(f"best/{name}", result.best_value, step)
    return out


__all__ = [
    "NullWriter",
    "StepMeans",
    "bar_postfix",
    "config_params",
    "final_values",
    "open_event_log",
    "open_run_log",
    "progress_bar",
    "write_evaluation",
    "write_step_log",
]
