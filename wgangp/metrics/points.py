"""Metrics for point data: mode coverage (VEEGAN / PacGAN) and Wasserstein-1 distance.

Conventions (used by every function here):

* Each sample is assigned to its nearest mode centre in Euclidean distance.
* A sample is **high quality** when that distance is at most ``n_std · mode_std``
  (``n_std = 3`` by default). This is the VEEGAN (Srivastava et al. 2017) and PacGAN
  (Lin et al. 2018) convention: the Euclidean distance to the centre, compared with
  3 standard deviations of one coordinate. (For a 2-D isotropic Gaussian about 98.9 %
  of real samples pass; in D dimensions the fraction falls as D grows.)
* A mode is **captured** when at least ``min_count`` high-quality samples are nearest
  to it (``min_count = 1``: PacGAN/VEEGAN's definition).
* **Reverse KL** is PacGAN's ``KL(p_gen ‖ p_real)`` over the K modes, where ``p_gen`` is
  the histogram of the high-quality samples' mode assignments and ``p_real`` the true,
  uniform, distribution ``1/K``. See :func:`reverse_kl` for the epsilon convention.

All arithmetic is done in float64 with NumPy/SciPy on the CPU (on small arrays these are
much faster than torch's float64 ops on a busy 2-core machine); inputs are tensors on
any device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from torch import Tensor

#: sample sizes up to this use exact optimal transport, larger ones sliced Wasserstein
DEFAULT_EXACT_MAX_N = 2048
DEFAULT_N_STD = 3.0
DEFAULT_KL_EPS = 1e-12


def _check_points(x: Tensor, name: str) -> np.ndarray:
    if x.ndim != 2:
        raise ValueError(f"{name} must be an (N, D) tensor of points, got shape {tuple(x.shape)}")
    return x.detach().to(device="cpu", dtype=torch.float64).numpy()


def assign_modes(samples: Tensor, modes: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest mode of each sample.

    Returns ``(index, distance)``: for each of the N samples the index (int64, in
    ``[0, K)``) of the nearest of the K mode centres and the Euclidean distance to it.
    """
    x = _check_points(samples, "samples")
    m = _check_points(modes, "modes")
    if x.shape[1] != m.shape[1]:
        raise ValueError(f"samples have dimension {x.shape[1]}, modes {m.shape[1]}")
    if m.shape[0] == 0:
        raise ValueError("modes is empty")
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.float64)
    d = cdist(x, m)
    idx = d.argmin(axis=1)
    return torch.from_numpy(idx).long(), torch.from_numpy(d[np.arange(len(x)), idx])


def mode_counts(
    samples: Tensor, modes: Tensor, mode_std: float, n_std: float = DEFAULT_N_STD
) -> Tensor:
    """Number of high-quality samples nearest to each mode, an int64 ``(K,)`` tensor.

    A sample counts for its nearest mode when its distance to that centre is
    ``≤ n_std · mode_std``; samples farther from every centre count nowhere.
    """
    if mode_std <= 0:
        raise ValueError(f"mode_std must be positive, got {mode_std}")
    idx, dist = assign_modes(samples, modes)
    good = dist <= n_std * mode_std
    return torch.bincount(idx[good], minlength=modes.shape[0])


def high_quality_fraction(
    samples: Tensor, modes: Tensor, mode_std: float, n_std: float = DEFAULT_N_STD
) -> float:
    """Fraction of samples within ``n_std · mode_std`` of their nearest mode, in [0, 1].

    Higher is better (1 for real data up to the Gaussian tail mass beyond 3σ).
    """
    n = samples.shape[0]
    if n == 0:
        raise ValueError("no samples")
    return float(mode_counts(samples, modes, mode_std, n_std).sum()) / n


def modes_captured(
    samples: Tensor,
    modes: Tensor,
    mode_std: float,
    n_std: float = DEFAULT_N_STD,
    min_count: int = 1,
) -> int:
    """Number of modes with at least ``min_count`` high-quality samples, in ``[0, K]``.

    Higher is better (K: every mode is covered).
    """
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    return int((mode_counts(samples, modes, mode_std, n_std) >= min_count).sum())


