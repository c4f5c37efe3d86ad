"""Image metrics from features: FID, KID, Inception Score, improved precision/recall.

The maths works on features produced by any :class:`FeatureExtractor`; the standard one
is :class:`InceptionExtractor` (torch-fidelity's bit-exact port of the TF Inception v3
of 2015-12-05 used by the original FID/IS/KID code). Every reduction is in float64.

Directions: FID, KID lower is better; IS, precision, recall higher is better.

Real-data statistics are cached on disk per (data set, resolution, split, sample count,
extractor), see :func:`load_or_compute_real_stats`.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import scipy.linalg
import scipy.special
import torch
from scipy.spatial.distance import cdist
from torch import Tensor

from wgangp.errors import MetricUnavailable

log = logging.getLogger(__name__)

#: file names of the TF Inception weights converted to PyTorch: torch-fidelity's
#: download name first, then pytorch-fid's (same TF graph; its torchvision-style
#: parameter names load strictly into torch-fidelity's network)
INCEPTION_WEIGHTS_FILES = (
    "weights-inception-2015-12-05-6726825d.pth",
    "pt_inception-2015-12-05-6726825d.pth",
)
DEFAULT_STATS_DIR = Path("~/.cache/wgangp/stats")
STATS_FORMAT = 1

Features = dict[str, Tensor]
"""Extracted features: ``"pool"`` ``(N, D)`` (2048 for Inception), ``"logits"`` ``(N, C)``."""


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps images to features for the image metrics.

    Called with a batch ``(N, C, H, W)`` of either uint8 images in [0, 255] or float
    images in [-1, 1] (the generator's range), C = 1 or 3; returns a mapping with
    ``"pool"`` ``(N, D)`` features (FID, KID, precision/recall) and ``"logits"``
    ``(N, n_classes)`` class logits (Inception Score), or the tuple ``(pool, logits)``.
    ``name`` identifies the network and its weights; it is part of the real-statistics
    cache key, so two extractors with the same name must produce the same features.
    """

    name: str

    def __call__(self, images: Tensor) -> Mapping[str, Tensor] | tuple[Tensor, Tensor]: ...


def quantize(images: Tensor) -> Tensor:
    """Float images in [-1, 1] (clamped) as uint8 by ``floor((x + 1)/2 · 255 + 0.5)``,
    the rounding of ``torchvision.utils.save_image``: the bytes a PNG of them holds.
    uint8 input passes through."""
    if images.dtype == torch.uint8:
        return images
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5 + 0.5).floor().to(torch.uint8)


