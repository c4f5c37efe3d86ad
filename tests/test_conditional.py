"""Class-conditional training (conditional.enabled; gan_cifar_resnet.py's CONDITIONAL +
ACGAN): labels carried through the data streams, the AC-GAN terms of both losses, the
labels the fakes take, resume, sampling and the errors. The models' conditional layers
are tested in tests/test_conditional_models.py."""

from __future__ import annotations

import copy
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from tests.conftest import compose_cfg
from tests.test_image_data import make_cfg
from tests.test_image_data import no_md5 as _no_md5
from wgangp.config.validate import validate
from wgangp.core import losses
from wgangp.data import build_data
from wgangp.errors import ConfigError
from wgangp.train.trainer import Trainer

CPU = torch.device("cpu")
no_md5 = _no_md5  # the fixture: our fake CIFAR files cannot match torchvision's MD5s
PER_BATCH = 6  # images per CIFAR-10 file: 30 training images


def label_of(i: int) -> int:
    return (i * 7) % 10


def write_labeled_cifar10(root: Path, per_batch: int = PER_BATCH) -> None:
    """CIFAR-10's pickles, image i of label (7i mod 10) filled with 25·label + i mod 5,
    so a batch's images tell their own labels."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        ids = range(b * per_batch, (b + 1) * per_batch)
        data = np.stack([np.full(3072, 25 * label_of(i) + i % 5, np.uint8) for i in ids])
        with open(base / name, "wb") as f:
            pickle.dump({"data": data, "labels": [label_of(i) for i in ids]}, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def labels_shown(batch: torch.Tensor) -> torch.Tensor:
    """The labels written into the images' pixels (x / 127.5 − 1 undone)."""
    v = torch.round((batch[:, 0, 0, 0] + 1) * 127.5).long()
    return v // 25


@pytest.mark.parametrize("on_device", [False, True])
def test_labels_travel_with_their_images_over_epochs_and_ranks(tmp_path, no_md5, on_device):
    write_labeled_cifar10(tmp_path)
    cfg = make_cfg("cifar10", tmp_path, on_device=on_device)
    src = build_data(cfg, 4, CPU, seed=3)
    assert src.num_classes == 10
    for _ in range(20):  # 7 batches an epoch: three epoch boundaries
        x, y = src.next_labeled_batch()
        assert y.dtype == torch.int64 and y.shape == (4,)
        assert torch.equal(y, labels_shown(x))
    # a plain next_batch advances the stream the same way
    a, b = build_data(cfg, 4, CPU, seed=3), build_data(cfg, 4, CPU, seed=3)
    for _ in range(9):
        assert torch.equal(a.next_batch(), b.next_labeled_batch()[0])
    # each rank's slice of the global batch, with its own labels
    for rank in (0, 1):
        s = build_data(cfg, 2, CPU, seed=3)
        s.shard(rank, 2)
        for _ in range(10):
            x, y = s.next_labeled_batch()
            assert torch.equal(y, labels_shown(x))


def test_labels_resume_with_the_stream(tmp_path, no_md5):
    write_labeled_cifar10(tmp_path)
    cfg = make_cfg("cifar10", tmp_path)
    a = build_data(cfg, 4, CPU, seed=0)
    for _ in range(5):
        a.next_labeled_batch()
    b = build_data(cfg, 4, CPU, seed=0)
    b.load_state_dict(a.state_dict())
    for _ in range(6):
        (xa, ya), (xb, yb) = a.next_labeled_batch(), b.next_labeled_batch()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_a_set_without_labels_says_so(tmp_path):
    src = build_data(compose_cfg().dataset, 8, CPU, seed=0)
    assert src.num_classes is None
    with pytest.raises(Exception, match="has no class labels"):
        src.next_labeled_batch()


# --------------------------------------------------------------------------- the step


def trainer(root: Path, *extra: str) -> Trainer:
    cfg = compose_cfg(
        "experiment=cifar10_resnet_acgan_paper",
        f"dataset.root={root}",
        "dataset.num_workers=0",
        "dataset.dequantize=false",
        "critic.dim=8",
        "generator.dim=8",
        "generator.z_dim=8",
        "trainer.batch_size=4",
        "trainer.gen_batch_size=6",
        "trainer.n_critic=2",
        "trainer.progress=false",
        *extra,
    )
    return Trainer(cfg, root / "run", validate(cfg))


