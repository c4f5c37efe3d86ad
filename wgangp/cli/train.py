"""``wgangp-train``: the Hydra entry point.

Composes ``configs/config.yaml`` (+ command-line overrides) on top of the structured
schema, checks it, then trains in Hydra's run directory. ``resume=PATH`` continues a
run in place: the run directory becomes PATH's, and the config is the one the run was
started with plus this command line's overrides.

Under ``torchrun`` every rank runs this same Hydra app (see :func:`main`): the ranks
agree on one run directory, and only rank 0 writes ``.hydra/``, ``train.log``,
TensorBoard files, pictures and checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from wgangp.config.legacy import upgrade_config, upgrade_overrides
from wgangp.config.overrides import check_value_overrides
from wgangp.config.schema import Config, register_configs, schema_keys
from wgangp.config.validate import validate
from wgangp.core.optim import linear_decay
from wgangp.data.toy import TOY_DATASETS
from wgangp.errors import CheckpointError, ConfigError, Interrupted, UserError
from wgangp.io.checkpoint import (
    checkpoint_files,
    latest_good_checkpoint,
    load_checkpoint,
    newer_checkpoints,
    resolve_checkpoint_path,
    run_dir_of,
)
from wgangp.io.paths import unwritable_reason
from wgangp.train import distributed

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


def config_dir() -> Path:
    """The configs shipped in the package (wheel), else the repository's ``configs/``."""
    here = Path(__file__).resolve().parents[1]
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


def _resume_output_subdir(resume: Any, output_dir: Any = None) -> str:
    """Hydra resolver: a run keeps its original ``.hydra/`` and records each later start
    in the same directory beside it (``resume=auto`` included: Hydra writes this record
    before the task can look at the checkpoints)."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    if resume not in (None, "", "auto"):
        return f".hydra/resume_{stamp}"
    if output_dir and (Path(str(output_dir)) / ".hydra" / "config.yaml").is_file():
        return f".hydra/{'resume' if resume == 'auto' else 'rerun'}_{stamp}"
    return ".hydra"


def _start_time(pattern: str) -> str:
    # like Hydra's ${now:...}, but rank 0's clock on every torchrun rank
    return datetime.datetime.fromtimestamp(distributed.start_time()).strftime(pattern)


#: longest override-based job directory name kept as is (file names stop at 255 bytes)
MAX_DIRNAME = 120


def _short_dirname(name: Any) -> str:
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
    for name, fn in (
        ("wgangp_run_dir", _resume_run_dir),
        ("wgangp_output_subdir", _resume_output_subdir),
        ("wgangp_now", _start_time),
        ("wgangp_dirname", _short_dirname),
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


def keys_added_at_default(old: dict[str, Any], changes: dict[str, tuple[Any, Any]]) -> list[str]:
    """Changed keys that the old config does not have at all and whose new value is the
    schema's default: keys added to wgangp since that checkpoint was written, which
    describe what the old run did (a checkpoint from before ``generator.input_norm``
    existed normalised per channel, the default), so they are not changes."""
    present = _flatten(old)
    schema = OmegaConf.structured(Config)
    out = []
    for key, (_, new) in changes.items():
        if key in present:
            continue
        try:
            default = OmegaConf.select(schema, key, throw_on_missing=True)
        except OmegaConfBaseException:  # a key without a default
            continue
        if OmegaConf.is_list(default):
            default = OmegaConf.to_container(default)  # e.g. dataset.pixel_range
        elif OmegaConf.is_config(default):
            continue
        if default == new:
            out.append(key)
    return out


def _names_recipe(overrides: list[str]) -> bool:
    return any(_override_key(o) in ("recipe", "experiment") for o in overrides)


def with_recipe(overrides: list[str], chosen: str | None) -> list[str]:
    """``overrides`` naming the recipe the run starts from, so that a resume recomposes
    the same constants whatever the data set's default is then: ``recipe=<chosen>``
    added unless they name a recipe or an experiment (which brings its own).
    ``chosen`` None: a checkpoint's list, where no recipe means one written before
    recipes existed, when every run started from the paper's constants."""
    if _names_recipe(overrides):
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
        if _override_key(o) != "resume":
            merged[_override_key(o)] = o
    effective = list(merged.values())
    cfg = hydra.compose(config_name="config", overrides=effective)
    saved_cfg = upgrade_config(ckpt["config"])
    changes = config_changes(saved_cfg, OmegaConf.to_container(cfg, resolve=True))
    changes.pop("resume", None)
    for key in keys_added_at_default(saved_cfg, changes):
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


