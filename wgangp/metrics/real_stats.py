"""Real-data statistics for the image metrics, cached on disk.

:class:`RealStats` holds the real features and their mean and covariance; one file per
:class:`StatsKey` (data set, resolution, split, sample count, extractor) under
``~/.cache/wgangp/stats``, see :func:`load_or_compute_real_stats`.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wgangp.metrics.features import FeatureExtractor, extract_features
from wgangp.metrics.image_scores import feature_statistics

log = logging.getLogger(__name__)

DEFAULT_STATS_DIR = Path("~/.cache/wgangp/stats")
STATS_FORMAT = 1


@dataclass(frozen=True)
class StatsKey:
    """What identifies cached real statistics: one file per distinct key."""

    dataset: str
    resolution: int
    split: str
    num_samples: int
    extractor: str

    def filename(self) -> str:
        raw = (
            f"{self.dataset}-{self.resolution}px-{self.split}-n{self.num_samples}-{self.extractor}"
        )
        return re.sub(r"[^A-Za-z0-9._-]+", "_", raw) + ".pt"


@dataclass
class RealStats:
    """Real-data statistics: Inception ``mu`` (D,), ``sigma`` (D, D) in float64 for FID
    and the ``features`` (N, D) float32 themselves for KID and precision/recall."""

    mu: Tensor
    sigma: Tensor
    features: Tensor

    @classmethod
    def from_features(cls, features: Tensor) -> RealStats:
        mu, sigma = feature_statistics(features)
        return cls(mu=mu, sigma=sigma, features=features.detach().float().cpu())


def real_stats_path(key: StatsKey, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir / key.filename()``, ``cache_dir`` defaulting to ``~/.cache/wgangp/stats``."""
    d = Path(cache_dir) if cache_dir is not None else DEFAULT_STATS_DIR
    return d.expanduser() / key.filename()


def save_real_stats(stats: RealStats, key: StatsKey, path: Path) -> None:
    """Write ``stats`` to ``path`` atomically (temporary file in the same dir, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": STATS_FORMAT,
        "key": asdict(key),
        "mu": stats.mu,
        "sigma": stats.sigma,
        "features": stats.features,
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_real_stats(path: Path, key: StatsKey | None = None) -> RealStats | None:
    """Stats from ``path`` (``weights_only`` load), or None if absent, unreadable or
    written for another key."""
    if not path.is_file():
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        if d.get("format") != STATS_FORMAT or (key is not None and d.get("key") != asdict(key)):
            log.warning("real statistics %s do not match %s; recomputing", path, key)
            return None
        return RealStats(mu=d["mu"], sigma=d["sigma"], features=d["features"])
    except Exception as e:  # truncated or foreign file: recompute rather than fail
        log.warning("cannot read real statistics %s (%s); recomputing", path, e)
        return None


def load_or_compute_real_stats(
    key: StatsKey,
    extractor: FeatureExtractor | Callable[[Tensor], Any],
    images: Tensor | Iterable[Tensor] | Callable[[], Tensor | Iterable[Tensor]],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 100,
) -> RealStats:
    """Real statistics for ``key``, from the cache or computed once and cached.

    ``images`` may be a tensor, an iterable of batches, or a zero-argument callable
    returning either; a callable is only called on a cache miss, so the real data need
    not be loaded when the statistics are cached. At most ``key.num_samples`` images
    are used. Files are ``torch.save``-d dicts of plain tensors, written atomically.
    """
    path = real_stats_path(key, cache_dir)
    cached = load_real_stats(path, key)
    if cached is not None:
        return cached
    src = images() if callable(images) and not isinstance(images, Tensor) else images
    feats = extract_features(extractor, src, batch_size=batch_size, limit=key.num_samples)
    if feats["pool"].shape[0] < key.num_samples:
        log.warning(
            "real statistics %s: only %d of the %d requested images were available",
            key.filename(),
            feats["pool"].shape[0],
            key.num_samples,
        )
    stats = RealStats.from_features(feats["pool"])
    save_real_stats(stats, key, path)
    return stats


__all__ = [
    "DEFAULT_STATS_DIR",
    "RealStats",
    "StatsKey",
    "load_or_compute_real_stats",
    "load_real_stats",
    "real_stats_path",
    "save_real_stats",
]
