"""The interface the trainer draws real batches from, and a resumable tensor sampler."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from wgangp.data.standardize import Standardization
from wgangp.errors import ConfigError, DataError

#: ``dataset.subset`` is drawn from this seed, not ``trainer.seed``: runs that differ in
#: their seed train on the same samples
SUBSET_SEED = 0


def subset_indices(n: int, k: int | None, name: str) -> Tensor | None:
    """The ``k`` of a split's ``n`` samples that ``dataset.subset=k`` keeps (a random
    choice, the same for every run, in stored order); None (``k`` None): all of them."""
    if k is None:
        return None
    if not 1 <= k <= n:
        raise ConfigError(
            "dataset.subset",
            k,
            f"1 … {n}, the samples of {name}",
            "null trains on all of them",
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SUBSET_SEED))
    return perm[:k].sort().values


def left_out(n: int, keep: Tensor) -> Tensor:
    """The indices of ``range(n)`` not in ``keep`` (a subset's held-out rest), in order."""
    mask = torch.ones(n, dtype=torch.bool)
    mask[keep] = False
    return mask.nonzero().flatten()


class DataSource(ABC):
    """An endless stream of real batches on the training device.

    ``state_dict``/``load_state_dict`` capture the position in the stream so that a
    resumed run draws exactly the batches an uninterrupted run would have drawn.
    """

    #: shape of one sample: ``(D,)`` for points, ``(C, H, W)`` for images
    sample_shape: tuple[int, ...]
    #: known mode centres ``(K, D)`` and their std (points data sets), for metrics, in
    #: the data's units
    modes: Tensor | None = None
    mode_std: float | None = None
    #: points data: the map between the data's units and the networks' coordinates,
    #: in which the batches come (:mod:`wgangp.data.standardize`); None for images and text
    standardization: Standardization | None = None
    #: classes of a labelled set (mnist, fashion_mnist, cifar10, a folder of class
    #: folders); None: no labels, for the reason ``label_problem`` gives if it is set
    num_classes: int | None = None
    label_problem: str | None = None
    #: ``dataset.subset``: builds a source of the split's samples left out of it
    rest_of_split: Callable[[], DataSource] | None = None
    #: stacked_mnist: its MNIST digits and labels (:class:`wgangp.data.stacked_mnist.
    #: MnistDigits`), which its mode metrics train their digit classifier on
    mnist_digits: Any = None

    @abstractmethod
    def next_batch(self) -> Tensor:
        """A fresh ``(batch_size, *sample_shape)`` float batch on the device."""

    def next_labeled_batch(self) -> tuple[Tensor, Tensor]:
        """The next batch (as :meth:`next_batch`) and its class labels, ``int64`` on the
        device; only for sources with ``num_classes`` (class-conditional training)."""
        raise DataError(f"{self.describe()} has no class labels")

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` real samples for evaluation, independent of the training stream."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state

    def unseen(self) -> DataSource | None:
        """A source of real samples training never reads, for held-out measurements: a
        toy distribution's fresh draws, the rest of a split after ``dataset.subset``;
        None for a whole stored split (use another split)."""
        return None if self.rest_of_split is None else self.rest_of_split()

    def describe(self) -> str:
        return f"{type(self).__name__}{self.sample_shape}"

    def shard(self, rank: int, world_size: int) -> None:
        """Make this the stream of rank ``rank`` of ``world_size`` (distributed training).

        Each rank then draws ``batch_size`` samples per batch and the global batch is
        ``batch_size × world_size``. A source must override this to be usable under
        torchrun: generated data reseeds per rank, stored data splits each global batch.
        """
        if world_size > 1:
            raise DataError(f"{type(self).__name__} cannot be split across {world_size} ranks")


class TensorSource(DataSource):
    """Batches drawn without replacement from a tensor held on the device.

    Each epoch is a fresh permutation seeded by ``(seed, epoch)`` (with ``reshuffle``
    false, every epoch repeats epoch 0's), and incomplete last batches are dropped, so
    the position ``(epoch, index)`` is the whole state.
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        seed: int,
        name: str = "data",
        reshuffle: bool = True,
        labels: Tensor | None = None,
        num_classes: int | None = None,
    ) -> None:
        if data.shape[0] < batch_size:
            raise DataError(
                f"{name} has {data.shape[0]} samples, fewer than one batch "
                f"(trainer.batch_size={batch_size}); lower trainer.batch_size or add data"
            )
        self.data = data
        self.sample_shape = tuple(data.shape[1:])
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.index = 0
        self.reshuffle = reshuffle
        self._perm = self._permutation(0)
        self.rank, self.world_size = 0, 1
        self.name = name
        # class labels, indexed like ``data`` (on its device)
        self.labels = None if labels is None else labels.to(data.device, torch.int64)
        self.num_classes = num_classes if labels is not None else None

    def shard(self, rank: int, world_size: int) -> None:
        """Rank ``rank`` takes the ``rank``-th ``batch_size`` slice of every global batch
        of the shared permutation; ``index`` counts global positions, so the state is
        the same on every rank."""
        if self.data.shape[0] < self.batch_size * world_size:
            raise DataError(
                f"{self.name} has {self.data.shape[0]} samples, fewer than one global batch "
                f"(trainer.batch_size={self.batch_size} × {world_size} ranks)"
            )
        self.rank, self.world_size = rank, world_size

    def _permutation(self, epoch: int) -> Tensor:
        if not self.reshuffle:
            epoch = 0
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.data.shape[0], generator=g).to(self.data.device)

    def _next_indices(self) -> Tensor:
        """The next batch's rows of ``data``; advances the position."""
        step = self.batch_size * self.world_size
        if self.index + step > self.data.shape[0]:
            self.epoch += 1
            self.index = 0
            self._perm = self._permutation(self.epoch)
        start = self.index + self.rank * self.batch_size
        idx = self._perm[start : start + self.batch_size]
        self.index += step
        return idx

    def next_batch(self) -> Tensor:
        return self.data[self._next_indices()]

    def next_labeled_batch(self) -> tuple[Tensor, Tensor]:
        if self.labels is None:
            return super().next_labeled_batch()
        idx = self._next_indices()
        return self._scaled(self.data[idx]), self.labels[idx]

    def _scaled(self, batch: Tensor) -> Tensor:
        """``next_batch``'s conversion of stored rows (none here; subclasses scale)."""
        return batch

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        idx = torch.randint(0, self.data.shape[0], (n,), generator=generator)
        return self.data[idx.to(self.data.device)]

    def describe(self) -> str:
        return f"{self.name}: {self.data.shape[0]} samples of shape {self.sample_shape}"

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._perm = self._permutation(self.epoch)
