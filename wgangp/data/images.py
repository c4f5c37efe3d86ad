"""Real image data sets: ``mnist``, ``fashion_mnist``, ``cifar10``, ``celeba``, ``lsun``,
``image_folder``.

The five named sets use torchvision's own classes and on-disk layouts under
``dataset.root`` (so a copy torchvision downloaded once is found again), with
``dataset.download=true`` passed through to torchvision where it can download.
``image_folder`` is any folder of images (:mod:`wgangp.data.image_folder`).

Every image becomes a float32 ``(dataset.channels, dataset.image_size,
dataset.image_size)`` tensor in ``[-1, 1]``; see :class:`~wgangp.data.image_source.
ImageTransform` for the channel conversion and the ``dataset.crop`` policies, and
:class:`~wgangp.data.image_source.ImageSource` for the resumable stream.

A missing, incomplete or unreadable data set fails in :func:`wgangp.data.build_data`,
before any training, with a :class:`DataError` that names the expected layout and the
two ways to fix it (``dataset.download=true``, or ``dataset.root=`` pointing to the
right directory). torchvision's own ``RuntimeError("Dataset not found or
corrupted...")`` is translated into that message.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from wgangp.data.base import DataSource, left_out, subset_indices
from wgangp.data.image_folder import ImageFolderImages
from wgangp.data.image_source import (
    CROPS,
    MODES,
    ImageItems,
    ImageSource,
    ImageTransform,
    load_on_device,
    unflipped,
)
from wgangp.data.pixels import pixel_range
from wgangp.data.registry import register_dataset
from wgangp.errors import ConfigError, DataError
from wgangp.io.paths import expand_path

log = logging.getLogger(__name__)

#: torchvision's LSUN scene categories
LSUN_CATEGORIES = (
    "bedroom",
    "bridge",
    "church_outdoor",
    "classroom",
    "conference_room",
    "dining_room",
    "kitchen",
    "living_room",
    "restaurant",
    "tower",
)
MNIST_FILES = tuple(
    f"{part}-{kind}-ubyte" for part in ("train", "t10k") for kind in ("images-idx3", "labels-idx1")
)
CELEBA_TEXT_FILES = (
    "list_eval_partition.txt",
    "identity_CelebA.txt",
    "list_attr_celeba.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
)


@dataclass(frozen=True)
class Layout:
    """What a data set needs on disk, relative to ``dataset.root``.

    ``required``: paths that must exist; ``expected``: the same in words, for messages;
    ``holder``: the folder ``dataset.root`` must contain; ``downloadable``: whether
    torchvision can fetch it.
    """

    required: tuple[str, ...]
    expected: str
    holder: str
    downloadable: bool = True


# --------------------------------------------------------------------------- errors


def _missing_error(name: str, root: Path, layout: Layout, missing: list[str], cause: str) -> str:
    shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    point = f"point dataset.root= to the directory that holds {layout.holder}"
    if not layout.downloadable:
        fixes = point
    elif cause:  # the download was tried and failed: offline, or the server refused
        fixes = f"{point}, or download it where there is a network and copy it there"
    else:
        fixes = f"set dataset.download=true to download it into dataset.root, or {point}"
    msg = (
        f"{name}: data set not found or incomplete: expected {layout.expected} under "
        f"dataset.root={str(root)!r} ({root.resolve()}); missing: {shown}. Fix: {fixes}"
    )
    return msg + (f" ({cause})" if cause else "")


def _open_error(name: str, root: Path, layout: Layout, download: bool, err: Exception) -> DataError:
    """The DataError for a torchvision data set that could not be opened."""
    missing = [r for r in layout.required if not (root / r).exists()]
    cause = f"download failed: {type(err).__name__}: {err}" if download else ""
    if missing:
        return DataError(_missing_error(name, root, layout, missing, cause))
    if isinstance(err, RuntimeError) and "corrupt" in str(err):
        return DataError(
            f"{name}: the files of {layout.expected} are present under dataset.root="
            f"{str(root)!r} but fail torchvision's checksum check (corrupt, partial or a "
            f"different release). Fix: delete them and set dataset.download=true, or point "
            f"dataset.root= to an intact copy"
        )
    return DataError(
        f"{name}: cannot read the data set under dataset.root={str(root)!r} "
        f"(expected {layout.expected}): {type(err).__name__}: {err}"
    )


def _tvd() -> Any:  # noqa: ANN401
    """``torchvision.datasets``, imported when an image set is first opened.

    Importing torchvision takes ~2 s (it loads all its models); the toy runs and every
    config error would otherwise pay that before anything else happens.
    """
    return importlib.import_module("torchvision.datasets")


def _open_torchvision(
    name: str, cfg: Any, layout: Layout, factory: Callable[[str, bool], Any]
) -> Any:
    """``factory(root, download)``, with every failure turned into a DataError."""
    root = expand_path(str(cfg.root))
    try:
        return factory(str(root), bool(cfg.download))
    except Exception as e:  # torchvision: RuntimeError, OSError, unpickling, parsing...
        raise _open_error(name, root, layout, bool(cfg.download), e) from e


# --------------------------------------------------------------------------- config


#: the image sets with class labels (class-conditional training: conditional.enabled);
#: an image_folder has them when its images are in class sub-folders
LABELED = ("mnist", "mnist_pkl", "fashion_mnist", "cifar10", "image_folder")

SPLITS: dict[str, tuple[str, ...]] = {
    "mnist": ("train", "test"),
    "fashion_mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "celeba": ("train", "valid", "test", "all"),
    "lsun": ("train", "val"),
}


def validate_image_config(cfg: Any) -> None:
    """Refuse image keys whose values no image data set accepts."""
    if cfg.channels not in MODES:
        raise ConfigError("dataset.channels", cfg.channels, "1 (grey) or 3 (RGB)")
    if cfg.image_size < 4:
        raise ConfigError("dataset.image_size", cfg.image_size, "an integer ≥ 4")
    pixel_range(cfg)  # [-1, 1] or [0, 1], else a ConfigError naming the key
    if cfg.get("fixed_points") is not None:
        raise ConfigError(
            "dataset.fixed_points",
            cfg.fixed_points,
            f"null for {cfg.name}",
            "fixed_points draws a fixed set from a toy distribution; drop it",
        )
    if cfg.crop not in CROPS:
        raise ConfigError("dataset.crop", cfg.crop, " | ".join(CROPS))
    if cfg.num_workers < 0:
        raise ConfigError("dataset.num_workers", cfg.num_workers, "an integer ≥ 0 (0: no workers)")
    splits = SPLITS.get(cfg.name)
    if splits is not None and cfg.split not in splits:
        raise ConfigError("dataset.split", cfg.split, f"for {cfg.name}: {' | '.join(splits)}")
    if cfg.on_device and cfg.crop == "random":
        raise ConfigError(
            "dataset.crop",
            cfg.crop,
            "center | resize with dataset.on_device=true",
            "on_device decodes every image once, so a random crop would be frozen; use "
            "dataset.crop=center, or dataset.on_device=false to keep random crops",
        )
    if cfg.on_device and cfg.get("hflip"):
        raise ConfigError(
            "dataset.hflip",
            True,
            "false with dataset.on_device=true",
            "on_device decodes every image once, so a flip would be frozen; use "
            "dataset.on_device=false to keep flips",
        )


# --------------------------------------------------------------------------- openers


def _mnist_like(cls_name: str) -> Callable[[Any], Any]:
    folder = cls_name  # torchvision keeps each under root/<class name>/raw
    layout = Layout(
        required=tuple(f"{folder}/raw/{f}" for f in MNIST_FILES),
        expected=f"root/{folder}/raw/{{{', '.join(MNIST_FILES)}}} (uncompressed idx files)",
        holder=f"{folder}/",
    )

    def open_(cfg: Any) -> Any:
        return _open_torchvision(
            cfg.name,
            cfg,
            layout,
            lambda r, d: getattr(_tvd(), cls_name)(r, train=cfg.split == "train", download=d),
        )

    return open_


CIFAR10_LAYOUT = Layout(
    required=tuple(
        f"cifar-10-batches-py/{f}"
        for f in (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
    ),
    expected="root/cifar-10-batches-py/data_batch_1..5, test_batch and batches.meta",
    holder="cifar-10-batches-py/",
)


def open_cifar10(cfg: Any) -> Any:
    return _open_torchvision(
        "cifar10",
        cfg,
        CIFAR10_LAYOUT,
        lambda r, d: _tvd().CIFAR10(r, train=cfg.split == "train", download=d),
    )


CELEBA_LAYOUT = Layout(
    required=("celeba/img_align_celeba", *(f"celeba/{f}" for f in CELEBA_TEXT_FILES)),
    expected=(
        f"root/celeba/img_align_celeba/*.jpg with root/celeba/{{{', '.join(CELEBA_TEXT_FILES)}}}"
    ),
    holder="celeba/",
)


def _check_celeba_images(ds: Any, root: Path) -> None:
    """torchvision only checks that the image folder exists: check the split's files."""
    folder = root / "celeba" / "img_align_celeba"
    present = set(os.listdir(folder))
    absent = [f for f in ds.filename if f not in present]
    if absent:
        raise DataError(
            _missing_error(
                "celeba",
                root,
                CELEBA_LAYOUT,
                [f"celeba/img_align_celeba/{f}" for f in absent],
                f"{len(absent)} of the {len(ds.filename)} images that list_eval_partition.txt "
                f"puts in split {ds.split!r} are absent: an incomplete extraction?",
            )
        )
    if not ds.filename:
        raise DataError(f"celeba: split {ds.split!r} is empty in list_eval_partition.txt")


