"""The Python API (``import wgangp``): load_generator, sample and load_critic give what
wgangp-sample writes and what the trainer's networks compute."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import wgangp
from tests.conftest import REPO, compose_cfg, pythonpath
from tests.test_images_e2e import make_folder
from wgangp.cli.sample import sample as sample_cli
from wgangp.config.validate import validate
from wgangp.data.pixels import as_signed
from wgangp.errors import CheckpointError, ConfigError
from wgangp.io.checkpoint import load_checkpoint
from wgangp.metrics.features import quantize
from wgangp.train.trainer import Trainer

TOY = [
    "trainer.device=cpu",
    "critic.dim=16",
    "generator.dim=16",
    "trainer.batch_size=16",
    "trainer.ema.decay=0.9",
]


def image_args(data: Path, *extra: str) -> list[str]:
    """A tiny one-channel 16×16 DCGAN run (batch-norm generator) on ``make_folder`` images."""
    return [
        "trainer.device=cpu",
        "dataset=image_folder",
        f"dataset.root={data}",
        "dataset.image_size=16",
        "dataset.channels=1",
        "dataset.num_workers=0",
        "critic.dim=8",
        "generator.dim=8",
        "trainer.batch_size=8",
        "trainer.n_critic=1",
        *extra,
    ]


def train(run_dir: Path, *overrides: str, steps: int = 3) -> Trainer:
    """A run of ``steps`` steps in ``run_dir`` (its ``checkpoints/last.pt`` written)."""
    cfg = compose_cfg(
        *overrides, f"trainer.steps={steps}", "trainer.sample_every=0", "trainer.progress=false"
    )
    trainer = Trainer(cfg, run_dir, validate(cfg))
    trainer.fit()
    return trainer


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("toy") / "run"
    train(run, *TOY)
    return run


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """A [0, 1] image run whose config samples with each batch's statistics (eval.bn=batch)."""
    tmp = tmp_path_factory.mktemp("images")
    data = make_folder(tmp / "data", n=16)
    run = tmp / "run"
    train(
        run,
        *image_args(data, "dataset.pixel_range=[0,1]", "generator.output=sigmoid"),
        "eval.bn=batch",
        "trainer.ema.decay=0.5",
    )
    return run


@pytest.fixture(scope="module")
def conditional(tmp_path_factory) -> Path:
    """A class-conditional image run: the folders ``a`` and ``b`` are its two classes."""
    tmp = tmp_path_factory.mktemp("conditional")
    data = make_folder(tmp / "data", n=16)
    run = tmp / "run"
    train(run, *image_args(data, "conditional.enabled=true"), steps=2)
    return run


def npz_of(argv: list[str], out: Path) -> dict[str, np.ndarray]:
    sample_cli([*argv, f"out={out}"])
    with np.load(out) as f:
        return dict(f)


# ------------------------------------------------------------------ load_generator


def test_a_points_generator_carries_what_a_consumer_needs(toy):
    gen = wgangp.load_generator(toy)
    ckpt = load_checkpoint(toy / "checkpoints" / "last.pt")
    assert isinstance(gen, wgangp.Generator) and isinstance(gen, torch.nn.Module)
    assert (gen.kind, gen.z_dim, gen.sample_shape, gen.output_shape) == ("points", 2, (2,), (2,))
    assert (gen.num_classes, gen.pixel_range, gen.symbols) == (0, None, None)
    assert (gen.ema, gen.step, gen.bn, gen.training) == (True, 3, "running", False)
    assert gen.config == ckpt["config"]
    # the EMA weights by default, the generator's with ema=False
    for name, value in gen.network.state_dict().items():
        assert torch.equal(value, ckpt["ema"][f"module.{name}"]), name
    plain = wgangp.load_generator(toy / "checkpoints" / "last.pt", ema=False)
    assert plain.ema is False
    for name, value in plain.network.state_dict().items():
        assert torch.equal(value, ckpt["generator"][name]), name


