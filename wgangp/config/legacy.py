"""Configs stored by older versions of wgangp (a checkpoint's ``config``), brought to
today's layout before a resume compares them with the config it continues with."""

from __future__ import annotations

from typing import Any

from wgangp.config.compose import dataset_schema
from wgangp.config.schema_data import data_keys


def upgrade(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` (a checkpoint's plain config) in today's layout; the input is not changed."""
    return keep_dataset_kind_keys(cfg)


def keep_dataset_kind_keys(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` without the ``dataset`` keys its data set's kind does not have.

    Checkpoints written while one schema served every data set hold every kind's keys
    (a gaussians8 run stored ``seq_len``, ``crop``, ``dequantize``, ...) at their
    defaults, which its data set never read.
    """
    dataset = cfg.get("dataset")
    if not isinstance(dataset, dict):
        return cfg
    kind = dataset_schema(str(dataset.get("name")))
    if kind is None:
        return cfg
    keys = data_keys(kind)
    return {**cfg, "dataset": {k: v for k, v in dataset.items() if k in keys}}