def open_celeba(cfg: Any) -> Any:
    ds = _open_torchvision(
        "celeba",
        cfg,
        CELEBA_LAYOUT,
        lambda r, d: _tvd().CelebA(r, split=cfg.split, target_type=[], download=d),
    )
    _check_celeba_images(ds, expand_path(str(cfg.root)))
    return ds


def _require_lmdb() -> None:
    try:
        importlib.import_module("lmdb")
    except ImportError as e:
        raise DataError(
            "lsun: reading LSUN needs the optional 'lmdb' package; install it with "
            "`pip install wgangp[lsun]` (or `pip install lmdb`)"
        ) from e


def open_lsun(cfg: Any) -> Any:
    """torchvision's LSUN for ``{category}_{split}``.

    Note: torchvision caches each database's key list in a file ``_cache_<root>`` in the
    current working directory (its own behaviour, not configurable).
    """
    if cfg.category not in LSUN_CATEGORIES:
        raise ConfigError("dataset.category", cfg.category, " | ".join(LSUN_CATEGORIES))
    if cfg.download:
        raise ConfigError(
            "dataset.download",
            True,
            "false for lsun",
            "torchvision cannot download LSUN; fetch it with the LSUN project's "
            "download.py and unzip it into dataset.root",
        )
    _require_lmdb()
    db = f"{cfg.category}_{cfg.split}_lmdb"
    layout = Layout(
        required=(db,),
        expected=f"root/{db}/ (an LMDB database: data.mdb, lock.mdb)",
        holder=f"{db}/",
        downloadable=False,
    )
    return _open_torchvision(
        "lsun", cfg, layout, lambda r, d: _tvd().LSUN(r, classes=[f"{cfg.category}_{cfg.split}"])
    )