def reverse_kl_from_counts(counts: Tensor, eps: float = DEFAULT_KL_EPS) -> float:
    """``KL(p_gen ‖ U_K) = Σ_k p_k log(K · p_k)`` from per-mode counts.

    ``p_gen = (counts/Σcounts + eps) / (1 + K·eps)``: the empirical mode distribution
    smoothed by ``eps`` so that empty bins give finite logarithms (their contribution
    ``eps·log(K·eps)`` tends to 0, the ``0·log 0 = 0`` limit). With the default
    ``eps = 1e-12`` the value for all mass in one mode is ``log K`` to about 1e-10,
    and a perfectly even histogram gives exactly 0. The value lies in ``[0, log K]``.

    With no high-quality sample at all the mode distribution is undefined and the
    result is ``inf`` (worse than any generator that hits at least one mode).
    Lower is better.
    """
    c = counts.detach().to(device="cpu", dtype=torch.float64)
    k = c.numel()
    total = float(c.sum())
    if total <= 0:
        return math.inf
    p = (c / total + eps) / (1 + k * eps)
    return float(max((p * torch.log(p * k)).sum().item(), 0.0))


def reverse_kl(
    samples: Tensor,
    modes: Tensor,
    mode_std: float,
    n_std: float = DEFAULT_N_STD,
    eps: float = DEFAULT_KL_EPS,
) -> float:
    """PacGAN's reverse KL between the generated and the true (uniform) mode distribution.

    Only high-quality samples enter the histogram (PacGAN/VEEGAN), see
    :func:`reverse_kl_from_counts` for the formula and the epsilon convention.
    0 for an even spread over all K modes, ``log K`` when every high-quality sample
    sits in a single mode, ``inf`` without any high-quality sample. Lower is better.
    """
    return reverse_kl_from_counts(mode_counts(samples, modes, mode_std, n_std), eps)


# --------------------------------------------------------------------------- Wasserstein


def wasserstein_exact(x: Tensor, y: Tensor) -> float:
    """Exact empirical W1 between two equal-size point sets (optimal assignment).

    For sets of equal size N with uniform weights an optimal transport plan is a
    permutation (Birkhoff), so ``W1 = min_π (1/N) Σ_i ‖x_i − y_π(i)‖₂``, solved with
    :func:`scipy.optimize.linear_sum_assignment` (O(N³) time, O(N²) memory).
    Exactly 0 for a set compared with itself. Lower is better.
    """
    a, b = _check_points(x, "x"), _check_points(y, "y")
    if a.shape != b.shape:
        raise ValueError(
            f"exact W1 needs equal-size sets, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] == 0:
        raise ValueError("no samples")
    cost = cdist(a, b)
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def _w1_1d(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """W1 between 1-D empirical distributions, batched over rows: ``(P, n), (P, m) → (P,)``.

    ``W1 = ∫ |F_u(t) − F_v(t)| dt``, evaluated exactly on the merged sorted support.
    For ``n == m`` this equals ``mean |sort(u) − sort(v)|``, the shortcut used then.
    """
    us, vs = np.sort(u, axis=1), np.sort(v, axis=1)
    if u.shape[1] == v.shape[1]:
        return np.abs(us - vs).mean(axis=1)
    allv = np.sort(np.concatenate([us, vs], axis=1), axis=1)
    deltas = np.diff(allv, axis=1)
    t = allv[:, :-1]
    fu = np.stack([np.searchsorted(us[i], t[i], side="right") for i in range(len(t))])
    fv = np.stack([np.searchsorted(vs[i], t[i], side="right") for i in range(len(t))])
    return (np.abs(fu / u.shape[1] - fv / v.shape[1]) * deltas).sum(axis=1)


def sliced_constant(d: int) -> float:
    """``c_d = E|θ₁|`` for θ uniform on the unit sphere of R^d: ``Γ(d/2) / (√π Γ((d+1)/2))``.

    A translation by δ has W1 = ‖δ‖ and sliced W1 = c_d‖δ‖ (likewise an isotropic
    scaling of a radial distribution), so ``SW1 / c_d`` is on the scale of W1.
    """
    return math.exp(math.lgamma(d / 2) - math.lgamma((d + 1) / 2)) / math.sqrt(math.pi)


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    n_projections: int = 512,
    seed: int = 0,
    normalize: bool = True,
) -> float:
    """Sliced W1: the mean over random unit directions θ of 1-D W1(⟨θ,x⟩, ⟨θ,y⟩).

    Directions are drawn uniformly on the sphere from a generator seeded by ``seed``
    (deterministic for given inputs). Set sizes may differ. With ``normalize`` (the
    default) the result is divided by :func:`sliced_constant` so that it equals W1
    exactly for translations and is directly comparable with :func:`wasserstein_exact`;
    it is a proxy for W1, not a bound, in general. Cost O(P·N log N). Lower is better.
    """
    a, b = _check_points(x, "x"), _check_points(y, "y")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x has dimension {a.shape[1]}, y {b.shape[1]}")
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError("no samples")
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n_projections, d))
    theta /= np.maximum(np.linalg.norm(theta, axis=1, keepdims=True), 1e-300)
    proj_a = np.einsum("pd,nd->pn", theta, a)
    proj_b = np.einsum("pd,nd->pn", theta, b)
    sw = float(_w1_1d(proj_a, proj_b).mean())
    return sw / sliced_constant(d) if normalize else sw


