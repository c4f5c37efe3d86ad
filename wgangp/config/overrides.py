"""Command-line ``KEY=VALUE`` overrides of schema keys, checked before Hydra composes.

Hydra answers an unknown key (``trainer.stepz=3``) or a value of the wrong type
(``gp.lambda=abc``) with a several-line OmegaConf report. :func:`check_value_overrides`
catches both first and says it in wgangp's one line: the key, the value, what the key
takes and how to fix it (the closest known key, or an example value). Anything it cannot
judge (Hydra's own keys, ``+``/``~`` overrides, config groups, sweeps it cannot expand,
keys inside free-form nodes such as ``dataset.modes``) is left to the checks after
composition and to Hydra.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from omegaconf.nodes import AnyNode, BooleanNode, EnumNode, FloatNode, IntegerNode, StringNode

from wgangp.config.choices import dataset_choices
from wgangp.config.compose import (
    config_dir,
    dataset_schema,
    datasets_with_key,
    describe_kind,
    schema_for_dataset,
)
from wgangp.config.legacy import moved_key_message
from wgangp.config.schema import Config, schema_keys
from wgangp.config.schema_data import data_keys
from wgangp.errors import ConfigError

_KINDS: tuple[tuple[type, str], ...] = (
    (BooleanNode, "true or false"),
    (IntegerNode, "an integer"),
    (FloatNode, "a number"),
    (StringNode, "a string"),
    (EnumNode, "one of its names"),
    (ListConfig, "a list, e.g. [a, b]"),
)


def _kind(node: Any) -> str:  # noqa: ANN401
    for cls, words in _KINDS:
        if isinstance(node, cls):
            kind = words
            break
    else:
        kind = "a value"
    return kind + (" or null" if node._is_optional() else "")


def _elements(value: Any) -> list[Any] | None:  # noqa: ANN401
    """The values an override gives its key (each element of a ``a,b``/``choice``
    sweep), or None when they cannot be listed here (``range``, ``glob``, ...)."""
    from hydra.core.override_parser.types import ChoiceSweep, Sweep

    if isinstance(value, ChoiceSweep):
        return list(value.list)
    if isinstance(value, Sweep):
        return None
    return [value]


def check_value_overrides(
    args: list[str], groups: set[str], conf_dir: Path | None = None
) -> str | None:
    """A one-line message for the first override that sets an unknown schema key or
    gives a key a value of the wrong type; None when every one passes or is not ours
    to judge. ``groups``: the config groups (their overrides are checked elsewhere).
    ``dataset.*`` keys are checked against the kind of every data set the command line
    trains on (:func:`wgangp.config.choices.dataset_choices`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    conf_dir = conf_dir or config_dir()
    known = schema_keys()
    known_set = set(known)
    sections = {k.rsplit(".", 1)[0] for k in known if "." in k}
    datasets = _dataset_kinds(args, conf_dir)
    parser = OverridesParser.create()
    for arg in args:
        if _interpolated_resume(arg):
            # the run directory is chosen from resume while Hydra starts, before wgangp
            # can check an interpolation: a missing key would end in Hydra's traceback
            return str(
                ConfigError(
                    "resume",
                    arg.split("=", 1)[1],
                    "a checkpoint file, a run directory or auto",
                    "write the path itself, not an interpolation",
                )
            )
        if arg.startswith("-") or "=" not in arg or arg.startswith(("+", "~")):
            continue
        try:
            override = parser.parse_overrides([arg])[0]
        except Exception:  # noqa: BLE001 - a malformed override: Hydra's message
            continue
        key = override.key_or_group
        if not key or key in groups or "/" in key or key.split(".")[0] == "hydra":
            continue
        raw = arg.split("=", 1)[1]
        schema = OmegaConf.structured(Config)
        if key.startswith("dataset.") and key != "dataset.name":
            if not datasets:
                # data sets of another config directory, or none that compose (an unknown
                # experiment=, refused by the group check): Hydra or that check answers
                continue
            problem = _dataset_key_problem(key, raw, datasets, conf_dir)
            if problem:
                return problem
            schema = schema_for_dataset(datasets[0][0])
        elif key not in known_set:
            moved = moved_key_message(arg)
            if moved:
                return moved
            if key in sections or any(key.startswith(k + ".") for k in known_set):
                continue  # a whole section
            close = difflib.get_close_matches(key, known, n=1)
            return str(
                ConfigError(
                    key,
                    raw,
                    "a key of the schema (see wgangp/config/schema.py)",
                    f"did you mean {close[0]}?" if close else "remove it",
                )
            )
        values = _elements(override.value())
        node = _node(schema, key)
        if node is None:
            continue  # inside a free-form node (dataset.modes)
        for value in values or []:
            problem = _type_problem(key, value, node, schema)
            if problem:
                return problem
    return None


def _dataset_kinds(args: list[str], conf_dir: Path) -> list[tuple[str, type]] | None:
    """``(data set, its kind's schema)`` for every data set the command line trains on;
    None when one of them is not known here."""
    choices = dataset_choices(args, conf_dir)
    if choices is None:
        return None
    out = []
    for name, _ in choices:
        kind = dataset_schema(name, conf_dir)
        if kind is None:
            return None
        out.append((name, kind))
    return out


def _dataset_key_problem(
    key: str, raw: str, datasets: list[tuple[str, type]], conf_dir: Path
) -> str | None:
    """Why ``dataset.<key>`` is no key of one of ``datasets`` (None: all have it)."""
    leaf = key.split(".")[1]
    for name, kind in datasets:
        keys = data_keys(kind)
        if leaf in keys:
            continue
        elsewhere = datasets_with_key(leaf, conf_dir)
        if elsewhere:
            which = "that data set" if len(elsewhere) == 1 else "one of those"
            fix = (
                f"{leaf} is a key of dataset={' | '.join(elsewhere)}: choose {which}, "
                f"or drop {key}={raw}"
            )
        else:
            close = difflib.get_close_matches(leaf, keys, n=1)
            fix = f"did you mean dataset.{close[0]}?" if close else "remove it"
        return str(ConfigError(key, raw, "a key of " + describe_kind(name, kind), fix))
    return None


def _interpolated_resume(arg: str) -> bool:
    """``resume=${...}`` (also added with ``+`` or ``++``)."""
    key, _, value = arg.lstrip("+").partition("=")
    return key.strip() == "resume" and "${" in value


def _node(cfg: DictConfig, key: str) -> Any:  # noqa: ANN401
    """The schema node of ``key``; None below a free-form (untyped) value."""
    parent: Any = cfg
    for part in key.split("."):
        if not isinstance(parent, DictConfig):
            return None
        parent = parent._get_node(part)
    return parent


def _type_problem(key: str, value: Any, node: Any, schema: DictConfig) -> str | None:  # noqa: ANN401
    """Why ``key`` of ``schema`` cannot take ``value`` (None: it can, or it is not a
    typed leaf)."""
    if isinstance(node, AnyNode) or isinstance(value, str) and "${" in value:
        return None  # untyped, or an interpolation (resolved and checked after composing)
    try:
        OmegaConf.update(schema.copy(), key, value, merge=True)
    except OmegaConfBaseException:
        default = node._value()
        if default is not None and default != MISSING and not isinstance(default, str):
            example = f"e.g. {key}={_shown(default)}"
        elif isinstance(node, ListConfig) and not isinstance(value, (list, dict)):
            example = f"a list takes brackets: {key}=[{_shown(value)}]"
        else:
            example = f"set {key} to {_kind(node)}"

        return str(ConfigError(key, value, _kind(node), example))
    return None


def _shown(value: Any) -> str:  # noqa: ANN401
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (ListConfig, list)):
        return "[" + ",".join(_shown(v) for v in value) + "]"
    return str(value)
