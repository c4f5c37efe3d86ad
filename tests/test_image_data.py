"""Image data sets: tiny copies written here in torchvision's exact on-disk layouts."""

from __future__ import annotations

import logging
import os
import pickle
import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from wgangp.config.compose import config_dir, config_groups, dataset_schema
from wgangp.config.overrides import check_value_overrides
from wgangp.data import DATASETS, build_data
from wgangp.data.base import TensorSource
from wgangp.data.image_source import ImageSource
from wgangp.errors import ConfigError, DataError

CPU = torch.device("cpu")
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "dataset"
IMAGE_SETS = ("mnist", "fashion_mnist", "cifar10", "celeba", "lsun", "image_folder")


def make_cfg(name: str, root: Path, **over: Any) -> Any:
    """The schema merged with ``configs/dataset/<name>.yaml``, then overrides."""
    return OmegaConf.merge(dataset_node(name), {"root": str(root), "num_workers": 0, **over})


def dataset_node(name: str) -> Any:
    """The ``dataset`` node of ``configs/dataset/<name>.yaml`` (a global-package file)."""
    return OmegaConf.merge(
        OmegaConf.structured(dataset_schema(name)),
        OmegaConf.load(CONFIGS / f"{name}.yaml").dataset,
    )


def two_tone(h: int, w: int, channels: int = 0) -> np.ndarray:
    """Left half black, right half white: both ends of the [-1, 1] range."""
    a = np.zeros((h, w) if channels == 0 else (h, w, channels), dtype=np.uint8)
    a[:, w // 2 :] = 255
    return a


def distinct_images(n: int, h: int, w: int, channels: int = 0, seed: int = 0) -> np.ndarray:
    """``n`` random images, the first of them two-tone."""
    rng = np.random.default_rng(seed)
    shape = (n, h, w) if channels == 0 else (n, h, w, channels)
    imgs = rng.integers(0, 256, size=shape, dtype=np.uint8)
    imgs[0] = two_tone(h, w, channels)
    return imgs


# --------------------------------------------------------------------------- writers


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 12, n_test: int = 4) -> None:
    """idx files (magic 2051 images / 2049 labels, big-endian), uncompressed."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        imgs = distinct_images(n, 28, 28, seed=n)
        (raw / f"{part}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + imgs.tobytes()
        )
        (raw / f"{part}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, n) + bytes(i % 10 for i in range(n))
        )


def write_cifar10(root: Path, per_batch: int = 4) -> None:
    """Five training batches, a test batch and batches.meta, pickled as torchvision reads them."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    every = distinct_images(per_batch * len(names), 32, 32, 3)  # N×H×W×C
    for i, name in enumerate(names):
        imgs = every[i * per_batch : (i + 1) * per_batch]
        data = imgs.transpose(0, 3, 1, 2).reshape(per_batch, 3072)  # rows: R plane, G, B
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": [0] * per_batch}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def write_celeba(root: Path, n: int = 10, n_valid: int = 2) -> None:
    """Aligned 178×218 JPEGs and the five text files (torchvision's formats)."""
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    imgs = distinct_images(n, 218, 178, 3)
    for name, img in zip(names, imgs, strict=True):
        Image.fromarray(img).save(base / "img_align_celeba" / name, quality=95)
    splits = [0] * (n - n_valid) + [1] * n_valid
    (base / "list_eval_partition.txt").write_text(
        "".join(f"{f} {s}\n" for f, s in zip(names, splits, strict=True))
    )
    (base / "identity_CelebA.txt").write_text("".join(f"{f} {i}\n" for i, f in enumerate(names)))
    (base / "list_attr_celeba.txt").write_text(
        f"{n}\nSmiling Young \n" + "".join(f"{f}  1 -1\n" for f in names)
    )
    (base / "list_bbox_celeba.txt").write_text(
        f"{n}\nimage_id x_1 y_1 width height\n" + "".join(f"{f} 1 2 3 4\n" for f in names)
    )
    marks = " ".join(f"p{i}" for i in range(10))
    (base / "list_landmarks_align_celeba.txt").write_text(
        f"{n}\n{marks}\n" + "".join(f"{f} " + " ".join(["5"] * 10) + "\n" for f in names)
    )


def write_image_folder(root: Path) -> list[Path]:
    """PNGs at the top, in class folders and nested folders, plus non-images; returns
    the image paths."""
    imgs = distinct_images(10, 24, 20, 3)
    where = ["top0.png", "top1.PNG", "cat/a.png", "cat/b.png", "dog/c.png", "dog/d.png"]
    where += ["dog/deep/e.png", "dog/deep/er/f.png", "g.png", "h.png"]
    paths = []
    for rel, img in zip(where, imgs, strict=True):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(p)
        paths.append(p)
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    Image.fromarray(imgs[1]).save(root / ".hidden" / "skip.png")
    return paths


@pytest.fixture
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Our fake CIFAR/CelebA files cannot match torchvision's MD5s: check existence only."""

    def exists(fpath: str, md5: str | None = None) -> bool:
        del md5
        return os.path.isfile(fpath)

    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", exists)
    monkeypatch.setattr("torchvision.datasets.celeba.check_integrity", exists)


def dataset_cfg(name: str, tmp_path: Path, **over: Any) -> Any:
    """Write ``name``'s tiny copy under tmp_path and return its config."""
    if name in ("mnist", "fashion_mnist"):
        write_mnist(tmp_path, "MNIST" if name == "mnist" else "FashionMNIST")
    elif name == "cifar10":
        write_cifar10(tmp_path)
    elif name == "celeba":
        write_celeba(tmp_path)
        over.setdefault("image_size", 16)
    elif name == "image_folder":
        write_image_folder(tmp_path)
        over.setdefault("image_size", 16)
    return make_cfg(name, tmp_path, **over)


