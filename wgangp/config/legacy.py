"""Keys that moved: the speed switches left ``trainer.*`` and ``gp.*`` for ``speed.*``.

A checkpoint stores the composed config and the overrides of the run that wrote it,
with the names of its time; :func:`upgrade_config` and :func:`upgrade_overrides` give
them today's names, so such a run resumes. A command line that names an old key gets
one line naming the new one (:func:`moved_key_message`).
"""

from __future__ import annotations

import copy
from typing import Any

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


__all__ = ["MOVED_KEYS", "moved_key_message", "upgrade_config", "upgrade_overrides"]