def _refuse_to_start_over(run_dir: Path, auto: bool) -> None:
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


def _check_resume_target(run_dir: Path, ckpt: dict, ckpt_path: Path, steps: int) -> bool:
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


def run(cfg: DictConfig) -> dict[str, float]:
    """Train one run (the body of the Hydra task); returns the last logged values."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides = [o for o in hc.overrides.task if _override_key(o) != "resume"]
    ckpt, ckpt_path, changes = None, None, {}
    if cfg.resume == "auto":
        found = latest_good_checkpoint(run_dir)
        if found is None:
            _refuse_to_start_over(run_dir, auto=True)
            log.info("resume=auto: no checkpoint in %s, starting fresh", run_dir)
        else:
            ckpt_path, ckpt = found
            cfg, overrides, changes = resume_config(ckpt, ckpt_path, overrides)
    elif cfg.resume:
        ckpt_path = resolve_checkpoint_path(cfg.resume)
        ckpt = load_checkpoint(ckpt_path)
        cfg, overrides, changes = resume_config(ckpt, ckpt_path, overrides)
    else:
        _refuse_to_start_over(run_dir, auto=False)
    if ckpt is None:
        overrides = with_recipe(overrides, hc.runtime.choices.get("recipe"))
    if ckpt is not None and ckpt_path is not None:
        done = _check_resume_target(run_dir, ckpt, ckpt_path, int(cfg.trainer.steps))
        if done:
            return {}
    dist_info = distributed.info()
    device = distributed.device_for(validate(cfg), dist_info)
    check_optimized_metric(cfg)  # before training: not only once it is over
    # imported once the config is known to be good: the trainer pulls in scipy,
    # matplotlib and TensorBoard (~1.5 s) that a config error should not wait for
    from wgangp.train.trainer import Trainer

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
            note = decay_note(cfg, changes, trainer.step)
            if note:
                log.info("%s", note)
        log.info("resumed from %s at step %d", ckpt_path, trainer.step)
    if dist_info.is_main:
        OmegaConf.save(cfg, run_dir / "config.yaml")
    log.info(
        "run directory: %s | device: %s | rank %d of %d",
        run_dir,
        device,
        dist_info.rank,
        dist_info.world_size,
    )
    if ckpt is None:
        log.info("%s", recipe_note(hc.runtime.choices))
    return trainer.fit()


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


def _report_log_file_write_errors() -> None:
    """A log file the disk refuses (full, over quota, removed): one warning line.

    Python's logging answers every record a handler cannot write with a traceback on
    stderr ("--- Logging error ---"), so on a full disk each log line of the run would
    print one. For the log files (Hydra's ``train.log``), an ``OSError`` is reported
    once instead, and that file gets no more records (the console still does); any
    other logging error (a bad format string: a bug) keeps logging's own report.
    """
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and "handleError" not in vars(handler):
            handler.handleError = _write_error_reporter(handler)  # type: ignore[method-assign]


def _write_error_reporter(handler: logging.FileHandler) -> Any:  # noqa: ANN401
    report = handler.handleError

    def handle_error(record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            report(record)
            return
        handler.setLevel(logging.CRITICAL + 1)  # no more records into an unwritable file
        with contextlib.suppress(OSError, ValueError):
            handler.close()
        print(
            f"wgangp: warning: cannot write the log file {handler.baseFilename} "
            f"({error.strerror or error}); it gets no more messages (the console does)",
            file=sys.stderr,
        )

    return handle_error


def _output_dir() -> str | None:
    try:
        return str(HydraConfig.get().runtime.output_dir)
    except Exception:  # noqa: BLE001 - not run by Hydra (tests)
        return None


def _fail(message: str, code: int) -> NoReturn:
    log.error("%s", message)
    print(f"wgangp: error: {message}", file=sys.stderr)
    sys.exit(code)


def task(cfg: DictConfig) -> float | None:
    """Hydra task: exits non-zero with one clear message on a user mistake.

    Exit codes: 0 done; 2 a user error (bad config value, data, checkpoint, or a run
    directory / disk that refuses writes); 128+N stopped by signal N after saving a
    checkpoint (130 SIGINT, 143 SIGTERM). Hydra itself exits 1 on an override it
    cannot compose (unknown key or option, wrong type).

    Returns what sweepers optimise: when ``eval.keep_best`` is set, the best value of
    that metric over the run's evaluations (the one kept as ``checkpoints/best.pt``;
    NaN when it could not be computed, which Optuna records as a failed trial; its
    direction is ``wgangp.metrics.METRIC_DIRECTION[name]``), else the critic's final
    Wasserstein estimate.
    """
    _report_log_file_write_errors()
    try:
        last = run(cfg)
    except Interrupted as e:
        log.warning("%s", e)
        sys.exit(e.exit_code)
    except UserError as e:
        _fail(str(e), e.exit_code)
    except OmegaConfBaseException as e:  # e.g. an interpolation that cannot resolve
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        key = getattr(e, "full_key", None)
        _fail(f"invalid config{f' at {key}' if key else ''}: {first}", UserError.exit_code)
    except OSError as e:  # disk full, read-only or vanished run directory, ...
        run_dir = _output_dir()
        where = f" {e.filename}" if e.filename else f" in {run_dir}" if run_dir else ""
        _fail(
            f"cannot write{where}: {e.strerror or e}; free disk space or fix the permissions "
            "of the run directory (checkpoints already written are intact)",
            UserError.exit_code,
        )
    return optimized_value(cfg, last)


def optimized_value(cfg: DictConfig, last: dict[str, float]) -> float | None:
    """The number :func:`task` returns for the values ``Trainer.fit`` returned.

    ``eval.keep_best`` set: the best value of that metric (NaN if never computed);
    else the last logged value of ``optimized_metric`` (default ``wasserstein``).
    """
    if not last:  # nothing trained: the run was already complete
        return None
    best = cfg.get("eval", {}).get("keep_best")
    if best:
        value = last.get(f"best/{best}", last.get(f"metrics/{best}"))
        if value is None:
            log.warning("eval.keep_best=%s was not computed; returning NaN", best)
            return float("nan")
        return float(value)
    key = cfg.get("optimized_metric") or "wasserstein"
    if key not in last and key == "wasserstein" and not _logs_wasserstein(cfg):
        return None  # said when the run started (check_optimized_metric)
    if key not in last:
        log.error("optimized_metric=%s was not logged; logged: %s", key, ", ".join(sorted(last)))
        return None
    return float(last[key])


#: the training scalars that ``Trainer.fit`` logs every ``trainer.log_every`` steps and
#: returns, by ``loss.name``; ``eval.every`` > 0 adds ``metrics/<name>`` for each metric
_PERF = ("perf/steps_per_sec", "perf/global_batch_size", "perf/train_s")
_LOSSES = ("loss/critic", "loss/generator")
LOGGED_SCALARS: dict[str, tuple[str, ...]] = {
    "wgan-gp": ("wasserstein", "gp", "grad_norm", *_LOSSES, *_PERF),
    "wgan": ("wasserstein", *_LOSSES, *_PERF),
    # no Wasserstein estimate: the critic's mean output on real and fake instead
    "dcgan": ("d_real", "d_fake", *_LOSSES, *_PERF),
    "lsgan": ("d_real", "d_fake", *_LOSSES, *_PERF),
}
#: metrics logged with a companion value (``metrics/kid`` and ``metrics/kid_std``, ...)
METRIC_COMPANIONS = {
    "wasserstein": "wasserstein_real",
    "critic_loss": "critic_loss_train",
    "kid": "kid_std",
    "is": "is_std",
    **{f"js{n}": f"js{n}_real" for n in range(1, 5)},
}


def _logged_scalars(cfg: DictConfig) -> tuple[str, ...]:
    """:data:`LOGGED_SCALARS` of the run's loss."""
    return LOGGED_SCALARS.get(cfg.loss.name, LOGGED_SCALARS["wgan-gp"])


