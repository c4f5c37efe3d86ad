"""loss=wgan: the official scripts' MODE = 'wgan' baseline (weight clipping, TF1's
RMSProp), beside the paper's method: the optimizer's math, the clipping, the loss
without a penalty, the preset, resume and the errors."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import TINY, compose_cfg, toy_trainer_factory
from wgangp.config.validate import validate, validate_cuda_graph
from wgangp.core.optim import TFRMSprop
from wgangp.errors import CheckpointError, ConfigError

CPU = torch.device("cpu")


@pytest.fixture
def make_trainer(tmp_path, monkeypatch):
    return toy_trainer_factory(tmp_path, monkeypatch, *TINY, "loss=wgan")


def test_tf_rmsprop_two_steps_by_hand():
    """m₀ = 1, m ← 0.9·m + 0.1·g², θ ← θ − η·g/√(m + 1e-10)."""
    p = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = TFRMSprop([p], lr=0.1)
    want, m = p.detach().clone(), torch.ones(3, dtype=torch.float64)
    for g in (torch.tensor([1.0, -2.0, 0.0]), torch.tensor([0.3, 4.0, -1.0])):
        g = g.double()
        p.grad = g.clone()
        opt.step()
        m = 0.9 * m + 0.1 * g * g
        want = want - 0.1 * g / torch.sqrt(m + 1e-10)
        torch.testing.assert_close(p.detach(), want, rtol=0, atol=1e-15)
        torch.testing.assert_close(opt.state[p]["ms"], m, rtol=0, atol=1e-15)
    # g = 1 at the start: m₁ = 0.9 + 0.1 = 1, a step of η (torch's RMSprop, m₀ = 0 and
    # ρ = 0.99, would step 10η)
    q = torch.zeros(1, requires_grad=True)
    q.grad = torch.ones(1)
    TFRMSprop([q], lr=1.0).step()
    assert math.isclose(float(q.detach()), -1 / math.sqrt(1.0 + 1e-10), rel_tol=1e-6)


def test_the_critic_is_clipped_after_every_update_and_the_generator_is_not(make_trainer):
    t = make_trainer("trainer.n_critic=2")
    with torch.no_grad():  # start outside the box, as tflib's init does for wide layers
        for p in (*t.critic.parameters(), *t.generator.parameters()):
            p.mul_(10)
    for _ in range(3):
        stats = t.train_step()
    critic = torch.cat([p.detach().flatten() for p in t.critic.parameters()])
    assert critic.abs().max() <= 0.01
    assert (critic.abs() == 0.01).float().mean() > 0.5  # most weights at the bounds
    gen = torch.cat([p.detach().flatten() for p in t.generator.parameters()])
    assert gen.abs().max() > 0.01
    # no penalty: the critic loss is −W, and nothing of a penalty is logged
    assert torch.equal(stats["loss/critic"], -stats["wasserstein"])
    assert "gp" not in stats and "grad_norm" not in stats
    assert all(e is None for e in t.draw_inputs().eps)  # no interpolation weights drawn
    assert isinstance(t.opt_c, TFRMSprop) and isinstance(t.opt_g, TFRMSprop)


def test_the_update_is_rmsprop_on_minus_w_then_clipping(make_trainer):
    t = make_trainer("trainer.n_critic=1")
    real, fake = t.data.next_batch(), t.generator(t.noise(64)).detach()
    before = [p.detach().clone() for p in t.critic.parameters()]
    loss = t.critic(fake).mean() - t.critic(real).mean()
    grads = torch.autograd.grad(loss, list(t.critic.parameters()))
    t.critic_step(real, fake, penalty=False)
    for p0, g, p in zip(before, grads, t.critic.parameters(), strict=True):
        m = 0.9 + 0.1 * g * g
        want = (p0 - 5e-5 * g / torch.sqrt(m + 1e-10)).clamp(-0.01, 0.01)
        torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-7)


def test_the_preset_is_the_official_mode_wgan():
    cfg = compose_cfg("experiment=toy_paper", "loss=wgan")
    assert (cfg.loss.name, cfg.loss.clip, cfg.optim.name) == ("wgan", 0.01, "rmsprop")
    assert (cfg.optim.critic.lr, cfg.optim.generator.lr) == (5e-5, 5e-5)
    assert cfg.trainer.n_critic == 5 and cfg.trainer.batch_size == 256
    default = compose_cfg()
    assert (default.loss.name, default.optim.name) == ("wgan-gp", "adam")


def test_a_wgan_run_resumes_bitwise(make_trainer):
    full = make_trainer("trainer.steps=6")
    for _ in range(6):
        full.train_step()
        full.step += 1
    half = make_trainer("trainer.steps=6")
    for _ in range(3):
        half.train_step()
        half.step += 1
    state = half.state_dict()
    resumed = make_trainer("trainer.steps=6")
    resumed.load_state_dict(state)
    for _ in range(3):
        resumed.train_step()
        resumed.step += 1
    for a, b in zip(full.critic.parameters(), resumed.critic.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(full.generator.parameters(), resumed.generator.parameters(), strict=True):
        assert torch.equal(a, b)


def test_checkpoints_from_before_the_loss_group_resume_and_a_change_is_refused(tmp_path):
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from wgangp.config.compose import config_dir
    from wgangp.config.resume import resume_config

    run = [*TINY, "trainer.steps=2"]
    written = OmegaConf.to_container(compose_cfg(*run), resolve=True)
    written.pop("loss")
    written["optim"].pop("name")
    ckpt = {"config": written, "overrides": run}
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg, _, changes = resume_config(ckpt, tmp_path / "last.pt", ["trainer.steps=3"])
        assert changes == {"trainer.steps": (2, 3)} and cfg.loss.name == "wgan-gp"
        for override in ("loss=wgan", "optim.name=rmsprop"):
            with pytest.raises(CheckpointError, match="cannot resume with a different"):
                resume_config(ckpt, tmp_path / "last.pt", [override])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["loss.name=hinge"], "loss.name"),
        (["loss=wgan", "loss.clip=0"], "loss.clip"),
        (["optim.name=sgd"], "optim.name"),
        (["loss=wgan", "gp.every=2"], "gp.every"),
        (["loss=wgan", "speed.nan_check=iteration"], "speed.nan_check"),
    ],
)
def test_errors_before_any_work(overrides, key):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(*TINY, *overrides))
    assert e.value.key == key


def test_a_cuda_graph_needs_adam():
    cfg = compose_cfg(*TINY, "loss=wgan", "speed.cuda_graph=true")
    with pytest.raises(ConfigError, match="optim.name=rmsprop") as e:
        validate_cuda_graph(cfg, torch.device("cuda"))
    assert e.value.key == "speed.cuda_graph"


def test_weight_clipping_with_adam_and_the_penalty_with_rmsprop_also_run(make_trainer):
    """The two choices are independent: clipping under Adam, RMSProp under the penalty."""
    t = make_trainer("optim.name=adam")
    t.train_step()
    assert max(float(p.detach().abs().max()) for p in t.critic.parameters()) <= 0.01
    u = make_trainer("loss=wgan_gp", "optim.name=rmsprop")
    stats = u.train_step()
    assert "gp" in stats and isinstance(u.opt_c, TFRMSprop)
