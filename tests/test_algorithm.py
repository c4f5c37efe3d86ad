"""Algorithm 1 as the trainer runs it (wgangp/core/algorithm.py) against the paper's loop
written out with torch alone: ``speed=off`` equals it in fp64 to ~1e-12 for a whole
generator iteration, the default speed settings equal ``speed=off`` to fp32 rounding,
the objective keeps fp64, the penalty's norm survives tiny gradients, and the speed
keys' old names are mapped."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import TINY, compose_cfg
from tests.test_images_e2e import make_folder
from wgangp.config.legacy import moved_key_message, upgrade_config, upgrade_overrides
from wgangp.config.overrides import check_value_overrides
from wgangp.core import losses
from wgangp.core.step import IterationInputs
from wgangp.train.trainer import Trainer

CPU = torch.device("cpu")


def _image_overrides(root: Path, norm: str) -> list[str]:
    return [
        "dataset=image_folder",
        f"dataset.root={make_folder(root, n=24)}",
        "dataset.image_size=16",
        "dataset.channels=1",
        "dataset.num_workers=0",
        "critic.dim=8",
        "generator.dim=8",
        f"critic.norm={norm}",
        "trainer.batch_size=6",
        "trainer.progress=false",
    ]


CONFIGS = {
    "mlp": lambda root: [*TINY, "trainer.batch_size=16", "critic.dim=16", "generator.dim=16"],
    "dcgan-none": lambda root: _image_overrides(root, "none"),
    "dcgan-layernorm": lambda root: _image_overrides(root, "layernorm"),
}


def _trainer(tmp_path: Path, overrides: list[str], *extra: str, name: str = "run") -> Trainer:
    cfg = compose_cfg(*overrides, "trainer.n_critic=3", "trainer.device=cpu", *extra)
    return Trainer(cfg, tmp_path / name, CPU)


def _in(inputs: IterationInputs, dtype: torch.dtype) -> IterationInputs:
    def cast(x: torch.Tensor) -> torch.Tensor:
        return x.to(dtype) if x.is_floating_point() else x

    return IterationInputs(
        [cast(x) for x in inputs.reals],
        [cast(z) for z in inputs.fake_z],
        [None if e is None else cast(e) for e in inputs.eps],
        cast(inputs.gen_z),
        inputs.real_labels,
        inputs.gen_labels,
    )


def _record_grads(opt: torch.optim.Optimizer) -> list[list[torch.Tensor]]:
    """The gradients each ``opt.step()`` applies, in order."""
    seen: list[list[torch.Tensor]] = []

    def hook(o: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        seen.append([p.grad.detach().clone() for g in o.param_groups for p in g["params"]])

    opt.register_step_pre_hook(hook)
    return seen


def textbook_iteration(
    critic: nn.Module,
    generator: nn.Module,
    opt_d: torch.optim.Optimizer,
    opt_g: torch.optim.Optimizer,
    inputs: IterationInputs,
    lam: float,
) -> None:
    """Algorithm 1 of the paper as written: separate forwards of x, x̃ and x̂, the
    penalty's gradient by autograd with create_graph=True, torch.optim.Adam."""
    for x, z, eps in zip(inputs.reals, inputs.fake_z, inputs.eps, strict=True):
        with torch.no_grad():
            x_tilde = generator(z)
        x_hat = (eps * x + (1 - eps) * x_tilde).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
        penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        loss = critic(x_tilde).mean() - critic(x).mean() + lam * penalty
        opt_d.zero_grad()
        loss.backward()
        opt_d.step()
    loss_g = -critic(generator(inputs.gen_z)).mean()
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()


def _assert_grads_close(ours: list, ref: list, rtol: float) -> None:
    """Each update's gradients within ``rtol`` of the largest gradient entry of that
    update (a gradient that is 0 in exact arithmetic is rounding noise in both)."""
    assert len(ours) == len(ref)
    for update, (a, b) in enumerate(zip(ours, ref, strict=True)):
        scale = max(float(g.abs().max()) for g in b)
        for i, (ga, gb) in enumerate(zip(a, b, strict=True)):
            err = float((ga - gb).abs().max())
            assert err <= rtol * scale, (update, i, err, scale)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_speed_off_is_the_textbook_loop_in_fp64(tmp_path, name):
    """One iteration (3 critic updates, one generator update) of ``speed=off`` with fp64
    networks: every update's gradients and the final weights equal the textbook loop's
    to ~1e-12; the losses and gradients are fp64 (nothing rounds to fp32 on the way)."""
    t = _trainer(tmp_path, CONFIGS[name](tmp_path / "data"), "speed=off")
    t.critic.double()
    t.generator.double()
    critic, generator = copy.deepcopy(t.critic), copy.deepcopy(t.generator)
    lr, betas = t.cfg.optim.critic.lr, tuple(t.cfg.optim.critic.betas)
    opt_d = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas, foreach=False)
    lr_g, betas_g = t.cfg.optim.generator.lr, tuple(t.cfg.optim.generator.betas)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr_g, betas=betas_g, foreach=False)
    ours_c, ours_g = _record_grads(t.opt_c), _record_grads(t.opt_g)
    ref_c, ref_g = _record_grads(opt_d), _record_grads(opt_g)

    inputs = _in(t.draw_inputs(), torch.float64)
    stats = t.iteration(inputs)
    textbook_iteration(critic, generator, opt_d, opt_g, inputs, float(t.cfg.gp["lambda"]))

    assert stats["loss/critic"].dtype == stats["loss/generator"].dtype == torch.float64
    assert all(g.dtype == torch.float64 for update in ours_c + ours_g for g in update)
    _assert_grads_close(ours_c, ref_c, 1e-10)
    _assert_grads_close(ours_g, ref_g, 1e-10)
    for mine, theirs in ((t.critic, critic), (t.generator, generator)):
        for (k, a), b in zip(mine.state_dict().items(), theirs.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=k)


