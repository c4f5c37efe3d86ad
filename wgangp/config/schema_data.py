"""The ``dataset`` node's schema, one dataclass per kind of data.

A points set takes no pixel keys and an image set no sequence length: each data set's
YAML (``configs/dataset/<name>.yaml``) names the schema of its kind first in its
defaults list (``- image_schema``), so ``--cfg job`` shows the keys that apply and a
key of another kind is refused. The schemas are options of the ``dataset`` group in
Hydra's ConfigStore (:func:`register_data_configs`); :data:`DATA_SCHEMAS` maps those
option names to the dataclasses.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class DataConfig:
    """The keys every data set has; ``name`` picks the loader (:mod:`wgangp.data`)."""

    # the data set: gaussians8 | gaussians25 | swissroll | points | mnist | mnist_pkl |
    # stacked_mnist | fashion_mnist | cifar10 | celeba | lsun | image_folder | billion_word
    name: str = MISSING


@dataclass
class PointsDataConfig(DataConfig):
    """2-D toy distributions and points files (:mod:`wgangp.data.toy`)."""

    # dataset=points: a .npy or .csv file of an N×D array of points
    path: str | None = None
    # dataset=points: the known modes, a list of K points (enables the mode metrics)
    modes: Any = None
    # dataset=points: the std of each known mode (needed with modes)
    mode_std: float | None = None
    # toy distributions: the scale of the modes (null: the official script's value)
    scale: float | None = None
    # toy distributions: the std of each mode / the Swiss roll's noise (null: official)
    noise: float | None = None
    # the networks' coordinates: global (x − mean) / s, one scale s for all coordinates
    # (the geometry kept) | per_dim: each coordinate's own std | none: the data's units.
    # Samples, pictures, metrics and exports are in the data's units whatever it is; the
    # built-in distributions are drawn standardized (wgangp/data/standardize.py)
    standardize: str = "global"
    # dataset=points: the mean to subtract, D numbers (null: the file's)
    standardize_mean: Any = None
    # dataset=points: the scale to divide by, one number (global) or D (per_dim);
    # null: the file's
    standardize_scale: Any = None
    # toy sets: null draws every batch afresh; N draws one fixed set of N points from
    # trainer.seed (the Gaussians N/K per mode), shuffled once and read in order, over
    # and over (gan_toy.py's 25 Gaussians: 100000); see wgangp/data/toy.py
    fixed_points: int | None = None


@dataclass
class StoredDataConfig(DataConfig):
    """Data sets read from files under ``root`` (images and text)."""

    # the folder holding the data set's files (each data set's YAML says its layout)
    root: str = "data"
    # true: fetch the data set into root when it is missing (needs a network)
    download: bool = False


@dataclass
class ImageDataConfig(StoredDataConfig):
    """The keys of every image set (:mod:`wgangp.data.images`, :mod:`wgangp.data.mnist_pkl`)."""

    # side of the square training images, in pixels
    image_size: int = 32
    # 1 (grey) | 3 (RGB)
    channels: int = 3
    # the data set's split trained on (each data set's YAML lists its splits)
    split: str = "train"
    # train on a random subset of N samples of the split (the same N for every run,
    # whatever trainer.seed; the paper's Figure 4b: 1000 MNIST digits); null: all
    subset: int | None = None
    # training batches as (x + U[0, 1)) / 128 - 1 instead of x / 127.5 - 1 (gan_cifar_resnet.py)
    dequantize: bool = False
    # [-1, 1] (x / 127.5 - 1) or [0, 1] (x / 255, gan_mnist.py); see wgangp/data/pixels.py
    pixel_range: list[float] = field(default_factory=lambda: [-1.0, 1.0])


@dataclass
class DecodedImageDataConfig(ImageDataConfig):
    """Image sets decoded through torchvision's readers (all but ``mnist_pkl``, whose
    file holds the pixels as arrays)."""

    # data-loading worker processes (0: decode in the training process)
    num_workers: int = 2
    # center: the central square of the short side, then resized | resize: stretched to
    # a square | random: a random square of the short side (new each epoch), resized
    crop: str = "center"
    # true: mirror each training image left-right with probability 1/2 (new each epoch)
    hflip: bool = False
    # true: decode the whole set once and hold it on the training device (fast on a GPU)
    on_device: bool = False


@dataclass
class LsunDataConfig(DecodedImageDataConfig):
    """LSUN scenes: one category's LMDB."""

    # bedroom | bridge | church_outdoor | classroom | conference_room | ...
    category: str = "bedroom"


@dataclass
class StackedMnistDataConfig(ImageDataConfig):
    """Stacked MNIST: three MNIST digits as the RGB channels (:mod:`wgangp.data.stacked_mnist`)."""

    # stacked images in an epoch, each three digits drawn with replacement from a fixed
    # seed (PacGAN's 128000)
    size: int = 128_000
    # data-loading worker processes (0: stack in the training process)
    num_workers: int = 2


@dataclass
class TextDataConfig(StoredDataConfig):
    """Text data (``billion_word``, :mod:`wgangp.data.text`)."""

    # symbols per sample (SEQ_LEN)
    seq_len: int = 32
    # lines loaded (MAX_N_EXAMPLES)
    max_examples: int = 10_000_000
    # vocabulary size, unk included
    max_vocab: int = 2048
    # byte (the official Python 2 reading) | char (UTF-8 characters)
    unit: str = "byte"


#: the ``dataset`` group's schema options (a data set's YAML names one in its defaults)
DATA_SCHEMAS: dict[str, type[DataConfig]] = {
    "points_schema": PointsDataConfig,
    "image_schema": ImageDataConfig,
    "decoded_image_schema": DecodedImageDataConfig,
    "lsun_schema": LsunDataConfig,
    "stacked_mnist_schema": StackedMnistDataConfig,
    "text_schema": TextDataConfig,
}

#: what each kind is called in messages (``gaussians8 (points data: name, path, …)``)
KIND_NAMES: dict[type[DataConfig], str] = {
    PointsDataConfig: "points data",
    ImageDataConfig: "images held as arrays",
    DecodedImageDataConfig: "image data",
    LsunDataConfig: "LSUN image data",
    StackedMnistDataConfig: "stacked MNIST data",
    TextDataConfig: "text data",
}


def register_data_configs() -> None:
    """Put the kinds' schemas in Hydra's ConfigStore as options of the ``dataset`` group,
    each at the ``dataset`` package (the data sets' YAML files are global-package ones)."""
    cs = ConfigStore.instance()
    for name, node in DATA_SCHEMAS.items():
        cs.store(group="dataset", name=name, node=node, package="dataset")


def data_keys(cls: type[DataConfig]) -> list[str]:
    """The keys of a kind's schema, in declaration order (``name`` first)."""
    return [f.name for f in dataclasses.fields(cls)]
