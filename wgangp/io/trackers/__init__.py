"""Experiment trackers beside the TensorBoard log: ``logger=tensorboard|mlflow|wandb``.

Each tracker (:class:`~wgangp.io.trackers.base.Tracker`) records the run's config as
parameters, its scalars, its sample pictures and its final metrics;
:class:`~wgangp.io.trackers.fanout.RunLog` hands every record to the chosen ones.
mlflow and wandb are optional packages, imported only when chosen.
"""

from __future__ import annotations

import importlib.util

#: every tracker name, and the package it needs beyond wgangp's own (None: built in)
PACKAGES: dict[str, str | None] = {"tensorboard": None, "mlflow": "mlflow", "wandb": "wandb"}


def missing_package(name: str) -> str | None:
    """The package tracker ``name`` needs that is not installed (None: ready)."""
    package = PACKAGES[name]
    if package is None or importlib.util.find_spec(package) is not None:
        return None
    return package


__all__ = ["PACKAGES", "missing_package"]
