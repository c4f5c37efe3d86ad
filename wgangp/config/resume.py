"""``resume=``: the config a run continues with, what changed since its checkpoint, and
the checks before a resumed (or fresh) run writes anything into its directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from wgangp.config.compose import (
    dataset_schema,
    override_key,
    schema_for_dataset,
    schemas_of_every_kind,
)
from wgangp.config.legacy import upgrade, upgrade_overrides
from wgangp.core.optim import linear_decay
from wgangp.errors import CheckpointError, ConfigError
from wgangp.io.checkpoint import checkpoint_files, newer_checkpoints

log = logging.getLogger("wgangp")

#: keys whose change makes a checkpoint unusable (network shapes, data shape)
INCOMPATIBLE = (
    "critic.",
    "generator.",
    "dataset.name",
    "dataset.image_size",
    "dataset.channels",
    "dataset.pixel_range",
    "conditional.enabled",
    "loss.name",  # another method, and with it
    "optim.name",  # another optimizer state
)


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = node
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two plain configs: ``{key: (old, new)}``."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def keys_added_at_default(old: dict[str, Any], changes: dict[str, tuple[Any, Any]]) -> list[str]:
    """Changed keys that the old config does not have at all and whose new value is the
    schema's default: keys added to wgangp since that checkpoint was written, which
    describe what the old run did (a checkpoint from before ``generator.input_norm``
    existed normalised per channel, the default), so they are not changes."""
    present = flatten(old)
    name = (old.get("dataset") or {}).get("name")
    kind = dataset_schema(str(name)) if name else None
    # an old config without a data set name: a dataset key's default in any kind that
    # has it (the kinds share their common keys' defaults through their bases)
    schemas = [schema_for_dataset(str(name))] if kind else schemas_of_every_kind()
    out = []
    for key, (_, new) in changes.items():
        if key in present:
            continue
        default = _default(schemas, key)
        if default is None:
            continue
        if OmegaConf.is_list(default):
            default = OmegaConf.to_container(default)  # e.g. dataset.pixel_range
        elif OmegaConf.is_config(default):
            continue
        if default == new:
            out.append(key)
    return out


def _default(schemas: list[DictConfig], key: str) -> Any:  # noqa: ANN401
    """The default of ``key`` in the first of ``schemas`` that has one (None: none)."""
    absent = object()
    for schema in schemas:
        try:
            value = OmegaConf.select(schema, key, default=absent, throw_on_missing=True)
        except OmegaConfBaseException:  # a key without a default
            continue
        if value is not absent:
            return value
    return None


def names_recipe(overrides: list[str]) -> bool:
    return any(override_key(o) in ("recipe", "experiment") for o in overrides)


def with_recipe(overrides: list[str], chosen: str | None) -> list[str]:
    """``overrides`` naming the recipe the run starts from, so that a resume recomposes
    the same constants whatever the data set's default is then: ``recipe=<chosen>``
    added unless they name a recipe or an experiment (which brings its own).
    ``chosen`` None: a checkpoint's list, where no recipe means one written before
    recipes existed, when every run started from the paper's constants."""
    if names_recipe(overrides):
        return overrides
    return [f"recipe={chosen or 'paper'}", *overrides]


def resume_config(
    ckpt: dict[str, Any], path: Path, overrides: list[str]
) -> tuple[DictConfig, list[str], dict[str, tuple[Any, Any]]]:
    """The config to continue with: the run's own overrides, then this command line's.

    Refuses changes to the networks or the data shape, listing the differing keys.
    """
    merged: dict[str, str] = {}
    saved = upgrade_overrides(list(ckpt.get("overrides", [])))  # speed keys, renamed
    for o in with_recipe(saved, None) + overrides:
        if override_key(o) != "resume":
            merged[override_key(o)] = o
    effective = list(merged.values())
    cfg = hydra.compose(config_name="config", overrides=effective)
    old = upgrade(ckpt["config"])
    changes = config_changes(old, OmegaConf.to_container(cfg, resolve=True))
    changes.pop("resume", None)
    for key in keys_added_at_default(old, changes):
        del changes[key]  # e.g. generator.input_norm, new since the checkpoint was written
    bad = {k: v for k, v in changes.items() if k.startswith(INCOMPATIBLE)}
    if bad:
        listed = "; ".join(f"{k}: {o!r} → {n!r}" for k, (o, n) in bad.items())
        raise CheckpointError(
            path,
            f"cannot resume with a different architecture or data shape ({listed}); "
            "start a new run instead",
        )
    return cfg, effective, changes


