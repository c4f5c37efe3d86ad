"""Resumable, deterministic streams of images for any map-style image data set.

The pieces, from the file on disk to the batch on the device:

* :class:`ImageTransform` turns one PIL image into a ``(C, H, W)`` ``uint8`` tensor:
  channel conversion, crop, resize. It is a plain picklable object, so DataLoader
  workers can run it.
* :class:`ImageItems` wraps a data set whose items are ``(PIL image, target)`` (every
  torchvision data set) and is indexed by ``(index, augmentation_seed)`` pairs, so the
  randomness of an augmentation travels with the index instead of living in a worker's
  global RNG. A random crop is therefore the same whichever worker (or no worker) loads
  the image, and the same again after a resume.
* :class:`EpochSampler` yields those pairs in the order of epoch ``e``'s permutation,
  derived from ``(seed, e)`` exactly as :class:`~wgangp.data.base.TensorSource` does,
  starting at any offset, so a resumed stream never loads the images it skips.
* :class:`ImageSource` is the :class:`~wgangp.data.base.DataSource`: a DataLoader over
  the sampler, endless, with state ``(epoch, index)``.
* :class:`ByteTensorSource` is the ``dataset.on_device=true`` fast path: the whole set
  held once on the device as ``uint8`` (4× smaller than float) and scaled per batch.

Batches travel as ``uint8`` through workers, pinned memory and the host→device copy,
and are scaled to float32 in ``[-1, 1]`` (``x / 127.5 - 1``: 0 → -1, 255 → +1) on the
device, or in ``[0, 1]`` (``x / 255``) with ``dataset.pixel_range=[0,1]``.
``dataset.dequantize=true`` scales training batches as ``gan_cifar_resnet.py``
does instead: ``(x + u) / 128 - 1`` with ``u ~ U[0, 1)`` per value, so the critic never
sees the 256 discrete levels. The noise of a batch comes from a generator seeded with
the batch's position in the stream (seed, epoch, index, rank): it needs no state of its
own, is the same with any number of workers and again after a resume.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from wgangp.data.base import DataSource, TensorSource
from wgangp.data.pixels import SIGNED, UNIT
from wgangp.errors import DataError

log = logging.getLogger(__name__)

CROPS = ("center", "resize", "random")
MODES = {1: "L", 3: "RGB"}
_MASK64 = (1 << 64) - 1


def to_unit_range(batch: Tensor, pixels: tuple[float, float] = SIGNED) -> Tensor:
    """``uint8`` images → float32 in ``[-1, 1]`` (0 ↦ -1, 255 ↦ +1), or in ``[0, 1]``
    (``x / 255``) when ``pixels`` is :data:`~wgangp.data.pixels.UNIT`."""
    if pixels == UNIT:
        return batch.float().div_(255.0)
    return batch.float().div_(127.5).sub_(1.0)


_DEQUANTIZE_STREAM = 0x44455155  # keeps the noise seeds apart from other uses of mix_seed
_HFLIP_STREAM = 0x48464C50  # keeps the flip decisions apart from the crop positions


def dequantized(batch: Tensor, seed: int, pixels: tuple[float, float] = SIGNED) -> Tensor:
    """``uint8`` images → float32 ``(x + u) / 128 − 1`` in ``[-1, 1)``, ``u ~ U[0, 1)``
    drawn per value from a generator seeded with ``seed`` (official
    ``gan_cifar_resnet.py``: ``2·(x/256 − 0.5) + U[0, 1/128)``); ``(x + u) / 256`` in
    ``[0, 1)`` for :data:`~wgangp.data.pixels.UNIT`."""
    g = torch.Generator(device=batch.device).manual_seed(seed)
    u = torch.rand(batch.shape, generator=g, device=batch.device)
    if pixels == UNIT:
        return u.add_(batch).div_(256.0)
    return u.add_(batch).div_(128.0).sub_(1.0)


def scale_batch(
    batch: Tensor, dequantize: bool, *position: int, pixels: tuple[float, float] = SIGNED
) -> Tensor:
    """A training batch to float: dequantized with noise seeded by its stream
    ``position`` when ``dequantize``, else :func:`to_unit_range`."""
    if not dequantize:
        return to_unit_range(batch, pixels)
    return dequantized(batch, mix_seed(_DEQUANTIZE_STREAM, *position), pixels)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def mix_seed(*parts: int) -> int:
    """A well-spread 63-bit seed from integers (platform- and process-independent)."""
    h = 0
    for p in parts:
        h = _splitmix64(h ^ (p & _MASK64))
    return h >> 1


def flips(aug_seed: int) -> bool:
    """Whether ``dataset.hflip`` mirrors the item of augmentation seed ``aug_seed``
    (probability 1/2, independent of that seed's random crop)."""
    return bool(mix_seed(_HFLIP_STREAM, aug_seed) & 1)


def unflipped(items: ImageItems) -> ImageItems:
    """``items`` without ``dataset.hflip``: real images for evaluation and figures."""
    if not items.transform.hflip:
        return items
    return ImageItems(items.base, replace(items.transform, hflip=False))


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream: ``seed`` itself on rank 0 (so a
    one-process run is unchanged), a well-spread function of ``(seed, rank)`` elsewhere."""
    if rank == 0:
        return seed
    return mix_seed(seed, rank, 0x5EED) % (2**63 - 1)


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """Epoch ``epoch``'s order of ``n`` items; the same formula as TensorSource."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


@dataclass(frozen=True)
class ImageTransform:
    """PIL image → ``(channels, size, size)`` ``uint8`` tensor.

    ``crop`` policies (all end with a bicubic resize to ``size × size``, skipped when
    the image already has that size):

    * ``center``: crop the largest centred square (side = the short side), then
      resize. Keeps the aspect ratio; on CelebA's aligned 178×218 faces this is the
      usual 178×178 centre crop.
    * ``resize``: resize the whole image, ignoring its aspect ratio (no pixel lost,
      shapes stretched).
    * ``random``: crop a square of the short side at a uniformly random position,
      then resize. The position comes from the per-item augmentation seed, so it is
      reproducible given ``trainer.seed`` and changes from epoch to epoch.

    ``hflip`` (``dataset.hflip``): after cropping and resizing, mirror the image left to
    right with probability 1/2, decided by the same per-item augmentation seed (so the
    same for every worker count, and again after a resume).

    Channels: the image is first converted with PIL to ``"L"`` (1 channel; RGB uses
    ITU-R 601-2 luma) or ``"RGB"`` (3 channels; grey is replicated). Palette, alpha
    and CMYK images convert too (alpha is dropped). 16-bit grey images are clipped to
    255 by PIL's conversion: convert them to 8 bit beforehand.
    """

    size: int
    channels: int
    crop: str = "center"
    hflip: bool = False

    def __call__(self, img: Image.Image, aug_seed: int = 0) -> Tensor:
        mode = MODES[self.channels]
        if img.mode != mode:
            img = img.convert(mode)
        w, h = img.size
        if self.crop != "resize" and w != h:
            side = min(w, h)
            if self.crop == "random":
                rng = random.Random(aug_seed)
                left, top = rng.randint(0, w - side), rng.randint(0, h - side)
            else:
                left, top = (w - side) // 2, (h - side) // 2
            img = img.crop((left, top, left + side, top + side))
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.Resampling.BICUBIC)
        if self.hflip and flips(aug_seed):
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        arr = np.asarray(img, dtype=np.uint8)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class ImageItems(Dataset):
    """A data set of ``(PIL image, target)`` items, indexed by ``(index, aug_seed)``.

    Targets are dropped here; a class-conditional run reads them once from the data
    set's ``targets`` (:func:`wgangp.data.images.class_labels`). The image file (if the base data
    set opened one lazily, as CelebA does) is closed once transformed.
    """

    def __init__(self, base: Any, transform: ImageTransform) -> None:
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, item: tuple[int, int]) -> Tensor:
        index, aug_seed = item
        img = self.base[index][0]
        try:
            return self.transform(img, aug_seed)
        finally:
            img.close()