def _logs_wasserstein(cfg: DictConfig) -> bool:
    """Whether the run's loss has a Wasserstein estimate to log (not the baselines')."""
    return "wasserstein" in _logged_scalars(cfg)


def loggable_names(cfg: DictConfig) -> list[str]:
    """The names ``optimized_metric`` may take for ``cfg``, known before training.

    ``eval.metrics=null`` means defaults that depend on the data (points with or without
    modes, images, text): every default of either kind is accepted then.
    """
    from types import SimpleNamespace

    from wgangp.metrics.evaluator import default_metrics

    names = list(_logged_scalars(cfg))
    e = cfg.get("eval")
    if e is None or not e.get("every"):
        return names
    metrics = e.get("metrics")
    if metrics is None:
        image = SimpleNamespace(sample_shape=(3, 1, 1), modes=None, mode_std=None)
        points = SimpleNamespace(sample_shape=(2,), modes=True, mode_std=1.0)
        text = SimpleNamespace(sample_shape=(2, 1), modes=None, mode_std=None)
        metrics = dict.fromkeys(
            [*default_metrics(points), *default_metrics(image), *default_metrics(text)]
        )
    for m in metrics:
        names.append(f"metrics/{m}")
        if m in METRIC_COMPANIONS:
            names.append(f"metrics/{METRIC_COMPANIONS[m]}")
    return names


