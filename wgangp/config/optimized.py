"""``optimized_metric``: the value a run returns to Hydra (what a sweeper optimises),
checked against what the run will log before it starts."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from wgangp.errors import ConfigError

log = logging.getLogger("wgangp")


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
    if key not in last and key == "wasserstein" and not logs_wasserstein(cfg):
        return None  # said when the run started (check_optimized_metric)
    if key not in last:
        log.error("optimized_metric=%s was not logged; logged: %s", key, ", ".join(sorted(last)))
        return None
    return float(last[key])


#: the training scalars that ``Trainer.fit`` logs every ``trainer.log_every`` steps and
#: returns, by ``loss.name``; ``eval.every`` > 0 adds ``metrics/<name>`` for each metric
PERF_SCALARS = ("perf/steps_per_sec", "perf/global_batch_size", "perf/train_s")
LOSS_SCALARS = ("loss/critic", "loss/generator")
LOGGED_SCALARS: dict[str, tuple[str, ...]] = {
    "wgan-gp": ("wasserstein", "gp", "grad_norm", *LOSS_SCALARS, *PERF_SCALARS),
    "wgan": ("wasserstein", *LOSS_SCALARS, *PERF_SCALARS),
    # no Wasserstein estimate: the critic's mean output on real and fake instead
    "dcgan": ("d_real", "d_fake", *LOSS_SCALARS, *PERF_SCALARS),
    "lsgan": ("d_real", "d_fake", *LOSS_SCALARS, *PERF_SCALARS),
}
#: metrics logged with a companion value (``metrics/kid`` and ``metrics/kid_std``, ...)
METRIC_COMPANIONS = {
    "wasserstein": "wasserstein_real",
    "critic_loss": "critic_loss_train",
    "kid": "kid_std",
    "is": "is_std",
    **{f"js{n}": f"js{n}_real" for n in range(1, 5)},
    "stacked_mnist_modes": "stacked_mnist_modes_real",
    "stacked_mnist_kl": "stacked_mnist_kl_real",
}


def logged_scalars(cfg: DictConfig) -> tuple[str, ...]:
    """:data:`LOGGED_SCALARS` of the run's loss."""
    return LOGGED_SCALARS.get(cfg.loss.name, LOGGED_SCALARS["wgan-gp"])


def logs_wasserstein(cfg: DictConfig) -> bool:
    """Whether the run's loss has a Wasserstein estimate to log (not the baselines')."""
    return "wasserstein" in logged_scalars(cfg)


def loggable_names(cfg: DictConfig) -> list[str]:
    """The names ``optimized_metric`` may take for ``cfg``, known before training.

    ``eval.metrics=null`` means defaults that depend on the data (points with or without
    modes, images, text): every default of either kind is accepted then.
    """
    from types import SimpleNamespace

    from wgangp.metrics.evaluator import default_metrics

    names = list(logged_scalars(cfg))
    e = cfg.get("eval")
    if e is None or not e.get("every"):
        return names
    metrics = e.get("metrics")
    if metrics is None:
        image = SimpleNamespace(sample_shape=(3, 1, 1), modes=None, mode_std=None)
        points = SimpleNamespace(sample_shape=(2,), modes=True, mode_std=1.0)
        text = SimpleNamespace(sample_shape=(2, 1), modes=None, mode_std=None)
        stacked = SimpleNamespace(sample_shape=(3, 1, 1), mnist_digits=True)
        metrics = dict.fromkeys(
            [
                *default_metrics(points),
                *default_metrics(image),
                *default_metrics(text),
                *default_metrics(stacked),
            ]
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
    if key == "wasserstein" and not logs_wasserstein(cfg):
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
