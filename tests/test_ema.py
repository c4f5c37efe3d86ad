"""The EMA generator before and after ``trainer.ema.start``: until it has averaged a
step it holds the initial weights, so pictures, metrics and ``wgangp-sample`` use the
generator itself (a short run of a recipe with a late EMA start showed an untrained
network otherwise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import TINY, toy_trainer_factory
from wgangp.cli.sample import sample
from wgangp.errors import ConfigError
from wgangp.inference import load_generator
from wgangp.train.artifacts import evaluated_generator


@pytest.fixture
def make_trainer(tmp_path, monkeypatch):
    return toy_trainer_factory(
        tmp_path, monkeypatch, *TINY, "trainer.n_critic=1", "trainer.ema.decay=0.9"
    )


def test_sampling_uses_the_generator_until_the_ema_has_averaged_a_step(make_trainer):
    t = make_trainer("trainer.ema.start=2", "trainer.steps=2")
    assert t.sampling_generator() is t.generator  # before any step
    t.fit()  # steps 0 and 1: before the start
    assert int(t.ema.n_averaged) == 0
    assert t.sampling_generator() is t.generator and evaluated_generator(t) is t.generator
    t.train_step()  # at step 2: the first average
    assert int(t.ema.n_averaged) == 1
    assert t.sampling_generator() is t.ema.module and evaluated_generator(t) is t.ema.module


def _samples(path, *args: str) -> np.ndarray:
    out = path.parent / f"s{len(list(path.parent.glob('s*.npz')))}.npz"
    sample([f"checkpoint={path}", "n=16", f"out={out}", "seed=3", *args])
    return np.load(out)["samples"]


def test_wgangp_sample_takes_the_generator_from_a_checkpoint_whose_ema_has_not_started(
    make_trainer, tmp_path
):
    early = make_trainer("trainer.ema.start=50", "trainer.steps=3")
    early.fit()
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    default, plain = _samples(ckpt), _samples(ckpt, "ema=false")
    assert np.array_equal(default, plain)
    with pytest.raises(ConfigError) as e:
        load_generator(str(ckpt), True, torch.device("cpu"))
    assert str(e.value) == (
        "invalid value for ema: True (allowed: false for this checkpoint); its EMA has not "
        "started: step 3 < trainer.ema.start=50, so it holds the initial weights; the "
        "default samples the generator"
    )


def test_wgangp_sample_takes_a_started_ema_by_default(make_trainer, tmp_path):
    late = make_trainer("trainer.ema.start=1", "trainer.steps=3")
    late.fit()
    ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
    default, plain, ema = _samples(ckpt), _samples(ckpt, "ema=false"), _samples(ckpt, "ema=true")
    assert np.array_equal(default, ema) and not np.array_equal(default, plain)