def take(src: Any, k: int) -> list[torch.Tensor]:
    return [src.next_batch() for _ in range(k)]


# --------------------------------------------------------------------------- config files


def test_all_image_sets_registered() -> None:
    assert set(IMAGE_SETS) <= set(DATASETS)


@pytest.mark.parametrize("name", IMAGE_SETS)
def test_yaml_merges_with_schema(name: str) -> None:
    cfg = dataset_node(name)
    assert cfg.name == name and cfg.download is False and cfg.crop == "center"
    expected = {"mnist": (32, 1), "fashion_mnist": (32, 1), "cifar10": (32, 3), "celeba": (64, 3)}
    if name in expected:
        assert (cfg.image_size, cfg.channels) == expected[name]


# --------------------------------------------------------------------------- batches


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10", "celeba", "image_folder"])
def test_batches_shape_dtype_range(name: str, tmp_path: Path, no_md5: None) -> None:
    cfg = dataset_cfg(name, tmp_path)
    n = {"mnist": 12, "fashion_mnist": 12, "cifar10": 20, "celeba": 8, "image_folder": 10}[name]
    src = build_data(cfg, n, CPU, seed=0)  # one batch = the whole set, two-tone image included
    assert isinstance(src, ImageSource)
    b = src.next_batch()
    shape = (cfg.channels, cfg.image_size, cfg.image_size)
    assert src.sample_shape == shape
    assert b.shape == (n, *shape) and b.dtype == torch.float32 and b.device == CPU
    assert b.min() >= -1 and b.max() <= 1
    if name != "celeba":  # JPEG blurs the exact 0/255 of the two-tone image
        assert b.min() == -1 and b.max() == 1
    # each image once per epoch
    assert len({tuple(x.flatten()[:64].tolist()) for x in b}) == n


def test_mnist_values_match_the_idx_file(tmp_path: Path) -> None:
    """Pixel 0 → -1, 255 → +1, in the order and orientation of the file (no resize)."""
    write_mnist(tmp_path)
    cfg = make_cfg("mnist", tmp_path, image_size=28)
    src = build_data(cfg, 12, CPU, seed=3)
    b = src.next_batch()
    raw = distinct_images(12, 28, 28, seed=12)
    want = torch.from_numpy(raw).float() / 127.5 - 1
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(3 * 1_000_003))
    torch.testing.assert_close(b[:, 0], want[perm])


def test_test_split(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    src = build_data(make_cfg("mnist", tmp_path, split="test"), 4, CPU, seed=0)
    assert len(src.items) == 4


def test_celeba_split_selects_partition(tmp_path: Path, no_md5: None) -> None:
    write_celeba(tmp_path)
    src = build_data(make_cfg("celeba", tmp_path, split="valid", image_size=8), 2, CPU, 0)
    assert len(src.items) == 2
    assert build_data(make_cfg("celeba", tmp_path, split="all", image_size=8), 2, CPU, 0).items


# --------------------------------------------------------------------------- missing data


@pytest.mark.parametrize(
    ("name", "layout"),
    [
        ("mnist", "root/MNIST/raw/{train-images-idx3-ubyte"),
        ("fashion_mnist", "root/FashionMNIST/raw/{train-images-idx3-ubyte"),
        ("cifar10", "expected root/cifar-10-batches-py/data_batch_1..5"),
        ("celeba", "root/celeba/img_align_celeba/*.jpg"),
    ],
)
def test_missing_data_message(name: str, layout: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as e:
        build_data(make_cfg(name, tmp_path / "nowhere"), 4, CPU, 0)
    msg = str(e.value)
    assert "not found or incomplete" in msg
    assert layout in msg
    assert f"dataset.root={str(tmp_path / 'nowhere')!r}" in msg
    assert "set dataset.download=true" in msg and "point dataset.root= to" in msg


def test_incomplete_cifar_names_missing_file(tmp_path: Path, no_md5: None) -> None:
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"missing: cifar-10-batches-py/data_batch_3\."):
        build_data(make_cfg("cifar10", tmp_path), 4, CPU, 0)


def test_cifar_checksum_failure_is_a_data_error(tmp_path: Path) -> None:
    """Without the patch our fake files fail torchvision's real MD5 check."""
    write_cifar10(tmp_path)
    with pytest.raises(DataError, match="fail torchvision's checksum check") as e:
        build_data(make_cfg("cifar10", tmp_path), 4, CPU, 0)
    assert "dataset.download=true" in str(e.value)


def test_malformed_mnist_file_is_a_data_error(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08")
    with pytest.raises(DataError, match="mnist: cannot read the data set"):
        build_data(make_cfg("mnist", tmp_path), 4, CPU, 0)


def test_celeba_missing_images_listed_in_partition(tmp_path: Path, no_md5: None) -> None:
    write_celeba(tmp_path)
    (tmp_path / "celeba" / "img_align_celeba" / "000003.jpg").unlink()
    with pytest.raises(DataError, match="1 of the 8 images .* are absent") as e:
        build_data(make_cfg("celeba", tmp_path), 4, CPU, 0)
    assert "celeba/img_align_celeba/000003.jpg" in str(e.value)


def test_failed_download_is_a_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args: Any, **kwargs: Any) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr("torchvision.datasets.mnist.download_and_extract_archive", offline)
    with pytest.raises(DataError, match="download failed: OSError: network unreachable") as e:
        build_data(make_cfg("mnist", tmp_path, download=True), 4, CPU, 0)
    assert "root/MNIST/raw/" in str(e.value)
    # it was already true: the advice is to bring the files, not to set it again
    assert "set dataset.download=true" not in str(e.value)
    assert "or download it where there is a network and copy it there" in str(e.value)


def test_lsun_without_lmdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "lmdb", None)  # makes `import lmdb` fail
    with pytest.raises(DataError, match=r"pip install wgangp\[lsun\]"):
        build_data(make_cfg("lsun", tmp_path), 4, CPU, 0)