def wasserstein_distance(
    x: Tensor,
    y: Tensor,
    exact_max_n: int = DEFAULT_EXACT_MAX_N,
    n_projections: int = 512,
    seed: int = 0,
) -> float:
    """W1 between two point sets, exact for small sets and sliced for large ones.

    Both sets are cut to ``n = min(len(x), len(y))`` samples (the first n: inputs are
    i.i.d. samples), then if ``n ≤ exact_max_n`` :func:`wasserstein_exact`, otherwise
    normalised :func:`sliced_wasserstein`. Lower is better. Note that an empirical W1
    between two finite samples of the *same* distribution is positive and shrinks with
    n, which is why :func:`wasserstein_with_reference` reports a real-vs-real value.
    """
    n = min(x.shape[0], y.shape[0])
    if n == 0:
        raise ValueError("no samples")
    x, y = x[:n], y[:n]
    if n <= exact_max_n:
        return wasserstein_exact(x, y)
    return sliced_wasserstein(x, y, n_projections=n_projections, seed=seed)


def wasserstein_with_reference(
    fake: Tensor,
    real: Tensor,
    real_ref: Tensor | None = None,
    exact_max_n: int = DEFAULT_EXACT_MAX_N,
    n_projections: int = 512,
    seed: int = 0,
) -> tuple[float, float]:
    """``(W1(fake, real), W1(real_ref, real))`` at the same sample size n.

    The second value is the floor a perfect generator would reach at this n (the
    finite-sample bias), giving the first its scale. Without ``real_ref``, ``real``
    is split in two halves (first half: the target, second half: the reference).
    n is the smallest of the set sizes involved, so both values are comparable.
    """
    if real_ref is None:
        half = real.shape[0] // 2
        if half == 0:
            raise ValueError("need at least 2 real samples to compute a real-vs-real reference")
        real, real_ref = real[:half], real[half : 2 * half]
    n = min(fake.shape[0], real.shape[0], real_ref.shape[0])
    kw = {"exact_max_n": exact_max_n, "n_projections": n_projections, "seed": seed}
    return (
        wasserstein_distance(fake[:n], real[:n], **kw),
        wasserstein_distance(real_ref[:n], real[:n], **kw),
    )


# --------------------------------------------------------------------------- all at once


def points_metrics(
    fake: Tensor,
    real: Tensor,
    modes: Tensor | None = None,
    mode_std: float | None = None,
    *,
    real_ref: Tensor | None = None,
    n_std: float = DEFAULT_N_STD,
    min_count: int = 1,
    kl_eps: float = DEFAULT_KL_EPS,
    exact_max_n: int = DEFAULT_EXACT_MAX_N,
    n_projections: int = 512,
    seed: int = 0,
) -> dict[str, float]:
    """Every points metric in one dict.

    Keys: ``wasserstein`` and ``wasserstein_real`` (see
    :func:`wasserstein_with_reference`), and when ``modes`` and ``mode_std`` are given
    ``modes_captured`` (count, as a float), ``high_quality`` (fraction) and
    ``reverse_kl``. ``real`` must be fresh real samples, ``real_ref`` an optional second,
    independent set of them (else ``real`` is split in halves for the reference).
    """
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    w, w_real = wasserstein_with_reference(
        fake, real, real_ref, exact_max_n=exact_max_n, n_projections=n_projections, seed=seed
    )
    out: dict[str, float] = {"wasserstein": w, "wasserstein_real": w_real}
    if modes is not None and mode_std is not None:
        counts = mode_counts(fake, modes, mode_std, n_std)
        out["modes_captured"] = float((counts >= min_count).sum())
        out["high_quality"] = float(counts.sum()) / max(fake.shape[0], 1)
        out["reverse_kl"] = reverse_kl_from_counts(counts, kl_eps)
    return out


__all__ = [
    "DEFAULT_EXACT_MAX_N",
    "assign_modes",
    "high_quality_fraction",
    "mode_counts",
    "modes_captured",
    "points_metrics",
    "reverse_kl",
    "reverse_kl_from_counts",
    "sliced_constant",
    "sliced_wasserstein",
    "wasserstein_distance",
    "wasserstein_exact",
    "wasserstein_with_reference",
]