def refuse_to_start_over(run_dir: Path, auto: bool) -> None:
    """A fresh run writes ``checkpoints/last.pt`` and prunes ``step_*.pt``: refuse a run
    directory that already holds another run's checkpoints (never overwrite them).
    ``auto``: resume=auto found none of them readable (the reasons were logged)."""
    existing = checkpoint_files(run_dir / "checkpoints")
    if not existing:
        return
    names = ", ".join(p.name for p in existing)
    if auto:
        problem = (
            f"resume=auto could read none of the checkpoints in {run_dir} ({names}; the "
            "reasons are logged above), and starting afresh would overwrite them; repair "
            "or move them away, or train in a new directory (another hydra.run.dir)"
        )
    else:
        problem = (
            f"a new run cannot start in {run_dir}, which already holds checkpoints "
            f"({names}); continue that run with resume={run_dir}, or train in a new "
            "directory (another hydra.run.dir)"
        )
    raise CheckpointError(run_dir / "checkpoints", problem + "; no checkpoint was touched")


def check_resume_target(run_dir: Path, ckpt: dict, ckpt_path: Path, steps: int) -> bool:
    """Before anything is written: the directory the resumed run writes into holds no
    later checkpoint (resuming an older step file in place would overwrite the run's
    newer ``last.pt`` and leave its newer step files beside the branch), and
    ``trainer.steps`` is not behind the checkpoint. True: the run is already complete."""
    step = int(ckpt.get("step", 0))
    newer = newer_checkpoints(run_dir / "checkpoints", step, ckpt_path)
    if newer:
        raise CheckpointError(
            ckpt_path,
            f"resuming step {step} in {run_dir} would overwrite that directory's later "
            f"checkpoints ({', '.join(newer)}); to branch from step {step}, add "
            "hydra.run.dir=NEW_DIR (the run continues there), or delete the later files",
        )
    if steps < step:
        raise ConfigError(
            "trainer.steps",
            steps,
            f"an integer ≥ {step}, the step of {ckpt_path}",
            f"the run is already at step {step}; raise trainer.steps to train further",
        )
    if steps == step:
        log.warning(
            "the run is already complete: %s is at step %d = trainer.steps; nothing to "
            "train (raise trainer.steps to continue it)",
            ckpt_path,
            step,
        )
        return True
    return False


def decay_note(cfg: DictConfig, changes: dict[str, tuple[Any, Any]], step: int) -> str | None:
    """What a resume that changes ``trainer.steps`` does to a linear learning-rate decay:
    it is a function of ``step / trainer.steps``, so the rate jumps to the new length's."""
    if cfg.optim.lr_decay != "linear" or "trainer.steps" not in changes:
        return None
    old, new = (int(n) for n in changes["trainer.steps"])
    lr = float(cfg.optim.generator.lr)
    before, after = (lr * linear_decay(step, n) for n in (old, new))
    return (
        f"optim.lr_decay=linear over trainer.steps={new} (was {old}): the generator's "
        f"learning rate at step {step} goes from {before:.3g} to {after:.3g} and falls "
        f"linearly to 0 at step {new}"
    )


def recipe_note(choices: Any) -> str:  # noqa: ANN401
    """One line saying which constants the run starts from (Hydra's group ``choices``)."""
    recipe, experiment = choices.get("recipe"), choices.get("experiment")
    if experiment:
        return f"recipe: experiment={experiment}"
    if recipe != "paper":
        return (
            f"recipe: {recipe} (dataset={choices.get('dataset')} picks it: tuned to fit "
            "within a minute; recipe=paper runs the paper's constants: λ=10, Adam 1e-4 "
            "β=(0, 0.9), n_critic=5)"
        )
    return f"recipe: {recipe} (configs/recipe/{recipe}.yaml)"
