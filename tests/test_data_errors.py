"""Bad data: points files with NaN or the wrong shape, image folders with mixed modes,
sizes and junk, data sets smaller than one batch — a clean DataError or a working set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import compose_cfg
from wgangp.data import build_data
from wgangp.errors import ConfigError, DataError

CPU = torch.device("cpu")


def points(path: Path, batch: int = 4, *extra: str):
    cfg = compose_cfg("dataset=points", f"dataset.path={path}", *extra)
    return build_data(cfg.dataset, batch, CPU, 0)


@pytest.mark.parametrize(
    "name,content,message",
    [
        ("nan.npy", np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, np.inf]]), "2 rows hold NaN or Inf"),
        ("flat.npy", np.zeros(10), "expected an N×D array of points, got shape (10,)"),
        ("cube.npy", np.zeros((4, 2, 2)), "got shape (4, 2, 2)"),
        ("empty.npy", np.zeros((0, 2)), "got shape (0, 2)"),
        ("ragged.csv", "1,2\n3\n", "cannot read an N×D array"),
        ("words.csv", "x,y\na,b\n", "cannot read an N×D array"),
        ("nan.csv", "x,y\n1,2\nnan,3\n", "1 rows hold NaN or Inf"),
        ("p.json", "[[1,2]]", "unsupported file type '.json' (allowed: .npy, .csv)"),
        ("pickled.npy", np.array([{"a": 1}], dtype=object), "cannot read an N×D array"),
    ],
)
def test_bad_points_files_are_named_with_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, content, allow_pickle=True)
    with pytest.raises(DataError) as e:
        points(path)
    assert str(e.value).startswith(f"dataset.path={str(path)!r}: "), str(e.value)
    assert message in str(e.value)


def test_missing_points_file_and_smaller_than_one_batch(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        points(tmp_path / "nope.npy")
    np.save(tmp_path / "few.npy", np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"has 3 samples, fewer than one batch \(trainer.batch"):
        points(tmp_path / "few.npy", 4)


def test_points_modes_of_the_wrong_dimension(tmp_path):
    np.save(tmp_path / "p.npy", np.zeros((8, 2)))
    with pytest.raises(ConfigError, match="invalid value for dataset.modes"):
        points(tmp_path / "p.npy", 4, "dataset.modes=[[1,2,3]]", "dataset.mode_std=0.1")


def folder(root: Path, *extra: str, batch: int = 4):
    cfg = compose_cfg(
        "dataset=image_folder",
        f"dataset.root={root}",
        "dataset.num_workers=0",
        "dataset.image_size=8",
        *extra,
    )
    return build_data(cfg.dataset, batch, CPU, 0)


def test_image_folder_with_mixed_modes_and_sizes_and_junk_trains(tmp_path, caplog):
    rng = np.random.default_rng(0)
    for i, (mode, size) in enumerate(
        [
            ("L", (9, 13)),
            ("RGBA", (20, 10)),
            ("P", (8, 8)),
            ("RGB", (31, 17)),
            ("CMYK", (12, 12)),
            ("I;16", (10, 10)),
            ("1", (11, 11)),
        ]
    ):
        arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        ext = "tif" if mode in ("CMYK", "I;16") else "png"
        Image.fromarray(arr).convert(mode).save(tmp_path / f"img{i}.{ext}")
    (tmp_path / "notes.png").write_text("not an image")
    (tmp_path / "readme.txt").write_text("ignored: not an image extension")
    for channels in (1, 3):
        data = folder(tmp_path, f"dataset.channels={channels}")
        batch = data.next_batch()
        assert batch.shape == (4, channels, 8, 8) and batch.dtype == torch.float32
        assert batch.min() >= -1 and batch.max() <= 1 and torch.isfinite(batch).all()
    assert "1 of 8 image files" in caplog.text and "notes.png" in caplog.text


def test_image_folder_missing_empty_only_junk_or_too_small(tmp_path):
    with pytest.raises(DataError, match="is not a directory"):
        folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files under"):
        folder(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="none is usable"):
        folder(tmp_path / "junk")
    (tmp_path / "two").mkdir()
    for i in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / "two" / f"{i}.png")
    with pytest.raises(DataError, match="has 2 images, fewer than one batch"):
        folder(tmp_path / "two")
    with pytest.raises(DataError, match="has 2 images, fewer than one batch"):
        folder(tmp_path / "two", "dataset.on_device=true")
