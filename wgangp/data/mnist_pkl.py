"""``mnist_pkl``: the MNIST file the official ``gan_mnist.py`` reads, ``mnist.pkl.gz``.

``tflib/mnist.py`` loads the LISA lab's pickle (the Theano tutorials' split): 50 000
training digits, 10 000 ``dev`` (validation) and 10 000 ``test``, each a float32
``(N, 784)`` array already in ``[0, 1]`` and an int label vector. ``dataset=mnist``
reads torchvision's 60 000 training digits instead; this reads the script's own data,
unchanged: ``dataset.split=train|dev|test``, 28×28, one channel, ``[0, 1]`` as stored
(``dataset.pixel_range=[-1,1]``: ``2x − 1``). It has class labels (conditional training).

``dataset.root`` is the folder holding ``mnist.pkl.gz`` (the script kept it in
``/tmp``); ``dataset.download=true`` fetches it from the LISA URL. The pickle is read
with an unpickler that builds numpy arrays and nothing else, so a tampered file cannot
run code.
"""

from __future__ import annotations

import gzip
import io
import pickle
from typing import Any

import numpy as np
import torch

from wgangp.data.base import DataSource, TensorSource, left_out, subset_indices
from wgangp.data.pixels import UNIT, pixel_range
from wgangp.data.registry import register_dataset
from wgangp.errors import ConfigError, DataError
from wgangp.io.paths import expand_path

FILE = "mnist.pkl.gz"
URL = "http://www.iro.umontreal.ca/~lisa/deep/data/mnist/mnist.pkl.gz"
SPLITS = ("train", "dev", "test")

#: the globals an array pickle needs (numpy 1 and 2 module names; ``_codecs.encode``
#: rebuilds the bytes of a protocol-2 pickle written by Python 3)
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, tuples, lists and numbers; refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: ANN401
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of an array pickle")


def read_split(path: Any, split: str) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN401
    """``(images (N, 784) float32, labels (N,) int64)`` of ``split`` in ``path``."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
        # Python 2's pickle: its byte strings are latin-1
        parts = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
        images, labels = parts[SPLITS.index(split)]
        images = np.asarray(images, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError) as e:
        raise DataError(
            f"mnist_pkl: cannot read {path} as the LISA mnist.pkl.gz (a gzipped pickle of "
            f"(train, dev, test) image/label arrays): {type(e).__name__}: {e}. Fix: delete "
            f"it and set dataset.download=true, or point dataset.root= to an intact copy"
        ) from None
    if (
        images.ndim != 2
        or images.shape[1] != 784
        or labels.shape != (images.shape[0],)
        or (labels.size and not 0 <= labels.min() <= labels.max() <= 9)
    ):
        raise DataError(
            f"mnist_pkl: {path} split {split!r} holds images {images.shape} and labels "
            f"{labels.shape}, not (N, 784) and (N,) digits 0-9"
        )
    return images, labels


def _download(root: Any) -> None:  # noqa: ANN401
    from torchvision.datasets.utils import download_url

    try:
        download_url(URL, str(root), filename=FILE)
    except Exception as e:  # offline, refused, disk full
        raise DataError(
            f"mnist_pkl: download of {URL} into dataset.root={str(root)!r} failed: "
            f"{type(e).__name__}: {e}. Fix: download it where there is a network and put "
            f"it in dataset.root"
        ) from None


def validate_mnist_pkl_config(cfg: Any) -> None:  # noqa: ANN401
    """The keys a file of 28×28 grey floats can honour, before anything is read."""
    if cfg.split not in SPLITS:
        raise ConfigError("dataset.split", cfg.split, f"for mnist_pkl: {' | '.join(SPLITS)}")
    fix = "mnist_pkl is the official script's 28×28 digits as stored; dataset=mnist resizes"
    if cfg.image_size != 28:
        raise ConfigError("dataset.image_size", cfg.image_size, "28 for mnist_pkl", fix)
    if cfg.channels != 1:
        raise ConfigError("dataset.channels", cfg.channels, "1 for mnist_pkl", fix)
    if cfg.dequantize:
        raise ConfigError(
            "dataset.dequantize",
            True,
            "false for mnist_pkl",
            "its pixels are stored as floats already; dequantize adds noise to 8-bit values",
        )
    pixel_range(cfg)  # [-1, 1] or [0, 1], else a ConfigError naming the key


@register_dataset("mnist_pkl")
def build_mnist_pkl(cfg: Any, batch_size: int, device: torch.device, seed: int) -> DataSource:  # noqa: ANN401
    validate_mnist_pkl_config(cfg)
    root = expand_path(str(cfg.root))
    path = root / FILE
    if not path.is_file():
        if not cfg.download:
            raise DataError(
                f"mnist_pkl: data set not found: expected root/{FILE} under "
                f"dataset.root={str(cfg.root)!r} ({root.resolve()}). Fix: set "
                f"dataset.download=true to download it, or point dataset.root= to the "
                f"folder that holds {FILE}"
            )
        _download(root)
    images, labels = read_split(path, cfg.split)
    signed = pixel_range(cfg) != UNIT

    def source(idx: np.ndarray | None, batch: int, name: str) -> TensorSource:
        x, y = (images, labels) if idx is None else (images[idx], labels[idx])
        x = torch.from_numpy(x).view(-1, 1, 28, 28)
        x = x * 2 - 1 if signed else x
        y = torch.from_numpy(y)
        return TensorSource(x.to(device), batch, seed, name=name, labels=y, num_classes=10)

    name = f"mnist_pkl ({cfg.split})"
    keep = subset_indices(len(images), cfg.get("subset"), name)
    if keep is None:
        return source(None, batch_size, name)
    src = source(keep.numpy(), batch_size, name)
    if len(keep) < len(images):
        rest = left_out(len(images), keep).numpy()
        src.rest_of_split = lambda: source(
            rest, 1, f"mnist_pkl ({cfg.split}, outside dataset.subset)"
        )
    return src
