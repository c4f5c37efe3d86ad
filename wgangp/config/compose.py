"""Where the configs are, the resolvers ``configs/config.yaml`` calls, and composition
outside a Hydra run (scripts, tests, the sweep pre-check)."""

from __future__ import annotations

import datetime
import hashlib
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wgangp.config.schema import Config, register_configs
from wgangp.config.schema_data import DATA_SCHEMAS, KIND_NAMES, DataConfig, data_keys
from wgangp.config.torchrun import start_time
from wgangp.errors import CheckpointError
from wgangp.io.checkpoint import resolve_checkpoint_path, run_dir_of


def config_dir() -> Path:
    """The configs shipped in the package (wheel), else the repository's ``configs/``."""
    here = Path(__file__).resolve().parents[1]
    for cand in (here / "configs", here.parent / "configs"):
        if (cand / "config.yaml").is_file():
            return cand
    raise RuntimeError(f"wgangp's configs are missing (looked in {here}/configs and ../configs)")


def override_key(override: str) -> str:
    """The key of a ``KEY=VALUE`` override, without its ``+``/``~`` prefix."""
    return override.split("=", 1)[0].lstrip("+~")


def resume_run_dir(resume: Any, default: str) -> str:  # noqa: ANN401
    """Hydra resolver: ``resume=PATH`` trains in PATH's run directory, in place."""
    if resume in (None, "", "auto"):
        return default
    try:
        return str(run_dir_of(resolve_checkpoint_path(str(resume))))
    except CheckpointError:
        return default  # reported properly (with the path) once the task starts


def resume_output_subdir(resume: Any, output_dir: Any = None) -> str:  # noqa: ANN401
    """Hydra resolver: a run keeps its original ``.hydra/`` and records each later start
    in the same directory beside it (``resume=auto`` included: Hydra writes this record
    before the task can look at the checkpoints)."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    if resume not in (None, "", "auto"):
        return f".hydra/resume_{stamp}"
    if output_dir and (Path(str(output_dir)) / ".hydra" / "config.yaml").is_file():
        return f".hydra/{'resume' if resume == 'auto' else 'rerun'}_{stamp}"
    return ".hydra"


def shared_start_time(pattern: str) -> str:
    """Hydra resolver: like Hydra's ``${now:...}``, but rank 0's clock on every torchrun
    rank (one run directory for all of them)."""
    return datetime.datetime.fromtimestamp(start_time()).strftime(pattern)


#: longest override-based job directory name kept as is (file names stop at 255 bytes)
MAX_DIRNAME = 120


def short_dirname(name: Any) -> str:  # noqa: ANN401
    """Hydra resolver: a sweep job's override-based name, shortened when too long.

    Long names (an Optuna trial's 17-digit floats, many overrides) keep their first
    characters and end with a hash of the whole, so they stay readable and distinct;
    the full overrides are always in the job's ``.hydra/overrides.yaml``.
    """
    name = str(name)
    if len(name.encode()) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name.encode()[: MAX_DIRNAME - 10].decode(errors='ignore')}_{digest}"


def register_resolvers() -> None:
    """The ``wgangp_*`` resolvers of ``configs/config.yaml`` and ``configs/hydra/help``."""
    for name, fn in (
        ("wgangp_run_dir", resume_run_dir),
        ("wgangp_output_subdir", resume_output_subdir),
        ("wgangp_now", shared_start_time),
        ("wgangp_dirname", short_dirname),
        ("wgangp_config_groups", lambda: config_groups_help(config_dir())),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def compose_config(overrides: list[str]) -> DictConfig:
    """The config ``wgangp-train`` would compose from ``overrides`` (no run directory,
    nothing validated): for scripts and tests that build a Trainer themselves."""
    from hydra import compose, initialize_config_dir

    register_configs()
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def config_groups(conf_dir: Path) -> set[str]:
    """The config groups under ``conf_dir`` (its sub-folders, ``dataset``, ``critic``, …)."""
    return {d.name for d in conf_dir.iterdir() if d.is_dir() and not d.name.startswith("_")}


def group_options(conf_dir: Path, group: str) -> list[str]:
    """The options of config group ``group``: its YAML files, and any in the ConfigStore
    (the kinds' schemas of ``dataset`` excepted: each is what a data set extends, no
    data set itself)."""
    import contextlib

    from hydra.core.config_store import ConfigStore

    names = {f.stem for f in (conf_dir / group).glob("*.yaml")}
    with contextlib.suppress(OSError):  # OSError: no such group in the ConfigStore
        names |= {n.removesuffix(".yaml") for n in ConfigStore.instance().list(group)}
    if group == "dataset":
        names -= set(DATA_SCHEMAS)
    return sorted(names)


def config_groups_help(conf_dir: Path) -> str:
    """``--help``'s list of the config groups and their options, one group a line."""
    register_configs()
    return "\n".join(
        f"{group}: {', '.join(group_options(conf_dir, group))}"
        for group in sorted(config_groups(conf_dir) - {"hydra"})
    )


def dataset_schema(name: str, conf_dir: Path | None = None) -> type[DataConfig] | None:
    """The kind schema data set option ``name`` extends (the ``*_schema`` entry of
    ``configs/dataset/<name>.yaml``'s defaults list); None for an option that is not
    there or names none (one from another config directory)."""
    path = (conf_dir or config_dir()) / "dataset" / f"{name}.yaml"
    if "/" in name or not path.is_file():
        return None
    try:
        defaults = OmegaConf.to_container(OmegaConf.load(path)).get("defaults") or []
    except Exception:  # noqa: BLE001 - a broken file: Hydra reports it when composing
        return None
    for entry in defaults:
        option = str(entry).split("@", 1)[0].removeprefix("/dataset/")
        if option in DATA_SCHEMAS:
            return DATA_SCHEMAS[option]
    return None


def schema_for_dataset(name: str) -> DictConfig:
    """The whole schema with data set ``name``'s kind in place of the base ``dataset``
    node (the base alone for a data set of no known kind)."""
    schema = OmegaConf.structured(Config)
    kind = dataset_schema(name)
    if kind is not None:
        schema = OmegaConf.merge(schema, {"dataset": OmegaConf.structured(kind)})
    return schema


def schemas_of_every_kind() -> list[DictConfig]:
    """The whole schema once with each kind's ``dataset`` node."""
    base = OmegaConf.structured(Config)
    return [
        OmegaConf.merge(base, {"dataset": OmegaConf.structured(kind)})
        for kind in DATA_SCHEMAS.values()
    ]


def datasets_with_key(key: str, conf_dir: Path | None = None) -> list[str]:
    """The data set options whose kind has key ``dataset.<key>``."""
    conf_dir = conf_dir or config_dir()
    out = []
    for name in group_options(conf_dir, "dataset"):
        kind = dataset_schema(name, conf_dir)
        if kind is not None and key in data_keys(kind):
            out.append(name)
    return out


def describe_kind(name: str, kind: type[DataConfig]) -> str:
    """``dataset=name``'s keys, for messages: ``gaussians8 (points data: name, path, …)``."""
    return f"{name} ({KIND_NAMES[kind]}: {', '.join(data_keys(kind))})"
