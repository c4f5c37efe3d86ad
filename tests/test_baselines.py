"""loss=dcgan and loss=lsgan: the official scripts' other baselines (MODE = 'dcgan',
'lsgan'), with the batch-norm critics those modes use. The losses against their
formulas and derivatives, one update of each network against a reference written with
torch's own optimizers, the presets, batch norm's separate statistics for real and
fake, resume and the errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from tests.conftest import TINY, compose_cfg, toy_trainer_factory
from wgangp.config.validate import validate
from wgangp.core import losses
from wgangp.core.optim import TFRMSprop
from wgangp.errors import CheckpointError, ConfigError


@pytest.fixture
def make_trainer(tmp_path, monkeypatch):
    return toy_trainer_factory(tmp_path, monkeypatch, *TINY)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


REAL = [2.0, -1.0, 0.25, 7.0]
FAKE = [0.5, 3.0, -2.5, -0.75]


def _grads(fn, *xs):
    ts = [torch.tensor(x, requires_grad=True) for x in xs]
    value = fn(*ts)
    grads = torch.autograd.grad(value, ts)
    return float(value.detach()), [g.tolist() for g in grads]


def test_the_dcgan_losses_and_their_derivatives_by_hand():
    """L_D = ½(E log(1 + e^{−D(x)}) + E log(1 + e^{D(x̃)})), L_G = E log(1 + e^{−D(G(z))});
    ∂L_D/∂D(x)_i = −½σ(−D(x)_i)/N, ∂L_D/∂D(x̃)_i = ½σ(D(x̃)_i)/N,
    ∂L_G/∂D_i = −σ(−D_i)/N (fp32: σ(x) − 1 loses digits near 1, hence the absolute slack)."""
    n = len(REAL)
    value, (g_real, g_fake) = _grads(losses.dcgan_critic_loss, REAL, FAKE)
    want = 0.5 * (sum(_softplus(-r) for r in REAL) / n + sum(_softplus(f) for f in FAKE) / n)
    assert math.isclose(value, want, rel_tol=1e-6)
    for r, g in zip(REAL, g_real, strict=True):
        assert math.isclose(g, -0.5 * _sigmoid(-r) / n, rel_tol=1e-5, abs_tol=2e-8)
    for f, g in zip(FAKE, g_fake, strict=True):
        assert math.isclose(g, 0.5 * _sigmoid(f) / n, rel_tol=1e-5, abs_tol=2e-8)
    value, (g_gen,) = _grads(losses.dcgan_generator_loss, FAKE)
    assert math.isclose(value, sum(_softplus(-f) for f in FAKE) / n, rel_tol=1e-6)
    for f, g in zip(FAKE, g_gen, strict=True):
        assert math.isclose(g, -_sigmoid(-f) / n, rel_tol=1e-5, abs_tol=2e-8)
    # logits far out: finite and exact (log(1 + e^100) = 100 to fp32), where
    # −log σ(x) computed naively would be inf
    far = losses.dcgan_critic_loss(torch.tensor([-100.0]), torch.tensor([100.0]))
    assert float(far) == 100.0
    assert float(losses.dcgan_generator_loss(torch.tensor([-100.0]))) == 100.0


def test_the_lsgan_losses_and_their_derivatives_by_hand():
    """L_D = ½(E(D(x) − 1)² + E D(x̃)²), L_G = E(D(G(z)) − 1)²; ∂L_D/∂D(x)_i = (D(x)_i − 1)/N,
    ∂L_D/∂D(x̃)_i = D(x̃)_i/N, ∂L_G/∂D_i = 2(D_i − 1)/N."""
    n = len(REAL)
    value, (g_real, g_fake) = _grads(losses.lsgan_critic_loss, REAL, FAKE)
    want = 0.5 * (sum((r - 1) ** 2 for r in REAL) / n + sum(f * f for f in FAKE) / n)
    assert math.isclose(value, want, rel_tol=1e-6)
    assert g_real == pytest.approx([(r - 1) / n for r in REAL], rel=1e-6)
    assert g_fake == pytest.approx([f / n for f in FAKE], rel=1e-6)
    value, (g_gen,) = _grads(losses.lsgan_generator_loss, FAKE)
    assert math.isclose(value, sum((f - 1) ** 2 for f in FAKE) / n, rel_tol=1e-6)
    assert g_gen == pytest.approx([2 * (f - 1) / n for f in FAKE], rel=1e-6)


def test_bf16_scores_are_scored_in_fp32():
    d = torch.tensor([0.3, -1.7, 2.2], dtype=torch.bfloat16)
    for fn in (losses.dcgan_generator_loss, losses.lsgan_generator_loss):
        out = fn(d)
        assert out.dtype == torch.float32
        assert torch.equal(out, fn(d.float()))


def test_the_presets_are_the_official_modes():
    for extra in ([], ["experiment=toy_paper"], ["experiment=cifar10_dcgan_paper"]):
        dc = compose_cfg(*extra, "loss=dcgan")
        assert (dc.loss.name, dc.trainer.n_critic, dc.optim.name) == ("dcgan", 1, "adam")
        for side in (dc.optim.critic, dc.optim.generator):
            assert (side.lr, list(side.betas)) == (2e-4, [0.5, 0.999])
        ls = compose_cfg(*extra, "loss=lsgan")
        assert (ls.loss.name, ls.trainer.n_critic, ls.optim.name) == ("lsgan", 1, "rmsprop")
        assert (ls.optim.critic.lr, ls.optim.generator.lr) == (1e-4, 1e-4)
        assert dc.optim.lr_decay == ls.optim.lr_decay == "none"
    # the command line still wins over the preset
    assert compose_cfg("loss=dcgan", "trainer.n_critic=5").trainer.n_critic == 5


def _fresh_batches(t):
    return t.data.next_batch(), t.generator(t.noise(64)).detach()


def _grads_of(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters()]


def assert_same_gradients(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    """Gradients equal to fp32 rounding at the scale of the model's largest one.

    An absolute tolerance at that scale, not per element: where the true gradient is
    exactly 0 (a bias right before a batch norm) one implementation gets 0 and the
    other ~1e-10 of rounding, and which one does depends on the CPU's kernels."""
    scale = max(float(w.abs().max()) for w in want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6 * scale)


