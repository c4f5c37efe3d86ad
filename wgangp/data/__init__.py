"""Data sets by name: ``build_data(cfg.dataset, ...)`` returns a :class:`DataSource`."""

from __future__ import annotations

# the image, pickled-MNIST, stacked-MNIST and text modules register their data sets on import
from wgangp.data import images, mnist_pkl, stacked_mnist, text  # noqa: F401
from wgangp.data.base import DataSource, TensorSource
from wgangp.data.registry import DATASETS, build_data, register_dataset

__all__ = ["DATASETS", "DataSource", "TensorSource", "build_data", "register_dataset"]
