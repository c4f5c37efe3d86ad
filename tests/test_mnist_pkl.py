"""dataset=mnist_pkl: the official gan_mnist.py's mnist.pkl.gz (tflib/mnist.py), read
exactly as stored, through an unpickler that builds arrays and nothing else."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import compose_cfg, serve_directory
from wgangp.config.validate import validate
from wgangp.data import build_data
from wgangp.data import mnist_pkl as mnist_pkl_lib
from wgangp.errors import ConfigError, DataError
from wgangp.train.trainer import Trainer

CPU = torch.device("cpu")
SIZES = {"train": 60, "dev": 20, "test": 30}


def write_pkl(root: Path, protocol: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """A mnist.pkl.gz of the LISA layout: ((x, y) train, dev, test), x float32 k/256."""
    rng = np.random.default_rng(0)
    parts = {}
    for split, n in SIZES.items():
        x = (rng.integers(0, 256, (n, 784)) / 256).astype(np.float32)
        parts[split] = (x, rng.integers(0, 10, n).astype(np.int64))
    root.mkdir(parents=True, exist_ok=True)
    with gzip.open(root / "mnist.pkl.gz", "wb") as f:
        pickle.dump(tuple(parts[s] for s in ("train", "dev", "test")), f, protocol=protocol)
    return parts


def cfg_for(root: Path, *extra: str):
    return compose_cfg("dataset=mnist_pkl", f"dataset.root={root}", *extra)


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_each_split_is_read_as_stored(tmp_path, split):
    parts = write_pkl(tmp_path)
    src = build_data(cfg_for(tmp_path, f"dataset.split={split}").dataset, 10, CPU, seed=0)
    x, y = parts[split]
    assert src.data.shape == (SIZES[split], 1, 28, 28) and src.sample_shape == (1, 28, 28)
    assert torch.equal(src.data.view(-1, 784), torch.from_numpy(x))  # [0, 1], unchanged
    assert torch.equal(src.labels, torch.from_numpy(y)) and src.num_classes == 10
    batch, labels = src.next_labeled_batch()
    rows = [int(np.flatnonzero((x == b.view(-1).numpy()).all(1))[0]) for b in batch]
    assert labels.tolist() == y[rows].tolist()


def test_signed_pixels(tmp_path):
    parts = write_pkl(tmp_path, protocol=4)
    src = build_data(cfg_for(tmp_path, "dataset.pixel_range=[-1,1]").dataset, 10, CPU, 0)
    torch.testing.assert_close(src.data.view(-1, 784), torch.from_numpy(parts["train"][0]) * 2 - 1)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(((Evil(), None), None, None), f, protocol=2)
    with pytest.raises(DataError, match="print is not part of an array pickle"):
        build_data(cfg_for(tmp_path).dataset, 10, CPU, 0)


def test_missing_damaged_and_wrong_files(tmp_path):
    with pytest.raises(DataError, match="expected root/mnist.pkl.gz .* dataset.download=true"):
        build_data(cfg_for(tmp_path).dataset, 10, CPU, 0)
    (tmp_path / "mnist.pkl.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read .* delete it and set dataset.download=true"):
        build_data(cfg_for(tmp_path).dataset, 10, CPU, 0)
    with gzip.open(tmp_path / "mnist.pkl.gz", "wb") as f:
        pickle.dump(((np.zeros((5, 10), np.float32), np.zeros(5)),) * 3, f, protocol=2)
    with pytest.raises(DataError, match=r"holds images \(5, 10\)"):
        build_data(cfg_for(tmp_path).dataset, 2, CPU, 0)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("dataset.image_size=32", "dataset.image_size"),
        ("dataset.channels=3", "dataset.channels"),
        ("dataset.split=valid", "dataset.split"),
        ("dataset.dequantize=true", "dataset.dequantize"),
    ],
)
def test_what_the_file_cannot_honour_is_refused(tmp_path, override, key):
    write_pkl(tmp_path)
    with pytest.raises(ConfigError) as e:
        build_data(cfg_for(tmp_path, override).dataset, 10, CPU, 0)
    assert e.value.key == key


def test_download(tmp_path, monkeypatch):
    served = tmp_path / "served"
    write_pkl(served)
    with serve_directory(served) as url:
        monkeypatch.setattr(mnist_pkl_lib, "URL", f"{url}/mnist.pkl.gz")
        src = build_data(cfg_for(tmp_path / "data", "dataset.download=true").dataset, 10, CPU, 0)
        assert src.data.shape[0] == SIZES["train"]
        monkeypatch.setattr(mnist_pkl_lib, "URL", f"{url}/none.gz")
        with pytest.raises(DataError, match="none.gz into .* failed"):
            build_data(cfg_for(tmp_path / "d2", "dataset.download=true").dataset, 10, CPU, 0)


def test_the_official_mnist_run_on_its_own_file(tmp_path):
    """experiment=mnist_paper dataset=mnist_pkl: gan_mnist.py's model on its data, and
    class-conditional training (the file has labels)."""
    write_pkl(tmp_path)
    for extra in ([], ["conditional.enabled=true", "generator.input_norm=channel"]):
        cfg = compose_cfg(
            "experiment=mnist_paper",
            "dataset=mnist_pkl",
            f"dataset.root={tmp_path}",
            "critic.dim=8",
            "generator.dim=8",
            "trainer.batch_size=10",
            "trainer.steps=2",
            "trainer.progress=false",
            "trainer.sample_every=0",
            *extra,
            *(["generator.norm=batchnorm"] if extra else []),
        )
        assert cfg.dataset.name == "mnist_pkl" and cfg.dataset.image_size == 28
        t = Trainer(cfg, tmp_path / f"run{len(extra)}", validate(cfg))
        t.fit()
        assert t.step == 2