@pytest.fixture
def cifar(tmp_path: Path, no_md5: None) -> Path:
    write_labeled_cifar10(tmp_path)
    return tmp_path


def test_preset_is_the_official_conditional_model(cifar):
    cfg = compose_cfg("experiment=cifar10_resnet_acgan_paper", f"dataset.root={cifar}")
    plain = compose_cfg("experiment=cifar10_resnet_paper", f"dataset.root={cifar}")
    assert cfg.conditional.enabled and not plain.conditional.enabled
    # gan_cifar_resnet.py: ACGAN_SCALE = 1., ACGAN_SCALE_G = 0.1; all else as unconditional
    assert (cfg.conditional.acgan_scale, cfg.conditional.acgan_scale_g) == (1.0, 0.1)
    cfg.conditional = plain.conditional
    assert cfg == plain


def test_a_dcgan_baseline_with_a_batchnorm_critic_carries_the_acgan_terms(cifar):
    """loss=dcgan critic.norm=batchnorm: the class term on top of the standard GAN loss,
    with D(x) and D(x̃) normalised apart (by hand: two calls in train mode)."""
    t = trainer(cifar, "loss=dcgan", "critic.norm=batchnorm")
    assert not t.hot.fuse_real_fake
    inputs = t.draw_inputs()
    real, y = inputs.reals[0], inputs.real_labels[0]
    with torch.no_grad():
        fake = t.generator(inputs.fake_z[0], y)
        d_real, l_real = t.critic(real, with_logits=True)
        d_fake = t.critic(fake)
        ce = F.cross_entropy(l_real, y)
        want = losses.dcgan_critic_loss(d_real, d_fake) + 1.0 * ce
    stats = t.critic_step(real, fake, labels=y, penalty=False)
    assert float(stats["loss/critic"]) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
    assert float(stats["acgan/critic"]) == pytest.approx(float(ce), rel=1e-6)
    gz, gy = inputs.gen_z, inputs.gen_labels
    with torch.no_grad():
        score, logits = t.critic(t.generator(gz, gy), with_logits=True)
        want_g = losses.dcgan_generator_loss(score) + 0.1 * F.cross_entropy(logits, gy)
    stats = t.generator_step(gz, gy)
    assert float(stats["loss/generator"]) == pytest.approx(float(want_g), rel=1e-5, abs=1e-6)


