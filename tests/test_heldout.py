"""The critic's loss on held-out data (``eval.metrics=[critic_loss]``, the official
scripts' "dev disc cost", the paper's Figure 4b) and training on a random subset of a
stored set (``dataset.subset``, Figure 4b's 1000 digits): the formula against a
by-hand computation, where the reals come from, no effect on training, and the errors."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, compose_cfg, toy_trainer_factory
from tests.test_conditional import labels_shown, write_labeled_cifar10
from tests.test_image_data import make_cfg
from tests.test_image_data import no_md5 as _no_md5
from tests.test_mnist_pkl import cfg_for, write_pkl
from wgangp.cli.eval import main as eval_main
from wgangp.config.compose import config_dir, config_groups
from wgangp.config.optimized import loggable_names
from wgangp.config.overrides import check_value_overrides
from wgangp.config.validate import validate
from wgangp.core import losses
from wgangp.data import build_data
from wgangp.data.base import subset_indices
from wgangp.errors import ConfigError
from wgangp.train.trainer import Trainer

CPU = torch.device("cpu")
no_md5 = _no_md5
HELD = ["eval.every=2", "eval.metrics=[critic_loss]", "eval.num_samples=192"]


@pytest.fixture
def make_trainer(tmp_path, monkeypatch):
    return toy_trainer_factory(tmp_path, monkeypatch, *TINY)


def _by_hand(t: Trainer, source, seed: int = 0, n_batches: int = 3, lam: float = 10.0):
    """critic_loss as the paper writes it, batch by batch, with the same draws."""
    from wgangp.metrics.evaluator import generate_batches

    rng = torch.Generator().manual_seed(seed + 2)
    total = 0.0
    for fake in generate_batches(t.generator, n_batches * 64, 64, seed, CPU, "batch"):
        real = source.sample(64, generator=rng)
        eps = losses.interpolation_weights(64, real.dim(), generator=rng)
        x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
        (g,) = torch.autograd.grad(t.critic(x_hat).sum(), x_hat)
        gp = ((g.norm(dim=1) - 1) ** 2).mean()
        total += float((t.critic(fake).mean() - t.critic(real).mean() + lam * gp).detach())
    return total / n_batches


def test_critic_loss_is_the_update_loss_on_held_out_and_on_training_reals(make_trainer):
    """A fixed toy set: held-out reals are fresh draws of its distribution, the training
    ones come from the set; the same fakes for both; the penalty included."""
    t = make_trainer("dataset.fixed_points=640", *HELD)
    t.train_step()
    ev = t.evaluator
    assert ev.heldout is t.data.distribution and ev.sample_names == []
    grads = [p.grad.clone() for p in t.critic.parameters()]
    out = ev.critic_losses(t.measured_critic_loss, t.generator, 64)
    # nothing is trained: the critic's last gradients untouched, its parameters trainable
    for p, g in zip(t.critic.parameters(), grads, strict=True):
        assert p.requires_grad and torch.equal(p.grad, g)
    assert out["critic_loss"] == pytest.approx(_by_hand(t, t.data.distribution), rel=1e-5)
    assert out["critic_loss_train"] == pytest.approx(_by_hand(t, t.data), rel=1e-5)
    assert out["critic_loss"] != out["critic_loss_train"]


def test_the_reals_come_from_where_they_should(make_trainer):
    t = make_trainer("dataset.fixed_points=640", *HELD)
    fixed = {tuple(p.tolist()) for p in t.data.data}
    calls = []

    def recording(real, fake, rng):
        calls.append(real)
        return torch.zeros(())

    t.evaluator.critic_losses(recording, t.generator, 64)
    held, train = calls[0::2], calls[1::2]  # 3 batches of 64, each against both
    assert len(calls) == 6 and all(r.shape == (64, 2) for r in calls)
    assert not any(tuple(p.tolist()) in fixed for r in held for p in r)
    assert all(tuple(p.tolist()) in fixed for r in train for p in r)
    # the generated toy sets draw afresh: their own draws are held out
    assert make_trainer(*HELD).evaluator.heldout is not None


def test_a_baseline_with_a_batchnorm_critic_is_measured_without_touching_its_statistics(
    make_trainer,
):
    t = make_trainer("loss=dcgan", "critic.norm=batchnorm", *HELD)
    t.train_step()
    before = copy.deepcopy(t.critic.state_dict())
    real, fake = t.data.next_batch(), t.generator(t.noise(64)).detach()
    value = t.measured_critic_loss(real, fake, torch.Generator().manual_seed(0))
    after = t.critic.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats too
    ref = copy.deepcopy(t.critic).train()
    want = losses.dcgan_critic_loss(ref(real), ref(fake))  # each batch its own statistics
    torch.testing.assert_close(value, want.detach(), rtol=1e-6, atol=0)
    assert t.critic.training


def test_measuring_changes_nothing_in_training_and_is_logged(tmp_path, monkeypatch):
    """Bitwise the same weights with the held-out measurement every 2 steps as without;
    metrics.jsonl and the returned values carry both numbers."""
    results = []
    for i, extra in enumerate(([], HELD)):
        cfg = compose_cfg(*TINY, "trainer.steps=4", "trainer.sample_every=0", *extra)
        t = Trainer(cfg, tmp_path / f"run{i}", CPU)
        last = t.fit()
        results.append((t, last))
    (a, _), (b, last) = results
    for p, q in zip(a.critic.parameters(), b.critic.parameters(), strict=True):
        assert torch.equal(p, q)
    for p, q in zip(a.generator.parameters(), b.generator.parameters(), strict=True):
        assert torch.equal(p, q)
    lines = [json.loads(x) for x in (tmp_path / "run1" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    assert all({"critic_loss", "critic_loss_train"} <= x.keys() for x in lines)
    assert last["metrics/critic_loss"] == lines[-1]["critic_loss"]
    cfg = compose_cfg(*TINY, *HELD, "optimized_metric=metrics/critic_loss_train")
    assert {"metrics/critic_loss", "metrics/critic_loss_train"} <= set(loggable_names(cfg))


def test_an_image_set_measures_on_eval_split_and_refuses_without_one(tmp_path, no_md5):
    write_labeled_cifar10(tmp_path)
    base = [
        "dataset=cifar10",
        f"dataset.root={tmp_path}",
        "dataset.num_workers=0",
        "critic.dim=8",
        "generator.dim=8",
        "trainer.batch_size=4",
        "eval.every=1",
        "eval.metrics=[critic_loss]",
        "eval.num_samples=8",
        "trainer.progress=false",
    ]
    with pytest.raises(ConfigError) as e:
        Trainer(compose_cfg(*base), tmp_path / "run", CPU)
    assert e.value.key == "eval.split" and "eval.split=test" in str(e.value)
    t = Trainer(compose_cfg(*base, "eval.split=test"), tmp_path / "run", CPU)
    seen = []
    t.evaluator.critic_losses(lambda r, f, g: seen.append(r) or torch.zeros(()), t.generator, 4)
    # CIFAR's training files hold images 0..29, the test file 30..35 (tests/test_conditional)
    test_labels = {(i * 7) % 10 for i in range(30, 36)}
    assert {int(y) for y in labels_shown(torch.cat(seen[0::2]))} <= test_labels
    assert len(seen) == 4
    assert not t.evaluator.needs_extractor  # no Inception for critic_loss alone


def test_refusals_for_data_without_held_out_samples(tmp_path, make_trainer, capsys):
    import numpy as np

    path = tmp_path / "pts.npy"
    np.save(path, np.random.default_rng(0).normal(size=(300, 2)).astype("float32"))
    with pytest.raises(ConfigError) as e:
        make_trainer("dataset=points", f"dataset.path={path}", *HELD)
    assert e.value.key == "eval.metrics" and "a points file has no other split" in str(e.value)
    # wgangp-eval says the same of a points run's checkpoint, in its own key names
    make_trainer("dataset=points", f"dataset.path={path}", "trainer.steps=1").fit()
    with pytest.raises(SystemExit) as exit_:
        eval_main([f"checkpoint={tmp_path / 'run'}", "metrics=critic_loss"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("wgangp-eval: error: invalid value for metrics: ['critic_loss']")
    assert "a points file has no other split" in err


def test_wgangp_eval_measures_a_checkpoint_as_training_logged_it(tmp_path, make_trainer, capsys):
    """The checkpoint's critic against its training generator, whatever ema= says: the
    numbers training logged at that step, from the same draws."""
    t = make_trainer(
        "trainer.steps=2", "trainer.seed=3", "trainer.ema.decay=0.9", "dataset.fixed_points=640",
        "eval.every=2", "eval.metrics=[wasserstein,critic_loss]", "eval.num_samples=192",
    )  # fmt: skip
    t.fit()
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    ckpt = str(tmp_path / "run")
    eval_main([f"checkpoint={ckpt}", "json=" + str(tmp_path / "e.json")])
    got = json.loads((tmp_path / "e.json").read_text())["metrics"]
    for k in ("critic_loss", "critic_loss_train"):
        assert got[k] == pytest.approx(logged[k], rel=1e-5), k
    out = capsys.readouterr().out
    assert "| critic_loss |" in out and "| critic_loss_train |" in out
    assert "(training data, to compare)" in out


# ----------------------------------------------------------------- dataset.subset


def test_subset_indices_are_a_fixed_random_choice():
    keep = subset_indices(100, 10, "x")
    assert keep.tolist() == sorted(set(keep.tolist())) and len(keep) == 10
    assert torch.equal(keep, subset_indices(100, 10, "x"))
    assert keep.tolist() != list(range(10))
    assert subset_indices(100, None, "x") is None
    assert subset_indices(5, 5, "x").tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError) as e:
        subset_indices(5, 6, "mnist_pkl (train)")
    assert str(e.value) == (
        "invalid value for dataset.subset: 6 (allowed: 1 … 5, the samples of mnist_pkl "
        "(train)); null trains on all of them"
    )


@pytest.mark.parametrize("on_device", [False, True])
def test_an_image_subset_keeps_its_images_and_their_labels(tmp_path, no_md5, on_device):
    write_labeled_cifar10(tmp_path)
    keep = subset_indices(30, 7, "cifar10 (train)").tolist()
    for seed in (0, 5):  # the same images whatever the training seed
        cfg = make_cfg("cifar10", tmp_path, subset=7, on_device=on_device, dequantize=False)
        src = build_data(cfg, 7, CPU, seed)
        x, y = src.next_labeled_batch()
        assert x.shape == (7, 3, 32, 32) and torch.equal(labels_shown(x), y)
        assert sorted(y.tolist()) == sorted((i * 7) % 10 for i in keep)
    with pytest.raises(ConfigError, match="1 … 30, the samples of cifar10"):
        build_data(make_cfg("cifar10", tmp_path, subset=31), 4, CPU, 0)


def test_a_mnist_pkl_subset_and_the_config_check(tmp_path):
    arrays = write_pkl(tmp_path)
    src = build_data(cfg_for(tmp_path, "dataset.subset=5").dataset, 5, CPU, 0)
    images, labels = arrays["train"]
    keep = subset_indices(len(images), 5, "mnist_pkl (train)").numpy()
    assert torch.equal(src.data.flatten(1), torch.from_numpy(images[keep]))
    assert torch.equal(src.labels, torch.from_numpy(labels[keep]))
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg("dataset=mnist_pkl", "dataset.subset=0"))
    assert e.value.key == "dataset.subset" and e.value.allowed == "an integer ≥ 1"
    # a toy set has no subset key (its kind's schema): refused before composing
    toy = check_value_overrides(["dataset.subset=10"], config_groups(config_dir()))
    assert toy.startswith("invalid value for dataset.subset: '10' (allowed: a key of gaussians8")


def test_held_out_data_and_image_statistics_ignore_the_training_subset(tmp_path, no_md5):
    from wgangp.metrics.evaluator import Evaluator

    write_labeled_cifar10(tmp_path)
    ds = make_cfg("cifar10", tmp_path, subset=7)
    data = build_data(ds, 4, CPU, 0)
    ev_cfg = compose_cfg("eval.split=test", "eval.metrics=[fid,critic_loss]").eval
    ev = Evaluator(ev_cfg, ds, data, CPU)
    assert len(ev.heldout.items) == 6  # the whole test split
    assert "subset" not in ev.stats_key(_Named()).dataset
    same_split = Evaluator(compose_cfg("eval.metrics=[fid]").eval, ds, data, CPU)
    assert same_split.stats_key(_Named()).dataset.endswith("-subset7")
    assert Path(ds.root) == tmp_path


class _Named:
    name = "x"


def test_a_training_subset_is_measured_against_the_rest_of_its_split(tmp_path, no_md5):
    """dataset.subset without eval.split: the held-out data is the split's other samples
    (the only held-out data an image_folder has)."""
    from wgangp.metrics.evaluator import Evaluator

    write_labeled_cifar10(tmp_path)
    ev_cfg = compose_cfg("eval.metrics=[critic_loss]").eval
    ds = make_cfg("cifar10", tmp_path, subset=7, dequantize=False)
    ev = Evaluator(ev_cfg, ds, build_data(ds, 4, CPU, 0), CPU)
    keep = set(subset_indices(30, 7, "cifar10 (train)").tolist())
    rest = [i for i in range(30) if i not in keep]
    assert len(ev.heldout.items) == 23
    # image i of the fake CIFAR is filled with 25·label(i) + i mod 5: the rest's values
    values = sorted(int(v) for v in torch.round((ev.heldout.sample(23)[:, 0, 0, 0] + 1) * 127.5))
    assert values == sorted(25 * ((i * 7) % 10) + i % 5 for i in rest)
    # all of the split in the subset: nothing is left to hold out
    whole = make_cfg("cifar10", tmp_path, subset=30)
    with pytest.raises(ConfigError) as e:
        Evaluator(ev_cfg, whole, build_data(whole, 4, CPU, 0), CPU)
    assert e.value.key == "eval.split" and "dataset.subset=N" in str(e.value)


def test_a_mnist_pkl_subset_holds_out_the_rest(tmp_path):
    arrays = write_pkl(tmp_path)
    src = build_data(cfg_for(tmp_path, "dataset.subset=5").dataset, 5, CPU, 0)
    images, labels = arrays["train"]
    keep = subset_indices(len(images), 5, "mnist_pkl (train)")
    rest = [i for i in range(len(images)) if i not in set(keep.tolist())]
    held = src.unseen()
    assert torch.equal(held.data.flatten(1), torch.from_numpy(images[rest]))
    assert torch.equal(held.labels, torch.from_numpy(labels[rest]))