def _sync(dst: Trainer, src: Trainer) -> None:
    """``dst`` takes ``src``'s weights and Adam moments (in place: layouts kept)."""
    with torch.no_grad():
        for a, b in ((dst.critic, src.critic), (dst.generator, src.generator)):
            for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
                x.copy_(y)
        for oa, ob in ((dst.opt_c, src.opt_c), (dst.opt_g, src.opt_g)):
            for pa, pb in zip(oa.state.values(), ob.state.values(), strict=True):
                for key, v in pb.items():
                    pa[key].copy_(v)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_default_speed_equals_speed_off_to_fp32_rounding(tmp_path, name):
    """Every update of one iteration, each from the same weights and Adam state: the
    default speed settings (fused real+fake forward, detached masks, native conv
    gradients, ...) give the gradients of ``speed=off`` to fp32 rounding, and the same
    losses."""
    overrides = CONFIGS[name](tmp_path / "data")
    off = _trainer(tmp_path, overrides, "speed=off", name="off")
    fast = _trainer(tmp_path, overrides, name="fast")
    grads = {
        k: (_record_grads(t.opt_c), _record_grads(t.opt_g))
        for k, t in (("off", off), ("fast", fast))
    }
    inputs = off.draw_inputs()
    off.updates.start_iteration()
    fast.updates.start_iteration()
    for x, z, eps in zip(inputs.reals, inputs.fake_z, inputs.eps, strict=True):
        _sync(fast, off)
        fake = off.generate(z, None)
        a = off.critic_step(x, fake, eps=eps)
        b = fast.critic_step(x, fake, eps=eps)
        torch.testing.assert_close(b["loss/critic"], a["loss/critic"], rtol=1e-5, atol=1e-6)
    _sync(fast, off)
    a, b = off.generator_step(inputs.gen_z), fast.generator_step(inputs.gen_z)
    torch.testing.assert_close(b["loss/generator"], a["loss/generator"], rtol=1e-5, atol=1e-6)
    _assert_grads_close(grads["fast"][0], grads["off"][0], 1e-4)
    _assert_grads_close(grads["fast"][1], grads["off"][1], 1e-4)


def test_the_trainer_iteration_runs_algorithm_1(tmp_path, monkeypatch):
    """Trainer.iteration is core's algorithm_1 (not a copy of it)."""
    from wgangp.core import algorithm

    t = _trainer(tmp_path, CONFIGS["mlp"](tmp_path))
    calls = []
    real = algorithm.algorithm_1
    monkeypatch.setattr(algorithm, "algorithm_1", lambda *a: calls.append(1) or real(*a))
    t.train_step()
    assert calls == [1]


# ------------------------------------------------------------- the penalty's norm
def _two_layer_critic(dtype: torch.dtype, out_scale: float) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 1)).to(dtype)
    with torch.no_grad():
        net[2].weight.mul_(out_scale)
    return net


def _penalty_grads(net: nn.Module, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor):
    gp = losses.gradient_penalty(net, real, fake, eps=eps)
    # the output bias is not in the penalty's graph: its gradient is 0
    return list(
        torch.autograd.grad(
            gp.penalty, list(net.parameters()), allow_unused=True, materialize_grads=True
        )
    )


def _composed_penalty_grads(net: nn.Module, real, fake, eps):
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(net(x_hat).sum(), x_hat, create_graph=True)
    penalty = ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
    return list(
        torch.autograd.grad(
            penalty, list(net.parameters()), allow_unused=True, materialize_grads=True
        )
    )


def test_tiny_gradients_keep_their_norm_and_the_exact_penalty_gradient():
    """Output weights × 1e-24: ∇D(x̂) has entries ~1e-24, whose squares underflow fp32.
    The penalty's gradient with respect to every weight equals the fp64 composed one."""
    gen = torch.Generator().manual_seed(1)
    real, fake = torch.randn(8, 5, generator=gen), torch.randn(8, 5, generator=gen)
    eps = torch.rand(8, 1, generator=gen)
    ours = _penalty_grads(_two_layer_critic(torch.float32, 1e-24), real, fake, eps)
    ref = _composed_penalty_grads(
        _two_layer_critic(torch.float64, 1e-24), real.double(), fake.double(), eps.double()
    )
    for a, b in zip(ours, ref, strict=True):
        assert torch.isfinite(a).all()
        scale = float(b.abs().max())
        assert float((a.double() - b).abs().max()) <= 1e-5 * scale
    norms = losses.gradient_penalty(
        _two_layer_critic(torch.float32, 1e-24), real, fake, eps=eps
    ).grad_norm
    assert (norms > 0).all() and (norms < 1e-22).all()


