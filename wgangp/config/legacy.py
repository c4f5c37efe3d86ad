"""Configs stored by older versions of wgangp, brought to today's layout.

A checkpoint stores the composed config and the overrides of the run that wrote it,
with the names and layout of its time. :func:`upgrade` gives a stored config today's
layout, so such a run resumes: the speed switches that left ``trainer.*`` and ``gp.*``
for ``speed.*`` (:func:`upgrade_config`; :func:`upgrade_overrides` for the stored
overrides) and the ``dataset`` keys of other kinds of data, which one schema for every
data set used to carry (:func:`keep_dataset_kind_keys`). A command line that names an
old key gets one line naming the new one (:func:`moved_key_message`).
"""

from __future__ import annotations

import copy
from typing import Any

from wgangp.config.compose import dataset_schema
from wgangp.config.schema_data import data_keys
from wgangp.errors import ConfigError

#: old dotted key → new dotted key
MOVED_KEYS: dict[str, str] = {
    **{
        f"trainer.{name}": f"speed.{name}"
        for name in (
            "fuse_real_fake",
            "batch_fakes",
            "channels_last",
            "compile",
            "cudnn_benchmark",
            "cuda_graph",
            "keep_freed_memory",
            "nan_check",
        )
    },
    "gp.detach_relu_masks": "speed.detach_relu_masks",
    "gp.native_conv_grads": "speed.native_conv_grads",
}


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A copy of a plain (saved) config with every moved key under its new name; a
    value already present under the new name wins."""
    out = copy.deepcopy(config)
    for old, new in MOVED_KEYS.items():
        old_section, name = old.split(".")
        new_section, new_name = new.split(".")
        section = out.get(old_section)
        if not isinstance(section, dict) or name not in section:
            continue
        value = section.pop(name)
        target = out.setdefault(new_section, {})
        if isinstance(target, dict):
            target.setdefault(new_name, value)
    return out


def _split(override: str) -> tuple[str, str, str]:
    """(prefix ``+``/``++``/``~``, key, rest from ``=`` on) of ``override``."""
    body = override.lstrip("+~")
    prefix = override[: len(override) - len(body)]
    key, sep, value = body.partition("=")
    return prefix, key.strip(), sep + value


def upgrade_overrides(overrides: list[str]) -> list[str]:
    """A saved run's ``KEY=VALUE`` overrides with moved keys renamed."""
    out = []
    for o in overrides:
        prefix, key, rest = _split(o)
        out.append(f"{prefix}{MOVED_KEYS[key]}{rest}" if key in MOVED_KEYS else o)
    return out


def moved_key_message(override: str) -> str | None:
    """One line for a command-line override of a moved key (None for any other)."""
    _, key, rest = _split(override)
    if key not in MOVED_KEYS:
        return None
    new = MOVED_KEYS[key]
    value = rest.removeprefix("=")
    return str(
        ConfigError(key, value, "a key of the schema", f"{key} is now {new}: write {new}={value}")
    )


def upgrade(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` (a checkpoint's plain config) in today's layout; the input is not changed."""
    return keep_dataset_kind_keys(upgrade_config(cfg))


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


__all__ = [
    "MOVED_KEYS",
    "keep_dataset_kind_keys",
    "moved_key_message",
    "upgrade",
    "upgrade_config",
    "upgrade_overrides",
]