def assert_adam_update(
    before: list[torch.Tensor], model: torch.nn.Module, lr: float, betas: tuple[float, float]
) -> None:
    """``model``'s weights are one ``torch.optim.Adam`` step from ``before`` on the
    gradients ``model`` holds: the update rule, checked on the trainer's own gradients.
    (Comparing weights after Adam across two implementations is not a test of the rule:
    Adam's first step ≈ lr·g/(|g| + ε) turns a 1e-10 rounding difference of a zero
    gradient into a step of up to lr.)"""
    ref = [torch.nn.Parameter(w.clone()) for w in before]
    for r, p in zip(ref, model.parameters(), strict=True):
        r.grad = p.grad.detach().clone()
    torch.optim.Adam(ref, lr=lr, betas=betas).step()
    for r, p in zip(ref, model.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), r.detach(), rtol=1e-6, atol=1e-3 * lr)


@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_one_dcgan_critic_and_generator_update_match_torch_adam(make_trainer, norm):
    """The reference: the official losses written with F.binary_cross_entropy_with_logits,
    D(x) and D(x̃) from two calls (each batch its own statistics). Gradients are compared
    with the reference's, then the weights with torch.optim.Adam(lr 2e-4, β (0.5, 0.999))
    applied to the trainer's own gradients."""
    t = make_trainer("loss=dcgan", f"critic.norm={norm}")
    assert t.hot.n_critic == 1 and t.hot.fuse_real_fake is (norm == "none")
    critic, generator = copy.deepcopy(t.critic), copy.deepcopy(t.generator)
    real, fake = _fresh_batches(t)
    d_real, d_fake = critic(real), critic(fake)
    loss_c = 0.5 * (
        F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
        + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake))
    )
    loss_c.backward()
    before = [p.detach().clone() for p in t.critic.parameters()]
    stats = t.critic_step(real, fake, penalty=False)
    torch.testing.assert_close(stats["loss/critic"], loss_c.detach(), rtol=1e-6, atol=0)
    torch.testing.assert_close(stats["d_real"], torch.sigmoid(d_real.detach()).mean())
    torch.testing.assert_close(stats["d_fake"], torch.sigmoid(d_fake.detach()).mean())
    assert "wasserstein" not in stats and "gp" not in stats
    assert_same_gradients(_grads_of(t.critic), _grads_of(critic))
    assert_adam_update(before, t.critic, 2e-4, (0.5, 0.999))
    # batch norm's running statistics: one update each from the real and the fake batch
    for a, b in zip(critic.buffers(), t.critic.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)

    # the generator update against the critic after the trainer's update
    critic.load_state_dict(t.critic.state_dict())
    z = t.noise(64)
    score = critic(generator(z))
    loss_g = F.binary_cross_entropy_with_logits(score, torch.ones_like(score))
    loss_g.backward()
    before = [p.detach().clone() for p in t.generator.parameters()]
    stats = t.generator_step(z)
    torch.testing.assert_close(stats["loss/generator"], loss_g.detach(), rtol=1e-5, atol=0)
    assert_same_gradients(_grads_of(t.generator), _grads_of(generator))
    assert_adam_update(before, t.generator, 2e-4, (0.5, 0.999))


