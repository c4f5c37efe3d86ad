"""``logger=mlflow``: the run as an MLflow run, through ``MlflowClient`` (no global
active run, so that several runs in one process stay apart)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from wgangp.io.trackers.base import Scalar, Tracker, TrackerError
from wgangp.io.trackers.ids import load_id, save_id

log = logging.getLogger(__name__)

#: MLflow takes at most this many parameters or metrics in one call
_BATCH = 100
#: and parameter values up to this many characters
_MAX_VALUE = 6000


def tracking_uri(setting: str | None, run_dir: Path) -> str:
    """``logger.mlflow.tracking_uri``, or the run's own file store ``run_dir/mlruns``."""
    if setting:
        return setting
    return (run_dir / "mlruns").resolve().as_uri()


def _is_file_store(uri: str) -> bool:
    return uri.startswith("file:") or "://" not in uri and not uri.startswith("databricks")


class MlflowTracker(Tracker):
    name = "mlflow"

    def __init__(
        self, run_dir: Path, setting: str | None, experiment: str, resume: bool = False
    ) -> None:
        self.uri = tracking_uri(setting, run_dir)
        if _is_file_store(self.uri):
            # MLflow 3 refuses its file store unless asked: it is what runs offline
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self._Metric, self._Param = Metric, Param
        self._logged: dict[str, tuple[int, float]] = {}  # the last (step, value) per key
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            self.run_id = self._existing_run(load_id(run_dir, self.name) if resume else None)
            if self.run_id is None:
                found = self.client.get_experiment_by_name(experiment)
                exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
                self.run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
            else:
                self.client.update_run(self.run_id, status="RUNNING")
        except Exception as e:  # the store or server refused: one line, before training
            raise TrackerError(self.name, self.uri, e) from None
        save_id(run_dir, self.name, self.run_id)

    def _existing_run(self, run_id: str | None) -> str | None:
        if run_id is None:
            return None
        try:
            run = self.client.get_run(run_id)
        except Exception:  # gone from this store: a new run
            return None
        return run_id if run.info.lifecycle_stage == "active" else None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        try:
            getattr(self.client, method)(self.run_id, *args, **kwargs)
        except Exception as e:
            raise TrackerError(self.name, self.uri, e) from None

    def log_params(self, params: dict[str, Scalar]) -> None:
        # parameters cannot change: a resumed run keeps the values it started with
        try:
            known = self.client.get_run(self.run_id).data.params
        except Exception as e:
            raise TrackerError(self.name, self.uri, e) from None
        new = [self._Param(k, str(v)[:_MAX_VALUE]) for k, v in params.items() if k not in known]
        changed = sorted(k for k, v in params.items() if k in known and known[k] != str(v))
        if changed:
            log.warning("mlflow keeps the first values of the parameters %s", ", ".join(changed))
        for i in range(0, len(new), _BATCH):
            self._call("log_batch", params=new[i : i + _BATCH])

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        metrics = [self._Metric(k, float(v), now, step) for k, v in values.items()]
        for i in range(0, len(metrics), _BATCH):
            self._call("log_batch", metrics=metrics[i : i + _BATCH])
        self._logged.update({k: (step, float(v)) for k, v in values.items()})

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self._call("log_image", image, artifact_file=f"{tag}/step_{step:07d}.png")

    def log_text(self, tag: str, text: str, step: int) -> None:
        self._call("log_text", text, f"{tag}/step_{step:07d}.md")

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        # the latest value of each metric is the run's final one: log those not yet there
        todo = {k: v for k, v in metrics.items() if self._logged.get(k) != (step, float(v))}
        if todo:
            self.log_scalars(todo, step)

    def close(self) -> None:
        self._call("set_terminated", "FINISHED")

    def discard(self) -> None:
        with contextlib.suppress(Exception):  # another error is being reported
            self.client.set_terminated(self.run_id, "FAILED")


__all__ = ["MlflowTracker", "tracking_uri"]
