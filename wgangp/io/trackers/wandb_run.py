"""``logger=wandb``: the run as a Weights & Biases run, offline by default (written to
``run_dir/wandb/offline-run-*``, uploaded later with ``wandb sync`` if wanted)."""

from __future__ import annotations

import contextlib
import html
from pathlib import Path
from typing import Any

import numpy as np

from wgangp.io.trackers.base import Scalar, Tracker, TrackerError
from wgangp.io.trackers.ids import load_id, save_id


class WandbTracker(Tracker):
    name = "wandb"

    def __init__(
        self,
        run_dir: Path,
        params: dict[str, Scalar],
        mode: str,
        project: str,
        entity: str | None,
        resume: bool = False,
    ) -> None:
        import wandb

        self._wandb = wandb
        self.where = f"{run_dir / 'wandb'} ({mode})"
        run_id = load_id(run_dir, self.name) if resume else None
        try:
            self.run = wandb.init(
                project=project,
                entity=entity,
                name=run_dir.name,
                id=run_id,
                resume="allow" if run_id else None,
                dir=str(run_dir),
                mode=mode,
                config=params,
                reinit="create_new",
                # no console capture, git or code snapshot, system sampling: the run's
                # own log and records are elsewhere in run_dir
                settings=wandb.Settings(
                    silent=True,
                    console="off",
                    disable_git=True,
                    save_code=False,
                    x_disable_stats=True,
                ),
            )
        except Exception as e:
            raise TrackerError(self.name, self.where, e) from None
        save_id(run_dir, self.name, self.run.id)

    def _log(self, values: dict[str, Any], step: int) -> None:
        try:
            self.run.log(values, step=step)
        except Exception as e:
            raise TrackerError(self.name, self.where, e) from None

    def log_params(self, params: dict[str, Scalar]) -> None:
        pass  # given to wandb.init as the run's config

    def log_scalars(self, values: dict[str, float], step: int) -> None:
        self._log(values, step)

    def log_image(self, tag: str, image: np.ndarray, step: int) -> None:
        self._log({tag: self._wandb.Image(image)}, step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        self._log({tag: self._wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step)

    def log_final(self, metrics: dict[str, float], step: int) -> None:
        try:
            self.run.summary.update(metrics)
        except Exception as e:
            raise TrackerError(self.name, self.where, e) from None

    def close(self) -> None:
        try:
            self.run.finish()
        except Exception as e:
            raise TrackerError(self.name, self.where, e) from None

    def discard(self) -> None:
        with contextlib.suppress(Exception):  # another error is being reported
            self.run.finish(exit_code=1)


__all__ = ["WandbTracker"]
