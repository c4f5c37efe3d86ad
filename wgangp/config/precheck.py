"""Command-line overrides Hydra would refuse with a traceback (or run nothing for),
checked before it composes: config group options, deletions, recipes, and every job of
a sweep. Each problem is one line naming the override and what is allowed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from wgangp.config.choices import (
    SEARCHPATH_ARGS,
    dataset_choices,
    experiment_dataset_keys,
    option_names,
    other_search_path,
    parse_overrides,
)
from wgangp.config.compose import (
    config_dir,
    config_groups,
    dataset_schema,
    datasets_with_key,
    describe_kind,
    group_options,
    register_resolvers,
)
from wgangp.config.optimized import check_optimized_metric
from wgangp.config.schema import Config, register_configs, schema_keys
from wgangp.config.schema_data import data_keys
from wgangp.config.validate import validate
from wgangp.data.toy import TOY_DATASETS
from wgangp.errors import UserError


def required_keys() -> set[str]:
    """The schema's keys, leaves (``trainer.seed``) and sections (``trainer``)."""
    return set(schema_keys()) | {f.name for f in dataclasses.fields(Config)}


def group_value_problem(
    key: str, raw: str, value: Any, options: list[str], complete: bool, optional: bool
) -> str | None:
    """Why ``key=raw`` (parsed: ``value``) names no option(s) of config group ``key``.

    ``complete`` False: ``options`` may miss some (Hydra's own groups, plugins, another
    search path); then only the kind of value is checked, not the names.
    """
    from hydra.core.override_parser.types import ChoiceSweep, Glob, IntervalSweep, RangeSweep

    allowed = " | ".join([*options, *([] if complete else ["…"])]) or "…"
    if isinstance(value, Glob):
        if complete and not value.filter(options):
            return (
                f"invalid option for {key}: {raw!r} matches none of its options (allowed: "
                f"{allowed}); e.g. {key}='glob(*)' sweeps them all"
            )
        return None
    if isinstance(value, (RangeSweep, IntervalSweep)):
        return (
            f"invalid option for {key}: {raw!r} (allowed: {allowed}); a config group takes "
            f"option names, not numbers: sweep them with {key}=A,B or {key}='glob(*)'"
        )
    sweep = isinstance(value, ChoiceSweep)
    elements = value.list if sweep else value if isinstance(value, list) else [value]
    for el in elements:
        names = el if sweep and isinstance(el, list) else [el]
        for name in names:
            if isinstance(name, dict):  # key={a:1}: sets keys of the group's node
                continue
            bad = not isinstance(name, str) or (
                complete and "/" not in name and name not in options
            )
            if not bad:
                continue
            shown = "null" if name is None else str(name)
            where = f" in {raw!r}" if raw != shown else ""
            hint = f"; to leave {key} out, use ~{key}" if name is None and optional else ""
            return f"invalid option for {key}: {shown!r}{where} (allowed: {allowed}){hint}"
    return None


def recipe_problem(parsed: list[tuple[str, Any]]) -> str | None:
    """``~recipe``, or ``recipe=`` beside ``experiment=``: refused by name.

    ``recipe`` (configs/recipe/) is the set of constants a run starts from: ``paper``
    (the groups' own) or ``toy`` (what the toy data sets pick). An experiment names
    its own recipe, and a ``recipe=`` on the command line would replace that one under
    the experiment's values (``experiment=toy_quality recipe=paper``: toy_quality's
    lengths on the paper's networks), which no one means.
    """
    keys = {o.key_or_group: (arg, o) for arg, o in parsed}
    if "recipe" in keys and keys["recipe"][1].is_delete():
        return (
            f"cannot delete recipe ({keys['recipe'][0]!r}): every run starts from one; "
            "recipe=paper runs the paper's constants, recipe=toy (toy_grid) the toy data "
            "sets' tuned one (configs/recipe/)"
        )
    if "recipe" in keys and "experiment" in keys and not keys["experiment"][1].is_delete():
        return (
            f"{keys['recipe'][0]!r} with {keys['experiment'][0]!r}: an experiment brings its "
            "own recipe and recipe= would replace it; drop one of the two (set single keys "
            "instead, e.g. gp.lambda=10)"
        )
    toy = [r for r in option_names(keys["recipe"][1]) if r != "paper"] if "recipe" in keys else []
    if toy and "dataset" in keys:
        other = [d for d in option_names(keys["dataset"][1]) if d not in TOY_DATASETS]
        if other:
            return (
                f"recipe={toy[0]} with dataset={other[0]}: the toy recipes are for 2-D point "
                f"sets ({', '.join(TOY_DATASETS)}: MLPs, a 2-d latent); {other[0]} runs on "
                "recipe=paper (the default for it) or an experiment"
            )
    return None