def to_uint8(images: Tensor) -> Tensor:
    """Images as uint8 ``(N, 3, H, W)`` in [0, 255], the input torch-fidelity expects.

    Float input is read as [-1, 1] and rounded by :func:`quantize`, so features match
    those of the same images saved as PNG. One channel is repeated to three.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images (N, C, H, W), got shape {tuple(images.shape)}")
    x = quantize(images)
    c = x.shape[1]
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    elif c != 3:
        raise ValueError(f"expected 1 or 3 channels, got {c}")
    return x.contiguous()


def _as_features(out: Mapping[str, Tensor] | Sequence[Tensor]) -> Features:
    if isinstance(out, Mapping):
        pool, logits = out.get("pool"), out.get("logits")
    else:
        pool, logits = out[0], (out[1] if len(out) > 1 else None)
    if pool is None:
        raise ValueError("feature extractor returned no 'pool' features")
    feats = {"pool": pool.detach().float().cpu().flatten(1)}
    if logits is not None:
        feats["logits"] = logits.detach().float().cpu().flatten(1)
    return feats


@torch.no_grad()
def extract_features(
    extractor: FeatureExtractor | Callable[[Tensor], Any],
    images: Tensor | Iterable[Tensor],
    batch_size: int = 100,
    limit: int | None = None,
) -> Features:
    """Run ``extractor`` over ``images`` (one tensor, or an iterable of batches).

    A single tensor is cut into batches of ``batch_size``; iterables are consumed until
    ``limit`` samples are gathered (all of them when ``limit`` is None). Returns float32
    CPU features, ``{"pool": (N, D), "logits": (N, C)}`` (``logits`` when provided).
    """
    batches: Iterable[Tensor] = images.split(batch_size) if isinstance(images, Tensor) else images
    parts: dict[str, list[Tensor]] = {}
    n = 0
    for batch in batches:
        if limit is not None and n >= limit:
            break
        if limit is not None:
            batch = batch[: limit - n]
        feats = _as_features(extractor(batch))
        for k, v in feats.items():
            parts.setdefault(k, []).append(v)
        n += batch.shape[0]
    if n == 0:
        raise ValueError("no images to extract features from")
    return {k: torch.cat(v) for k, v in parts.items()}


# --------------------------------------------------------------------------- Inception


def inception_cache_dir() -> Path:
    """Where torch hub and torch-fidelity keep weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_inception_weights(
    weights_path: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path | None:
    """The weights file to use, or None when there is none locally.

    An explicit ``weights_path`` must exist (else :class:`MetricUnavailable`); without
    it, ``cache_dir`` (default :func:`inception_cache_dir`) is searched for the names in
    :data:`INCEPTION_WEIGHTS_FILES`. Never touches the network.
    """
    if weights_path is not None:
        p = Path(weights_path).expanduser()
        if not p.is_file():
            raise MetricUnavailable(
                f"eval.inception_weights={str(weights_path)!r}: no such file; give the path of "
                f"{INCEPTION_WEIGHTS_FILES[0]} (torch-fidelity's Inception v3 weights)"
            )
        return p
    d = Path(cache_dir).expanduser() if cache_dir is not None else inception_cache_dir()
    for name in INCEPTION_WEIGHTS_FILES:
        if (d / name).is_file():
            return d / name
    return None


class InceptionExtractor:
    """torch-fidelity's ``FeatureExtractorInceptionV3`` as a :class:`FeatureExtractor`.

    Returns the 2048-d pool features (``"pool"``) and the 1008 logits without the fc
    bias (``"logits"``, torch-fidelity's ``logits_unbiased``), which is what the
    original Inception Score code feeds to the softmax. Images are resized to 299×299
    inside the network with TF1-compatible bilinear interpolation.

    Weights: ``weights_path`` if given, else the torch hub cache (``cache_dir``, default
    ``$TORCH_HOME/hub/checkpoints``). When they are absent, :class:`MetricUnavailable`
    is raised at once unless ``allow_download=True``, in which case they are fetched
    into the cache dir (a network failure also gives :class:`MetricUnavailable`).
    """

    name = "inception-v3-tf-2015-12-05"

    def __init__(
        self,
        weights_path: str | os.PathLike[str] | None = None,
        *,
        device: str | torch.device = "cpu",
        cache_dir: str | os.PathLike[str] | None = None,
        allow_download: bool = False,
    ) -> None:
        path = find_inception_weights(weights_path, cache_dir)
        target_dir = (
            Path(cache_dir).expanduser() if cache_dir is not None else inception_cache_dir()
        )
        if path is None:
            if not allow_download:
                raise MetricUnavailable(
                    f"Inception weights for FID/KID/IS/precision/recall not found in {target_dir}; "
                    f"pass eval.inception_weights=PATH to {INCEPTION_WEIGHTS_FILES[0]}, or run "
                    "once with network access to download it there"
                )
            path = self._download(target_dir)
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as e:
            raise MetricUnavailable(
                f"image metrics need torch-fidelity ({e}); install it with "
                "`pip install 'wgangp[metrics]'`"
            ) from e
        try:
            model = FeatureExtractorInceptionV3(
                "inception-v3-compat",
                ["2048", "logits_unbiased"],
                feature_extractor_weights_path=str(path),
            )
        except Exception as e:  # corrupt or foreign file: say which, no traceback
            raise MetricUnavailable(
                f"cannot load Inception weights from {path} ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else ''}); pass eval.inception_weights=PATH "
                f"to a valid {INCEPTION_WEIGHTS_FILES[0]}"
            ) from e
        self.weights_path = path
        self.device = torch.device(device)
        self.model = model.to(self.device)

    @staticmethod
    def _download(target_dir: Path) -> Path:
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        target_dir.mkdir(parents=True, exist_ok=True)
        dst = target_dir / INCEPTION_WEIGHTS_FILES[0]
        try:
            torch.hub.download_url_to_file(URL_INCEPTION_V3, str(dst), progress=False)
        except Exception as e:
            raise MetricUnavailable(
                f"could not download the Inception weights from {URL_INCEPTION_V3} ({e}); "
                f"pass eval.inception_weights=PATH to {INCEPTION_WEIGHTS_FILES[0]}"
            ) from e
        return dst

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Features:
        pool, logits = self.model(to_uint8(images).to(self.device))
        return {"pool": pool, "logits": logits}


# --------------------------------------------------------------------------- the maths


def _f64(x: Tensor | np.ndarray) -> Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x.detach().to(device="cpu", dtype=torch.float64)


def _check_2d(x: Tensor, name: str, min_n: int = 1) -> Tensor:
    x = _f64(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, D) features, got shape {tuple(x.shape)}")
    if x.shape[0] < min_n:
        raise ValueError(f"{name}: need at least {min_n} samples, got {x.shape[0]}")
    return x


def feature_statistics(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``μ`` (D,) and unbiased covariance ``Σ`` (D, D) of (N, D) features, float64."""
    f = _check_2d(features, "features", min_n=2).numpy()
    mu = f.mean(axis=0)
    c = f - mu
    sigma = c.T @ c / (f.shape[0] - 1)
    return torch.from_numpy(mu), torch.from_numpy(sigma)


def frechet_distance(
    mu1: Tensor | np.ndarray,
    sigma1: Tensor | np.ndarray,
    mu2: Tensor | np.ndarray,
    sigma2: Tensor | np.ndarray,
    eps: float = 1e-6,
) -> float:
    """Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2); FID on Inception features.

    ``d² = ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2})`` with the matrix square root of
    :func:`scipy.linalg.sqrtm`, as in the TTUR / pytorch-fid reference code: if the
    product is singular and the square root not finite, ``eps·I`` is added to both
    covariances; a complex result whose diagonal has an imaginary part above 1e-3
    is an error, smaller imaginary parts (round-off) are dropped. Lower is better.
    """
    m1, m2 = _f64(mu1).numpy(), _f64(mu2).numpy()
    s1, s2 = np.atleast_2d(_f64(sigma1).numpy()), np.atleast_2d(_f64(sigma2).numpy())
    if m1.shape != m2.shape or s1.shape != s2.shape or s1.shape != (m1.size, m1.size):
        raise ValueError(
            f"shapes do not match: mu {m1.shape} / {m2.shape}, sigma {s1.shape} / {s2.shape}"
        )
    diff = m1 - m2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # singular-matrix notes; checked below
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(s1.shape[0]) * eps
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if not np.isfinite(covmean).all():
        raise ValueError("the matrix square root of Σ1·Σ2 is not finite")
    if np.iscomplexobj(covmean):
        max_imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if max_imag > 1e-3:
            raise ValueError(f"Σ1·Σ2 has a square root with imaginary component {max_imag:.3g}")
        covmean = covmean.real
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid_from_features(fake: Tensor, real: Tensor) -> float:
    """FID between two feature sets, ``frechet_distance(*stats(fake), *stats(real))``."""
    return frechet_distance(*feature_statistics(fake), *feature_statistics(real))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with ``k(a, b) = (a·b/d + 1)³`` (Bińkowski et al. 2018).

    ``(Σ_{i≠j} k(x_i,x_j) + Σ_{i≠j} k(y_i,y_j)) / (m(m−1)) − 2 Σ_{i,j} k(x_i,y_j) / m²``,
    the estimator of the reference KID code (and torch-fidelity's ``unbiased``).
    """
    m, d = x.shape
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    sxx = kxx.sum() - np.trace(kxx)
    syy = kyy.sum() - np.trace(kyy)
    return float((sxx + syy) / (m * (m - 1)) - 2 * kxy.sum() / (m * m))