def test_the_losses_carry_the_acgan_terms_and_the_fakes_take_the_real_labels(cifar):
    t = trainer(cifar)
    inputs = t.draw_inputs()
    assert all(
        torch.equal(y, labels_shown(x))
        for x, y in zip(inputs.reals, inputs.real_labels, strict=True)
    )
    assert inputs.gen_labels.shape == (6,) and inputs.gen_labels.min() >= 0
    assert int(inputs.gen_labels.max()) < 10
    seen: list[torch.Tensor | None] = []
    gen = t.generator_fwd

    def recording(z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        seen.append(labels)
        return gen(z, labels)

    t.generator_fwd = recording
    # the first critic update's loss by hand, before it changes the weights
    real, y, z, eps = inputs.reals[0], inputs.real_labels[0], inputs.fake_z[0], inputs.eps[0]
    with torch.no_grad():
        fake = gen(z, y)
    d_real, l_real = t.critic(real, with_logits=True)
    d_fake = t.critic(fake)
    gp = losses.gradient_penalty(t.critic, real, fake, eps=eps).penalty
    ce = F.cross_entropy(l_real, y)
    want = d_fake.mean() - d_real.mean() + 10.0 * gp + 1.0 * ce
    want = want.detach()
    stats = t.critic_step(real, fake, eps=eps, labels=y)
    assert float(stats["loss/critic"]) == pytest.approx(float(want), rel=1e-5, abs=1e-6)
    assert float(stats["acgan/critic"]) == pytest.approx(float(ce.detach()), rel=1e-6)
    # the generator update's loss by hand: −E[D(G(z, y))] + 0.1·CE with its own labels
    gz, gy = inputs.gen_z, inputs.gen_labels
    with torch.no_grad():
        # the same batch statistics as the update's forward (train mode, same batch)
        score, logits = t.critic(gen(gz, gy), with_logits=True)
        want_g = -score.mean() + 0.1 * F.cross_entropy(logits, gy)
    stats = t.generator_step(gz, gy)
    assert float(stats["loss/generator"]) == pytest.approx(float(want_g), rel=1e-5, abs=1e-6)
    # the whole iteration: fakes of critic update i take real batch i's labels, then G's own
    seen.clear()
    stats = t.iteration(t.draw_inputs())
    assert len(seen) == 3
    assert {"acgan/critic", "acgan/real_acc", "acgan/fake_acc", "acgan/generator"} <= set(stats)


def test_acgan_scale_zero_leaves_the_class_head_untrained(cifar):
    """The class head learns from the critic's cross-entropy alone: with weight 0 its
    gradient is exactly 0 (and Adam moves nothing); with the paper's 1 it moves."""
    for scale, moves in ((0.0, False), (1.0, True)):
        t = trainer(cifar, f"conditional.acgan_scale={scale}")
        before = t.critic.acgan.weight.detach().clone()
        inp = t.draw_inputs()
        with torch.no_grad():
            fake = t.generator(inp.fake_z[0], inp.real_labels[0])
        t.critic_step(inp.reals[0], fake, eps=inp.eps[0], labels=inp.real_labels[0])
        assert (t.critic.acgan.weight.grad.abs().sum() > 0) == moves
        assert (not torch.equal(t.critic.acgan.weight, before)) == moves


def test_batch_fakes_generate_every_update_with_its_labels(cifar):
    t = trainer(cifar, "speed.batch_fakes=true")
    calls: list[torch.Tensor] = []
    gen = t.generator_fwd

    def recording(z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        calls.append(labels)
        return gen(z, labels)

    t.generator_fwd = recording
    inputs = t.draw_inputs()
    stats = t.iteration(inputs)
    assert torch.equal(calls[0], torch.cat(inputs.real_labels))
    assert torch.equal(calls[1], inputs.gen_labels)
    assert all(torch.isfinite(v).all() for v in stats.values())


def test_conditional_run_resumes_bitwise(cifar):
    a = trainer(cifar)
    for _ in range(2):
        a.train_step()
        a.step += 1
    ckpt = copy.deepcopy(a.state_dict())  # as torch.save would: not the live tensors
    assert ckpt["num_classes"] == 10
    b = trainer(cifar)
    b.load_state_dict(ckpt)
    for _ in range(2):
        sa, sb = a.train_step(), b.train_step()
        a.step += 1
        b.step += 1
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    for x, y in zip(
        a.state_dict()["critic"].values(), b.state_dict()["critic"].values(), strict=True
    ):
        assert torch.equal(x, y)
    for x, y in zip(
        a.generator.state_dict().values(), b.generator.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "overrides,key,text",
    [
        (
            ["conditional.enabled=true"],
            "conditional.enabled",
            "dataset=mnist, mnist_pkl, fashion_mnist, cifar10, or image_folder",
        ),
        (
            ["dataset=celeba", "conditional.enabled=true"],
            "conditional.enabled",
            "dataset=celeba, which has no class labels",
        ),
        (
            ["experiment=cifar10_resnet_acgan_paper", "critic.name=mlp"],
            "critic.name",
            "dcgan | resnet with conditional.enabled=true",
        ),
        (
            ["experiment=cifar10_resnet_acgan_paper", "generator.norm=none"],
            "generator.norm",
            "use generator.norm=batchnorm",
        ),
        (
            ["experiment=cifar10_resnet_acgan_paper", "conditional.acgan_scale_g=-0.1"],
            "conditional.acgan_scale_g",
            "a number ≥ 0",
        ),
    ],
)
def test_what_conditional_training_needs_is_checked_before_any_work(overrides, key, text):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(*overrides))
    assert e.value.key == key and text in str(e.value)


def test_changing_conditional_on_resume_is_refused():
    from wgangp.config.resume import INCOMPATIBLE

    assert "conditional.enabled".startswith(INCOMPATIBLE)


# --------------------------------------------------------------------------- samples


def test_sample_grid_has_a_class_per_column_and_label_picks_one(cifar):
    from wgangp.cli.sample import sample

    t = trainer(cifar)
    t.train_step()
    path = t.save()
    n = 20
    out = cifar / "s.npz"
    sample([f"checkpoint={path}", f"n={n}", f"out={out}", "device=cpu"])
    got = np.load(out)
    assert got["samples"].shape == (n, 3, 32, 32)
    assert got["labels"].tolist() == [i % 10 for i in range(n)]
    sample([f"checkpoint={path}", "n=4", f"out={out}", "device=cpu", "label=3"])
    assert np.load(out)["labels"].tolist() == [3] * 4
    # the same latent under different classes gives different images
    z = torch.randn(1, 8).repeat(2, 1)
    with torch.no_grad():
        t.generator.eval()
        two = t.generator(z, torch.tensor([0, 1]))
    assert not torch.equal(two[0], two[1])
    with pytest.raises(ConfigError, match="a class 0..9"):
        sample([f"checkpoint={path}", "n=4", f"out={out}", "device=cpu", "label=10"])


def test_label_on_an_unconditional_checkpoint_is_refused(tmp_path):
    from wgangp.cli.sample import sample

    t = Trainer(compose_cfg("trainer.progress=false"), tmp_path / "run", CPU)
    path = t.save()
    with pytest.raises(ConfigError, match="not class-conditional"):
        sample([f"checkpoint={path}", "n=4", f"out={tmp_path / 's.npz'}", "label=1"])


def test_the_conditional_iteration_holds_nothing_a_graph_cannot_capture(cifar):
    """speed.cuda_graph captures Trainer.iteration: the labels come in with the inputs
    (drawn by draw_inputs), and the cross-entropy, the accuracies and the balanced
    default labels make no host sync and draw no random number."""
    from wgangp.fast.cuda_graph import CaptureCheck

    t = trainer(cifar, "speed.nan_check=iteration")
    t.train_step()  # optimizer state and other first-call set-up: outside the check
    inputs = t.draw_inputs()
    state = t.rng.get_state()
    with CaptureCheck(CPU) as check:
        stats = t.iteration(inputs)
        t.generator(torch.zeros(3, 8))  # labels None: i mod K, no draw
    assert check.found == {}
    assert torch.equal(t.rng.get_state(), state)
    assert len(inputs.tensors()) == len(inputs.clone().tensors()) == 2 + 2 + 2 + 1 + 2 + 1
    assert "acgan/generator" in stats


def test_evaluation_samples_each_class_equally():
    """FID/IS of a class-conditional generator: the classes 0 … K−1 in turn across
    batches, so each class is n/K of the samples."""
    from wgangp.metrics.evaluator import generate_batches

    class Echo(torch.nn.Module):
        z_dim, num_classes = 2, 10

        def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return labels.float()[:, None]

    got = torch.cat(list(generate_batches(Echo(), 40, 7, 0, CPU))).long().squeeze(1)
    assert got.tolist() == [i % 10 for i in range(40)]
    assert torch.bincount(got).tolist() == [4] * 10


@pytest.mark.slow
def test_the_generator_learns_its_classes(tmp_path, no_md5):
    """On 200 flat images whose grey level is 25·label (+0…4), 800 generator steps of
    the conditional pair at 16 px and width 16 (~2 min on 2 CPU cores): the class head
    classifies every real image, and the mean grey level of the generator's samples
    rises with the class they were asked for (correlation with 25·k measured 0.92;
    an unconditional generator has none)."""
    write_labeled_cifar10(tmp_path, per_batch=40)
    cfg = compose_cfg(
        "experiment=cifar10_resnet_acgan_paper",
        f"dataset.root={tmp_path}",
        "dataset.num_workers=0",
        "dataset.image_size=16",
        "dataset.on_device=true",
        "critic.dim=16",
        "generator.dim=16",
        "generator.z_dim=16",
        "trainer.batch_size=32",
        "trainer.gen_batch_size=32",
        "trainer.progress=false",
        "optim.lr_decay=none",
    )
    torch.manual_seed(0)
    t = Trainer(cfg, tmp_path / "run", validate(cfg))
    for t.step in range(800):
        stats = t.train_step()
    assert float(stats["acgan/real_acc"]) == 1.0
    with torch.no_grad():
        z = torch.randn(1000, 16, generator=torch.Generator().manual_seed(1))
        y = torch.arange(1000) % 10
        grey = (t.generator.eval()(z, y).mean(dim=(1, 2, 3)) + 1) * 127.5
    per_class = torch.stack([grey[y == k].mean() for k in range(10)])
    target = 25.0 * torch.arange(10)
    corr = float(torch.corrcoef(torch.stack([per_class, target]))[0, 1])
    print("per-class grey:", [round(float(g), 1) for g in per_class], "corr", round(corr, 3))
    assert corr > 0.8


@pytest.mark.parametrize(
    "overrides",
    [
        ("trainer.precision=bf16",),
        ("speed.fuse_real_fake=false",),
        ("trainer.ema.decay=0.9", "gp.every=2"),
        ("speed.native_conv_grads=false", "speed.detach_relu_masks=false"),
        ("speed.channels_last=false",),
    ],
    ids=["bf16", "unfused", "ema-lazy", "plain-penalty", "nchw"],
)
def test_the_conditional_step_runs_with_each_option(cifar, overrides):
    t = trainer(cifar, *overrides)
    for _ in range(2):
        stats = t.train_step()
        t.step += 1
    assert all(torch.isfinite(v).all() for v in stats.values())
    assert {"acgan/critic", "acgan/generator"} <= stats.keys()
    if t.ema is not None:  # the averaged generator samples with the default labels
        assert t.sampling_generator()(torch.zeros(10, 8)).shape == (10, 3, 32, 32)


# --------------------------------------------------------------------------- image folders


def write_class_folders(root: Path) -> dict[str, int]:
    """PNGs in class folders (one nested deeper), grey level 25·class + i; returns
    each class's index in sorted order."""
    from PIL import Image

    where = ["cat/a.png", "cat/b.png", "cat/deep/c.png", "dog/d.png", "dog/e.png"]
    where += ["emu/f.png", "emu/g.png", "emu/h.png"]
    classes = {"cat": 0, "dog": 1, "emu": 2}
    for i, rel in enumerate(where):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        grey = 25 * classes[rel.split("/")[0]] + i % 5
        Image.fromarray(np.full((8, 8, 3), grey, np.uint8)).save(p)
    return classes


def folder_cfg(root: Path, *extra: str, batch_size: int = 4) -> Any:  # noqa: ANN401
    """A conditional ResNet run (width 8, 16 px) on the image folder at ``root``."""
    return compose_cfg(
        "dataset=image_folder",
        f"dataset.root={root}",
        "dataset.image_size=16",
        "dataset.num_workers=0",
        "critic=resnet",
        "generator=resnet",
        "critic.dim=8",
        "generator.dim=8",
        "generator.z_dim=8",
        "conditional.enabled=true",
        f"trainer.batch_size={batch_size}",
        "trainer.progress=false",
        *extra,
    )


def test_class_folders_label_an_image_folder(tmp_path):
    write_class_folders(tmp_path)
    src = build_data(make_cfg("image_folder", tmp_path, image_size=8), 4, CPU, seed=1)
    assert src.num_classes == 3 and src.items.base.classes == ["cat", "dog", "emu"]
    for _ in range(8):
        x, y = src.next_labeled_batch()
        assert torch.equal(y, labels_shown(x))


def test_a_truncated_image_stands_in_with_one_of_its_own_class(tmp_path):
    """An undecodable image is replaced by the next decodable one of the same class
    (here dog/e.png, the last dog, wraps round to dog/d.png, not to emu/f.png)."""
    write_class_folders(tmp_path)
    p = tmp_path / "dog" / "e.png"
    from PIL import Image

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), np.uint8)).save(p)
    p.write_bytes(p.read_bytes()[:2000])  # header fine, pixels not
    base = build_data(make_cfg("image_folder", tmp_path, image_size=8), 4, CPU, 0).items.base
    bad = base.paths.index(p)
    img, label = base[bad]
    assert label == 1 and base.paths[base.targets.index(1)].name == "d.png"
    assert np.asarray(img)[0, 0, 0] // 25 == 1  # dog's grey level


