"""dataset=stacked_mnist and its mode metrics, on a tiny MNIST written here in
torchvision's idx layout (each class a distinct 7×7 template, upscaled, with noise)."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import cli, compose_cfg
from wgangp.cli.eval import main as eval_main
from wgangp.data import build_data
from wgangp.data.stacked_mnist import STACK_SEED, mnist_fingerprint
from wgangp.errors import ConfigError, DataError, MetricUnavailable
from wgangp.metrics import mnist_classifier
from wgangp.metrics.evaluator import Evaluator
from wgangp.metrics.mnist_classifier import classifier_path, load_or_train_classifier
from wgangp.metrics.stacked_mnist import mode_histogram, stacked_modes, stacked_scores

CPU = torch.device("cpu")
N_TRAIN, N_TEST = 200, 100


def write_tiny_mnist(root: Path, n_train: int = N_TRAIN, n_test: int = N_TEST) -> None:
    """root/MNIST/raw/*-ubyte: digit ``c`` is class ``c``'s random 7×7 binary template
    upscaled 4× to 28×28, plus pixel noise; labels cycle 0…9."""
    rng = np.random.default_rng(0)
    templates = rng.integers(0, 2, (10, 7, 7)).repeat(4, 1).repeat(4, 2) * 200
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for part, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        noise = rng.integers(0, 56, (n, 28, 28))
        imgs = (templates[labels] + noise).astype(np.uint8)
        (raw / f"{part}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + imgs.tobytes()
        )
        (raw / f"{part}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, n) + labels.astype(np.uint8).tobytes()
        )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mnist")
    write_tiny_mnist(root)
    return root


@pytest.fixture(scope="module")
def cache(tiny, tmp_path_factory) -> Path:
    """A classifier cache holding the tiny MNIST's classifier (trained once here)."""
    path = tmp_path_factory.mktemp("cache")
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # set up before the per-test one-thread fixture runs
    load_or_train_classifier(build(tiny, "dataset.size=10").mnist_digits, path, CPU, 0.95)
    torch.set_num_threads(n)
    return path


def data_cfg(root: Path, *extra: str):
    return compose_cfg("dataset=stacked_mnist", f"dataset.root={root}", *extra)


def build(root: Path, *extra: str, batch: int = 8, seed: int = 0):
    return build_data(data_cfg(root, *extra).dataset, batch, CPU, seed)


def test_items_stack_three_digits_and_label_the_mode(tiny):
    src = build(tiny, "dataset.size=50", "dataset.num_workers=0")
    items, digits = src.items, src.mnist_digits
    assert src.sample_shape == (3, 28, 28) and len(items) == 50
    pool = torch.cat([digits.train_images, digits.test_images])  # split=all: 300 digits
    labels = torch.cat([digits.train_labels, digits.test_labels])
    g = torch.Generator().manual_seed(STACK_SEED)
    ids = torch.randint(0, N_TRAIN + N_TEST, (50, 3), generator=g)
    for i in (0, 7, 49):
        x = items[(i, 123)]
        assert x.dtype == torch.uint8 and x.shape == (3, 28, 28)
        for c in range(3):
            assert torch.equal(x[c], pool[ids[i, c]])
        d = labels[ids[i]].tolist()
        assert int(items.labels[i]) == 100 * d[0] + 10 * d[1] + d[2]
    # the batches are those items scaled to [-1, 1]
    batch = src.next_batch()
    assert batch.shape == (8, 3, 28, 28) and batch.min() >= -1 and batch.max() <= 1


def test_stream_is_the_same_for_any_workers_and_after_resume(tiny):
    a = build(tiny, "dataset.size=40", "dataset.num_workers=0", seed=3)
    b = build(tiny, "dataset.size=40", "dataset.num_workers=2", seed=3)
    first = [a.next_batch() for _ in range(7)]  # crosses an epoch (5 batches of 8)
    for x in first:
        assert torch.equal(x, b.next_batch())
    c = build(tiny, "dataset.size=40", "dataset.num_workers=0", seed=3)
    c.load_state_dict(json.loads(json.dumps(build_state(tiny, 4))))
    assert torch.equal(c.next_batch(), first[4])


def build_state(root: Path, n: int) -> dict:
    """The stream state after ``n`` batches."""
    s = build(root, "dataset.size=40", "dataset.num_workers=0", seed=3)
    for _ in range(n):
        s.next_batch()
    return s.state_dict()


def test_resized_split_and_bad_keys(tiny):
    src = build(tiny, "dataset.size=20", "dataset.image_size=32", "dataset.split=test")
    assert src.sample_shape == (3, 32, 32) and src.mnist_digits.image_size == 32
    assert int(src.items.ids.max()) < N_TEST  # drawn from the test file only
    with pytest.raises(ConfigError, match=r"dataset.channels: 1 \(allowed: 3 for stacked"):
        build(tiny, "dataset.channels=1")
    with pytest.raises(ConfigError, match="dataset.split: 'dev'"):
        build(tiny, "dataset.split=dev")


def test_missing_mnist_names_the_expected_files(tmp_path):
    with pytest.raises(DataError) as e:
        build(tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("stacked_mnist: data set not found")
    assert "root/MNIST/raw/{train-images-idx3-ubyte" in msg and "dataset.download=true" in msg


def test_classifier_trains_once_then_loads_from_the_cache(tiny, tmp_path, monkeypatch):
    digits = build(tiny, "dataset.size=10").mnist_digits
    assert digits.fingerprint == mnist_fingerprint(tiny)
    model, acc = load_or_train_classifier(digits, tmp_path, CPU, 0.95)
    assert acc == 1.0  # the templates are easy to tell apart
    path = classifier_path(digits, tmp_path)
    assert path.is_file() and digits.fingerprint[:16] in path.name

    def refuse(*args):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(mnist_classifier, "train_classifier", refuse)
    again, acc2 = load_or_train_classifier(digits, tmp_path, CPU, 0.95)
    assert acc2 == acc
    x = mnist_classifier.signed(digits.test_images)
    assert torch.equal(mnist_classifier.predict(again, x), mnist_classifier.predict(model, x))
    with pytest.raises(MetricUnavailable, match="eval.mnist_classifier_min_accuracy=1.5"):
        load_or_train_classifier(digits, tmp_path, CPU, 1.5)


def test_scores_of_real_and_collapsed_samples(tiny, cache):
    src = build(tiny, "dataset.size=400", "dataset.num_workers=0")
    model, _ = load_or_train_classifier(src.mnist_digits, cache, CPU, 0.95)
    real = torch.stack([src.items[(i, 0)] for i in range(400)]).float() / 127.5 - 1
    assert torch.equal(stacked_modes(model, real), src.items.labels)
    counts = mode_histogram(real.split(64), model)
    want = torch.bincount(src.items.labels, minlength=1000)
    assert torch.equal(counts, want)
    scores = stacked_scores(counts)
    distinct = len(set(src.items.labels.tolist()))
    assert scores["stacked_mnist_modes"] == distinct
    p = want[want > 0].double() / 400
    assert scores["stacked_mnist_kl"] == pytest.approx(float((p * (p * 1000).log()).sum()))
    assert scores["stacked_mnist_kl"] < math.log(1000 / distinct) + 0.1
    collapsed = real[3:4].expand(500, -1, -1, -1)
    one = stacked_scores(mode_histogram(collapsed.split(128), model))
    assert one == {"stacked_mnist_modes": 1.0, "stacked_mnist_kl": math.log(1000)}
    uniform = stacked_scores(torch.full((1000,), 26, dtype=torch.int64))
    assert uniform == {"stacked_mnist_modes": 1000.0, "stacked_mnist_kl": 0.0}


def test_evaluator_scores_a_generator_against_real_stacks(tiny, cache):
    cfg = data_cfg(
        tiny,
        "dataset.size=300",
        "dataset.num_workers=0",
        "eval.num_samples=300",
        f"eval.stats_cache={cache}",
    )
    src = build_data(cfg.dataset, 8, CPU, 0)
    ev = Evaluator(cfg.eval, cfg.dataset, src, CPU)
    assert ev.names == ["stacked_mnist_modes", "stacked_mnist_kl"]  # the data set's defaults
    one = src.sample(1, generator=torch.Generator().manual_seed(0))

    class Collapsed(torch.nn.Module):
        z_dim = 4

        def forward(self, z):
            return one.expand(len(z), -1, -1, -1)

    values = ev(Collapsed())
    assert values["stacked_mnist_modes"] == 1 and values["stacked_mnist_kl"] == math.log(1000)
    # the real reference: 300 real stacks drawn without replacement from the 300 items
    real = stacked_scores(torch.bincount(src.items.labels, minlength=1000))
    assert values["stacked_mnist_modes_real"] == real["stacked_mnist_modes"]
    assert values["stacked_mnist_kl_real"] == pytest.approx(real["stacked_mnist_kl"])
    # 300 samples cannot fill 1000 modes: the real value is the floor at this size
    assert 200 < real["stacked_mnist_modes"] < 300
    toy = compose_cfg("dataset=gaussians8", "eval.metrics=[stacked_mnist_kl]")
    toy_src = build_data(toy.dataset, 8, CPU, 0)
    with pytest.raises(ConfigError, match="only for dataset=stacked_mnist"):
        Evaluator(toy.eval, toy.dataset, toy_src, CPU)


def test_train_the_preset_end_to_end(tiny, cache, tmp_path):
    proc = cli(
        "experiment=stacked_mnist_pacgan",
        f"dataset.root={tiny}",
        "dataset.size=256",
        "dataset.num_workers=0",
        "critic.dim=8",
        "generator.dim=8",
        "trainer.device=cpu",
        "trainer.batch_size=16",
        "trainer.steps=4",
        "trainer.progress=false",
        "eval.every=2",
        "eval.num_samples=200",
        f"eval.stats_cache={cache}",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        check=True,
    )
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert 1 <= r["stacked_mnist_modes"] <= 200
        assert 0 <= r["stacked_mnist_kl"] <= math.log(1000)
        assert 150 < r["stacked_mnist_modes_real"] <= 200
    assert "stacked_mnist" in proc.stderr + proc.stdout
    # wgangp-eval on the final checkpoint gives the numbers training logged at its step
    out = tmp_path / "m.json"
    eval_main([f"checkpoint={tmp_path / 'run'}", f"json={out}", f"stats_cache={cache}"])
    got = json.loads(out.read_text())
    assert got["step"] == 4
    assert got["metrics"] == {k: v for k, v in rows[-1].items() if k.startswith("stacked")}


def test_preset_holds_pacgans_numbers():
    cfg = compose_cfg("experiment=stacked_mnist_pacgan")
    assert cfg.dataset.name == "stacked_mnist" and cfg.dataset.size == 128000
    assert (cfg.trainer.batch_size, cfg.generator.z_dim, cfg.eval.num_samples) == (64, 100, 26000)
    assert cfg.optim.critic.lr == 2e-4 and list(cfg.optim.generator.betas) == [0.5, 0.999]
    assert cfg.loss.name == "wgan-gp" and cfg.trainer.steps * cfg.trainer.n_critic == 100000
    assert OmegaConf.to_container(cfg.dataset.pixel_range) == [-1.0, 1.0]