def check_group_overrides(args: list[str], conf_dir: Path) -> str | None:
    """A message for overrides Hydra would refuse (or run nothing for), checked before it runs.

    * ``group=VALUE`` where VALUE is no option of the group (``dataset=nope``,
      ``dataset=0``, ``critic=[1]``, ``experiment=null``: Hydra 1.3 raises a ValueError
      on the last three): one line naming the options instead. Sweeps (with ``-m``) are
      checked element by element: ``dataset=gaussians8,nope`` and
      ``dataset=choice(a,b)`` name the bad element; ``critic='glob(*)'`` must match an
      option; ``range()``/``interval()`` give numbers, never option names. Option
      names are checked against ``configs/`` and the ConfigStore, except for groups
      with a ``/`` (``hydra/launcher``: plugins add options) and when ``--config-dir``,
      ``--config-path``, ``--config-name`` or ``hydra.searchpath`` may add options.
    * ``~KEY`` deleting a key of the schema: every one is required (``~resume`` breaks
      the run directory's interpolation with a traceback). Other deletions (the
      optional ``~experiment``, ``~hparams_search``, Hydra's keys, unknown keys) are
      Hydra's to answer.

    Unparsable arguments are left to Hydra's own message.
    """
    groups = config_groups(conf_dir)
    # the recipe group has no schema key, yet every run needs one (~recipe is refused)
    required = required_keys() | {"recipe"}
    parsed = parse_overrides(args)
    other_options = other_search_path(args, parsed)
    problem = recipe_problem(parsed)
    if problem:
        return problem
    for arg, o in parsed:
        key = o.key_or_group
        if key == "":
            return f"override {arg!r} has no key (expected KEY=VALUE, e.g. trainer.steps=100)"
        if o.is_delete() and key in required:
            return (
                f"cannot delete {key!r} ({arg!r}): every wgangp setting is required; "
                f"set it to another value instead ({key}=VALUE; each key is described in "
                "wgangp/config/schema.py)"
            )
        if (key in groups or "/" in key) and not o.is_delete():
            problem = group_value_problem(
                key,
                arg.split("=", 1)[1],
                o.value(),
                group_options(conf_dir, key),
                complete=key in groups and key != "hydra" and not other_options,
                optional=key not in required,
            )
            if problem:
                return problem
    return None if other_options else experiment_dataset_problem(args, conf_dir)


def experiment_dataset_problem(args: list[str], conf_dir: Path) -> str | None:
    """An experiment that sets ``dataset.*`` keys the data set it runs on does not have
    (``experiment=dcgan64_paper`` sets the image size, and the default data set is a
    points one): one line naming the key and the data sets that have it."""
    for name, experiment in dataset_choices(args, conf_dir) or []:
        kind = dataset_schema(name, conf_dir) if experiment else None
        if kind is None:
            continue
        for key in experiment_dataset_keys(conf_dir, experiment):
            if key not in data_keys(kind):
                having = " | ".join(datasets_with_key(key, conf_dir))
                return (
                    f"experiment={experiment} sets dataset.{key}, which dataset={name} does "
                    f"not have (the keys of {describe_kind(name, kind)}); add a data set "
                    f"that has it: dataset={having}"
                )
    return None


#: more sweep jobs than this are left to be checked one by one as they start
MAX_PRECHECKED_JOBS = 512


def sweep_jobs(args: list[str]) -> list[list[str]] | None:
    """The override lists of the jobs ``wgangp-train -m ARGS`` will launch with the basic
    sweeper (the Cartesian product of its comma/``choice``/``range`` sweeps), or None
    when they cannot be known here: no ``-m``, another sweeper, another config search
    path, a ``glob``/``interval`` sweep, or more than :data:`MAX_PRECHECKED_JOBS`."""
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    if not {"-m", "--multirun"} & set(args):
        return None
    if any(a.split("=", 1)[0] in SEARCHPATH_ARGS for a in args):
        return None
    overrides = [a for a in args if not a.startswith("-") and "=" in a]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # noqa: BLE001 - Hydra reports malformed overrides itself
        return None
    axes: list[list[str]] = []
    for o in parsed:
        key = o.get_key_element()
        if key.startswith(("hydra/sweeper", "hydra.sweeper", "hydra.searchpath")):
            return None
        if o.is_sweep_override():
            if not o.is_discrete_sweep() or isinstance(o.value(), Glob):
                return None
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        else:
            axes.append([o.input_line])
    n = 1
    for a in axes:
        n *= len(a)
    if n < 2 or n > MAX_PRECHECKED_JOBS:
        return None
    return [list(job) for job in itertools.product(*axes)]


def check_sweep_jobs(args: list[str]) -> str | None:
    """A message for the first job of a sweep whose config would be refused, checked
    before any job starts (else a sweep runs its good jobs until it reaches a bad one,
    and a parallel launcher kills the jobs it started)."""
    jobs = sweep_jobs(args)
    if not jobs:
        return None
    from hydra import compose, initialize_config_dir

    register_configs()
    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        for i, job in enumerate(jobs):
            try:
                cfg = compose("config", overrides=job)
                validate(cfg)
                check_optimized_metric(cfg)
            except UserError as e:
                swept = " ".join(o for o in job if o not in args)
                return f"sweep job #{i} ({swept}): {e}; no job was started"
            except Exception:  # noqa: BLE001 - composition problems: Hydra's own message
                return None
    return None