@pytest.mark.parametrize(
    "layout,text",
    [
        (["cat/a.png", "b.png"], "1 of its 2 images lie directly in dataset.root"),
        (["cat/a.png", "cat/b.png"], "needs at least two"),
    ],
)
def test_an_image_folder_without_classes_says_how_to_add_them(tmp_path, layout, text):
    from PIL import Image

    for rel in layout:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / rel)
    cfg = folder_cfg(tmp_path, batch_size=2)
    with pytest.raises(ConfigError) as e:
        Trainer(cfg, tmp_path / "run", validate(cfg))
    assert e.value.key == "conditional.enabled" and text in str(e.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_conditional_dcgan_on_mnist(tmp_path):
    """Class-conditional MNIST at its own 28 px with the DCGAN pair (gan_mnist.py's
    networks, given batch norm in the generator): labels are the digits' targets."""
    from tests.test_image_data import write_mnist

    write_mnist(tmp_path, n_train=20)
    cfg = compose_cfg(
        "dataset=mnist",
        f"dataset.root={tmp_path}",
        "dataset.image_size=28",
        "dataset.num_workers=0",
        "critic.dim=8",
        "generator.dim=8",
        "generator.z_dim=8",
        "conditional.enabled=true",
        "trainer.batch_size=4",
        "trainer.n_critic=2",
        "trainer.progress=false",
    )
    t = Trainer(cfg, tmp_path / "run", validate(cfg))
    assert t.num_classes == 10 and (cfg.critic.name, cfg.generator.name) == ("dcgan", "dcgan")
    inputs = t.draw_inputs()
    pixels = t.data.items.base.data.float().div(127.5).sub(1).flatten(1)
    for x, y in zip(inputs.reals, inputs.real_labels, strict=True):
        rows = [int((pixels == xi.flatten()).all(dim=1).nonzero()[0]) for xi in x]
        assert y.tolist() == [r % 10 for r in rows]  # write_mnist's labels: i mod 10
    stats = t.iteration(inputs)
    assert all(torch.isfinite(v).all() for v in stats.values())
    assert t.write_samples is not None and t.fixed_z.shape == (100, 8)


# --------------------------------------------------------------------------- DDP

_DDP_NET = [
    "dataset.num_workers=0",
    "critic.dim=8",
    "generator.dim=8",
    "generator.z_dim=8",
    # the path DDP takes (plain autograd through the wrapper, separate forwards)
    "speed.detach_relu_masks=false",
    "speed.native_conv_grads=false",
    "speed.fuse_real_fake=false",
    "speed.channels_last=false",
    "trainer.progress=false",
]


def _ddp_critic_grads(rank: int, world: int, root: str) -> dict[str, torch.Tensor]:
    """One conditional critic update's gradients on this rank's slice of 8 samples."""
    import os
    import tempfile

    import torchvision.datasets.cifar as cifar

    cifar.check_integrity = lambda f, md5=None: os.path.isfile(f)
    per = 8 // world
    cfg = compose_cfg(
        "experiment=cifar10_resnet_acgan_paper",
        f"dataset.root={root}",
        f"trainer.batch_size={per}",
        *_DDP_NET,
    )
    with tempfile.TemporaryDirectory() as tmp:
        t = Trainer(cfg, tmp, CPU)
    g = torch.Generator().manual_seed(5)
    real, fake = torch.randn(8, 3, 32, 32, generator=g), torch.randn(8, 3, 32, 32, generator=g)
    eps, y = torch.rand(8, 1, 1, 1, generator=g), torch.randint(0, 10, (8,), generator=g)
    part = slice(rank * per, (rank + 1) * per)
    t.critic_step(real[part], fake[part], eps=eps[part], labels=y[part])
    return {n: p.grad.clone() for n, p in t.critic.named_parameters()}


def _ddp_worker(rank: int, world: int, port: int, root: str) -> None:
    from tests.test_distributed import gloo_group

    with gloo_group(rank, world, port):
        torch.save(_ddp_critic_grads(rank, world, root), Path(root) / f"rank{rank}.pt")


def test_ddp_conditional_critic_update_equals_one_process(cifar):
    """Under DDP the class head is used by the real+fake forward but not by the
    penalty's: its gradient (from the cross-entropy) is still all-reduced with the rest,
    and every critic gradient equals one process's on the global batch."""
    import torch.multiprocessing as mp

    from tests.test_distributed import free_port

    torch.set_num_threads(1)
    ref = _ddp_critic_grads(0, 1, str(cifar))
    mp.start_processes(
        _ddp_worker, args=(2, free_port(), str(cifar)), nprocs=2, start_method="spawn", join=True
    )
    ranks = [torch.load(cifar / f"rank{r}.pt") for r in (0, 1)]
    assert ref["acgan.weight"].abs().sum() > 0
    for got in ranks:
        assert got.keys() == ref.keys()
        for name in ref:  # to float rounding at the tensor's scale (measured ≤ 4e-5)
            diff = float((got[name] - ref[name]).abs().max())
            assert diff <= 2e-4 * float(ref[name].abs().max()), (name, diff)
    # the replicas hold the same (all-reduced) gradients
    assert all(torch.equal(ranks[0][n], ranks[1][n]) for n in ref)


def test_a_conditional_run_trains_evaluates_and_writes_its_run_dir(tmp_path, monkeypatch):
    """fit() end to end on a folder of class folders: FID/KID/IS of the balanced
    classes (the Inception stand-in of tests/test_eval.py), a 10-row grid of one class
    per column, the AC-GAN scalars among the logged values, a checkpoint that samples."""
    from tests.test_eval import StandIn, jsonl
    from wgangp.cli.sample import sample
    from wgangp.metrics import evaluator as evaluate

    write_class_folders(tmp_path / "data")
    monkeypatch.setattr(evaluate, "make_extractor", lambda cfg, device: StandIn())
    cfg = folder_cfg(
        tmp_path / "data",
        "trainer.n_critic=2",
        "trainer.steps=2",
        "trainer.sample_every=2",
        "trainer.ckpt_every=2",
        "eval.every=2",
        "eval.num_samples=30",
        f"eval.stats_cache={tmp_path / 'stats'}",
    )
    t = Trainer(cfg, tmp_path / "run", validate(cfg))
    last = t.fit()
    (line,) = jsonl(tmp_path / "run")
    assert all(np.isfinite(line[k]) for k in ("fid", "kid", "is"))
    assert {"acgan/critic", "acgan/real_acc"} <= set(last)
    from PIL import Image

    grid = Image.open(tmp_path / "run" / "samples" / "step_0000002.png")
    assert grid.size == (3 * (16 + 2) + 2, 10 * (16 + 2) + 2)  # 3 classes × 10 rows
    out = tmp_path / "one.npz"
    sample([f"checkpoint={tmp_path / 'run'}", "n=6", f"out={out}", "label=2"])
    assert np.load(out)["labels"].tolist() == [2] * 6


def test_many_classes_make_an_eight_wide_grid(tmp_path):
    """Up to 16 classes the grid is 10 rows of one class per column; past that, 8×8
    samples of the classes 0..63 in turn (a 10 × K grid would be unreadably wide)."""
    from PIL import Image

    for k in range(20):
        (tmp_path / f"c{k:02d}").mkdir()
        Image.fromarray(np.full((8, 8, 3), 10 * k, np.uint8)).save(tmp_path / f"c{k:02d}/a.png")
    cfg = folder_cfg(tmp_path)
    t = Trainer(cfg, tmp_path / "run", validate(cfg))
    assert t.num_classes == 20 and t.fixed_z.shape == (64, 8) and t.grid_columns == 8
