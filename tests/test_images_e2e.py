"""Images end to end: train on a folder of PNGs, export with wgangp-sample, resume the EMA."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import REPO, cli, pythonpath
from wgangp.cli.sample import sample
from wgangp.io.checkpoint import load_checkpoint

IMG = [
    "trainer.device=cpu",
    "dataset=image_folder",
    "dataset.image_size=16",
    "dataset.channels=1",
    "dataset.num_workers=0",
    "critic.dim=8",
    "generator.dim=8",
    "trainer.batch_size=16",
    "trainer.progress=false",
    "trainer.log_every=20",
    "trainer.n_critic=1",
]


def make_folder(root: Path, n: int = 48) -> Path:
    """Bright squares at random places on dark 20×20 images, some in a class sub-folder."""
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.full((20, 20), 20, np.uint8)
        y, x = rng.integers(0, 12, size=2)
        img[y : y + 8, x : x + 8] = 235
        sub = root / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(sub / f"{i}.png")
    return root


def tiny_rgb(data: Path) -> list[str]:
    """Overrides for a tiny 3-channel image run on the folder ``data`` (make_folder)."""
    return [
        "dataset=image_folder",
        f"dataset.root={data}",
        "dataset.image_size=16",
        "dataset.channels=3",
        "dataset.num_workers=0",
        "critic.dim=8",
        "generator.dim=8",
        "trainer.batch_size=8",
        "trainer.progress=false",
    ]


def sample_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wgangp.cli.sample", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": pythonpath(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("img")
    data = make_folder(tmp / "images")
    cli(
        *IMG,
        f"dataset.root={data}",
        "trainer.steps=200",
        "trainer.sample_every=100",
        "trainer.ckpt_every=100",
        "trainer.ema.decay=0.9",
        cwd=tmp,
        check=True,
        timeout=600,
    )
    (run,) = [p for p in (tmp / "outputs").glob("*/*") if p.is_dir()]
    return run


def test_image_run_writes_grids_and_real_data(trained):
    assert (trained / "samples" / "real.png").is_file()
    for step in (100, 200):
        with Image.open(trained / "samples" / f"step_{step:07d}.png") as im:
            assert im.size == (8 * 18 + 2, 8 * 18 + 2)  # 8×8 grid of 16 px, 2 px padding
    ck = load_checkpoint(trained / "checkpoints" / "last.pt")
    assert ck["step"] == 200 and ck["ema"] is not None and ck["sample_shape"] == [1, 16, 16]
    assert int(ck["ema"]["n_averaged"]) == 200


def test_sample_png_grid(trained, tmp_path):
    proc = sample_cli(f"checkpoint={trained}", "n=16", f"out={tmp_path / 'g.png'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"wrote {tmp_path / 'g.png'}\n"
    with Image.open(tmp_path / "g.png") as im:
        assert im.size == (8 * 18 + 2, 2 * 18 + 2)


def test_sample_directory_of_pngs(trained, tmp_path):
    out = tmp_path / "many"
    proc = sample_cli(
        f"checkpoint={trained}/checkpoints/last.pt",
        "n=5",
        f"out={out}",
        "device=cpu",
        "batch_size=2",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    files = sorted(out.glob("*.png"))
    assert [f.name for f in files] == [f"{i:06d}.png" for i in range(5)]
    assert proc.stdout == f"wrote 5 files into {out}\n"
    with Image.open(files[0]) as im:
        assert im.size == (16, 16) and im.mode == "L"


def test_sample_npz_in_the_data_scale_and_seeded(trained, tmp_path):
    for name, ema in (("a", "true"), ("b", "true"), ("c", "false")):
        proc = sample_cli(
            f"checkpoint={trained}",
            "n=10",
            f"out={tmp_path / name}.npz",
            "seed=3",
            f"ema={ema}",
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
    a, b, c = (np.load(tmp_path / f"{n}.npz")["samples"] for n in "abc")
    assert a.shape == (10, 1, 16, 16) and a.dtype == np.uint8
    assert np.array_equal(a, b)  # same seed, same samples
    assert not np.array_equal(a, c)  # EMA and raw generator differ
    # the run learned bright squares on dark: a bimodal pixel histogram
    assert (a < 80).mean() > 0.3 and (a > 170).mean() > 0.05


def test_sample_bn_batch_uses_the_batch_statistics(trained, tmp_path):
    """bn=batch: the generator's batch norms take each sampling batch's statistics (the
    official code's sampling), so the same latents give other images than bn=running,
    and the two halves of a batch of 10 split into batches of 5 change again."""
    outs = {}
    for name, extra in (("r", "bn=running"), ("b", "bn=batch"), ("b5", "bn=batch batch_size=5")):
        proc = sample_cli(
            f"checkpoint={trained}",
            "n=10",
            f"out={tmp_path / name}.npz",
            "ema=false",
            *extra.split(),
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr
        outs[name] = np.load(tmp_path / f"{name}.npz")["samples"]
    assert not np.array_equal(outs["r"], outs["b"])
    assert not np.array_equal(outs["b"], outs["b5"])
    proc = sample_cli(
        f"checkpoint={trained}", "n=4", f"out={tmp_path}/x.npz", "bn=eval", cwd=tmp_path
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith(
        "wgangp-sample: error: invalid value for bn: 'eval' (allowed: running | batch)"
    )


def test_sample_interpolation_strips(trained, tmp_path):
    proc = sample_cli(
        f"checkpoint={trained}",
        "interpolate=3",
        "steps=5",
        f"out={tmp_path / 'interp.png'}",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / "interp.png") as im:
        assert im.size == (5 * 18 + 2, 3 * 18 + 2)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["n=4", "out=x.png"], "invalid value for checkpoint: None"),
        (["checkpoint=/nope", "out=x.png"], "checkpoint /nope: no such file or directory"),
        (["checkpoint=NOTCKPT", "out=x.png"], "not a wgangp checkpoint"),
        (["checkpoint=RUN", "out=x.png", "n=zero"], "n"),
        (["checkpoint=RUN", "out=x.gif"], "invalid value for out: 'x.gif'"),
    ],
)
def test_sample_errors_are_clean(trained, tmp_path, args, needle):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    args = [
        a.replace("NOTCKPT", str(tmp_path / "foreign.pt")).replace("RUN", str(trained))
        for a in args
    ]
    proc = sample_cli(*args, cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert needle in proc.stderr, proc.stderr


def test_points_sample_writes_npz_and_scatter(tmp_path):
    cli(
        "trainer.device=cpu",
        "critic.dim=16",
        "generator.dim=16",
        "trainer.batch_size=32",
        "trainer.steps=2",
        "trainer.progress=false",
        cwd=tmp_path,
        check=True,
    )
    (run,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    proc = sample_cli(f"checkpoint={run}", "n=100", f"out={tmp_path / 'p.npz'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "p.npz")["samples"].shape == (100, 2)
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_ema_resume_is_bitwise(tmp_path):
    data = make_folder(tmp_path / "images", n=32)
    args = [
        *IMG,
        f"dataset.root={data}",
        "trainer.ema.decay=0.5",
        "trainer.sample_every=0",
    ]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cli(*args, "trainer.steps=6", cwd=tmp_path / "a", check=True)
    cli(*args, "trainer.steps=3", cwd=tmp_path / "b", check=True)
    (rb,) = [p for p in (tmp_path / "b" / "outputs").glob("*/*") if p.is_dir()]
    cli(f"resume={rb}", "trainer.steps=6", cwd=tmp_path / "b", check=True)
    (ra,) = [p for p in (tmp_path / "a" / "outputs").glob("*/*") if p.is_dir()]
    a = load_checkpoint(ra / "checkpoints" / "last.pt")
    b = load_checkpoint(rb / "checkpoints" / "last.pt")
    for k, v in a["ema"].items():
        assert torch.equal(v, b["ema"][k]), k
    for k, v in a["generator"].items():
        assert torch.equal(v, b["generator"][k]), k


def test_unit_range_run_shows_and_exports_8_bit_pixels(tmp_path):
    """A [0, 1] run (experiment=mnist_paper): the trainer's real grid and wgangp-sample
    map [0, 1] to 0..255, not as if it were [-1, 1] (which would put black at 127)."""
    from tests.test_image_data import write_mnist

    write_mnist(tmp_path / "data", n_train=16)
    cli(
        "experiment=mnist_paper",
        f"dataset.root={tmp_path / 'data'}",
        "dataset.num_workers=0",
        "critic.dim=4",
        "generator.dim=4",
        "trainer.batch_size=8",
        "trainer.n_critic=1",
        "trainer.steps=2",
        "trainer.sample_every=2",
        "trainer.ckpt_every=2",
        "trainer.progress=false",
        "trainer.device=cpu",
        cwd=tmp_path,
        check=True,
    )
    (run,) = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    with Image.open(run / "samples" / "real.png") as im:
        tile = np.asarray(im.convert("L"))[2:30, 2:30]  # the first 28×28 digit
    assert tile.min() < 30 and tile.max() > 225  # random 8-bit digits span the range
    ckpt_path = run / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(ckpt_path)
    bias = [k for k in ckpt["generator"] if k.endswith(".bias")][-1]  # the output layer's
    for value, want in ((-100.0, 0), (100.0, 255)):  # sigmoid → 0 or 1 everywhere
        ckpt["generator"][bias].fill_(value)
        torch.save(ckpt, tmp_path / "edited.pt")
        out = tmp_path / f"s{want}.npz"
        sample([f"checkpoint={tmp_path / 'edited.pt'}", "n=3", f"out={out}"])  # in-process
        samples = np.load(out)["samples"]
        assert samples.shape == (3, 1, 28, 28) and samples.dtype == np.uint8
        assert (samples == want).all()


def test_sample_npz_holds_the_bytes_of_the_png_grid(trained, tmp_path):
    """wgangp-sample's .npz and its .png grid of the same samples hold the same 8-bit
    values (one rounding, save_image's, for both)."""
    for out in ("s.npz", "s.png"):  # in-process: the CLI itself is tested above
        sample([f"checkpoint={trained}", "n=8", f"out={tmp_path / out}", "seed=5"])
    arrays = np.load(tmp_path / "s.npz")["samples"]  # (8, 1, 16, 16)
    with Image.open(tmp_path / "s.png") as im:
        grid = np.asarray(im.convert("L"))
    tiles = [grid[2:18, 2 + 18 * i : 18 + 18 * i] for i in range(8)]
    assert all(np.array_equal(t, a[0]) for t, a in zip(tiles, arrays, strict=True))