def check_optimized_metric(cfg: DictConfig) -> None:
    """Before training: ``optimized_metric`` names a value the run will log (see
    :func:`optimized_value`; ignored, so not checked, when ``eval.keep_best`` is set)."""
    if cfg.get("eval", {}).get("keep_best"):
        return
    key = cfg.get("optimized_metric") or "wasserstein"
    names = loggable_names(cfg)
    if key in names:
        return
    if key == "wasserstein" and not _logs_wasserstein(cfg):
        # the default, for an objective without the estimate: a plain run or a grid
        # sweep needs no value, so say what is missing instead of refusing to train
        log.info(
            "loss.name=%s logs no Wasserstein estimate: this run returns no "
            "optimized_metric; to rank runs set one it logs (%s)",
            cfg.loss.name,
            ", ".join(names),
        )
        return
    from wgangp.metrics import METRIC_NAMES

    metric = key.removeprefix("metrics/")
    if f"metrics/{key}" in names:
        fix = f"evaluation metrics are logged as metrics/<name>: use optimized_metric=metrics/{key}"
    elif metric in METRIC_NAMES and not cfg.eval.every:
        fix = f"evaluation is off: set eval.every=N (e.g. 500) to log metrics/{metric}"
    elif metric in METRIC_NAMES:
        fix = f"add {metric} to eval.metrics to log metrics/{metric}"
    else:
        fix = "name a value the run logs, e.g. optimized_metric=wasserstein"
    raise ConfigError("optimized_metric", key, " | ".join(names), fix)


#: overrides every rank > 0 adds: no .hydra/ copy, no log file, warnings to the console
RANK_OVERRIDES = (
    "hydra.output_subdir=null",
    "hydra/job_logging=stdout",
    "hydra.job_logging.root.level=WARNING",
)


def _torchrun_argv(argv: list[str], info: distributed.DistInfo) -> list[str]:
    """The command line of one torchrun rank: rank 0's unchanged, others quiet."""
    if any(a in ("-m", "--multirun") for a in argv[1:]):
        raise UserError(
            "-m/--multirun under torchrun is not supported: sweep with a Hydra launcher "
            "whose jobs each call torchrun, or run the sweep without torchrun"
        )
    return argv if info.is_main else [*argv, *RANK_OVERRIDES]


class RunDirCheck(Callback):
    """Hydra callback: refuse an unusable run/sweep directory with one clear line.

    Hydra creates the run directory and its log file before the task starts, so a
    failure there would otherwise surface as a traceback.
    """

    def _check(self, config: DictConfig, key: str) -> None:
        try:
            directory = OmegaConf.select(config, key)
        except OmegaConfBaseException:
            return  # Hydra reports its own interpolation errors
        reason = unwritable_reason(str(directory))
        if reason:
            print(
                f"wgangp: error: cannot create the run directory {directory}: {reason}; "
                f"choose another with {key}=PATH",
                file=sys.stderr,
            )
            sys.exit(UserError.exit_code)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config, "hydra.sweep.dir")


def _required_keys() -> set[str]:
    """The schema's keys, leaves (``trainer.seed``) and sections (``trainer``)."""
    return set(schema_keys()) | {f.name for f in dataclasses.fields(Config)}


#: arguments that can give config groups options beyond ``configs/`` (Hydra checks those)
SEARCHPATH_ARGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn")


def config_groups(conf_dir: Path) -> set[str]:
    """The config groups under ``conf_dir`` (its sub-folders, ``dataset``, ``critic``, …)."""
    return {d.name for d in conf_dir.iterdir() if d.is_dir() and not d.name.startswith("_")}


