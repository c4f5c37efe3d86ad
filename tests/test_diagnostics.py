"""diagnostics: the critic loss's gradient norm at each layer (the paper's Figure 1b,
left) and the weights' histograms (Figure 1b, right). The norms against hand-derived
gradients, clipped critics that explode and vanish as the paper shows, a measurement
that changes nothing it measures, and the TensorBoard record of a run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tests.conftest import TINY, compose_cfg, toy_trainer_factory
from tests.test_image_models import critic_cfg
from wgangp.config.validate import validate
from wgangp.core import losses
from wgangp.errors import ConfigError
from wgangp.metrics import diagnostics
from wgangp.models import build_critic


def _batches(n: int, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g) + 1.0


class TwoLayer(nn.Module):
    """D(x) = w₂·relu(W₁x + b₁) + b₂."""

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(dim, width)
        self.out = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x))).squeeze(1)


def test_a_linear_critic_has_the_norm_of_its_weight_times_sqrt_2_over_n():
    """D(x) = w·x + b, L = E D(x̃) − E D(x): ∂L/∂x_i = ∓w/N for each of the 2N samples,
    so ‖∂L/∂a₁‖ = ‖w‖·√(2N)/N = ‖w‖·√(2/N)."""
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(5, 1), nn.Flatten(0))
    real, fake = _batches(8, 5)
    res = diagnostics.layer_grad_norms(critic, real, fake)
    assert res.names == ["0"]
    want = float(critic[0].weight.detach().norm()) * math.sqrt(2 / 8)
    assert math.isclose(float(res.norms[0]), want, rel_tol=1e-6)


def test_a_two_layer_critic_by_hand():
    """Layer 2's input h = relu(W₁x + b₁) gets ∓w₂/N per sample; layer 1's input x gets
    ∓W₁ᵀ(w₂ ⊙ 1[W₁x + b₁ > 0])/N, each sample its own mask."""
    torch.manual_seed(1)
    critic = TwoLayer(3, 16).double()
    real, fake = (b.double() for b in _batches(6, 3, seed=1))
    res = diagnostics.layer_grad_norms(critic, real, fake)
    assert res.names == ["hidden", "out"]
    n = real.shape[0]
    with torch.no_grad():
        w1, b1, w2 = critic.hidden.weight, critic.hidden.bias, critic.out.weight[0]
        w1, b1, w2 = w1.clone(), b1.clone(), w2.clone()
    assert math.isclose(float(res.norms[1]), float(w2.norm()) * math.sqrt(2 / n), rel_tol=1e-12)
    sq = 0.0
    for x in torch.cat([real, fake]):
        mask = (w1 @ x + b1 > 0).double()
        sq += float((w1.T @ (w2 * mask)).pow(2).sum()) / n**2
    assert math.isclose(float(res.norms[0]), math.sqrt(sq), rel_tol=1e-12)


def _clipped_mlp(clip: float, depth: int = 8, width: int = 512) -> nn.Module:
    """A ReLU MLP critic whose every weight sits at ±clip (where clipping leaves most of
    them, the paper's Figure 1b, right) with random signs, biases 0."""
    cfg = critic_cfg("mlp", dim=width, depth=depth)
    critic = build_critic(cfg, (2,))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in critic.parameters():
            if p.dim() == 2:
                p.copy_(clip * (torch.randint(0, 2, p.shape, generator=g) * 2.0 - 1.0))
            else:
                p.zero_()
    return critic


@pytest.mark.parametrize(("clip", "grows_toward_input"), [(0.1, True), (0.01, False)])
def test_clipped_critics_explode_or_vanish_layer_by_layer(clip, grows_toward_input):
    """A layer of width 512 with weights ±c and half its ReLUs open multiplies a
    gradient's norm by about c·√256: 1.6 at c = 0.1 (it explodes toward the input),
    0.16 at c = 0.01 (it vanishes), as in the paper's Figure 1b."""
    real, fake = _batches(64, 2)
    norms = diagnostics.layer_grad_norms(_clipped_mlp(clip), real, fake).norms
    hidden = norms[1:]  # layer 1's input is the 2-D sample
    ratios = hidden[:-1] / hidden[1:]  # layer k against layer k + 1
    expected = clip * math.sqrt(256)
    assert torch.all((ratios > 1) if grows_toward_input else (ratios < 1)), ratios
    assert ratios.log().mean().exp().item() == pytest.approx(expected, rel=0.25)


def test_the_measurement_changes_nothing_it_measures():
    """A batch-norm critic's running statistics stay as they were, and no parameter
    gradient is made or changed."""
    cfg = critic_cfg("mlp", dim=16, depth=2, norm="batchnorm")
    critic = build_critic(cfg, (2,))
    before = {k: v.clone() for k, v in critic.state_dict().items()}
    real, fake = _batches(32, 2)
    res = diagnostics.layer_grad_norms(critic, real, fake, losses.dcgan_critic_loss)
    assert torch.isfinite(res.norms).all() and (res.norms > 0).all()
    after = critic.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in critic.parameters())


def test_a_conv_critic_names_every_weight_layer_in_call_order():
    critic = build_critic(critic_cfg("dcgan", dim=8), (3, 32, 32))
    real = torch.randn(4, 3, 32, 32)
    res = diagnostics.layer_grad_norms(critic, real, torch.randn(4, 3, 32, 32))
    convs = [n for n, m in critic.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in critic.named_modules() if isinstance(m, nn.Linear)]
    assert res.names == convs + linears
    assert len(res.norms) == len(convs) + len(linears) and torch.isfinite(res.norms).all()