def open_image_folder(cfg: Any) -> Any:
    if cfg.download:
        raise ConfigError(
            "dataset.download",
            True,
            "false for image_folder",
            "an image folder is yours to provide: point dataset.root= to it",
        )
    return ImageFolderImages(str(cfg.root))


OPENERS: dict[str, Callable[[Any], Any]] = {
    "mnist": _mnist_like("MNIST"),
    "fashion_mnist": _mnist_like("FashionMNIST"),
    "cifar10": open_cifar10,
    "celeba": open_celeba,
    "lsun": open_lsun,
    "image_folder": open_image_folder,
}


# --------------------------------------------------------------------------- builder


def build_images(cfg: Any, batch_size: int, device: torch.device, seed: int) -> DataSource:
    """The DataSource for an image data set config (see the module docstring)."""
    validate_image_config(cfg)
    whole = OPENERS[cfg.name](cfg)
    base = whole
    keep = subset_indices(len(whole), cfg.get("subset"), f"{cfg.name} ({cfg.split})")
    if keep is not None:
        base = SubsetOf(whole, keep.tolist())
    transform = ImageTransform(cfg.image_size, cfg.channels, cfg.crop, bool(cfg.get("hflip")))
    items = ImageItems(base, transform)
    labels, num_classes = class_labels(cfg.name, base)
    source = _source(cfg, items, batch_size, device, seed, labels, num_classes)
    if labels is None and cfg.name == "image_folder":
        source.label_problem = base.labels_problem()
    if keep is not None and len(keep) < len(whole):
        rest = left_out(len(whole), keep).tolist()

        def rest_of_split() -> DataSource:
            # for evaluation's sample() only: streamed, whatever dataset.on_device says
            return ImageSource(
                unflipped(ImageItems(SubsetOf(whole, rest), transform)),
                1,
                device,
                seed,
                cfg.num_workers,
                name=f"{cfg.name} ({cfg.split}, outside dataset.subset)",
                pixels=pixel_range(cfg),
            )

        source.rest_of_split = rest_of_split
    return source