class EpochSampler(Sampler):
    """``(index, aug_seed)`` pairs of epoch ``epoch``'s permutation from position ``start``.

    ``epoch`` and ``start`` are plain attributes: the source sets them before each
    ``iter(loader)``, which also works with persistent workers because a DataLoader
    iterates its sampler in the main process.
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        self.epoch, self.start = 0, 0
        # distributed: rank ``rank`` yields the ``rank``-th ``block`` of every run of
        # ``block × world_size`` positions (its slice of each global batch)
        self.rank, self.world_size, self.block = 0, 1, 1

    def _positions(self) -> Iterator[int]:
        if self.world_size == 1:
            yield from range(self.start, self.n)
            return
        step = self.block * self.world_size
        pos = self.start
        while pos + step <= self.n:
            first = pos + self.rank * self.block
            yield from range(first, first + self.block)
            pos += step

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.n - self.start
        return (self.n - self.start) // (self.block * self.world_size) * self.block

    def __iter__(self) -> Iterator[tuple[int, int]]:
        perm = epoch_permutation(self.n, self.seed, self.epoch).tolist()
        for pos in self._positions():
            yield perm[pos], mix_seed(self.seed, self.epoch, pos)


def seed_worker(worker_id: int) -> None:
    """Seed ``random`` and NumPy in a worker from its torch seed (itself from the loader's
    seeded generator), for any third-party code that draws from them. Our own
    augmentation does not: its seeds come with the indices."""
    del worker_id
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def _check_loadable(items: ImageItems, name: str) -> None:
    """Decode the first item now, so a broken data set fails before training starts."""
    try:
        items[(0, 0)]
    except DataError:
        raise
    except Exception as e:  # a file the data set lists but cannot decode, etc.
        raise DataError(f"{name}: cannot load its first image: {type(e).__name__}: {e}") from e


def load_items(
    items: ImageItems, pairs: list[tuple[int, int]], num_workers: int, batch: int = 256
) -> Tensor:
    """The images of ``pairs`` as one ``(len(pairs), C, H, W)`` ``uint8`` CPU tensor."""
    if not pairs:
        return torch.empty(0, dtype=torch.uint8)
    if num_workers == 0 or len(pairs) <= batch:
        return torch.stack([items[p] for p in pairs])
    loader = DataLoader(
        items,
        batch_size=batch,
        sampler=pairs,  # type: ignore[arg-type]
        num_workers=num_workers,
        worker_init_fn=seed_worker,
    )
    return torch.cat(list(loader))


class ImageSource(DataSource):
    """Endless, resumable batches of images from a map-style data set via a DataLoader.

    State: ``epoch`` and ``index``, the position in that epoch's permutation of the
    next batch's first image (a sample offset, like TensorSource, so it stays valid if
    the batch size changes on resume). Incomplete last batches are dropped. Workers
    are persistent: one pool serves every epoch.
    """

    def __init__(
        self,
        items: ImageItems,
        batch_size: int,
        device: torch.device,
        seed: int,
        num_workers: int = 0,
        name: str = "data",
        dequantize: bool = False,
        pixels: tuple[float, float] = SIGNED,
        labels: Tensor | None = None,
        num_classes: int | None = None,
    ) -> None:
        n = len(items)
        if n < batch_size:
            raise DataError(
                f"{name} has {n} images, fewer than one batch "
                f"(trainer.batch_size={batch_size}); lower trainer.batch_size or add images"
            )
        self.items, self.name = items, name
        self.batch_size, self.device, self.seed = batch_size, device, seed
        self.num_workers, self.dequantize = num_workers, dequantize
        self.pixels = pixels
        # class labels of every item (read from the data set's targets, no image decoded);
        # a batch's labels follow from its position in the epoch's permutation
        self.labels = labels
        self.num_classes = num_classes if labels is not None else None
        self._perm_cache: tuple[int, Tensor] | None = None
        self.sample_shape = (items.transform.channels, items.transform.size, items.transform.size)
        self.epoch, self.index = 0, 0
        self._pin = device.type == "cuda"
        self._sampler = EpochSampler(n, seed)
        self._loader: DataLoader | None = None
        self._iter: Iterator[Tensor] | None = None
        _check_loadable(items, name)

    def describe(self) -> str:
        return f"{self.name}: {len(self.items)} images of shape {self.sample_shape}"

    def _make_loader(self) -> DataLoader:
        workers = self.num_workers
        return DataLoader(
            self.items,
            batch_size=self.batch_size,
            sampler=self._sampler,
            num_workers=workers,
            pin_memory=self._pin,
            drop_last=True,
            worker_init_fn=seed_worker if workers else None,
            generator=torch.Generator().manual_seed(self.seed),
            persistent_workers=workers > 0,
            prefetch_factor=2 if workers else None,
        )

    def shard(self, rank: int, world_size: int) -> None:
        """Rank ``rank`` loads its ``batch_size`` slice of every global batch of the
        shared epoch permutation (a DistributedSampler that stays resumable: ``index``
        counts global positions, so the state is the same on every rank)."""
        if len(self.items) < self.batch_size * world_size:
            raise DataError(
                f"{self.name} has {len(self.items)} images, fewer than one global batch "
                f"(trainer.batch_size={self.batch_size} × {world_size} ranks)"
            )
        s = self._sampler
        s.rank, s.world_size, s.block = rank, world_size, self.batch_size
        self._iter = None

    def _start(self) -> Iterator[Tensor]:
        if self.index + self.batch_size * self._sampler.world_size > len(self.items):
            self.epoch, self.index = self.epoch + 1, 0
        self._sampler.epoch, self._sampler.start = self.epoch, self.index
        if self._loader is None:
            self._loader = self._make_loader()
        return iter(self._loader)

    def next_batch(self) -> Tensor:
        return self._next()[0]

    def next_labeled_batch(self) -> tuple[Tensor, Tensor]:
        if self.labels is None:
            return super().next_labeled_batch()
        batch, epoch, start = self._next()
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (epoch, epoch_permutation(len(self.items), self.seed, epoch))
        # the rows EpochSampler gave this rank: its batch_size slice of the global batch
        first = start + self._sampler.rank * self.batch_size
        idx = self._perm_cache[1][first : first + self.batch_size]
        return batch, self.labels[idx].to(self.device, non_blocking=self._pin)

    def _next(self) -> tuple[Tensor, int, int]:
        """The next batch on the device, with its epoch and global start position."""
        if self._iter is None:
            self._iter = self._start()
        batch = next(self._iter, None)
        if batch is None:  # epoch exhausted: the next starts at its beginning
            self.epoch, self.index = self.epoch + 1, 0
            self._iter = self._start()
            batch = next(self._iter)
        start = self.index
        self.index += self.batch_size * self._sampler.world_size
        batch = batch.to(self.device, non_blocking=self._pin)
        scaled = scale_batch(
            batch,
            self.dequantize,
            self.seed,
            self.epoch,
            start,
            self._sampler.rank,
            pixels=self.pixels,
        )
        return scaled, self.epoch, start

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` images (without replacement when ``n`` ≤ the set's size), loaded apart
        from the training stream, whose position they leave unchanged; never mirrored by
        ``dataset.hflip``."""
        total = len(self.items)
        dev = generator.device if generator is not None else torch.device("cpu")
        if n <= total:
            idx = torch.randperm(total, generator=generator, device=dev)[:n]
        else:
            idx = torch.randint(0, total, (n,), generator=generator, device=dev)
        seeds = torch.randint(0, 2**62, (n,), generator=generator, device=dev)
        pairs = list(zip(idx.tolist(), seeds.tolist(), strict=True))
        # training-only augmentation (like dequantize): the real images stay unflipped
        batch = load_items(unflipped(self.items), pairs, self.num_workers).to(self.device)
        return to_unit_range(batch, self.pixels)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._iter = None  # the next batch restarts the sampler at (epoch, index)


