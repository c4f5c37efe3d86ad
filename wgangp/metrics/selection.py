"""Which metrics an evaluation computes: ``eval.metrics`` checked against the data set,
or the data set's defaults when it is null."""

from __future__ import annotations

from wgangp.data.base import DataSource
from wgangp.data.text import is_text
from wgangp.errors import ConfigError
from wgangp.metrics import (
    IMAGE_METRICS,
    MODE_METRICS,
    POINT_METRICS,
    STACKED_METRICS,
    TEXT_METRICS,
    validate_metric_names,
)


def default_metrics(data: DataSource) -> list[str]:
    """The metrics ``eval.metrics=null`` means for this data set."""
    if is_text(data.sample_shape):
        return list(TEXT_METRICS)
    if getattr(data, "mnist_digits", None) is not None:
        return list(STACKED_METRICS)  # no Inception weights needed
    if len(data.sample_shape) != 1:
        return ["fid", "kid", "is"]
    if data.modes is not None and data.mode_std is not None:
        return list(POINT_METRICS)
    return ["wasserstein"]


def resolve_metrics(names: list[str] | None, data: DataSource) -> list[str]:
    """Validated metric names for ``data``: ConfigError for ones that do not fit it."""
    if names is None:
        return default_metrics(data)
    names = validate_metric_names(list(names))
    is_points = len(data.sample_shape) == 1
    text = is_text(data.sample_shape)
    wrong = [n for n in names if (n in TEXT_METRICS) != text]
    if wrong:
        allowed = TEXT_METRICS if text else (POINT_METRICS if is_points else IMAGE_METRICS)
        kind = "text" if text else ("point" if is_points else "image")
        raise ConfigError(
            "eval.metrics", wrong, f"{kind} metrics ({', '.join(allowed)}) for {kind} data"
        )
    if text:
        return names
    stacked = [n for n in names if n in STACKED_METRICS]
    if stacked and getattr(data, "mnist_digits", None) is None:
        raise ConfigError(
            "eval.metrics",
            stacked,
            "stacked_mnist_modes and stacked_mnist_kl only for dataset=stacked_mnist",
        )
    if is_points:
        wrong = [n for n in names if n in IMAGE_METRICS]
        if wrong:
            raise ConfigError(
                "eval.metrics",
                wrong,
                "point metrics (" + ", ".join(POINT_METRICS) + ") for point data",
            )
        modal = [n for n in names if n in MODE_METRICS]
        if modal and data.modes is None:
            raise ConfigError(
                "eval.metrics",
                modal,
                "mode metrics only for data sets with known modes",
                "use gaussians8/gaussians25, or set dataset.modes and dataset.mode_std",
            )
    else:
        wrong = [n for n in names if n in POINT_METRICS]
        if wrong:
            raise ConfigError(
                "eval.metrics", wrong, "image metrics (" + ", ".join(IMAGE_METRICS) + ") for images"
            )
    return names


__all__ = ["default_metrics", "resolve_metrics"]