def _group_options(conf_dir: Path, group: str) -> list[str]:
    """The options of config group ``group``: its YAML files, and any in the ConfigStore."""
    import contextlib

    from hydra.core.config_store import ConfigStore

    names = {f.stem for f in (conf_dir / group).glob("*.yaml")}
    with contextlib.suppress(OSError):  # OSError: no such group in the ConfigStore
        names |= {n.removesuffix(".yaml") for n in ConfigStore.instance().list(group)}
    return sorted(names)


def _group_value_problem(
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


def _recipe_problem(parsed: list[tuple[str, Any]]) -> str | None:
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
    toy = [r for r in _names(keys["recipe"][1]) if r != "paper"] if "recipe" in keys else []
    if toy and "dataset" in keys:
        other = [d for d in _names(keys["dataset"][1]) if d not in TOY_DATASETS]
        if other:
            return (
                f"recipe={toy[0]} with dataset={other[0]}: the toy recipes are for 2-D point "
                f"sets ({', '.join(TOY_DATASETS)}: MLPs, a 2-d latent); {other[0]} runs on "
                "recipe=paper (the default for it) or an experiment"
            )
    return None


def _names(override: Any) -> list[str]:  # noqa: ANN401
    """The option names an override's value holds (a sweep's elements, or the one)."""
    from hydra.core.override_parser.types import ChoiceSweep

    value = override.value()
    elements = value.list if isinstance(value, ChoiceSweep) else [value]
    return [e for e in elements if isinstance(e, str)]


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
    from hydra.core.override_parser.overrides_parser import OverridesParser

    groups = config_groups(conf_dir)
    # the recipe group has no schema key, yet every run needs one (~recipe is refused)
    required = _required_keys() | {"recipe"}
    parser = OverridesParser.create()
    parsed = []
    for arg in args:
        if arg.startswith("-") or ("=" not in arg and not arg.startswith("~")):
            continue
        try:
            parsed.append((arg, parser.parse_overrides([arg])[0]))
        except Exception:  # Hydra reports a malformed override itself
            continue
    other_options = any(
        a == flag or a.startswith(f"{flag}=") for a in args for flag in SEARCHPATH_ARGS
    ) or any(o.key_or_group == "hydra.searchpath" for _, o in parsed)
    problem = _recipe_problem(parsed)
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
            problem = _group_value_problem(
                key,
                arg.split("=", 1)[1],
                o.value(),
                _group_options(conf_dir, key),
                complete=key in groups and key != "hydra" and not other_options,
                optional=key not in required,
            )
            if problem:
                return problem
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


def main() -> None:
    args, conf_dir = sys.argv[1:], config_dir()
    bad = (
        check_group_overrides(args, conf_dir)
        or check_value_overrides(args, config_groups(conf_dir))
        or check_sweep_jobs(args)
    )
    if bad:
        print(f"wgangp: error: {bad}", file=sys.stderr)
        sys.exit(UserError.exit_code)
    register_configs()
    register_resolvers()
    info = distributed.init_from_env()  # torchrun: join the process group first
    try:
        if info.enabled:
            try:
                sys.argv = _torchrun_argv(sys.argv, info)
            except UserError as e:
                print(f"wgangp: error: {e}", file=sys.stderr)
                sys.exit(e.exit_code)
            distributed.start_time()  # one shared run directory name
        hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")(task)()
        # torchrun: every rank done (rank 0 writes the last checkpoint and log after the
        # others are free) before any tears the group down; a gloo rank whose peer
        # closed its connections first could abort at exit ("terminate called without
        # an active exception", SIGABRT), failing a finished run. Not on the error
        # paths (sys.exit, exceptions): a rank that left early would hang the others.
        distributed.barrier()
    except KeyboardInterrupt:  # Ctrl-C before training began (signals are handled there)
        print("wgangp: interrupted before training started; no checkpoint written", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    finally:
        distributed.cleanup()


# launchers that pickle the task (joblib, submitit) run it in fresh processes, which
# resolve hydra.* keys with these resolvers before calling the task
register_resolvers()

if __name__ == "__main__":
    # run the importable module, not this __main__ copy: pickled tasks then refer to
    # wgangp.cli.train.task, which a launcher's worker process can import
    from wgangp.cli.train import main as _main

    _main()
