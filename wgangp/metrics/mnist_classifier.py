"""The MNIST digit classifier that the stacked-MNIST metrics read each channel with.

PacGAN and VEEGAN count modes with a small CNN trained on MNIST (PacGAN's
``train_mnist.py``, after Keras' ``mnist_cnn.py``). wgangp trains its own once, on the
user's MNIST training file at the data set's resolution, from a fixed seed, and caches
the weights in ``eval.stats_cache`` under a name holding the MNIST files' content hash
and the resolution (:func:`classifier_path`): later evaluations load it. Its accuracy
on MNIST's test file is logged and stored with it; below
``eval.mnist_classifier_min_accuracy`` the metrics are refused (a classifier that
misreads digits invents or hides modes).

Network (``(N, 1, S, S)`` in ``[-1, 1]`` → ``(N, 10)`` logits)::

    5×5 conv 1 → 8, ReLU, 2×2 max pool
    5×5 conv 8 → 16, ReLU, 2×2 max pool
    adaptive average pool to 7×7 (any S), linear 16·7·7 → 10

Training: Adam(1e-3), batches of 64, three passes over the training digits (at least
:data:`MIN_STEPS` updates). On the full MNIST that is 2,813 updates and a test accuracy
of 0.9871, in 26 s on one core of an AMD EPYC (torch on one thread).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wgangp.errors import MetricUnavailable
from wgangp.io.checkpoint import atomic_save

log = logging.getLogger(__name__)

FORMAT = 1
SEED = 0
EPOCHS = 3
BATCH = 64
MIN_STEPS = 200  # a tiny MNIST still gets enough updates to learn
LR = 1e-3


class DigitClassifier(nn.Module):
    """A two-conv MNIST classifier (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5, padding=2)
        self.conv2 = nn.Conv2d(8, 16, 5, padding=2)
        self.pool = nn.AdaptiveAvgPool2d(7)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(self.pool(x).flatten(1))


def signed(images: Tensor) -> Tensor:
    """``uint8`` ``(N, S, S)`` digits → float ``(N, 1, S, S)`` in ``[-1, 1]``."""
    return images.float().div(127.5).sub(1.0).unsqueeze(1)


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, batch: int = 1000) -> Tensor:
    """The digit ``(N,)`` of each ``(N, 1, S, S)`` image in ``[-1, 1]``."""
    model.eval()
    return torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, len(x), batch)])


def accuracy(model: nn.Module, images: Tensor, labels: Tensor, device: torch.device) -> float:
    """The fraction of ``uint8`` digits ``images`` that ``model`` reads as ``labels``."""
    if len(images) == 0:
        return float("nan")
    pred = predict(model, signed(images).to(device)).cpu()
    return float((pred == labels).float().mean())


def train_classifier(digits: Any, device: torch.device) -> tuple[DigitClassifier, float]:  # noqa: ANN401
    """A classifier trained on ``digits``' training images (seeded: the same weights for
    the same MNIST on the same device), and its test accuracy."""
    tick = time.perf_counter()
    gen = torch.Generator().manual_seed(SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = DigitClassifier().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    x, y = signed(digits.train_images), digits.train_labels
    n = len(x)
    steps = max(math.ceil(EPOCHS * n / BATCH), MIN_STEPS)
    order = torch.empty(0, dtype=torch.int64)
    model.train()
    for _ in range(steps):
        if len(order) < BATCH:  # a fresh pass over the digits
            order = torch.cat([order, torch.randperm(n, generator=gen)])
        idx, order = order[:BATCH], order[BATCH:]
        loss = F.cross_entropy(model(x[idx].to(device)), y[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    acc = accuracy(model, digits.test_images, digits.test_labels, device)
    log.info(
        "MNIST classifier for the stacked-MNIST metrics: %d updates on %d digits in %.1fs, "
        "test accuracy %.4f",
        steps,
        n,
        time.perf_counter() - tick,
        acc,
    )
    return model, acc


def classifier_path(digits: Any, cache_dir: str | os.PathLike[str]) -> Path:  # noqa: ANN401
    """Where the classifier of ``digits`` (its MNIST files and resolution) is cached."""
    name = f"mnist-classifier-{digits.fingerprint[:16]}-{digits.image_size}px.pt"
    return Path(cache_dir).expanduser() / name


def _save(model: nn.Module, acc: float, digits: Any, path: Path) -> None:  # noqa: ANN401
    atomic_save(
        {
            "format": FORMAT,
            "fingerprint": digits.fingerprint,
            "image_size": digits.image_size,
            "test_accuracy": acc,
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        },
        path,
    )


def _load(path: Path, digits: Any, device: torch.device) -> tuple[DigitClassifier, float] | None:  # noqa: ANN401
    """The cached classifier, or None when absent, unreadable or for other digits."""
    if not path.is_file():
        return None
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        if d.get("format") != FORMAT or d.get("fingerprint") != digits.fingerprint:
            return None
        model = DigitClassifier()
        model.load_state_dict(d["state_dict"])
        return model.to(device).eval(), float(d["test_accuracy"])
    except Exception as e:  # truncated or foreign file: train again rather than fail
        log.warning("cannot read the MNIST classifier %s (%s); training it again", path, e)
        return None


def load_or_train_classifier(
    digits: Any,  # noqa: ANN401
    cache_dir: str | os.PathLike[str],
    device: torch.device,
    min_accuracy: float,
) -> tuple[DigitClassifier, float]:
    """The classifier of ``digits`` from the cache, or trained once and cached; refused
    (:class:`MetricUnavailable`) when its test accuracy is below ``min_accuracy``."""
    path = classifier_path(digits, cache_dir)
    found = _load(path, digits, device)
    if found is None:
        model, acc = train_classifier(digits, device)
        _save(model, acc, digits, path)
        found = model.eval(), acc
    else:
        log.info("MNIST classifier %s: test accuracy %.4f", path, found[1])
    if not found[1] >= min_accuracy:
        raise MetricUnavailable(
            f"stacked_mnist_modes/stacked_mnist_kl: the MNIST classifier ({path}) reads "
            f"MNIST's test digits with accuracy {found[1]:.4f}, below "
            f"eval.mnist_classifier_min_accuracy={min_accuracy}, too low to count modes; "
            f"fix: point dataset.root= to an intact MNIST (it reaches ≈ 0.99), or lower "
            f"eval.mnist_classifier_min_accuracy"
        )
    return found


__all__ = [
    "DigitClassifier",
    "accuracy",
    "classifier_path",
    "load_or_train_classifier",
    "predict",
    "signed",
    "train_classifier",
]
