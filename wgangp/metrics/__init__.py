"""Sample-quality metrics: pure functions of generated and real samples.

Points (data sets with known modes): ``modes_captured``, ``high_quality``,
``reverse_kl`` (:mod:`wgangp.metrics.points`) and ``wasserstein`` (any point data).
Images (through a :class:`FeatureExtractor`, normally :class:`InceptionExtractor`):
``fid``, ``kid``, ``is``, ``precision``, ``recall`` (:mod:`wgangp.metrics.images`; the
extractors in :mod:`wgangp.metrics.features`, the maths in
:mod:`wgangp.metrics.image_scores`, the cached real statistics in
:mod:`wgangp.metrics.real_stats`).
Text (symbol sequences): ``js1`` … ``js4`` (:mod:`wgangp.metrics.text`).
Stacked MNIST: ``stacked_mnist_modes``, ``stacked_mnist_kl`` (:mod:`wgangp.metrics.stacked_mnist`,
read with the digit classifier of :mod:`wgangp.metrics.mnist_classifier`).

:func:`compute_metrics` dispatches by name; :data:`METRIC_DIRECTION` says for each name
whether lower (``"min"``) or higher (``"max"``) is better, :func:`is_better` applies it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor

from wgangp.errors import ConfigError, MetricUnavailable
from wgangp.metrics.features import (
    INCEPTION_WEIGHTS_FILES,
    FeatureExtractor,
    Features,
    InceptionExtractor,
    extract_features,
    find_inception_weights,
    to_uint8,
)
from wgangp.metrics.image_scores import (
    feature_statistics,
    fid_from_features,
    frechet_distance,
    inception_score_from_logits,
    kid_from_features,
    precision_recall_from_features,
)
from wgangp.metrics.images import IMAGE_METRICS, image_metrics
from wgangp.metrics.points import (
    DEFAULT_EXACT_MAX_N,
    assign_modes,
    high_quality_fraction,
    mode_counts,
    modes_captured,
    points_metrics,
    reverse_kl,
    reverse_kl_from_counts,
    sliced_wasserstein,
    wasserstein_distance,
    wasserstein_exact,
    wasserstein_with_reference,
)
from wgangp.metrics.real_stats import (
    DEFAULT_STATS_DIR,
    RealStats,
    StatsKey,
    load_or_compute_real_stats,
    real_stats_path,
)
from wgangp.metrics.stacked_mnist import STACKED_METRICS
from wgangp.metrics.text import TEXT_METRICS, reference_ngrams, text_metrics

MODE_METRICS = ("modes_captured", "high_quality", "reverse_kl")
POINT_METRICS = (*MODE_METRICS, "wasserstein")
#: measured with the critic, not on samples alone (wgangp.metrics.evaluator.Evaluator.critic_losses)
CRITIC_METRICS = ("critic_loss",)
METRIC_NAMES = (*POINT_METRICS, *IMAGE_METRICS, *STACKED_METRICS, *TEXT_METRICS, *CRITIC_METRICS)

#: "max": higher is better, "min": lower is better (drives best-checkpoint selection)
METRIC_DIRECTION: dict[str, str] = {
    "modes_captured": "max",  # number of modes with a high-quality sample, 0..K
    "high_quality": "max",  # fraction of samples within 3σ of a mode, 0..1
    "reverse_kl": "min",  # KL(p_gen ‖ uniform) over modes, 0..log K (inf: no mode hit)
    "wasserstein": "min",  # W1(fake, real) ≥ 0; compare with wasserstein_real
    "fid": "min",  # Fréchet Inception distance ≥ 0
    "kid": "min",  # kernel Inception distance (unbiased MMD², ≈ 0 at best)
    "is": "max",  # Inception Score, 1..n_classes
    "precision": "max",  # fraction of fakes on the real manifold, 0..1
    "recall": "max",  # fraction of reals on the fake manifold, 0..1
    "stacked_mnist_modes": "max",  # stacked-MNIST modes with a sample, 0..1000
    "stacked_mnist_kl": "min",  # KL(mode histogram ‖ uniform), 0..log 1000 nats
    # text: JS divergence (bits) of the character n-gram distributions, 0..1
    **dict.fromkeys(TEXT_METRICS, "min"),
    # the critic's loss on held-out real data (the official "dev disc cost"): higher
    # means the critic tells held-out real from fake less well; compare critic_loss_train
    "critic_loss": "max",
}


def is_better(name: str, value: float, best: float | None) -> bool:
    """Whether ``value`` improves on ``best`` for metric ``name`` (``best`` None: yes).

    NaN is never better; ``inf`` in a "min" metric only beats NaN or nothing.
    """
    if name not in METRIC_DIRECTION:
        raise ConfigError("eval.metrics", name, "one of " + ", ".join(METRIC_NAMES))
    if math.isnan(value):
        return False
    if best is None or math.isnan(best):
        return True
    return value < best if METRIC_DIRECTION[name] == "min" else value > best


def validate_metric_names(names: Sequence[str]) -> list[str]:
    """The names, deduplicated in order; :class:`ConfigError` for an unknown one."""
    for n in names:
        if n not in METRIC_DIRECTION:
            raise ConfigError(
                "eval.metrics",
                n,
                "a list of: " + ", ".join(METRIC_NAMES),
                "e.g. eval.metrics=[fid]",
            )
    return list(dict.fromkeys(names))


def compute_metrics(
    names: Sequence[str],
    fake: Tensor,
    real: Tensor | RealStats | Features | None = None,
    *,
    modes: Tensor | None = None,
    mode_std: float | None = None,
    real_ref: Tensor | None = None,
    extractor: FeatureExtractor | None = None,
    batch_size: int = 100,
    n_std: float = 3.0,
    min_count: int = 1,
    kl_eps: float = 1e-12,
    exact_max_n: int = DEFAULT_EXACT_MAX_N,
    n_projections: int = 512,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    is_splits: int = 10,
    pr_k: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """Compute the named metrics of generated samples ``fake``.

    Point metrics take ``fake`` and ``real`` as ``(N, D)`` point tensors; the mode
    metrics need ``modes`` ``(K, D)`` and ``mode_std``. ``wasserstein`` also returns
    ``wasserstein_real``, the real-vs-real value at the same n (``real_ref``, or half
    of ``real``), see :func:`wasserstein_with_reference`.

    Image metrics take ``fake`` as images ``(N, C, H, W)`` in [-1, 1] (or uint8) and
    need ``extractor``; ``real`` is real images (features extracted here), cached
    :class:`RealStats`, or a real :data:`Features` dict; ``is`` needs no real data.
    ``kid`` also returns ``kid_std``, ``is`` also ``is_std``.

    Unknown names, or a metric that does not fit the data (mode metrics without
    modes, image metrics on points), raise :class:`ConfigError`.
    """
    names = validate_metric_names(names)
    out: dict[str, float] = {}
    point_names = [n for n in names if n in POINT_METRICS]
    image_names = [n for n in names if n in IMAGE_METRICS]
    if point_names:
        if fake.ndim != 2:
            raise ConfigError(
                "eval.metrics",
                point_names,
                "image metrics (" + ", ".join(IMAGE_METRICS) + ") for image data",
            )
        mode_names = [n for n in point_names if n in MODE_METRICS]
        if mode_names:
            if modes is None or mode_std is None:
                raise ConfigError(
                    "eval.metrics",
                    mode_names,
                    "mode metrics only for data sets with known modes",
                    "use gaussians8/gaussians25, or set dataset.modes and dataset.mode_std",
                )
            counts = mode_counts(fake, modes, mode_std, n_std)
            if "modes_captured" in names:
                if min_count < 1:
                    raise ValueError(f"min_count must be at least 1, got {min_count}")
                out["modes_captured"] = float((counts >= min_count).sum())
            if "high_quality" in names:
                out["high_quality"] = float(counts.sum()) / max(fake.shape[0], 1)
            if "reverse_kl" in names:
                out["reverse_kl"] = reverse_kl_from_counts(counts, kl_eps)
        if "wasserstein" in names:
            if not isinstance(real, Tensor) or real.ndim != 2:
                raise ValueError("wasserstein needs real points as an (N, D) tensor")
            out["wasserstein"], out["wasserstein_real"] = wasserstein_with_reference(
                fake,
                real,
                real_ref,
                exact_max_n=exact_max_n,
                n_projections=n_projections,
                seed=seed,
            )
    if image_names:
        if fake.ndim != 4:
            raise ConfigError(
                "eval.metrics",
                image_names,
                "point metrics (" + ", ".join(POINT_METRICS) + ") for point data",
            )
        if extractor is None:
            raise ValueError("image metrics need a feature extractor (e.g. InceptionExtractor)")
        fake_feats = extract_features(extractor, fake, batch_size)
        real_arg: RealStats | Features | None
        if isinstance(real, Tensor):
            real_arg = extract_features(extractor, real, batch_size)
        else:
            real_arg = real
        out.update(
            image_metrics(
                image_names,
                fake_feats,
                real_arg,
                kid_subset_size=kid_subset_size,
                kid_subsets=kid_subsets,
                is_splits=is_splits,
                pr_k=pr_k,
                seed=seed,
            )
        )
    return out


__all__ = [
    "DEFAULT_STATS_DIR",
    "IMAGE_METRICS",
    "INCEPTION_WEIGHTS_FILES",
    "METRIC_DIRECTION",
    "METRIC_NAMES",
    "CRITIC_METRICS",
    "MODE_METRICS",
    "POINT_METRICS",
    "STACKED_METRICS",
    "TEXT_METRICS",
    "FeatureExtractor",
    "Features",
    "InceptionExtractor",
    "MetricUnavailable",
    "RealStats",
    "StatsKey",
    "assign_modes",
    "compute_metrics",
    "extract_features",
    "feature_statistics",
    "fid_from_features",
    "find_inception_weights",
    "frechet_distance",
    "high_quality_fraction",
    "image_metrics",
    "inception_score_from_logits",
    "is_better",
    "kid_from_features",
    "load_or_compute_real_stats",
    "mode_counts",
    "modes_captured",
    "points_metrics",
    "precision_recall_from_features",
    "real_stats_path",
    "reference_ngrams",
    "reverse_kl",
    "sliced_wasserstein",
    "text_metrics",
    "to_uint8",
    "validate_metric_names",
    "wasserstein_distance",
    "wasserstein_exact",
    "wasserstein_with_reference",
]
