"""``stacked_mnist``: three MNIST digits as the R, G and B channels, 1,000 modes.

The mode-collapse benchmark of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al.
2018, Table 3): item ``i`` stacks the digits ``ids[i, 0]``, ``ids[i, 1]``, ``ids[i, 2]``
of an MNIST pool as its three channels, and its mode is ``100·d₀ + 10·d₁ + d₂`` of
their classes. PacGAN's code draws ``dataset.size`` = 128,000 such triples uniformly,
with replacement, from the 70,000 digits of MNIST's training and test files together
(``dataset.split=all``; ``train`` or ``test`` draw from one file), and keeps them 28×28
(``dataset.image_size=28``; another size resizes each digit as ``dataset=mnist`` does,
bicubic).

The triples come from a fixed seed (:data:`STACK_SEED`), not ``trainer.seed``: like a
stored data set, every run trains on the same 128,000 images; ``trainer.seed`` orders
them, epoch by epoch, through :class:`~wgangp.data.image_source.ImageSource` (the same
stream with any ``dataset.num_workers``, and again after a resume).

The MNIST files are the user's, in torchvision's layout under ``dataset.root``
(``root/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``), found and refused
exactly as ``dataset=mnist`` does. The source keeps the digits and their labels
(:class:`MnistDigits`): the stacked-MNIST metrics train their digit classifier on them
(:mod:`wgangp.metrics.mnist_classifier`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import OmegaConf
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from wgangp.data.base import DataSource
from wgangp.data.image_source import ImageSource, ImageTransform
from wgangp.data.images import MNIST_FILES, OPENERS
from wgangp.data.pixels import pixel_range
from wgangp.data.registry import register_dataset
from wgangp.errors import ConfigError
from wgangp.io.paths import expand_path

#: the triples are drawn from this seed, whatever trainer.seed: every run sees the same set
STACK_SEED = 0
NUM_MODES = 1000
SPLITS = ("all", "train", "test")
MNIST_SIZE = 28


@dataclass(frozen=True)
class MnistDigits:
    """The user's MNIST at the data set's resolution: ``uint8`` ``(N, S, S)`` images and
    ``int64`` labels of both files, and a hash of the four files' bytes
    (:func:`mnist_fingerprint`) that names a classifier trained on them."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor
    fingerprint: str

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])


def mnist_fingerprint(root: Any) -> str:  # noqa: ANN401
    """SHA-1 of the four idx files' contents (in a fixed order): the same MNIST anywhere
    gives the same value, an altered file another."""
    digest = hashlib.sha1()
    for name in MNIST_FILES:
        digest.update(name.encode() + b"\0")
        with open(expand_path(str(root)) / "MNIST" / "raw" / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def resized(images: Tensor, size: int) -> Tensor:
    """``uint8`` ``(N, 28, 28)`` digits at ``size × size`` (bicubic, as ``dataset=mnist``)."""
    if images.shape[-1] == size:
        return images
    transform = ImageTransform(size, 1, "center")
    return torch.stack([transform(Image.fromarray(d.numpy()))[0] for d in images])


def load_digits(cfg: Any) -> MnistDigits:  # noqa: ANN401
    """Both MNIST files under ``cfg.root`` (torchvision's layout), refused as
    ``dataset=mnist`` refuses a missing or damaged copy."""
    open_mnist = OPENERS["mnist"]
    parts = {}
    for split in ("train", "test"):
        ds = open_mnist(OmegaConf.merge(cfg, {"split": split}))
        images = resized(torch.as_tensor(ds.data, dtype=torch.uint8), int(cfg.image_size))
        parts[split] = (images, torch.as_tensor(ds.targets, dtype=torch.int64))
    return MnistDigits(*parts["train"], *parts["test"], mnist_fingerprint(cfg.root))


def stack_ids(size: int, pool: int) -> Tensor:
    """``(size, 3)`` indices into a pool of ``pool`` digits, uniform with replacement,
    from :data:`STACK_SEED`."""
    g = torch.Generator().manual_seed(STACK_SEED)
    return torch.randint(0, pool, (size, 3), generator=g)


class StackedItems(Dataset):
    """Item ``(i, aug_seed)``: the ``uint8`` ``(3, S, S)`` stack of the digits ``ids[i]``
    (no augmentation: ``aug_seed`` is ignored). ``labels[i]`` is its mode."""

    def __init__(self, digits: Tensor, digit_labels: Tensor, ids: Tensor) -> None:
        self.digits, self.ids = digits, ids
        self.labels = (digit_labels[ids] * torch.tensor([100, 10, 1])).sum(1)
        # what ImageSource reads of an item set: the sample shape, and no flips
        self.transform = ImageTransform(int(digits.shape[-1]), 3, "center")

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __getitem__(self, item: tuple[int, int]) -> Tensor:
        return self.digits[self.ids[item[0]]]


def validate_stacked_config(cfg: Any) -> None:  # noqa: ANN401
    """The keys stacked MNIST can honour, before any file is read."""
    if cfg.split not in SPLITS:
        raise ConfigError("dataset.split", cfg.split, f"for stacked_mnist: {' | '.join(SPLITS)}")
    if cfg.channels != 3:
        raise ConfigError(
            "dataset.channels", cfg.channels, "3 for stacked_mnist", "one digit per channel"
        )
    if cfg.image_size < 8:
        raise ConfigError("dataset.image_size", cfg.image_size, "an integer ≥ 8 (28: as stored)")
    if cfg.size < 1:
        raise ConfigError("dataset.size", cfg.size, "an integer ≥ 1 (PacGAN: 128000)")
    if cfg.get("subset") is not None:
        raise ConfigError(
            "dataset.subset", cfg.subset, "null for stacked_mnist", "dataset.size sets its size"
        )
    if cfg.num_workers < 0:
        raise ConfigError("dataset.num_workers", cfg.num_workers, "an integer ≥ 0 (0: no workers)")
    pixel_range(cfg)  # [-1, 1] or [0, 1], else a ConfigError naming the key


@register_dataset("stacked_mnist")
def build_stacked_mnist(
    cfg: Any,  # noqa: ANN401
    batch_size: int,
    device: torch.device,
    seed: int,
) -> DataSource:
    validate_stacked_config(cfg)
    digits = load_digits(cfg)
    if cfg.split == "all":
        pool = torch.cat([digits.train_images, digits.test_images])
        labels = torch.cat([digits.train_labels, digits.test_labels])
    else:
        part = "train" if cfg.split == "train" else "test"
        pool, labels = getattr(digits, f"{part}_images"), getattr(digits, f"{part}_labels")
    items = StackedItems(pool, labels, stack_ids(int(cfg.size), len(pool)))
    source = ImageSource(
        items,  # type: ignore[arg-type]
        batch_size,
        device,
        seed,
        cfg.num_workers,
        name=f"stacked_mnist ({cfg.split}, {NUM_MODES} modes)",
        dequantize=cfg.dequantize,
        pixels=pixel_range(cfg),
    )
    source.mnist_digits = digits
    return source


__all__ = [
    "NUM_MODES",
    "STACK_SEED",
    "MnistDigits",
    "StackedItems",
    "build_stacked_mnist",
    "load_digits",
    "mnist_fingerprint",
]