class ByteTensorSource(TensorSource):
    """TensorSource over ``uint8`` images held on the device, scaled per batch."""

    dequantize = False
    pixels = SIGNED

    def next_batch(self) -> Tensor:
        return self._scaled(super().next_batch())

    def _scaled(self, batch: Tensor) -> Tensor:
        start = self.index - self.batch_size * self.world_size  # this batch's position
        return scale_batch(
            batch, self.dequantize, self.seed, self.epoch, start, self.rank, pixels=self.pixels
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return to_unit_range(super().sample(n, generator), self.pixels)


def load_on_device(
    items: ImageItems,
    batch_size: int,
    device: torch.device,
    seed: int,
    num_workers: int,
    name: str,
    dequantize: bool = False,
    pixels: tuple[float, float] = SIGNED,
    labels: Tensor | None = None,
    num_classes: int | None = None,
) -> ByteTensorSource:
    """Decode the whole set once (fixed crops) into a ``uint8`` tensor on ``device``."""
    n = len(items)
    c, s = items.transform.channels, items.transform.size
    need = n * c * s * s
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        if need > 0.8 * free:
            raise DataError(
                f"{name}: dataset.on_device=true needs {need / 2**30:.1f} GiB on {device} "
                f"but only {free / 2**30:.1f} GiB is free; set dataset.on_device=false"
            )
    log.info("loading %d images (%.1f MiB) of %s onto %s", n, need / 2**20, name, device)
    if n < batch_size:  # fail before decoding everything
        raise DataError(
            f"{name} has {n} images, fewer than one batch "
            f"(trainer.batch_size={batch_size}); lower trainer.batch_size or add images"
        )
    data = load_items(items, [(i, 0) for i in range(n)], num_workers).to(device)
    source = ByteTensorSource(
        data, batch_size, seed, name=name, labels=labels, num_classes=num_classes
    )
    source.dequantize = dequantize
    source.pixels = pixels
    return source