def test_lsun_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dataset.category"):
        build_data(make_cfg("lsun", tmp_path, category="kitchens"), 4, CPU, 0)
    with pytest.raises(ConfigError, match="dataset.download"):
        build_data(make_cfg("lsun", tmp_path, download=True), 4, CPU, 0)


def test_lsun_missing_database(tmp_path: Path) -> None:
    pytest.importorskip("lmdb")
    with pytest.raises(DataError, match=r"root/bedroom_train_lmdb/") as e:
        build_data(make_cfg("lsun", tmp_path), 4, CPU, 0)
    assert "download" not in str(e.value).split("Fix:")[1]


def test_lsun_reads_a_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lmdb = pytest.importorskip("lmdb")
    import io

    monkeypatch.chdir(tmp_path)  # torchvision writes its key cache into the cwd
    env = lmdb.open(str(tmp_path / "church_outdoor_train_lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, img in enumerate(distinct_images(5, 30, 40, 3)):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="webp", lossless=True)
            txn.put(f"{i:04d}".encode(), buf.getvalue())
    env.close()
    cfg = make_cfg("lsun", tmp_path, category="church_outdoor", image_size=16)
    b = build_data(cfg, 5, CPU, 0).next_batch()
    assert b.shape == (5, 3, 16, 16) and b.min() == -1 and b.max() == 1


def test_image_folder_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a directory; point dataset.root="):
        build_data(make_cfg("image_folder", tmp_path / "none"), 2, CPU, 0)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="no image files under"):
        build_data(make_cfg("image_folder", tmp_path / "empty"), 2, CPU, 0)


@pytest.mark.parametrize(
    ("key", "value"),
    [("channels", 2), ("crop", "zoom"), ("split", "validation"), ("image_size", 0)],
)
def test_bad_image_config_values(key: str, value: Any, tmp_path: Path) -> None:
    write_mnist(tmp_path)
    with pytest.raises(ConfigError, match=f"dataset.{key}"):
        build_data(make_cfg("mnist", tmp_path, **{key: value}), 4, CPU, 0)


def test_download_refused_for_image_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dataset.download"):
        build_data(make_cfg("image_folder", tmp_path, download=True), 2, CPU, 0)


# --------------------------------------------------------------------------- size / channels


def test_smaller_than_one_batch(tmp_path: Path, no_md5: None) -> None:
    write_cifar10(tmp_path)
    for on_device in (False, True):
        cfg = make_cfg("cifar10", tmp_path, on_device=on_device)
        with pytest.raises(DataError, match=r"20 images, fewer than one batch") as e:
            build_data(cfg, 64, CPU, 0)
        assert "trainer.batch_size=64" in str(e.value)


def test_grey_to_rgb(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    b = build_data(make_cfg("mnist", tmp_path, channels=3), 6, CPU, 0).next_batch()
    assert b.shape == (6, 3, 32, 32)
    assert torch.equal(b[:, 0], b[:, 1]) and torch.equal(b[:, 0], b[:, 2])


def test_rgb_to_grey_is_luma(tmp_path: Path, no_md5: None) -> None:
    write_cifar10(tmp_path)
    rgb = build_data(make_cfg("cifar10", tmp_path), 20, CPU, 0).next_batch()
    grey = build_data(make_cfg("cifar10", tmp_path, channels=1), 20, CPU, 0).next_batch()
    assert grey.shape == (20, 1, 32, 32)
    luma = (rgb + 1) * 127.5 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((grey[:, 0] + 1) * 127.5, luma.sum(1), atol=1.0, rtol=0)


@pytest.mark.parametrize("size", [8, 64])
def test_image_size_resizes(size: int, tmp_path: Path, no_md5: None) -> None:
    write_cifar10(tmp_path)
    b = build_data(make_cfg("cifar10", tmp_path, image_size=size), 4, CPU, 0).next_batch()
    assert b.shape == (4, 3, size, size)


def test_crop_policies(tmp_path: Path) -> None:
    """A 40×20 image: black 10-px bands left and right, white middle."""
    img = np.zeros((20, 40), dtype=np.uint8)
    img[:, 10:30] = 255
    for i in range(4):
        Image.fromarray(img).save(tmp_path / f"{i}.png")
    cfg = dict(channels=1, image_size=10)

    center = build_data(make_cfg("image_folder", tmp_path, crop="center", **cfg), 4, CPU, 0)
    assert torch.all(center.next_batch() == 1)  # the central 20×20 square is all white

    squash = build_data(make_cfg("image_folder", tmp_path, crop="resize", **cfg), 4, CPU, 0)
    row = squash.next_batch()[0, 0, 5]
    assert row[0] == -1 and row[-1] == -1 and row[5] == 1  # the whole width, squashed

    rand = build_data(make_cfg("image_folder", tmp_path, crop="random", **cfg), 4, CPU, 0)
    batches = torch.cat(take(rand, 6))
    means = {round(m, 4) for m in batches.mean(dim=(1, 2, 3)).tolist()}
    assert len(means) > 3  # different crop positions...
    assert batches.min() == -1  # ...some of them reaching the black bands
    again = build_data(make_cfg("image_folder", tmp_path, crop="random", **cfg), 4, CPU, 0)
    assert torch.equal(torch.cat(take(again, 6)), batches)  # ...reproducibly


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize(
    ("name", "over"), [("cifar10", {}), ("image_folder", {"crop": "random", "image_size": 8})]
)
def test_resume_mid_epoch_and_across_epochs(
    name: str, over: dict, tmp_path: Path, no_md5: None
) -> None:
    cfg = dataset_cfg(name, tmp_path, **over)
    bs = 3  # cifar: 20 images → 6 batches/epoch; folder: 10 → 3 batches/epoch
    run = build_data(cfg, bs, CPU, seed=7)
    take(run, 2)
    state = run.state_dict()
    assert state == {"epoch": 0, "index": 6}
    rest = take(run, 9)  # crosses one or more epoch boundaries
    resumed = build_data(cfg, bs, CPU, seed=7)
    resumed.load_state_dict(state)
    for a, b in zip(rest, take(resumed, 9), strict=True):
        assert torch.equal(a, b)
    # and a resume from a state taken exactly at an epoch's end
    state = run.state_dict()
    more = take(run, 4)
    again = build_data(cfg, bs, CPU, seed=7)
    take(again, 1)  # a source already in use, then rewound/forwarded
    again.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(more, take(again, 4), strict=True))


def test_resume_does_not_load_skipped_images(tmp_path: Path, no_md5: None) -> None:
    write_cifar10(tmp_path)
    src = build_data(make_cfg("cifar10", tmp_path), 4, CPU, seed=1)
    loaded: list[int] = []
    orig = src.items.base.__class__.__getitem__

    class Spy(src.items.base.__class__):  # type: ignore[misc, name-defined]
        def __getitem__(self, i: int) -> Any:
            loaded.append(i)
            return orig(self, i)

    src.items.base.__class__ = Spy
    src.load_state_dict({"epoch": 2, "index": 16})
    src.next_batch()
    assert len(loaded) == 4  # just the batch: the 16 skipped images were never decoded


def test_epochs_have_different_orders(tmp_path: Path, no_md5: None) -> None:
    write_cifar10(tmp_path)
    src = build_data(make_cfg("cifar10", tmp_path), 20, CPU, seed=0)
    e0, e1, e2 = take(src, 3)
    assert src.state_dict() == {"epoch": 2, "index": 20}
    assert not torch.equal(e0, e1) and not torch.equal(e1, e2)
    key = lambda b: sorted(x.flatten().tolist() for x in b)  # noqa: E731
    assert key(e0) == key(e1) == key(e2)  # the same images, reshuffled
    other_seed = build_data(make_cfg("cifar10", tmp_path), 20, CPU, seed=1).next_batch()
    assert not torch.equal(e0, other_seed)


def test_workers_give_identical_batches(tmp_path: Path) -> None:
    write_image_folder(tmp_path)
    over = {"crop": "random", "image_size": 8}
    runs = []
    for workers in (0, 2):
        cfg = make_cfg("image_folder", tmp_path, num_workers=workers, **over)
        runs.append(torch.cat(take(build_data(cfg, 4, CPU, seed=5), 5)))  # two epochs
    assert torch.equal(runs[0], runs[1])


def test_on_device_matches_streaming(tmp_path: Path, no_md5: None) -> None:
    write_cifar10(tmp_path)
    streamed = build_data(make_cfg("cifar10", tmp_path), 8, CPU, seed=2)
    held = build_data(make_cfg("cifar10", tmp_path, on_device=True, num_workers=2), 8, CPU, 2)
    assert isinstance(held, TensorSource) and held.sample_shape == (3, 32, 32)
    for a, b in zip(take(streamed, 5), take(held, 5), strict=True):
        assert b.dtype == torch.float32 and torch.equal(a, b)
    assert held.state_dict() == streamed.state_dict()


def test_dequantize_like_gan_cifar_resnet(tmp_path: Path, no_md5: None) -> None:
    """(x + u)/128 − 1 with u ~ U[0, 1) per value, from the batch's stream position:
    the same with workers, on the device and after a resume; other batches differ."""
    write_cifar10(tmp_path)
    plain = take(build_data(make_cfg("cifar10", tmp_path), 8, CPU, seed=3), 6)
    cfg = make_cfg("cifar10", tmp_path, dequantize=True)
    src = build_data(cfg, 8, CPU, seed=3)
    noisy = take(src, 6)  # 20 images: 2 batches per epoch, 3 epochs
    for p_, n_ in zip(plain, noisy, strict=True):
        q = torch.round((p_ + 1) * 127.5)  # the uint8 values
        u = (n_ + 1) * 128 - q
        assert u.min() >= -1e-4 and u.max() < 1 + 1e-4
        assert n_.min() >= -1 and n_.max() < 1  # 255 ↦ [0.9922, 1)
        assert 0.45 < u.mean().item() < 0.55 and 0.27 < u.std().item() < 0.31  # U[0,1)
    flat = torch.cat(
        [
            (n_ + 1) * 128 - torch.round((p_ + 1) * 127.5)
            for p_, n_ in zip(plain, noisy, strict=True)
        ]
    )
    assert len({round(v, 4) for v in flat[:200].flatten().tolist()}) > 190  # not a constant
    assert not torch.equal(noisy[0] - plain[0], noisy[2] - plain[2])  # fresh noise each epoch
    # workers, the on-device path and a resume give bitwise the same batches
    workers = take(
        build_data(make_cfg("cifar10", tmp_path, dequantize=True, num_workers=2), 8, CPU, 3), 6
    )
    held = take(
        build_data(make_cfg("cifar10", tmp_path, dequantize=True, on_device=True), 8, CPU, 3), 6
    )
    resumed = build_data(cfg, 8, CPU, seed=3)
    resumed.load_state_dict({"epoch": 1, "index": 8})
    for i in range(6):
        assert torch.equal(noisy[i], workers[i]) and torch.equal(noisy[i], held[i])
    assert all(torch.equal(a, b) for a, b in zip(noisy[3:], take(resumed, 3), strict=True))
    # evaluation samples stay on the plain scale (shared reference statistics)
    g = torch.Generator().manual_seed(0)
    s_ = src.sample(4, generator=g)
    levels = (s_ + 1) * 127.5
    assert (levels - torch.round(levels)).abs().max() < 1e-4


def test_dequantize_refused_for_points() -> None:
    # a plain config (the points schema has no dequantize key): as a hand-built one
    cfg = OmegaConf.create({"name": "gaussians8", "dequantize": True})
    with pytest.raises(ConfigError) as e:
        build_data(cfg, 4, CPU, 0)
    assert str(e.value) == (
        "invalid value for dataset.dequantize: True (allowed: false for points data); "
        "gaussians8 is not quantized (dequantize adds U[0, 1/128) noise to 8-bit images); "
        "drop dataset.dequantize=true"
    )


def test_on_device_refuses_random_crop(tmp_path: Path, no_md5: None) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(ConfigError, match="dataset.on_device=false to keep random crops"):
        build_data(make_cfg("cifar10", tmp_path, on_device=True, crop="random"), 4, CPU, 0)


def test_sample_is_reproducible_and_leaves_the_stream(tmp_path: Path, no_md5: None) -> None:
    write_cifar10(tmp_path)
    src = build_data(make_cfg("cifar10", tmp_path), 4, CPU, seed=0)
    first = src.next_batch()
    s1 = src.sample(12, torch.Generator().manual_seed(0))
    s2 = src.sample(12, torch.Generator().manual_seed(0))
    assert s1.shape == (12, 3, 32, 32) and s1.dtype == torch.float32 and torch.equal(s1, s2)
    assert len({tuple(x.flatten().tolist()) for x in s1}) == 12  # without replacement
    assert src.sample(30, torch.Generator().manual_seed(1)).shape == (30, 3, 32, 32)
    fresh = build_data(make_cfg("cifar10", tmp_path), 4, CPU, seed=0)
    assert torch.equal(fresh.next_batch(), first)
    assert torch.equal(fresh.next_batch(), src.next_batch())


# --------------------------------------------------------------------------- corrupt files


def test_image_folder_finds_nested_images_only(tmp_path: Path) -> None:
    paths = write_image_folder(tmp_path)
    src = build_data(make_cfg("image_folder", tmp_path), 2, CPU, 0)
    assert src.items.base.paths == sorted(paths)  # case-insensitive ext, no .txt, no hidden


def test_undecodable_files_are_skipped_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_image_folder(tmp_path)
    (tmp_path / "cat" / "broken.png").write_bytes(b"this is not a png")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="wgangp.data.image_folder"):
        src = build_data(make_cfg("image_folder", tmp_path, image_size=16), 10, CPU, 0)
    assert len(src.items) == 10
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "2 of 12 image files" in warning
    assert "broken.png" in warning and "empty.jpg" in warning
    assert src.next_batch().shape == (10, 3, 16, 16)