def test_fraction_at_clip_counts_the_weights_on_the_bound():
    w = torch.tensor([[0.01, -0.01, 0.005], [0.0, -0.01, 0.002]])
    assert diagnostics.fraction_at_clip([w, torch.full((4,), 0.01)], 0.01) == 7 / 10
    assert diagnostics.fraction_at_clip([], 0.01) == 0.0


@pytest.fixture
def make_trainer(tmp_path, monkeypatch):
    return toy_trainer_factory(tmp_path, monkeypatch, *TINY, "trainer.n_critic=2")


def _final_params(trainer) -> list[torch.Tensor]:
    return [
        p.detach().clone() for p in [*trainer.critic.parameters(), *trainer.generator.parameters()]
    ]


def test_a_run_with_diagnostics_trains_exactly_as_one_without(make_trainer, tmp_path):
    """The diagnostic batch has its own seeds: the training stream, and so every weight,
    is bitwise the same with diagnostics on; the scalars come back from fit() and the
    histograms and scalars are in the TensorBoard log."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    off = make_trainer("trainer.steps=4", "trainer.ckpt_every=0")
    off.fit()
    ref = _final_params(off)
    import shutil

    shutil.rmtree(tmp_path / "run")
    on = make_trainer("trainer.steps=4", "trainer.ckpt_every=0", "diagnostics.every=2")
    last = on.fit()
    assert all(torch.equal(a, b) for a, b in zip(ref, _final_params(on), strict=True))
    tags = [f"layer_grad/0{k}_net.{2 * (k - 1)}" for k in (1, 2, 3, 4)]
    assert [k for k in last if k.startswith("layer_grad/")] == tags
    assert "weights/critic_at_clip" not in last  # no clipping with the penalty
    ea = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"histograms": 0})
    ea.Reload()
    assert [e.step for e in ea.Scalars(tags[0])] == [2, 4]
    # and at the end, off the period
    shutil.rmtree(tmp_path / "run")
    odd = make_trainer("trainer.steps=3", "trainer.ckpt_every=0", "diagnostics.every=2")
    assert tags[0] in odd.fit()
    ea3 = EventAccumulator(str(tmp_path / "run" / "tb"))
    ea3.Reload()
    assert [e.step for e in ea3.Scalars(tags[0])] == [2, 3]
    assert ea.Scalars(tags[0])[-1].value == pytest.approx(last[tags[0]])
    hist = ea.Tags()["histograms"]
    assert "weights/critic/net.0.weight" in hist and "weights/generator/net.6.weight" in hist
    assert not any(h.endswith(".bias") for h in hist)
    assert [e.step for e in ea.Images("diagnostics/layer_grads")] == [2, 4]
    (h,) = [e for e in ea.Histograms("weights/critic/net.2.weight") if e.step == 4]
    w = on.critic.net[2].weight
    assert h.histogram_value.num == w.numel()
    assert h.histogram_value.min == pytest.approx(float(w.detach().min()))


def test_weight_clipping_logs_the_fraction_on_the_bound(make_trainer):
    """loss=wgan: after 2 critic updates at 5e-5 nearly every initial weight (he-uniform,
    up to ±√(6/32) = ±0.43) is still clipped to ±0.01; measured against the weights."""
    t = make_trainer("trainer.steps=2", "trainer.ckpt_every=0", "loss=wgan", "diagnostics.every=2")
    last = t.fit()
    clipped = [p for p in t.critic.parameters()]
    want = diagnostics.fraction_at_clip(clipped, 0.01)
    assert last["weights/critic_at_clip"] == want
    assert 0.5 < want < 1.0  # biases start at 0 and move by less than the bound


def test_the_baselines_measure_their_own_loss(make_trainer):
    """loss=dcgan: the gradient of its BCE loss, not of the Wasserstein estimate."""
    t = make_trainer("loss=dcgan", "diagnostics.every=1")
    real, fake = t.diagnostic_batch()
    want = diagnostics.layer_grad_norms(t.critic, real, fake, losses.dcgan_critic_loss).norms
    got = t.diagnose(_Recorder())
    assert list(got.values()) == want.tolist()
    wass = diagnostics.layer_grad_norms(t.critic, real, fake).norms
    assert not torch.allclose(wass, want)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: self.calls.append((name, args))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["diagnostics.every=-1"],
            "invalid value for diagnostics.every: -1 (allowed: an integer ≥ 0)",
        ),
        (
            [
                "diagnostics.every=10",
                "diagnostics.layer_grads=false",
                "diagnostics.histograms=false",
            ],
            "invalid value for diagnostics.every: 10 (allowed: 0 while diagnostics.layer_grads "
            "and diagnostics.histograms are both false); turn one of them on, or "
            "diagnostics.every=0",
        ),
    ],
)
def test_bad_diagnostics_settings_are_refused_by_name(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(*TINY, *overrides))
    assert str(e.value) == message


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_layer_gradients_equal_the_cpus():
    """The same norms from cuDNN's kernels (TF32 off), the model and batch moved."""
    critic = build_critic(critic_cfg("dcgan", dim=8), (3, 32, 32))
    g = torch.Generator().manual_seed(3)
    real, fake = torch.randn(6, 3, 32, 32, generator=g), torch.randn(6, 3, 32, 32, generator=g)
    cpu = diagnostics.layer_grad_norms(critic, real, fake).norms
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # the linear head in fp32 too
    try:
        with torch.backends.cudnn.flags(allow_tf32=False):
            gpu = diagnostics.layer_grad_norms(critic.cuda(), real.cuda(), fake.cuda()).norms
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=0)
