"""The fast step's options against the plain path: same gradients, same losses."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from scripts.benchtools.memory import LiveBytes
from tests.conftest import TINY, compose_cfg
from wgangp.config.validate import validate
from wgangp.core import losses
from wgangp.core.step import critic_scores
from wgangp.errors import ConfigError
from wgangp.fast.masks import with_detached_relu_masks
from wgangp.train.step import NonFiniteStep as _NonFiniteStep
from wgangp.train.trainer import Trainer

CPU = torch.device("cpu")


def make(*overrides: str, device: torch.device = CPU) -> Trainer:
    return Trainer(compose_cfg(*TINY, *overrides), "/tmp/unused-run", device)


def critic_grads(t: Trainer, real: torch.Tensor, fake: torch.Tensor, **kw) -> list[torch.Tensor]:
    t.critic_step(real, fake, **kw)
    return [p.grad.clone() for p in t.critic.parameters()]


def batches(t: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
    real = t.data.next_batch()
    with torch.no_grad():
        fake = t.generator(t.noise(t.cfg.trainer.batch_size))
    return real, fake


def assert_close_lists(a, b, atol=1e-5, rtol=1e-5):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=atol, rtol=rtol)


# ----------------------------------------------------------------- fused real+fake
@pytest.mark.parametrize("norm", ["none", "layernorm"])
def test_fused_real_fake_forward_gives_the_same_gradients(norm):
    a = make("speed.fuse_real_fake=true", f"critic.norm={norm}")
    b = make("speed.fuse_real_fake=false", f"critic.norm={norm}")
    real, fake = batches(a)
    b.rng.set_state(a.rng.get_state())
    assert_close_lists(critic_grads(a, real, fake), critic_grads(b, real, fake))


def test_critic_scores_split_matches_separate_forwards():
    torch.manual_seed(0)
    critic = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(128, 1)
    )
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    fr, ff = critic_scores(critic, real, fake, fuse=True)
    torch.testing.assert_close(fr, critic(real), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ff, critic(fake), atol=1e-6, rtol=1e-6)


# ----------------------------------------------------------------- detached masks
def _conv_critic(act: nn.Module, norm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, 2, 1), act, nn.Conv2d(8, 16, 3, 2, 1)]
    if norm:
        layers.append(nn.GroupNorm(1, 16))
    return nn.Sequential(*layers, act, nn.Flatten(), nn.Linear(16 * 4 * 4, 1))


def _penalty_grads(critic: nn.Module, fwd, real, fake, eps):
    critic.zero_grad(set_to_none=True)
    gp = losses.gradient_penalty(fwd, real, fake, eps=eps)
    gp.penalty.backward()
    return [p.grad if p.grad is not None else torch.zeros_like(p) for p in critic.parameters()]


def _fast_penalty_grads_equal_plain(critic: nn.Module, n: int, size: int, seed: int) -> list:
    """The penalty's parameter gradients with detached masks equal the plain ones
    (to 1e-6) on n random real/fake images of size×size; returns the fast ones."""
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(n, 3, size, size, generator=g)
    fake = torch.randn(n, 3, size, size, generator=g)
    eps = torch.rand(n, 1, 1, 1, generator=g)
    plain = _penalty_grads(critic, critic, real, fake, eps)
    fast = _penalty_grads(critic, with_detached_relu_masks(critic), real, fake, eps)
    assert_close_lists(plain, fast, atol=1e-6, rtol=1e-6)
    return fast


@pytest.mark.parametrize(
    "act,norm",
    [
        (nn.ReLU(), False),
        (nn.LeakyReLU(0.2), False),
        (nn.LeakyReLU(0.2, inplace=True), False),
        (nn.ReLU(inplace=True), True),
        (nn.ELU(), False),
        (nn.GELU(), True),
    ],
)
def test_detached_relu_masks_give_the_same_penalty_gradients(act, norm):
    fast = _fast_penalty_grads_equal_plain(_conv_critic(act, norm), n=6, size=16, seed=1)
    assert any(p.abs().sum() > 0 for p in fast)


def test_detached_relu_masks_halve_the_double_backward():
    critic = _conv_critic(nn.LeakyReLU(0.2))
    real, fake = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    eps = torch.rand(8, 1, 1, 1)
    counts = []
    for fwd in (critic, with_detached_relu_masks(critic)):
        gp = losses.gradient_penalty(fwd, real, fake, eps=eps)
        with FlopCounterMode(display=False) as fc:
            gp.penalty.backward()
        counts.append(fc.get_total_flops())
    assert counts[1] < 0.6 * counts[0]


def _assert_equal_to_second_order(body, x_shape, w_shape):
    """``body(x, w) -> y`` in the penalty's forward against plain autograd: y, ∂Σy/∂x and
    ∂‖∂Σy/∂x‖²/∂w equal bitwise."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*x_shape, generator=g, requires_grad=True)
    w = torch.randn(*w_shape, generator=g, requires_grad=True)

    def penalty_terms(fwd):
        y = fwd(lambda: body(x, w))
        (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad(gx.square().sum(), w)
        return y, gx, gw

    plain = penalty_terms(lambda f: f())
    fast = penalty_terms(lambda f: with_detached_relu_masks(lambda _: f())(None))
    for a, b in zip(plain, fast, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


@pytest.mark.parametrize(
    "kw",
    [
        {"kernel_size": 2},
        {"kernel_size": 3, "stride": 2, "padding": 1},
        {"kernel_size": (3, 2), "stride": (1, 2), "ceil_mode": True},
        {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False},
        {"kernel_size": 2, "divisor_override": 3},
    ],
)
def test_avg_pool_in_the_penalty_forward_matches_aten_to_second_order(kw):
    """Forward, first and second derivatives of the wrapped avg_pool2d equal ATen's bitwise."""
    _assert_equal_to_second_order(
        lambda x, w: torch.nn.functional.avg_pool2d(torch.conv2d(x, w).square(), **kw),
        (2, 3, 7, 8),
        (3, 3, 1, 1),
    )


@pytest.mark.parametrize(
    "act",
    [
        lambda h: torch.nn.functional.relu(h),
        lambda h: torch.relu(h),
        lambda h: h.relu(),
        lambda h: torch.nn.functional.relu(h.clone(), inplace=True),
        lambda h: h.clone().relu_(),
        lambda h: torch.nn.functional.leaky_relu(h, 0.2),
        lambda h: torch.nn.functional.leaky_relu(h),
        lambda h: torch.nn.functional.leaky_relu(h.clone(), 0.2, inplace=True),
        lambda h: torch.nn.functional.leaky_relu_(h.clone(), 0.3),
        lambda h: torch.nn.functional.leaky_relu(h, -0.5),  # mask from the input
    ],
    ids=[
        "F.relu",
        "torch.relu",
        "Tensor.relu",
        "relu inplace",
        "relu_",
        "leaky",
        "leaky 0.01",
        "leaky inplace",
        "leaky_",
        "negative slope",
    ],
)
def test_rectifiers_in_the_penalty_forward_match_aten_to_second_order(act):
    """Value, first and second derivatives of each way of calling ReLU/LeakyReLU equal
    the plain autograd's bitwise, in place or not, and the double backward of the
    rectifier's mask contributes nothing (it is 0 almost everywhere)."""
    _assert_equal_to_second_order(
        lambda x, w: act(torch.conv2d(x, w, padding=1)).mul(x).sum(dim=(1, 2, 3)),
        (3, 4, 5, 5),
        (4, 4, 3, 3),
    )


def test_rectifier_in_place_modifies_its_input_and_no_grad_falls_through():
    x = torch.randn(4, 6)
    fwd = with_detached_relu_masks(lambda h: torch.nn.functional.relu(h, inplace=True))
    h = x.clone().requires_grad_(False)
    out = fwd(h)
    assert out.data_ptr() == h.data_ptr()
    torch.testing.assert_close(h, x.clamp_min(0), atol=0, rtol=0)
    with torch.no_grad():
        y = with_detached_relu_masks(torch.nn.functional.leaky_relu)(x)
    assert y.grad_fn is None
    torch.testing.assert_close(y, torch.nn.functional.leaky_relu(x), atol=0, rtol=0)


def _resnet_critic() -> nn.Module:
    from wgangp.models.resnet import CifarResNetCritic

    torch.manual_seed(0)
    return CifarResNetCritic(3, 32, 16, "none", nn.ReLU)


def test_detached_masks_and_pools_give_the_resnet_penalty_gradients():
    _fast_penalty_grads_equal_plain(_resnet_critic(), n=4, size=32, seed=2)


def test_resnet_double_backward_skips_the_forward_graph():
    """Mean pools used to send zeros back through every conv before them (52 → 50 GFLOP
    at width 64 instead of 35): the double backward must cost what the theory says,
    one forward-type and one weight-gradient convolution per layer (4 units with the
    forward and the first-order backward), and no convolution_backward of the forward
    graph asking for weight gradients."""
    from scripts.benchtools.kernels import KernelRecorder

    critic = _resnet_critic()
    real, fake = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    eps = torch.rand(4, 1, 1, 1)
    counts = []
    for fwd in (critic, with_detached_relu_masks(critic)):
        with FlopCounterMode(display=False) as fc, KernelRecorder() as rec:
            gp = losses.gradient_penalty(fwd, real, fake, eps=eps)
            gp.penalty.backward()
        counts.append(fc.get_total_flops())
    with FlopCounterMode(display=False) as fc:
        torch.autograd.grad(critic(real).sum(), list(critic.parameters()))
    unit = fc.get_total_flops() / 3  # forward + input gradient + weight gradient ≈ 3 units
    assert counts[1] < 0.72 * counts[0]
    assert counts[1] < 4.2 * unit
    weight_grads = [k for k in rec.calls if "convolution_backward" in str(k[0]) and k[1][-1][1]]
    assert weight_grads == []


def test_trainer_detached_masks_same_gradients_as_plain():
    a = make("speed.detach_relu_masks=true")
    b = make("speed.detach_relu_masks=false")
    real, fake = batches(a)
    b.rng.set_state(a.rng.get_state())
    assert_close_lists(critic_grads(a, real, fake), critic_grads(b, real, fake), atol=1e-6)


# ----------------------------------------------------------------- batched fakes
def test_batched_fakes_equal_per_step_generator_forwards():
    t = make("speed.batch_fakes=true", "trainer.n_critic=3")
    z = t.noise(3 * 64)
    with torch.no_grad():
        together = t.generator(z).chunk(3)
        apart = [t.generator(zi) for zi in z.chunk(3)]
    assert_close_lists(list(together), apart, atol=1e-6)
    stats = t.train_step()
    assert all(torch.isfinite(v).all() for v in stats.values())


# ----------------------------------------------------------------- lazy penalty
def test_lazy_penalty_scales_lambda_by_k_and_skips_in_between():
    lazy = make("gp.every=2")
    eager = make("gp.lambda=20")  # λ·k
    none = make("gp.lambda=0")
    real, fake = batches(lazy)
    for t in (eager, none):
        t.rng.set_state(lazy.rng.get_state())
    assert_close_lists(
        critic_grads(lazy, real, fake, lam_scale=2.0), critic_grads(eager, real, fake)
    )
    # an in-between step (no penalty) equals λ = 0
    for t in (lazy, none):
        for p in t.critic.parameters():
            p.data.fill_(0.01)
    assert_close_lists(
        critic_grads(lazy, real, fake, penalty=False), critic_grads(none, real, fake), atol=1e-6
    )


def test_lazy_penalty_schedule_in_train_step(monkeypatch):
    t = make("gp.every=3", "trainer.n_critic=5")
    seen = []
    orig = t.critic_step

    def spy(real, fake, *, penalty=True, lam_scale=1.0, eps=None, labels=None):
        seen.append((penalty, lam_scale))
        assert (eps is not None) == penalty  # ε is drawn for penalised updates only
        return orig(real, fake, penalty=penalty, lam_scale=lam_scale, eps=eps)

    monkeypatch.setattr(t, "critic_step", spy)
    t.train_step()
    t.step += 1
    t.train_step()
    # critic updates 0..9 over the run: the penalty on 0, 3, 6, 9
    assert [p for p, _ in seen] == [i % 3 == 0 for i in range(10)]
    assert {s for _, s in seen} == {3.0}


# ----------------------------------------------------------------- precision
def test_bf16_step_is_finite_and_close_to_fp32():
    a = make("trainer.precision=bf16")
    b = make()
    sa, sb = a.train_step(), b.train_step()
    for k in ("loss/critic", "loss/generator", "gp", "wasserstein"):
        assert torch.isfinite(sa[k]), k
        assert abs(float(sa[k]) - float(sb[k])) <= 0.05 * abs(float(sb[k])) + 0.02, k


# ----------------------------------------------------------------- memory
def test_the_step_reads_no_config_node(monkeypatch):
    """An OmegaConf read costs microseconds of Python: the step uses its settings
    resolved once (``Trainer.hot``), which follow the config."""
    from omegaconf import DictConfig

    t = make("gp.lambda=3.5", "gp.target=0.5", "gp.one_sided=true", "trainer.n_critic=2")
    assert (t.hot.gp_lambda, t.hot.gp_target, t.hot.gp_one_sided) == (3.5, 0.5, True)
    assert (t.hot.n_critic, t.hot.batch_size) == (2, t.cfg.trainer.batch_size)
    t.train_step()
    reads = []
    for name in ("__getattr__", "__getitem__"):
        orig = getattr(DictConfig, name)

        def counting(self, key, _orig=orig):
            reads.append(key)
            return _orig(self, key)

        monkeypatch.setattr(DictConfig, name, counting)
    t.train_step()
    assert reads == []


def test_memory_is_flat_over_many_steps():
    """Tensors made in the first steps are all freed later: no graph survives a step."""
    torch.set_num_threads(1)  # tiny ops: 2 threads only contend (the fixture restores it)
    t = make("trainer.n_critic=1", "critic.dim=16", "generator.dim=16", "trainer.batch_size=32")
    t.train_step()  # optimizer states exist from here on
    with LiveBytes() as lb:  # (a dispatch mode is slow: track a window of steps only)
        for _ in range(10):
            t.train_step()
        window = lb.live
    for _ in range(290):
        t.train_step()
    # what the window made and still held at its end (gradients) is gone after 290 more
    # steps; a create_graph graph kept alive across steps would stay counted here
    assert lb.live < window or lb.live == 0, (window, lb.live)
    assert lb.live < 64 * 1024, lb.live


# ----------------------------------------------------------------- compile
def test_compile_keeps_the_penalty_on_the_eager_critic():
    t = make("speed.compile=true")
    assert t.critic_fwd is not t.critic and t.generator_fwd is not t.generator
    # the penalty's double backward never goes through the compiled module
    assert not isinstance(t.penalty_critic, torch._dynamo.eval_frame.OptimizedModule)
    real, fake = batches(t)
    g = _penalty_grads(t.critic, t.penalty_critic, real, fake, torch.full((64, 1), 0.3))
    assert any(x.abs().sum() > 0 for x in g)


@pytest.mark.slow
def test_compiled_path_keeps_the_penalty_and_matches_eager():
    pytest.importorskip("torch._inductor")
    a = make("speed.compile=true", "trainer.n_critic=1")
    b = make("speed.compile=false", "trainer.n_critic=1")
    real, fake = batches(a)
    b.rng.set_state(a.rng.get_state())
    assert_close_lists(critic_grads(a, real, fake), critic_grads(b, real, fake))
    # with and without the penalty differ: the penalty reached the compiled step's loss
    with_gp = [critic_grads(t, real, fake) for t in (a, b)]
    no_gp = [critic_grads(t, real, fake, penalty=False) for t in (a, b)]
    assert any((x - y).abs().max() > 1e-6 for x, y in zip(with_gp[0], no_gp[0], strict=True))
    assert_close_lists(with_gp[0], with_gp[1])
    assert_close_lists(no_gp[0], no_gp[1])
    # a penalty-only loss has nonzero gradients w.r.t. the critic, equal to eager
    ga = _penalty_grads(a.critic, a.penalty_critic, real, fake, torch.full((64, 1), 0.3))
    gb = _penalty_grads(b.critic, b.penalty_critic, real, fake, torch.full((64, 1), 0.3))
    assert any(x.abs().sum() > 0 for x in ga)
    assert_close_lists(ga, gb, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------- sync-free NaN check
@pytest.mark.parametrize("mode", ["step", "iteration"])
def test_nonfinite_loss_never_reaches_the_weights(mode, monkeypatch):
    t = make(f"speed.nan_check={mode}", "trainer.n_critic=3")
    assert t.deferred_nan_check == (mode == "iteration")
    calls = {"n": 0}
    orig = t.critic_step
    snap = {}

    def poisoned(real, fake, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            snap["critic"] = [p.detach().clone() for p in t.critic.parameters()]
            real = real * float("nan")
        return orig(real, fake, **kw)

    monkeypatch.setattr(t, "critic_step", poisoned)
    g_before = [p.detach().clone() for p in t.generator.parameters()]
    with pytest.raises(_NonFiniteStep) as e:
        t.train_step()
    assert e.value.who == "critic"
    # the update of the bad step and (deferred) all later ones were skipped
    assert_close_lists([p.detach() for p in t.critic.parameters()], snap["critic"], atol=0, rtol=0)
    assert_close_lists([p.detach() for p in t.generator.parameters()], g_before, atol=0, rtol=0)
    monkeypatch.setattr(t, "critic_step", orig)
    stats = t.train_step()  # training goes on after a skipped iteration
    assert all(torch.isfinite(v).all() for v in stats.values())


# ----------------------------------------------------------------- config
@pytest.mark.parametrize(
    "override,key",
    [("gp.every=0", "gp.every"), ("speed.nan_check=sometimes", "speed.nan_check")],
)
def test_speed_config_errors_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(*TINY, override))
    assert e.value.key == key


# ----------------------------------------------------------------- CUDA (skipped here)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_step_finite_and_close_to_cpu_fp32(precision):
    dev = torch.device("cuda")
    a = make(f"trainer.precision={precision}", "trainer.device=cuda", device=dev)
    b = make()
    assert a.deferred_nan_check  # auto → iteration on CUDA: no host sync per update
    sa, sb = a.train_step(), b.train_step()
    # CUDA and CPU draw different random streams (data, z, ε): the same losses in
    # distribution, not in value — compare loosely, and finiteness strictly
    tol = 0.05
    for k in ("loss/critic", "loss/generator"):
        assert torch.isfinite(sa[k]), k
        assert abs(float(sa[k]) - float(sb[k])) <= tol * abs(float(sb[k])) + 0.05, k


@pytest.mark.cuda
@cuda
def test_cuda_fused_and_detached_paths_match_plain():
    dev = torch.device("cuda")
    a = make("trainer.device=cuda", device=dev)
    b = make(
        "trainer.device=cuda",
        "speed.fuse_real_fake=false",
        "speed.detach_relu_masks=false",
        device=dev,
    )
    real, fake = batches(a)
    b.rng.set_state(a.rng.get_state())
    assert_close_lists(critic_grads(a, real, fake), critic_grads(b, real, fake), atol=1e-5)


@pytest.mark.cuda
@cuda
def test_cuda_nan_check_needs_no_host_sync_per_update():
    dev = torch.device("cuda")
    t = make("trainer.device=cuda", device=dev)
    t.train_step()
    torch.cuda.set_sync_debug_mode("error")
    try:
        real, fake = batches(t)
        t.critic_step(real, fake)  # a sync here raises
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
@cuda
def test_cuda_memory_flat_over_1000_steps():
    dev = torch.device("cuda")
    t = make("trainer.device=cuda", "trainer.n_critic=1", device=dev)
    for _ in range(20):
        t.train_step()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(1000):
        t.train_step()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() <= before


# ----------------------------------------------------------------- Adam implementation
def test_adam_is_fused_and_a_loaded_checkpoint_cannot_switch_it_back(tmp_path):
    t = Trainer(compose_cfg(*TINY), tmp_path, CPU)
    for opt in (t.opt_c, t.opt_g):
        assert opt.param_groups[0]["fused"] is True
        assert not opt.param_groups[0]["foreach"]
    t.train_step()
    state = t.state_dict()
    # an older checkpoint (or one from a device without fused Adam) says foreach
    for key in ("opt_critic", "opt_generator"):
        for group in state[key]["param_groups"]:
            group.update(fused=None, foreach=True)
    u = Trainer(compose_cfg(*TINY), tmp_path, CPU)
    u.load_state_dict(state)
    for opt in (u.opt_c, u.opt_g):
        assert opt.param_groups[0]["fused"] is True
        assert not opt.param_groups[0]["foreach"]
    # a fused step with found_inf set skips the update on the device (the deferred
    # non-finite check relies on it): the weights stay bitwise the same
    before = [p.detach().clone() for p in u.critic.parameters()]
    real, fake = batches(u)
    u.opt_c.zero_grad()
    losses.critic_loss(*critic_scores(u.critic, real, fake, True), torch.zeros(()), 0.0).backward()
    u.opt_c.found_inf = torch.ones(())
    u.opt_c.step()
    del u.opt_c.found_inf
    assert all(torch.equal(a, b) for a, b in zip(before, u.critic.parameters(), strict=True))
