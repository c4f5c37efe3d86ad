"""``wgangp-train``: the Hydra entry point.

Pre-checks the command line (:mod:`wgangp.config.precheck`,
:mod:`wgangp.config.overrides`), composes ``configs/config.yaml`` (+ the overrides) on
top of the structured schema, checks it (:mod:`wgangp.config.validate`), then hands it
to the trainer in Hydra's run directory; a user mistake is one line on stderr.
``resume=PATH`` continues a run in place: the run directory becomes PATH's, and the
config is the one the run was started with plus this command line's overrides.

Under ``torchrun`` every rank runs this same Hydra app (see :func:`main`): the ranks
agree on one run directory, and only rank 0 writes ``.hydra/``, ``train.log``,
TensorBoard files, pictures and checkpoints.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from wgangp.config.compose import config_dir, config_groups, override_key, register_resolvers
from wgangp.config.optimized import check_optimized_metric, optimized_value
from wgangp.config.overrides import check_value_overrides
from wgangp.config.precheck import check_group_overrides, check_sweep_jobs
from wgangp.config.resume import (
    check_resume_target,
    decay_note,
    recipe_note,
    refuse_to_start_over,
    resume_config,
    with_recipe,
)
from wgangp.config.schema import register_configs
from wgangp.config.validate import validate
from wgangp.errors import Interrupted, UserError
from wgangp.io.checkpoint import latest_good_checkpoint, load_checkpoint, resolve_checkpoint_path
from wgangp.io.paths import unwritable_reason
from wgangp.train import distributed

log = logging.getLogger("wgangp")


def run(cfg: DictConfig) -> dict[str, float]:
    """Train one run (the body of the Hydra task); returns the last logged values."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides = [o for o in hc.overrides.task if override_key(o) != "resume"]
    ckpt, ckpt_path, changes = None, None, {}
    if cfg.resume == "auto":
        found = latest_good_checkpoint(run_dir)
        if found is None:
            refuse_to_start_over(run_dir, auto=True)
            log.info("resume=auto: no checkpoint in %s, starting fresh", run_dir)
        else:
            ckpt_path, ckpt = found
            cfg, overrides, changes = resume_config(ckpt, ckpt_path, overrides)
    elif cfg.resume:
        ckpt_path = resolve_checkpoint_path(cfg.resume)
        ckpt = load_checkpoint(ckpt_path)
        cfg, overrides, changes = resume_config(ckpt, ckpt_path, overrides)
    else:
        refuse_to_start_over(run_dir, auto=False)
    if ckpt is None:
        overrides = with_recipe(overrides, hc.runtime.choices.get("recipe"))
    if ckpt is not None and ckpt_path is not None:
        done = check_resume_target(run_dir, ckpt, ckpt_path, int(cfg.trainer.steps))
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
    checkpoint (130 SIGINT, 143 SIGTERM, 138 SIGUSR1, 140 SIGUSR2; in a submitit job
    SIGUSR1/SIGUSR2 requeue the job, and submitit ends the process). Hydra itself exits
    1 on an override it cannot compose (unknown key or option, wrong type).

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


#: overrides every rank > 0 adds: no .hydra/ copy, no log file, warnings to the console
RANK_OVERRIDES = (
    "hydra.output_subdir=null",
    "hydra/job_logging=stdout",
    "hydra.job_logging.root.level=WARNING",
)


def torchrun_argv(argv: list[str], info: distributed.DistInfo) -> list[str]:
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
                sys.argv = torchrun_argv(sys.argv, info)
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
