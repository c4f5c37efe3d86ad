"""What a command line picks before Hydra composes it: parsed overrides, the option
names they hold, and the data set(s) each run will train on (which decides the keys
``dataset.*`` has: :mod:`wgangp.config.schema_data`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

#: arguments that can give config groups options beyond ``configs/`` (Hydra checks those)
SEARCHPATH_ARGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")


def parse_overrides(args: list[str]) -> list[tuple[str, Any]]:
    """``(argument, Hydra's Override)`` for each ``KEY=VALUE``/``~KEY`` argument Hydra can
    parse (flags and malformed overrides are left to Hydra's own messages)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = []
    for arg in args:
        if arg.startswith("-") or ("=" not in arg and not arg.startswith("~")):
            continue
        try:
            parsed.append((arg, parser.parse_overrides([arg])[0]))
        except Exception:  # noqa: BLE001 - Hydra reports a malformed override itself
            continue
    return parsed


def other_search_path(args: list[str], parsed: list[tuple[str, Any]]) -> bool:
    """Whether the command line may add config options beyond ``configs/``."""
    return any(
        a == flag or a.startswith(f"{flag}=") for a in args for flag in SEARCHPATH_ARGS
    ) or any(o.key_or_group == "hydra.searchpath" for _, o in parsed)


def option_names(override: Any) -> list[str]:  # noqa: ANN401
    """The option names an override's value holds (a sweep's elements, or the one)."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = override.value()
    elements = value.list if isinstance(value, ChoiceSweep) else [value]
    return [e for e in elements if isinstance(e, str)]


def defaults_choice(path: Path, group: str) -> str | None:
    """The option of ``group`` that the defaults list of the YAML file ``path`` picks
    (``- dataset: x``, ``- override /dataset: x``); None when it picks none."""
    if not path.is_file():
        return None
    try:
        defaults = OmegaConf.to_container(OmegaConf.load(path)).get("defaults") or []
    except Exception:  # noqa: BLE001 - a broken file: Hydra reports it when composing
        return None
    for entry in defaults:
        if isinstance(entry, dict):
            for key, value in entry.items():
                name = str(key).removeprefix("override ").strip().lstrip("/")
                if name == group and isinstance(value, str):
                    return value
    return None


def experiment_files(conf_dir: Path, experiment: str) -> list[Path]:
    """``configs/experiment/<experiment>.yaml`` and the experiments it extends through its
    defaults list (``- cifar10_resnet_paper``), the file itself first."""
    out: list[Path] = []
    todo = [experiment]
    while todo:
        path = conf_dir / "experiment" / f"{todo.pop(0)}.yaml"
        if path in out or not path.is_file():
            continue
        out.append(path)
        try:
            defaults = OmegaConf.to_container(OmegaConf.load(path)).get("defaults") or []
        except Exception:  # noqa: BLE001 - a broken file: Hydra reports it when composing
            continue
        todo += [e for e in defaults if isinstance(e, str) and e != "_self_"]
    return out


def experiment_dataset_keys(conf_dir: Path, experiment: str) -> list[str]:
    """The ``dataset.*`` keys experiment ``experiment`` sets (itself or what it extends)."""
    keys: list[str] = []
    for path in experiment_files(conf_dir, experiment):
        try:
            node = OmegaConf.load(path).get("dataset")
        except Exception:  # noqa: BLE001 - a broken file: Hydra reports it when composing
            continue
        if OmegaConf.is_dict(node):
            keys += [k for k in node if k not in keys]
    return keys


def experiment_dataset(conf_dir: Path, experiment: str) -> str | None:
    """The data set experiment ``experiment`` picks (itself or what it extends)."""
    for path in experiment_files(conf_dir, experiment):
        name = defaults_choice(path, "dataset")
        if name:
            return name
    return None


def dataset_choices(args: list[str], conf_dir: Path) -> list[tuple[str, str | None]] | None:
    """The data set each run of the command line trains on, as ``(option, experiment)``
    pairs (the experiment that picks it, or None): ``dataset=`` (each element of a
    sweep), else each experiment's own choice, else the primary config's default. None
    when that cannot be known here (another config search path, a ``glob`` sweep)."""
    parsed = parse_overrides(args)
    if other_search_path(args, parsed):
        return None
    chosen = {o.key_or_group: o for _, o in parsed if not o.is_delete()}
    default = defaults_choice(conf_dir / "config.yaml", "dataset")
    experiments = option_names(chosen["experiment"]) if "experiment" in chosen else [None]
    if "dataset" in chosen:
        names = option_names(chosen["dataset"])
        if not names or _is_glob(chosen["dataset"]):
            return None
        return [(name, e) for name in names for e in experiments]
    out: list[tuple[str, str | None]] = []
    for e in experiments:
        picked = experiment_dataset(conf_dir, e) if e else None
        name = picked or default
        if name is None:
            return None
        out.append((name, e))
    return out


def _is_glob(override: Any) -> bool:  # noqa: ANN401
    from hydra.core.override_parser.types import Glob

    return isinstance(override.value(), Glob)