def test_a_zero_gradient_gives_a_zero_penalty_gradient_not_nan():
    gen = torch.Generator().manual_seed(2)
    real, fake = torch.randn(4, 5, generator=gen), torch.randn(4, 5, generator=gen)
    net = _two_layer_critic(torch.float32, 0.0)
    gp = losses.gradient_penalty(net, real, fake, eps=torch.full((4, 1), 0.5))
    assert float(gp.penalty.detach()) == 1.0 and torch.equal(gp.grad_norm, torch.zeros(4))
    params = list(net.parameters())
    for g in torch.autograd.grad(gp.penalty, params, allow_unused=True, materialize_grads=True):
        assert torch.equal(g, torch.zeros_like(g))


def test_the_norm_is_bitwise_the_unscaled_one_for_ordinary_gradients():
    """Scaling by a power of two rounds nothing: the norms are the plain fp32 ones."""
    g = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.37
    _, norm = losses.penalty_from_grad(g)
    assert torch.equal(norm, torch.linalg.vector_norm(g.flatten(1), dim=1))


def test_fp64_scores_keep_fp64_objectives():
    d = torch.randn(6, dtype=torch.float64)
    for value in (
        losses.wasserstein_estimate(d, d.flip(0)),
        losses.generator_loss(d),
        losses.class_loss(torch.randn(6, 3, dtype=torch.float64), torch.arange(6) % 3),
        losses.dcgan_critic_loss(d, d),
        losses.lsgan_generator_loss(d),
    ):
        assert value.dtype == torch.float64
    assert losses.generator_loss(d.to(torch.bfloat16)).dtype == torch.float32


# ------------------------------------------------------------- the speed group's keys
def test_old_speed_keys_of_a_saved_config_move_to_speed():
    old = {
        "trainer": {"n_critic": 5, "fuse_real_fake": False, "nan_check": "step"},
        "gp": {"lambda": 10.0, "detach_relu_masks": False},
    }
    assert upgrade_config(old) == {
        "trainer": {"n_critic": 5},
        "gp": {"lambda": 10.0},
        "speed": {"fuse_real_fake": False, "nan_check": "step", "detach_relu_masks": False},
    }
    assert old["trainer"]["fuse_real_fake"] is False  # the saved config is not changed
    assert upgrade_overrides(
        ["trainer.compile=true", "gp.every=2", "+gp.native_conv_grads=false"]
    ) == [
        "speed.compile=true",
        "gp.every=2",
        "+speed.native_conv_grads=false",
    ]
    assert moved_key_message("gp.every=2") is None


def test_an_override_of_an_old_speed_key_names_the_new_one():
    expected = (
        "invalid value for trainer.fuse_real_fake: 'true' (allowed: a key of the schema); "
        "trainer.fuse_real_fake is now speed.fuse_real_fake: write speed.fuse_real_fake=true"
    )
    assert check_value_overrides(["trainer.fuse_real_fake=true"], set()) == expected


def test_speed_off_is_the_textbook_path():
    cfg = compose_cfg(*TINY, "speed=off")
    assert dict(cfg.speed) == {
        "fuse_real_fake": False,
        "batch_fakes": False,
        "channels_last": "false",
        "compile": False,
        "cudnn_benchmark": False,
        "cuda_graph": False,
        "keep_freed_memory": False,
        "nan_check": "step",
        "detach_relu_masks": False,
        "native_conv_grads": False,
    }


def test_a_checkpoint_with_the_old_speed_keys_resumes_with_them(tmp_path):
    """A run saved before the speed group stored trainer.fuse_real_fake, gp.detach_relu_masks,
    ... in its config and overrides: it resumes with those values under speed.*, and
    nothing counts as a change."""
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from wgangp.cli.train import config_dir, resume_config

    run = [*TINY, "trainer.steps=2", "speed.fuse_real_fake=false", "speed.nan_check=step"]
    written = OmegaConf.to_container(compose_cfg(*run), resolve=True)
    speed = written.pop("speed")
    for name, value in speed.items():
        section = "gp" if name in ("detach_relu_masks", "native_conv_grads") else "trainer"
        written[section][name] = value
    old_run = [o.replace("speed.", "trainer.") for o in run]
    ckpt = {"config": written, "overrides": old_run}
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg, effective, changes = resume_config(ckpt, tmp_path / "last.pt", ["trainer.steps=3"])
    assert changes == {"trainer.steps": (2, 3)}
    assert cfg.speed.fuse_real_fake is False and cfg.speed.nan_check == "step"
    assert "speed.fuse_real_fake=false" in effective
