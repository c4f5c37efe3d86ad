"""``wgangp-train``: the Hydra entry point.

Composes ``configs/config.yaml`` (+ command-line overrides) on top of the structured
schema, checks it, then trains in Hydra's run directory. ``resume=PATH`` continues a
run in place: the run directory becomes PATH's, and the config is the one the run was
started with plus this command line's overrides.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from wgangp.checkpoint import (
    latest_good_checkpoint,
    load_checkpoint,
    resolve_checkpoint_path,
    run_dir_of,
)
from wgangp.config import register_configs
from wgangp.errors import CheckpointError, UserError
from wgangp.trainer import Interrupted, Trainer
from wgangp.validate import validate

log = logging.getLogger("wgangp")

#: keys whose change makes a checkpoint unusable (network shapes, data shape)
INCOMPATIBLE = ("critic.", "generator.", "dataset.name", "dataset.image_size", "dataset.channels")


def config_dir() -> Path:
    """The configs shipped in the package (wheel), else the repository's ``configs/``."""
    here = Path(__file__).resolve().parent
    for cand in (here / "configs", here.parent / "configs"):
        if (cand / "config.yaml").is_file():
            return cand
    raise RuntimeError(f"wgangp's configs are missing (looked in {here}/configs and ../configs)")


def _resume_run_dir(resume: Any, default: str) -> str:
    """Hydra resolver: ``resume=PATH`` trains in PATH's run directory, in place."""
    if resume in (None, "", "auto"):
        return default
    try:
        return str(run_dir_of(resolve_checkpoint_path(str(resume))))
    except CheckpointError:
        return default  # reported properly (with the path) once the task starts


def _resume_output_subdir(resume: Any) -> str:
    # a resumed run keeps its original .hydra/ and records each resume beside it
    if resume in (None, "", "auto"):
        return ".hydra"
    return f".hydra/resume_{time.strftime('%Y-%m-%d_%H-%M-%S')}"


def register_resolvers() -> None:
    for name, fn in (
        ("wgangp_run_dir", _resume_run_dir),
        ("wgangp_output_subdir", _resume_output_subdir),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = node
    return out


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Keys whose values differ between two plain configs: ``{key: (old, new)}``."""
    a, b = _flatten(old), _flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def resume_config(
    ckpt: dict[str, Any], path: Path, overrides: list[str]
) -> tuple[DictConfig, list[str], dict[str, tuple[Any, Any]]]:
    """The config to continue with: the run's own overrides, then this command line's.

    Refuses changes to the networks or the data shape, listing the differing keys.
    """
    merged: dict[str, str] = {}
    for o in list(ckpt.get("overrides", [])) + overrides:
        if _override_key(o) != "resume":
            merged[_override_key(o)] = o
    effective = list(merged.values())
    cfg = hydra.compose(config_name="config", overrides=effective)
    changes = config_changes(ckpt["config"], OmegaConf.to_container(cfg, resolve=True))
    changes.pop("resume", None)
    bad = {k: v for k, v in changes.items() if k.startswith(INCOMPATIBLE)}
    if bad:
        listed = "; ".join(f"{k}: {o!r} → {n!r}" for k, (o, n) in bad.items())
        raise CheckpointError(
            path,
            f"cannot resume with a different architecture or data shape ({listed}); "
            "start a new run instead",
        )
    return cfg, effective, changes


def run(cfg: DictConfig) -> dict[str, float]:
    """Train one run (the body of the Hydra task); returns the last logged values."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides = [o for o in hc.overrides.task if _override_key(o) != "resume"]
    ckpt, ckpt_path, changes = None, None, {}
    if cfg.resume == "auto":
        found = latest_good_checkpoint(run_dir)
        if found is None:
            log.info("resume=auto: no checkpoint in %s, starting fresh", run_dir)
        else:
            ckpt_path, ckpt = found
            cfg, overrides, changes = resume_config(ckpt, ckpt_path, overrides)
    elif cfg.resume:
        ckpt_path = resolve_checkpoint_path(cfg.resume)
        ckpt = load_checkpoint(ckpt_path)
        cfg, overrides, changes = resume_config(ckpt, ckpt_path, overrides)
    device = validate(cfg)
    trainer = Trainer(cfg, run_dir, device)
    trainer.overrides = overrides
    if ckpt is not None:
        trainer.load_state_dict(ckpt, ckpt_path)
        if changes:
            log.info(
                "resume: config changes accepted: %s",
                ", ".join(f"{k} {o!r}→{n!r}" for k, (o, n) in changes.items()),
            )
            trainer.history.append(
                {"step": trainer.step, "changes": {k: [o, n] for k, (o, n) in changes.items()}}
            )
        log.info("resumed from %s at step %d", ckpt_path, trainer.step)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    log.info("run directory: %s | device: %s", run_dir, device)
    return trainer.fit()


def task(cfg: DictConfig) -> float | None:
    """Hydra task: exits non-zero with one clear message on a user mistake.

    Returns what sweepers optimise: when ``eval.keep_best`` is set, the best value of
    that metric over the run's evaluations (the one kept as ``checkpoints/best.pt``;
    NaN when it could not be computed, which Optuna records as a failed trial; its
    direction is ``wgangp.metrics.METRIC_DIRECTION[name]``), else the critic's final
    Wasserstein estimate.
    """
    try:
        last = run(cfg)
    except Interrupted as e:
        log.warning("%s", e)
        sys.exit(e.exit_code)
    except UserError as e:
        log.error("%s", e)
        print(f"wgangp: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    return optimized_value(cfg, last)


def optimized_value(cfg: DictConfig, last: dict[str, float]) -> float | None:
    """The number :func:`task` returns for the values ``Trainer.fit`` returned."""
    best = cfg.get("eval", {}).get("keep_best")
    if best:
        value = last.get(f"best/{best}", last.get(f"metrics/{best}"))
        if value is None:
            log.warning("eval.keep_best=%s was not computed; returning NaN", best)
            return float("nan")
        return float(value)
    value = last.get("wasserstein")
    return None if value is None else float(value)


def main() -> None:
    register_configs()
    register_resolvers()
    hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(task)()


if __name__ == "__main__":
    main()