def kid_from_features(
    fake: Tensor,
    real: Tensor,
    subset_size: int = 1000,
    n_subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and std over ``n_subsets`` random subsets of the unbiased MMD².

    Each subset pair is ``m = min(subset_size, N_fake, N_real)`` samples of each set
    drawn without replacement by ``numpy.random.RandomState(seed)`` (fake first, then
    real, as torch-fidelity does, so equal seeds give torch-fidelity's numbers).
    The std is the population std (ddof 0) over subsets. Lower is better; values near
    0 (possibly slightly negative: the estimator is unbiased) mean equal distributions.
    """
    x, y = _check_2d(fake, "fake", 2).numpy(), _check_2d(real, "real", 2).numpy()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError(f"KID needs subsets of at least 2 samples, got {m}")
    rng = np.random.RandomState(seed)
    mmds = np.empty(n_subsets)
    for i in range(n_subsets):
        ix = rng.choice(x.shape[0], m, replace=False)
        iy = rng.choice(y.shape[0], m, replace=False)
        mmds[i] = _mmd2_unbiased(x[ix], y[iy])
    return float(mmds.mean()), float(mmds.std())


def inception_score_from_logits(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score ``exp(E_x KL(p(y|x) ‖ p(y)))``, mean and std over ``splits``.

    ``p(y|x) = softmax(logits)``; ``p(y)`` is the mean of ``p(y|x)`` over each split.
    The N samples are cut in order (no shuffle) into ``min(splits, N)`` contiguous
    splits ``[i·N/s, (i+1)·N/s)``; the std is over splits with ddof 0, as in the
    original code. Ranges from 1 (uninformative or collapsed) to the number of
    classes. Higher is better.
    """
    lg = _check_2d(logits, "logits").numpy()
    n = lg.shape[0]
    s = max(1, min(splits, n))
    logp = scipy.special.log_softmax(lg, axis=1)
    p = np.exp(logp)
    scores = []
    for i in range(s):
        lo, hi = i * n // s, (i + 1) * n // s
        pc, lpc = p[lo:hi], logp[lo:hi]
        log_py = np.log(pc.mean(axis=0, keepdims=True))
        kl = (pc * (lpc - log_py)).sum(axis=1).mean()
        scores.append(float(np.exp(kl)))
    arr = np.asarray(scores)
    return float(arr.mean()), float(arr.std())


def _kth_nn_radius(x: np.ndarray, k: int, chunk: int) -> np.ndarray:
    """Distance from each row of x to its k-th nearest other row (self excluded)."""
    out = []
    for lo in range(0, len(x), chunk):
        d = cdist(x[lo : lo + chunk], x)
        out.append(np.partition(d, k, axis=1)[:, k])  # index 0 is the point itself
    return np.concatenate(out)


def _inside_any_ball(
    query: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int
) -> np.ndarray:
    """For each query row: is it within ``radii[j]`` of some ``centres[j]``?"""
    out = []
    for lo in range(0, len(query), chunk):
        out.append((cdist(query[lo : lo + chunk], centres) <= radii[None, :]).any(axis=1))
    return np.concatenate(out)


def precision_recall_from_features(
    fake: Tensor, real: Tensor, k: int = 3, chunk: int = 1024
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), k-NN manifolds.

    Each set's manifold is the union of balls around its points with radius the
    distance to the point's k-th nearest neighbour in the same set. Precision is the
    fraction of fake samples inside the real manifold, recall the fraction of real
    samples inside the fake manifold (boundary included, ``≤``). Both in [0, 1],
    higher is better. Distances in float64, computed in row chunks of ``chunk``.
    """
    x, y = _check_2d(fake, "fake", k + 1).numpy(), _check_2d(real, "real", k + 1).numpy()
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    r_real = _kth_nn_radius(y, k, chunk)
    r_fake = _kth_nn_radius(x, k, chunk)
    precision = _inside_any_ball(x, y, r_real, chunk).mean()
    recall = _inside_any_ball(y, x, r_fake, chunk).mean()
    return float(precision), float(recall)


# --------------------------------------------------------------------------- real stats


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


# --------------------------------------------------------------------------- all at once

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


__all__ = [
    "DEFAULT_STATS_DIR",
    "IMAGE_METRICS",
    "INCEPTION_WEIGHTS_FILES",
    "FeatureExtractor",
    "Features",
    "InceptionExtractor",
    "RealStats",
    "StatsKey",
    "extract_features",
    "feature_statistics",
    "fid_from_features",
    "find_inception_weights",
    "frechet_distance",
    "image_metrics",
    "inception_cache_dir",
    "inception_score_from_logits",
    "kid_from_features",
    "load_or_compute_real_stats",
    "load_real_stats",
    "precision_recall_from_features",
    "real_stats_path",
    "save_real_stats",
    "quantize",
    "to_uint8",
]
