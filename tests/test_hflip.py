"""``dataset.hflip``: left-right mirroring of training images, seeded per item."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.test_image_data import make_cfg, take, write_image_folder
from wgangp.config.compose import dataset_schema
from wgangp.data import build_data
from wgangp.data.image_source import epoch_permutation
from wgangp.errors import ConfigError

CPU = torch.device("cpu")
N = 10  # images write_image_folder writes


def flip_masks(root: Path, seed: int, epochs: int) -> list[torch.Tensor]:
    """Per epoch, which sample indices hflip=true mirrored (by comparison with hflip=false)."""
    plain = take(build_data(make_cfg("image_folder", root, image_size=16), N, CPU, seed), epochs)
    cfg = make_cfg("image_folder", root, image_size=16, hflip=True)
    flipped = take(build_data(cfg, N, CPU, seed), epochs)
    masks = []
    for e, (p, f) in enumerate(zip(plain, flipped, strict=True)):
        same = (p == f).flatten(1).all(1)
        mirrored = (p.flip(-1) == f).flatten(1).all(1)
        assert bool((same ^ mirrored).all())  # each image: exactly as is, or its mirror
        by_index = torch.zeros(N, dtype=torch.bool)
        by_index[epoch_permutation(N, seed, e)] = mirrored
        masks.append(by_index)
    return masks


def test_about_half_mirrored_per_index_and_epoch(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    masks = flip_masks(tmp_path, seed=3, epochs=6)
    total = int(torch.stack(masks).sum())
    assert 15 <= total <= 45  # of 60, p = 1/2
    assert any(not torch.equal(masks[0], m) for m in masks[1:])  # new decisions each epoch
    assert all(torch.equal(a, b) for a, b in zip(masks, flip_masks(tmp_path, 3, 6), strict=True))


def test_workers_give_identical_flips(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    runs = []
    for workers in (0, 2):
        cfg = make_cfg(
            "image_folder", tmp_path, num_workers=workers, image_size=8, crop="random", hflip=True
        )
        runs.append(torch.cat(take(build_data(cfg, 4, CPU, seed=5), 5)))  # two epochs
    assert torch.equal(runs[0], runs[1])


def test_resume_mid_epoch_replays_the_flips(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    cfg = make_cfg("image_folder", tmp_path, image_size=8, hflip=True)
    run = build_data(cfg, 3, CPU, seed=7)
    take(run, 2)
    state = run.state_dict()
    assert state == {"epoch": 0, "index": 6}
    rest = take(run, 7)  # crosses epoch boundaries
    resumed = build_data(cfg, 3, CPU, seed=7)
    resumed.load_state_dict(state)
    for a, b in zip(rest, take(resumed, 7), strict=True):
        assert torch.equal(a, b)


def test_hflip_false_is_the_stream_without_the_key(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    node = OmegaConf.to_container(make_cfg("image_folder", tmp_path, image_size=8, crop="random"))
    assert isinstance(node, dict)
    del node["hflip"]
    cfg = OmegaConf.create(node)  # a config as it was before the key existed
    without = take(build_data(cfg, 4, CPU, seed=2), 5)
    off = make_cfg("image_folder", tmp_path, image_size=8, crop="random", hflip=False)
    for a, b in zip(without, take(build_data(off, 4, CPU, seed=2), 5), strict=True):
        assert torch.equal(a, b)


def test_real_samples_stay_unflipped(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    draws = []
    for hflip in (False, True):
        cfg = make_cfg("image_folder", tmp_path, image_size=8, hflip=hflip)
        src = build_data(cfg, 4, CPU, seed=1)
        draws.append(src.sample(N, generator=torch.Generator().manual_seed(0)))
    assert torch.equal(draws[0], draws[1])


def test_on_device_refuses_hflip(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    cfg = make_cfg("image_folder", tmp_path, image_size=8, hflip=True, on_device=True)
    with pytest.raises(ConfigError, match=r"dataset\.hflip"):
        build_data(cfg, 4, CPU, seed=0)


def test_mnist_pkl_has_no_hflip_key() -> None:
    assert "hflip" in dataset_schema("image_folder").__dataclass_fields__
    assert "hflip" not in dataset_schema("mnist_pkl").__dataclass_fields__