def test_one_lsgan_update_is_tf_rmsprop_on_the_halved_squares(make_trainer):
    t = make_trainer("loss=lsgan", "critic.norm=batchnorm")
    assert isinstance(t.opt_c, TFRMSprop) and isinstance(t.opt_g, TFRMSprop)
    real, fake = _fresh_batches(t)
    ref = copy.deepcopy(t.critic)
    d_real, d_fake = ref(real), ref(fake)
    loss = 0.5 * ((d_real - 1).pow(2).mean() + d_fake.pow(2).mean())
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    before = [p.detach().clone() for p in t.critic.parameters()]
    stats = t.critic_step(real, fake, penalty=False)
    torch.testing.assert_close(stats["loss/critic"], loss.detach(), rtol=1e-6, atol=0)
    # lsgan shows the raw outputs, not probabilities
    torch.testing.assert_close(stats["d_real"], d_real.detach().mean())
    for p0, g, p in zip(before, grads, t.critic.parameters(), strict=True):
        want = p0 - 1e-4 * g / torch.sqrt(0.9 + 0.1 * g * g + 1e-10)
        torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-7)


def test_a_batchnorm_critic_normalises_real_and_fake_apart(make_trainer):
    """Fused into one batch, the statistics would mix real and fake: a different loss."""
    t = make_trainer("loss=dcgan", "critic.norm=batchnorm", "speed.fuse_real_fake=true")
    assert not t.hot.fuse_real_fake
    bns = [m for m in t.critic.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert len(bns) == 3  # one per hidden layer of the MLP critic, before the activation
    real, fake = _fresh_batches(t)
    ref = copy.deepcopy(t.critic)
    apart = losses.dcgan_critic_loss(ref(real), ref(fake))
    fused = losses.dcgan_critic_loss(*ref(torch.cat([real, fake])).chunk(2))
    assert abs(float(apart.detach()) - float(fused.detach())) > 1e-3
    stats = t.critic_step(real, fake, penalty=False)
    torch.testing.assert_close(stats["loss/critic"], apart.detach(), rtol=1e-6, atol=0)
    # a critic without batch norm keeps the fused forward (the same numbers, faster)
    assert make_trainer("loss=dcgan").hot.fuse_real_fake


def test_the_penalty_with_a_batchnorm_critic_is_refused_in_config_and_trainer(make_trainer):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(*TINY, "critic.norm=batchnorm"))
    assert e.value.key == "critic.norm" and "loss=wgan|dcgan|lsgan" in str(e.value)
    for loss in ("wgan", "dcgan", "lsgan"):
        validate(compose_cfg(*TINY, f"loss={loss}", "critic.norm=batchnorm"))
    # a Trainer built without validate (a script, a custom critic) refuses it as well
    with pytest.raises(ConfigError) as e:
        make_trainer("critic.norm=batchnorm")
    assert e.value.key == "critic.norm" and "use layernorm" in str(e.value)


@pytest.mark.parametrize("loss", ["dcgan", "lsgan"])
def test_a_baseline_run_with_batch_norm_resumes_bitwise(make_trainer, loss):
    """The batch norms' running statistics travel in the checkpoint with the weights."""
    args = (f"loss={loss}", "critic.norm=batchnorm", "trainer.steps=6")
    full = make_trainer(*args)
    for _ in range(6):
        full.train_step()
        full.step += 1
    half = make_trainer(*args)
    for _ in range(3):
        half.train_step()
        half.step += 1
    resumed = make_trainer(*args)
    resumed.load_state_dict(copy.deepcopy(half.state_dict()))
    for _ in range(3):
        resumed.train_step()
        resumed.step += 1
    for net in ("critic", "generator"):
        a, b = getattr(full, net).state_dict(), getattr(resumed, net).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), net
    assert int(full.critic.state_dict()["net.1.num_batches_tracked"]) == 6 * 3


def test_a_change_of_baseline_on_resume_is_refused(tmp_path):
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from wgangp.config.compose import config_dir
    from wgangp.config.resume import resume_config

    run = [*TINY, "loss=dcgan", "trainer.steps=2"]
    ckpt = {"config": OmegaConf.to_container(compose_cfg(*run), resolve=True), "overrides": run}
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg, _, _ = resume_config(ckpt, tmp_path / "last.pt", ["trainer.steps=3"])
        assert cfg.loss.name == "dcgan" and cfg.trainer.n_critic == 1
        for override in ("loss=lsgan", "loss=wgan_gp"):
            with pytest.raises(CheckpointError, match="cannot resume with a different"):
                resume_config(ckpt, tmp_path / "last.pt", [override])


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["loss=dcgan", "gp.every=3"], "gp.every"),
        (["loss=lsgan", "speed.nan_check=iteration"], "speed.nan_check"),
        (["loss=dcgan", "critic.norm=groupnorm"], "critic.norm"),
    ],
)
def test_errors_before_any_work(overrides, key):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(*TINY, *overrides))
    assert e.value.key == key
