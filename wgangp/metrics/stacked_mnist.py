"""Stacked-MNIST mode metrics (PacGAN Table 3, VEEGAN Table 2).

Each channel of a ``(N, 3, S, S)`` sample is read by the MNIST classifier
(:mod:`wgangp.metrics.mnist_classifier`); the three digits give the sample's mode
``100·d₀ + 10·d₁ + d₂`` of 1,000. Over the samples (PacGAN: 26,000):

* ``stacked_mnist_modes``: how many of the 1,000 modes at least one sample falls in;
* ``stacked_mnist_kl``: ``KL(p ‖ uniform) = Σ p_k log(1000 · p_k)`` over the modes with
  ``p_k > 0``, ``p`` the samples' mode histogram, in nats: 0 for a uniform histogram,
  ``log 1000 ≈ 6.91`` when every sample is the same mode. PacGAN's ``KLD(p, q)`` with
  ``q`` uniform computes the same sum.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from wgangp.metrics.mnist_classifier import predict

STACKED_METRICS = ("stacked_mnist_modes", "stacked_mnist_kl")
NUM_MODES = 1000
DEFAULT_STACKED_SAMPLES = 26000  # PacGAN's num_test_sample


def stacked_modes(classifier: nn.Module, images: Tensor) -> Tensor:
    """The mode ``(N,)`` in ``0 … 999`` of each ``(N, 3, S, S)`` image in ``[-1, 1]``."""
    n, c, h, w = images.shape
    digits = predict(classifier, images.reshape(n * c, 1, h, w)).view(n, c)
    return (digits * torch.tensor([100, 10, 1], device=digits.device)).sum(1)


def mode_histogram(batches: Iterable[Tensor], classifier: nn.Module) -> Tensor:
    """The ``(1000,)`` ``int64`` count of each mode over the image batches."""
    counts = torch.zeros(NUM_MODES, dtype=torch.int64)
    for x in batches:
        counts += torch.bincount(stacked_modes(classifier, x).cpu(), minlength=NUM_MODES)
    return counts


def stacked_scores(counts: Tensor) -> dict[str, float]:
    """``stacked_mnist_modes`` and ``stacked_mnist_kl`` of a mode histogram."""
    total = int(counts.sum())
    if total == 0:
        return {"stacked_mnist_modes": 0.0, "stacked_mnist_kl": math.nan}
    p = counts[counts > 0].double() / total
    kl = float((p * torch.log(p * NUM_MODES)).sum())
    return {"stacked_mnist_modes": float((counts > 0).sum()), "stacked_mnist_kl": max(kl, 0.0)}


__all__ = [
    "DEFAULT_STACKED_SAMPLES",
    "NUM_MODES",
    "STACKED_METRICS",
    "mode_histogram",
    "stacked_modes",
    "stacked_scores",
]
