"""Image metrics by name: ``fid``, ``kid``, ``is``, ``precision``, ``recall``.

:func:`image_metrics` computes the requested ones from features already extracted
(:mod:`wgangp.metrics.features`) against cached :class:`RealStats` or real features
(:mod:`wgangp.metrics.real_stats`); the maths is in :mod:`wgangp.metrics.image_scores`.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import Tensor

from wgangp.metrics.features import Features
from wgangp.metrics.image_scores import (
    feature_statistics,
    frechet_distance,
    inception_score_from_logits,
    kid_from_features,
    precision_recall_from_features,
)
from wgangp.metrics.real_stats import RealStats

IMAGE_METRICS = ("fid", "kid", "is", "precision", "recall")


def image_metrics(
    names: Iterable[str],
    fake: Features,
    real: RealStats | Features | None = None,
    *,
    kid_subset_size: int = 1000,
    kid_subsets: int = 100,
    is_splits: int = 10,
    pr_k: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """The requested image metrics from already extracted features.

    ``fake``: features of generated images; ``real``: :class:`RealStats` or real
    features (needed by all but ``is``). Keys: the names requested, plus ``kid_std``
    with ``kid`` and ``is_std`` with ``is``.
    """
    names = list(dict.fromkeys(names))
    unknown = [n for n in names if n not in IMAGE_METRICS]
    if unknown:
        raise ValueError(f"not image metrics: {unknown} (allowed: {', '.join(IMAGE_METRICS)})")
    out: dict[str, float] = {}
    needs_real = [n for n in names if n != "is"]
    if needs_real and real is None:
        raise ValueError(f"{', '.join(needs_real)} need real statistics or features")
    real_pool: Tensor | None = None
    if isinstance(real, RealStats):
        real_pool = real.features
    elif real is not None:
        real_pool = real["pool"]
    if "fid" in names:
        if isinstance(real, RealStats):
            mu_r, sigma_r = real.mu, real.sigma
        else:
            mu_r, sigma_r = feature_statistics(real_pool)
        mu, sigma = feature_statistics(fake["pool"])
        out["fid"] = frechet_distance(mu, sigma, mu_r, sigma_r)
    if "kid" in names:
        out["kid"], out["kid_std"] = kid_from_features(
            fake["pool"], real_pool, kid_subset_size, kid_subsets, seed
        )
    if "is" in names:
        if "logits" not in fake:
            raise ValueError("is needs logits from the feature extractor")
        out["is"], out["is_std"] = inception_score_from_logits(fake["logits"], is_splits)
    if "precision" in names or "recall" in names:
        p, r = precision_recall_from_features(fake["pool"], real_pool, pr_k)
        if "precision" in names:
            out["precision"] = p
        if "recall" in names:
            out["recall"] = r
    return out


__all__ = ["IMAGE_METRICS", "image_metrics"]