def test_truncated_image_is_replaced_by_the_next(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = write_image_folder(tmp_path)
    big = distinct_images(1, 200, 200, 3)[0]
    Image.fromarray(big).save(paths[3])  # cat/b.png: a large PNG ...
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[: len(data) // 2])  # ... cut in half: header fine, pixels not
    src = build_data(make_cfg("image_folder", tmp_path, image_size=8), 10, CPU, 0)
    assert len(src.items) == 10  # the header scan cannot tell
    bad = src.items.base.paths.index(paths[3])
    with caplog.at_level(logging.WARNING, logger="wgangp.data.image_folder"):
        imgs = [src.items[(i, 0)] for i in range(10)]
    assert torch.equal(imgs[bad], imgs[bad + 1])  # b.png → the next image in sorted order
    assert len({tuple(x.flatten().tolist()) for x in imgs}) == 9
    assert any("cannot decode" in r.getMessage() for r in caplog.records)


def test_all_files_corrupt(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="3 of 3 image files .* none is usable"):
        build_data(make_cfg("image_folder", tmp_path), 2, CPU, 0)


@pytest.mark.parametrize(
    "name,arch",
    [("mnist", "dcgan"), ("cifar10", "resnet"), ("celeba", "dcgan"), ("image_folder", "dcgan")],
)
def test_image_sets_pick_image_networks_and_schedule(name: str, arch: str) -> None:
    from tests.conftest import compose_cfg

    cfg = compose_cfg(f"dataset={name}")
    assert cfg.dataset.name == name
    assert cfg.critic.name == arch == cfg.generator.name
    assert cfg.trainer.batch_size == 64 and cfg.gp["lambda"] == 10.0
    # the command line still wins
    cfg = compose_cfg(
        f"dataset={name}", "critic=resnet", "generator=dcgan", "trainer.batch_size=16"
    )
    assert (cfg.critic.name, cfg.generator.name, cfg.trainer.batch_size) == ("resnet", "dcgan", 16)


def small_preset_trainer(experiment: str, root: Path, *extra: str) -> Any:
    """A Trainer of ``experiment`` shrunk to a test's size (width 8, batch 4, 2 critic
    updates), on the data set written under ``root``."""
    from tests.conftest import compose_cfg
    from wgangp.config.validate import validate
    from wgangp.train.trainer import Trainer

    cfg = compose_cfg(
        f"experiment={experiment}",
        f"dataset.root={root}",
        "dataset.num_workers=0",
        "critic.dim=8",
        "generator.dim=8",
        "trainer.batch_size=4",
        "trainer.n_critic=2",
        "trainer.progress=false",
        *extra,
    )
    return Trainer(cfg, root / "run", validate(cfg))


# --------------------------------------------------------------------------- presets


def test_cifar10_resnet_paper_preset(tmp_path: Path, no_md5: None) -> None:
    """experiment=cifar10_resnet_paper carries gan_cifar_resnet.py's constants (the
    unconditional model), and trains on a CIFAR-10 layout: dequantized reals, critic
    batches of batch_size, generator updates of gen_batch_size."""
    from tests.conftest import compose_cfg
    from wgangp.models import build_critic, build_generator, count_parameters

    cfg = compose_cfg("experiment=cifar10_resnet_paper", f"dataset.root={tmp_path}")
    official = {  # gan_cifar_resnet.py, lines 36-47
        "dataset.name": "cifar10",
        "dataset.image_size": 32,
        "dataset.dequantize": True,
        "critic.name": "resnet",
        "critic.dim": 128,  # DIM_D
        "critic.norm": "none",  # NORMALIZATION_D = False
        "generator.name": "resnet",
        "generator.dim": 128,  # DIM_G
        "generator.norm": "batchnorm",  # NORMALIZATION_G = True
        "generator.z_dim": 128,
        "trainer.batch_size": 64,  # BATCH_SIZE
        "trainer.gen_batch_size": 128,  # GEN_BS_MULTIPLE × BATCH_SIZE
        "trainer.n_critic": 5,  # N_CRITIC
        "trainer.steps": 100_000,  # ITERS
        "optim.critic.lr": 2e-4,  # LR
        "optim.generator.lr": 2e-4,
        "optim.lr_decay": "linear",  # DECAY
        "gp.lambda": 10.0,  # LAMBDA
    }
    assert {k: OmegaConf.select(cfg, k) for k in official} == official
    assert list(cfg.optim.critic.betas) == [0.0, 0.9] == list(cfg.optim.generator.betas)
    write_cifar10(tmp_path)
    tr = small_preset_trainer("cifar10_resnet_paper", tmp_path, "trainer.gen_batch_size=8")
    reals = tr.draw_inputs().reals
    assert len(reals) == 2 and reals[0].shape == (4, 3, 32, 32)
    frac = (reals[0] + 1) * 128 - torch.floor((reals[0] + 1) * 128)
    assert frac.std() > 0.2  # dequantized: off the 256 levels
    stats = tr.train_step()
    assert all(torch.isfinite(v).all() for v in stats.values())
    critic, generator = (
        build_critic(cfg.critic, (3, 32, 32)),
        build_generator(cfg.generator, (3, 32, 32)),
    )
    assert (count_parameters(critic), count_parameters(generator)) == (
        1_053_825,
        1_204_483,
    )


@pytest.mark.parametrize("data", ["lsun", "celeba", "image_folder"])
def test_resnet64_paper_preset(data: str) -> None:
    """experiment=resnet64_paper: gan_64x64.py's GoodGenerator/GoodDiscriminator and
    constants, whichever 64-px set it is combined with (its own picks overridden)."""
    from tests.conftest import compose_cfg
    from wgangp.models import build_critic, build_generator, count_parameters

    cfg = compose_cfg("experiment=resnet64_paper", f"dataset={data}")
    official = {  # gan_64x64.py: DIM, CRITIC_ITERS, BATCH_SIZE, ITERS, LAMBDA, Adam
        "dataset.name": data,
        "dataset.image_size": 64,
        "dataset.dequantize": False,
        "critic.name": "resnet",
        "critic.dim": 64,
        "critic.norm": "layernorm",
        "generator.name": "resnet",
        "generator.dim": 64,
        "generator.norm": "batchnorm",
        "trainer.batch_size": 64,
        "trainer.gen_batch_size": None,
        "trainer.n_critic": 5,
        "trainer.steps": 200_000,
        "optim.critic.lr": 1e-4,
        "optim.generator.lr": 1e-4,
        "optim.lr_decay": "none",
        "gp.lambda": 10.0,
    }
    assert {k: OmegaConf.select(cfg, k) for k in official} == official
    assert list(cfg.optim.critic.betas) == [0.0, 0.9] == list(cfg.optim.generator.betas)
    shape = (3, 64, 64)
    critic, generator = build_critic(cfg.critic, shape), build_generator(cfg.generator, shape)
    assert (count_parameters(critic), count_parameters(generator)) == (7_491_841, 8_540_483)


def test_cifar10_dcgan_paper_preset(tmp_path: Path, no_md5: None) -> None:
    """experiment=cifar10_dcgan_paper carries gan_cifar.py's constants, its parameter
    counts (hand-counted from the script: the generator's per-feature BN1 holds
    2·8192 of them), and trains on a CIFAR-10 layout."""
    from tests.conftest import compose_cfg
    from wgangp.models import build_critic, build_generator, count_parameters

    cfg = compose_cfg("experiment=cifar10_dcgan_paper", f"dataset.root={tmp_path}")
    official = {  # gan_cifar.py, lines 27-32 and its Adam
        "dataset.name": "cifar10",
        "dataset.image_size": 32,
        "dataset.dequantize": False,
        "critic.name": "dcgan",
        "critic.dim": 128,  # DIM
        "critic.norm": "none",  # no Discriminator.BN in wgan-gp mode
        "critic.init": "tflib",
        "generator.name": "dcgan",
        "generator.dim": 128,
        "generator.norm": "batchnorm",
        "generator.input_norm": "feature",  # Batchnorm('Generator.BN1', [0], ...)
        "generator.z_dim": 128,
        "generator.init": "tflib",
        "trainer.batch_size": 64,  # BATCH_SIZE
        "trainer.gen_batch_size": None,
        "trainer.n_critic": 5,  # CRITIC_ITERS
        "trainer.steps": 200_000,  # ITERS
        "optim.critic.lr": 1e-4,
        "optim.generator.lr": 1e-4,
        "optim.lr_decay": "none",
        "gp.lambda": 10.0,  # LAMBDA
    }
    assert {k: OmegaConf.select(cfg, k) for k in official} == official
    assert list(cfg.optim.critic.betas) == [0.5, 0.9] == list(cfg.optim.generator.betas)
    shape = (3, 32, 32)
    critic, generator = build_critic(cfg.critic, shape), build_generator(cfg.generator, shape)
    # D: 3·128·25+128, 128·256·25+256, 256·512·25+512, 8192+1
    # G: 128·8192+8192, 2·8192 (BN1), 512·256·25+256, 2·256, 256·128·25+128, 2·128, 128·3·25+3
    assert (count_parameters(critic), count_parameters(generator)) == (4_114_689, 5_179_907)
    write_cifar10(tmp_path)
    tr = small_preset_trainer("cifar10_dcgan_paper", tmp_path)
    stats = tr.train_step()
    assert all(torch.isfinite(v).all() for v in stats.values())


@pytest.mark.parametrize("data", ["lsun", "celeba", "image_folder"])
def test_dcgan64_paper_preset(data: str) -> None:
    """experiment=dcgan64_paper: gan_64x64.py's DCGANGenerator/DCGANDiscriminator (the
    paper's Figure 2 baseline) with its constants and its σ = 0.02 weights."""
    from tests.conftest import compose_cfg
    from wgangp.models import build_critic, build_generator, count_parameters

    cfg = compose_cfg("experiment=dcgan64_paper", f"dataset={data}")
    official = {
        "dataset.name": data,
        "dataset.image_size": 64,
        "critic.name": "dcgan",
        "critic.dim": 64,
        "critic.norm": "layernorm",  # Normalize() in wgan-gp mode
        "critic.init": "dcgan",  # set_weights_stdev(0.02)
        "generator.name": "dcgan",
        "generator.dim": 64,
        "generator.norm": "batchnorm",
        "generator.input_norm": "channel",  # Normalize('Generator.BN1', [0,2,3], ...)
        "generator.init": "dcgan",
        "trainer.batch_size": 64,
        "trainer.n_critic": 5,
        "trainer.steps": 200_000,
        "optim.critic.lr": 1e-4,
        "optim.generator.lr": 1e-4,
        "gp.lambda": 10.0,
    }
    assert {k: OmegaConf.select(cfg, k) for k in official} == official
    assert list(cfg.optim.critic.betas) == [0.0, 0.9] == list(cfg.optim.generator.betas)
    shape = (3, 64, 64)
    torch.manual_seed(0)
    critic, generator = build_critic(cfg.critic, shape), build_generator(cfg.generator, shape)
    # D: convs 3→64→128→256→512 (5×5, bias), layer norms 2·(128+256+512), linear 8192+1
    # G: linear 128·8192+8192, BN 2·(512+256+128+64), deconvs 512→256→128→64→3
    assert (count_parameters(critic), count_parameters(generator)) == (4_316_545, 5_364_739)
    weights = [p for p in critic.parameters() if p.dim() > 1]
    weights += [p for p in generator.parameters() if p.dim() > 1]
    for w in weights:  # uniform with σ = 0.02: bound 0.02·√3
        assert abs(w.std().item() - 0.02) < 0.002
        assert w.abs().max().item() <= 0.02 * 3**0.5 + 1e-7


# --------------------------------------------------------------- dataset.pixel_range


def test_pixel_range_unit_scales_by_255_everywhere(tmp_path: Path, no_md5: None) -> None:
    """dataset.pixel_range=[0,1]: training batches and samples are x/255 (dequantized:
    (x + u)/256), the same images as the default [-1, 1] scaling mapped back, whether
    streamed or held on the device; and the evaluator's 8-bit view of them is exact."""
    from wgangp.data.pixels import UNIT, as_signed
    from wgangp.metrics import to_uint8

    write_mnist(tmp_path, n_train=12)
    signed = build_data(make_cfg("mnist", tmp_path, image_size=28), 4, CPU, 7)
    unit = build_data(make_cfg("mnist", tmp_path, image_size=28, pixel_range=[0, 1]), 4, CPU, 7)
    held = build_data(
        make_cfg("mnist", tmp_path, image_size=28, pixel_range=[0, 1], on_device=True), 4, CPU, 7
    )
    for _ in range(4):  # past an epoch boundary (12 images, batches of 4)
        s, u, h = signed.next_batch(), unit.next_batch(), held.next_batch()
        assert u.min() >= 0 and u.max() <= 1
        torch.testing.assert_close(u * 255, torch.round(u * 255), atol=1e-4, rtol=0)
        torch.testing.assert_close(as_signed(u, UNIT), s, atol=1e-6, rtol=0)
        assert torch.equal(u, h)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    raw = unit.sample(12, generator=g1)
    assert torch.equal(to_uint8(as_signed(raw, UNIT)), to_uint8(signed.sample(12, generator=g2)))
    assert to_uint8(as_signed(raw, UNIT)).max() == 255 and to_uint8(as_signed(raw, UNIT)).min() == 0
    deq = build_data(
        make_cfg("mnist", tmp_path, image_size=28, pixel_range=[0, 1], dequantize=True), 4, CPU, 7
    )
    x = deq.next_batch()
    k = torch.floor(x * 256)  # the 8-bit value, u = 256·x − k in [0, 1)
    assert x.min() >= 0 and x.max() < 1 and (x * 256 - k).std() > 0.2


@pytest.mark.parametrize("value", [[0, 2], [-1, 0], [1], [0, 1, 2]])
def test_pixel_range_refusals(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError) as e:
        build_data(make_cfg("mnist", tmp_path, pixel_range=value), 4, CPU, 0)
    assert e.value.key == "dataset.pixel_range"
    assert "allowed: [-1,1] (x/127.5 − 1, tanh generators) | [0,1] (x/255, gan_mnist.py)" in str(
        e.value
    )


def test_pixel_range_and_generator_output_checked_together(caplog: Any) -> None:
    from tests.conftest import compose_cfg
    from wgangp.config.validate import validate

    with pytest.raises(ConfigError) as e:
        validate(compose_cfg("dataset=mnist", "generator.output=sigmoid"))
    assert e.value.key == "generator.output"
    assert "add dataset.pixel_range=[0,1], or use generator.output=tanh" in str(e.value)
    with caplog.at_level(logging.WARNING):
        validate(compose_cfg("dataset=mnist", "dataset.pixel_range=[0,1]"))
    assert any(
        "generator.output=tanh with dataset.pixel_range=[0,1]" in r.message for r in caplog.records
    )
    # gaussians8: a key its kind (points data) does not have, refused before composing
    refused = check_value_overrides(["dataset.pixel_range=[0,1]"], config_groups(config_dir()))
    assert refused.startswith("invalid value for dataset.pixel_range") and "points data" in refused


def test_mnist_paper_preset(tmp_path: Path) -> None:
    """experiment=mnist_paper carries gan_mnist.py's constants and parameter counts
    (hand-counted from the script) and trains on [0, 1] digits at 28×28."""
    from tests.conftest import compose_cfg
    from wgangp.models import build_critic, build_generator, count_parameters

    cfg = compose_cfg("experiment=mnist_paper", f"dataset.root={tmp_path}")
    official = {  # gan_mnist.py: DIM, BATCH_SIZE, CRITIC_ITERS, LAMBDA, ITERS, its Adam
        "dataset.name": "mnist",
        "dataset.image_size": 28,
        "dataset.channels": 1,
        "critic.name": "dcgan",
        "critic.dim": 64,
        "critic.norm": "none",
        "generator.name": "dcgan",
        "generator.dim": 64,
        "generator.norm": "none",  # BN only in MODE == 'wgan'
        "generator.output": "sigmoid",
        "generator.z_dim": 128,
        "trainer.batch_size": 50,
        "trainer.n_critic": 5,
        "trainer.steps": 200_000,
        "optim.critic.lr": 1e-4,
        "optim.generator.lr": 1e-4,
        "gp.lambda": 10.0,
    }
    assert {k: OmegaConf.select(cfg, k) for k in official} == official
    assert list(cfg.dataset.pixel_range) == [0.0, 1.0]
    assert list(cfg.optim.critic.betas) == [0.5, 0.9] == list(cfg.optim.generator.betas)
    shape = (1, 28, 28)
    critic, generator = build_critic(cfg.critic, shape), build_generator(cfg.generator, shape)
    # D: 1·64·25+64, 64·128·25+128, 128·256·25+256, 4096+1
    # G: 128·4096+4096, 256·128·25+128, 128·64·25+64, 64·1·25+1
    assert (count_parameters(critic), count_parameters(generator)) == (1_030_145, 1_554_177)
    write_mnist(tmp_path, n_train=12)
    tr = small_preset_trainer("mnist_paper", tmp_path)
    reals = tr.draw_inputs().reals
    assert reals[0].shape == (4, 1, 28, 28) and reals[0].min() >= 0 and reals[0].max() <= 1
    stats = tr.train_step()
    assert all(torch.isfinite(v).all() for v in stats.values())


def test_fixed_points_refused_for_image_sets(tmp_path: Path) -> None:
    # a key the image sets' kind does not have: refused before composing
    refused = check_value_overrides(
        ["dataset=mnist", "dataset.fixed_points=1000"], config_groups(config_dir())
    )
    assert refused.startswith(
        "invalid value for dataset.fixed_points: '1000' (allowed: a key of mnist (image data: "
    )