def test_ema_and_checkpoint_mistakes_are_the_clean_errors_of_wgangp_sample(tmp_path):
    run = tmp_path / "run"
    train(run, *TOY[:-1], steps=1)  # no EMA
    with pytest.raises(ConfigError) as e:
        wgangp.load_generator(run, ema=True)
    path = run / "checkpoints" / "last.pt"
    assert str(e.value) == (
        "invalid value for ema: True (allowed: false for this checkpoint); "
        f"{path} was trained without an EMA"
    )
    with pytest.raises(CheckpointError) as e:
        wgangp.load_generator(tmp_path / "nowhere")
    assert str(e.value) == f"checkpoint {tmp_path / 'nowhere'}: no such file or directory"
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable: truncated or corrupted"):
        wgangp.load_critic(tmp_path / "junk.pt")


# ------------------------------------------------------------------ sample


def test_points_samples_are_wgangp_samples_npz_bitwise(toy, tmp_path):
    gen = wgangp.load_generator(toy)
    got = wgangp.sample(gen, 300, seed=7, batch_size=128)
    npz = npz_of([f"checkpoint={toy}", "n=300", "seed=7"], tmp_path / "s.npz")
    assert got.dtype == torch.float32 and got.shape == (300, 2)
    assert np.array_equal(got.numpy(), npz["samples"])
    assert torch.equal(wgangp.sample(gen, 300, seed=7), got)  # reproducible from the seed
    assert not torch.equal(wgangp.sample(gen, 300, seed=8), got)
    # the generator itself on the seed's latents: sample adds nothing but the batching
    z = torch.randn(300, 2, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        assert torch.equal(gen(z), got)


def test_image_samples_in_the_runs_pixel_range_are_wgangp_samples_npz(images, tmp_path):
    gen = wgangp.load_generator(images)
    assert (gen.kind, gen.sample_shape, gen.pixel_range, gen.bn) == (
        "image",
        (1, 16, 16),
        (0.0, 1.0),
        "batch",
    )
    got = wgangp.sample(gen, 20, seed=3, batch_size=8)
    assert got.shape == (20, 1, 16, 16) and got.dtype == torch.float32
    assert float(got.min()) >= 0 and float(got.max()) <= 1  # a sigmoid's [0, 1] pixels
    npz = npz_of([f"checkpoint={images}", "n=20", "seed=3", "batch_size=8"], tmp_path / "s.npz")
    # the .npz holds the same samples as 8-bit pixels: its quantisation of [-1, 1]
    assert np.array_equal(quantize(as_signed(got, gen.pixel_range)).numpy(), npz["samples"])
    # the run's eval.bn=batch is the default, as in wgangp-sample; running differs
    running = wgangp.sample(gen, 20, seed=3, batch_size=8, bn="running")
    assert not torch.equal(running, got)
    npz = npz_of(
        [f"checkpoint={images}", "n=20", "seed=3", "batch_size=8", "bn=running"],
        tmp_path / "r.npz",
    )
    assert np.array_equal(quantize(as_signed(running, gen.pixel_range)).numpy(), npz["samples"])
    with pytest.raises(ConfigError, match=r"invalid value for bn: 'eval' \(allowed: running"):
        wgangp.sample(gen, 4, bn="eval")


def test_class_labels_by_default_by_int_and_by_tensor(conditional, tmp_path):
    gen = wgangp.load_generator(conditional)
    assert gen.num_classes == 2 and gen.bn == "running"
    npz = npz_of([f"checkpoint={conditional}", "n=6", "seed=1"], tmp_path / "s.npz")
    assert npz["labels"].tolist() == [0, 1, 0, 1, 0, 1]
    default = wgangp.sample(gen, 6, seed=1)
    assert np.array_equal(quantize(default).numpy(), npz["samples"])
    assert torch.equal(wgangp.sample(gen, 6, labels=torch.tensor([0, 1] * 3), seed=1), default)
    npz = npz_of([f"checkpoint={conditional}", "n=6", "seed=1", "label=1"], tmp_path / "l.npz")
    ones = wgangp.sample(gen, 6, labels=1, seed=1)
    assert np.array_equal(quantize(ones).numpy(), npz["samples"])
    assert torch.equal(ones[1::2], default[1::2]) and not torch.equal(ones[::2], default[::2])
    with pytest.raises(ConfigError) as e:
        wgangp.sample(gen, 6, labels=2)
    assert str(e.value) == "invalid value for labels: 2 (allowed: a class 0..1)"
    with pytest.raises(ConfigError, match=r"an integer tensor of shape \(6,\)"):
        wgangp.sample(gen, 6, labels=torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ConfigError, match=r"\[0, 2\] \(allowed: classes 0..1\)"):
        wgangp.sample(gen, 2, labels=torch.tensor([0, 2]))


def test_labels_for_an_unconditional_run_are_refused(toy):
    gen = wgangp.load_generator(toy)
    with pytest.raises(ConfigError) as e:
        wgangp.sample(gen, 4, labels=1)
    assert str(e.value) == (
        "invalid value for labels: 1 (allowed: null for this checkpoint); its run was not "
        "class-conditional (conditional.enabled=false)"
    )
    with pytest.raises(ConfigError, match="invalid value for n: 0"):
        wgangp.sample(gen, 0)


def test_text_samples_are_symbol_indices(tmp_path):
    from tests.test_text import tiny_run, write_shards

    write_shards(tmp_path, [40])
    cfg = tiny_run(tmp_path, "trainer.steps=2", "trainer.sample_every=0")
    trainer = Trainer(cfg, tmp_path / "run", torch.device("cpu"))
    trainer.fit()
    gen = wgangp.load_generator(tmp_path / "run")
    assert (gen.kind, gen.output_shape, gen.symbols) == ("text", (8,), trainer.data.vocab.symbols)
    got = wgangp.sample(gen, 10, seed=2)
    npz = npz_of([f"checkpoint={tmp_path / 'run'}", "n=10", "seed=2"], tmp_path / "s.npz")
    assert got.dtype == torch.int64 and got.shape == (10, 8)
    assert np.array_equal(got.numpy(), npz["samples"])


# ------------------------------------------------------------------ load_critic


def test_the_critic_scores_real_data_as_the_trainers_critic(tmp_path):
    trainer = train(tmp_path / "run", *TOY)
    critic = wgangp.load_critic(tmp_path / "run")
    assert not critic.training
    real = trainer.data.sample(64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(critic(real), trainer.critic(real))


def test_an_acgan_critic_gives_scores_and_class_logits(conditional):
    critic = wgangp.load_critic(conditional)
    ckpt = load_checkpoint(conditional / "checkpoints" / "last.pt")
    for name, value in critic.state_dict().items():
        assert torch.equal(value, ckpt["critic"][name]), name
    x = wgangp.sample(wgangp.load_generator(conditional), 4)
    with torch.no_grad():
        scores, logits = critic(x, with_logits=True)
        assert torch.equal(scores, critic(x))
    assert scores.shape == (4,) and logits.shape == (4, 2)


# ------------------------------------------------------------------ the package


def test_import_wgangp_loads_no_torch_until_the_api_is_used():
    code = (
        "import sys, wgangp\n"
        "print('torch' in sys.modules, all(callable(getattr(wgangp, n)) for n in wgangp.__all__))\n"
        "from wgangp.inference import generator\n"
        "print(wgangp.load_generator is generator.load_generator, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": pythonpath(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.stdout.split() == ["False", "True", "True", "True"], proc.stderr
    with pytest.raises(AttributeError, match="module 'wgangp' has no attribute 'nothing'"):
        _ = wgangp.nothing
