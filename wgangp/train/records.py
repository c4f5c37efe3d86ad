"""What a run reports as it goes: the TensorBoard event log (rank 0's), the means of the
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
    writer: EventLog | NullWriter,
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
    writer: EventLog | NullWriter,
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
    "open_event_log",
    "progress_bar",
    "write_evaluation",
    "write_step_log",
]
