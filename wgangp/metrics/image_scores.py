"""Image scores from features: FID, KID, Inception Score, improved precision/recall.

The maths works on features produced by any
:class:`~wgangp.metrics.features.FeatureExtractor`: ``(N, D)`` pool features, or
``(N, C)`` logits for the Inception Score. Every reduction is in float64.

Directions: FID, KID lower is better; IS, precision, recall higher is better.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import scipy.special
import torch
from scipy.spatial.distance import cdist
from torch import Tensor


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


__all__ = [
    "feature_statistics",
    "fid_from_features",
    "frechet_distance",
    "inception_score_from_logits",
    "kid_from_features",
    "precision_recall_from_features",
]