def _source(
    cfg: Any,
    items: ImageItems,
    batch_size: int,
    device: torch.device,
    seed: int,
    labels: torch.Tensor | None,
    num_classes: int | None,
) -> DataSource:
    """The stream of ``items``: held on the device (``dataset.on_device``) or loaded."""
    pixels = pixel_range(cfg)
    if cfg.on_device:
        return load_on_device(
            items,
            batch_size,
            device,
            seed,
            cfg.num_workers,
            cfg.name,
            cfg.dequantize,
            pixels,
            labels=labels,
            num_classes=num_classes,
        )
    return ImageSource(
        items,
        batch_size,
        device,
        seed,
        cfg.num_workers,
        name=cfg.name,
        dequantize=cfg.dequantize,
        pixels=pixels,
        labels=labels,
        num_classes=num_classes,
    )


class SubsetOf(Subset):
    """torch's ``Subset`` (``dataset.subset``) with what the loaders read of the whole
    set: its labels (``targets``, those of the kept samples), ``classes`` and the rest."""

    @property
    def targets(self) -> torch.Tensor:
        return torch.as_tensor(self.dataset.targets)[torch.as_tensor(self.indices)]

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401
        if name in ("dataset", "indices"):  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.dataset, name)


def class_labels(name: str, base: Any) -> tuple[torch.Tensor | None, int | None]:  # noqa: ANN401
    """``(labels, num_classes)`` of a labelled set (its torchvision ``targets`` and
    ``classes``, read without decoding an image), or ``(None, None)``."""
    if name not in LABELED:
        return None, None
    if name == "image_folder" and base.labels_problem() is not None:
        return None, None
    labels = torch.as_tensor(base.targets, dtype=torch.int64)
    num_classes = len(base.classes)
    if len(labels) != len(base) or (
        len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes
    ):
        raise DataError(
            f"{name}: its labels do not match its {len(base)} images and {num_classes} "
            f"classes; the files under dataset.root are damaged or from another release"
        )
    return labels, num_classes


for _name in OPENERS:
    register_dataset(_name)(build_images)
