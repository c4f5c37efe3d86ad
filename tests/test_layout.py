"""speed.channels_last = auto | true | false, and optimizer state across layouts."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import compose_cfg
from tests.test_images_e2e import make_folder, tiny_rgb
from wgangp.config.validate import validate
from wgangp.errors import ConfigError
from wgangp.fast import layout
from wgangp.train.trainer import Trainer

CPU = torch.device("cpu")
REPO = Path(__file__).resolve().parents[1]
IMAGE = (3, 32, 32)


@pytest.fixture
def isa(monkeypatch):
    """Pretend ATen dispatches to ``level`` kernels (and clear oneDNN's ISA caps)."""

    def set_level(level: str, onednn_cap: str | None = None) -> None:
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: level)
        for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
            monkeypatch.delenv(var, raising=False)
        if onednn_cap is not None:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", onednn_cap)

    return set_level


@pytest.mark.parametrize(
    ("level", "cap", "expected"),
    [
        ("AVX512", None, torch.channels_last),
        ("AVX512", "AVX512_CORE_AMX", torch.channels_last),
        ("AVX512", "avx2", torch.contiguous_format),  # oneDNN held to AVX2 kernels
        ("AVX2", None, torch.contiguous_format),
        ("DEFAULT", None, torch.contiguous_format),
    ],
)
def test_auto_picks_channels_last_only_with_avx512_kernels(isa, level, cap, expected):
    isa(level, cap)
    assert layout.resolve_memory_format("auto", CPU, IMAGE) == expected


def test_auto_keeps_nchw_on_cuda_and_for_points(isa):
    isa("AVX512")
    assert layout.resolve_memory_format("auto", torch.device("cuda"), IMAGE) == (
        torch.contiguous_format
    )
    for setting in ("auto", "true", True):
        assert layout.resolve_memory_format(setting, CPU, (2,)) == torch.contiguous_format


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        (True, torch.channels_last),
        ("True", torch.channels_last),  # a bool from the command line, stored in a str field
        ("true", torch.channels_last),
        (False, torch.contiguous_format),
        ("false", torch.contiguous_format),
    ],
)
def test_explicit_settings_win_over_the_machine(isa, setting, expected):
    for level in ("AVX512", "AVX2"):
        isa(level)
        assert layout.resolve_memory_format(setting, CPU, IMAGE) == expected
        assert layout.resolve_memory_format(setting, torch.device("cuda"), IMAGE) == expected


def test_a_bad_setting_is_refused_before_any_work():
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg("speed.channels_last=sometimes"))
    assert str(e.value) == (
        "invalid value for speed.channels_last: 'sometimes' (allowed: auto | true | false); "
        "auto picks NHWC where the CPU's convolution kernels are faster with it"
    )
    for ok in ("auto", "true", "false", "True"):
        validate(compose_cfg(f"speed.channels_last={ok}"))


def test_the_removed_subpixel_switch_is_an_unknown_key():
    """trainer.subpixel_convs is gone (sub-pixel convolutions were dropped): an override of
    it gets the ordinary unknown-key line."""
    from wgangp.cli.train import config_dir, config_groups
    from wgangp.config.overrides import check_value_overrides

    message = check_value_overrides(["trainer.subpixel_convs=false"], config_groups(config_dir()))
    assert message is not None
    assert message.startswith(
        "invalid value for trainer.subpixel_convs: 'false' (allowed: a key of the schema "
        "(see wgangp/config/schema.py)); "
    )


@pytest.mark.parametrize("impl", ["fused", "foreach", "for-loop"])
def test_optimizer_state_follows_the_parameter_layout(impl):
    """Adam moments saved in NCHW, loaded for NHWC parameters: after
    match_param_layouts the next update is the one an unbroken run makes, bitwise."""
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}}.get(impl, {"foreach": False})
    torch.manual_seed(0)
    w0, g1, g2 = (torch.randn(8, 4, 5, 5) for _ in range(3))
    cl = torch.channels_last

    def first_step(memory_format):
        p = torch.nn.Parameter(w0.clone().contiguous(memory_format=memory_format))
        opt = torch.optim.Adam([p], lr=0.1, **flags)
        p.grad = g1.clone().contiguous(memory_format=memory_format)
        opt.step()
        return p, opt

    p, opt = first_step(cl)  # the unbroken run
    p.grad = g2.clone().contiguous(memory_format=cl)
    opt.step()

    saved_p, saved_opt = first_step(torch.contiguous_format)  # saved under NCHW
    q = torch.nn.Parameter(saved_p.detach().clone().contiguous(memory_format=cl))
    resumed = torch.optim.Adam([q], lr=0.1, **flags)
    resumed.load_state_dict(saved_opt.state_dict())
    assert layout.match_param_layouts(resumed) == 2  # exp_avg, exp_avg_sq
    assert resumed.state[q]["exp_avg"].stride() == q.stride()
    assert layout.match_param_layouts(resumed) == 0
    q.grad = g2.clone().contiguous(memory_format=cl)
    resumed.step()
    assert torch.equal(q.detach(), p.detach())
    assert torch.equal(resumed.state[q]["exp_avg"], opt.state[p]["exp_avg"])


def _image_trainer(root: Path, data: Path, channels_last: str) -> Trainer:
    cfg = compose_cfg(
        "trainer.device=cpu",
        *tiny_rgb(data),
        "trainer.n_critic=2",
        f"speed.channels_last={channels_last}",
    )
    torch.manual_seed(0)
    return Trainer(cfg, root, CPU)


@pytest.mark.parametrize(("saved", "resumed"), [("true", "false"), ("false", "true")])
def test_resume_under_the_other_layout_keeps_adam_on_the_same_elements(tmp_path, saved, resumed):
    """A checkpoint written in one layout and resumed in the other: given the same
    gradients, the resumed optimizers make the very update the saving run makes
    (bitwise: Adam is elementwise), instead of pairing moments by their old strides."""
    data = make_folder(tmp_path / "images", n=32)
    a = _image_trainer(tmp_path / "a", data, saved)
    for _ in range(2):
        a.train_step()
    b = _image_trainer(tmp_path / "b", data, resumed)
    b.load_state_dict(copy.deepcopy(a.state_dict()))  # as from disk: no shared tensors
    assert b.memory_format != a.memory_format
    torch.manual_seed(1)
    pairs = [
        (a.opt_c, b.opt_c, a.critic, b.critic),
        (a.opt_g, b.opt_g, a.generator, b.generator),
    ]
    for opt_a, opt_b, model_a, model_b in pairs:
        params = list(zip(model_a.parameters(), model_b.parameters(), strict=True))
        assert any(pa.stride() != pb.stride() for pa, pb in params)
        for pa, pb in params:
            g = torch.randn(pa.shape)
            pa.grad = torch.empty_like(pa).copy_(g)
            pb.grad = torch.empty_like(pb).copy_(g)
        opt_a.step()
        opt_b.step()
        for pa, pb in params:
            assert torch.equal(pa.detach(), pb.detach())
            for key, value in opt_a.state[pa].items():
                assert torch.equal(opt_b.state[pb][key], value), key


# --------------------------- the layout seams, swapped into built models for channels-last
def _maps(n: int = 5, c: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, c, 4, 4, dtype=torch.float64)
    return x, x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("out_features", [1, 3])
def test_map_linear_is_the_flattened_linear_in_either_layout(out_features):
    """MapLinear reads a channels-last map as it lies (no NCHW copy), with the weight's
    columns permuted: the same values and gradients as Linear(flatten(x))."""
    from wgangp.fast.layout import MapLinear

    torch.manual_seed(0)
    ours = MapLinear(8 * 16, out_features).double()
    plain = torch.nn.Linear(8 * 16, out_features).double()
    plain.load_state_dict(ours.state_dict())  # the same parameters, the same keys
    assert list(ours.state_dict()) == ["weight", "bias"]
    nchw, nhwc = _maps()
    want = plain(nchw.flatten(1))
    for x in (nchw, nhwc):
        x = x.clone().requires_grad_(True)
        got = ours(x)
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        g_x, g_w = torch.autograd.grad(got.square().sum(), (x, ours.weight))
        x0 = x.detach().clone().requires_grad_(True)
        r_x, r_w = torch.autograd.grad(plain(x0.flatten(1)).square().sum(), (x0, plain.weight))
        torch.testing.assert_close(g_x, r_x, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g_w, r_w, rtol=1e-12, atol=1e-12)
        if not x.is_contiguous():  # the gradient comes back in the map's own layout
            assert g_x.is_contiguous(memory_format=torch.channels_last)
    # a flat input is an ordinary linear layer
    flat = torch.randn(5, 8 * 16, dtype=torch.float64)
    torch.testing.assert_close(ours(flat), plain(flat))


def test_map_linear_does_not_copy_a_channels_last_map():
    from torch.utils._python_dispatch import TorchDispatchMode

    from wgangp.fast.layout import MapLinear

    copies: list[tuple[int, ...]] = []

    class Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
            if func in (torch.ops.aten.clone.default, torch.ops.aten.copy_.default):
                copies.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    lin = MapLinear(64 * 16, 1)
    _, nhwc = _maps(32, 64)
    x = nhwc.float().requires_grad_(True)
    with Watch():
        lin(x).sum().backward()
    # only the 64·16-element weight is permuted; the 32×64×4×4 map never is
    assert (32, 64, 4, 4) not in copies and all(s[0] != 32 for s in copies), copies
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


def test_a_reshaped_linear_output_takes_the_next_convolutions_layout():
    x = torch.randn(2, 8 * 4 * 4)
    plain = torch.nn.Sequential(torch.nn.Unflatten(1, (8, 4, 4)))
    converted = layout.convert_for_channels_last(copy.deepcopy(plain))
    assert type(converted[0]) is layout.ChannelsLastUnflatten
    assert converted(x).is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(converted(x), plain(x))
    assert plain(x).is_contiguous()  # an NCHW model: untouched
    flat = torch.nn.Sequential(torch.nn.Unflatten(1, (8, 16)))  # not a map: untouched
    assert type(layout.convert_for_channels_last(flat)[0]) is torch.nn.Unflatten


@pytest.mark.parametrize(
    ("arch", "dataset"),
    [("dcgan", "cifar10"), ("resnet", "cifar10"), ("resnet", "celeba"), ("resnet101", "celeba")],
)
def test_image_models_give_the_same_scores_in_either_layout(arch, dataset):
    """The critic's and the generator's outputs and the critic's input gradient agree
    across layouts (to float rounding: the kernels sum in other orders)."""
    from wgangp.models import registry

    cfg = compose_cfg(f"dataset={dataset}", f"critic={arch}", f"generator={arch}")
    shape = (3, cfg.dataset.image_size, cfg.dataset.image_size)
    torch.manual_seed(0)
    d = registry.build_critic(cfg.critic, shape).double()
    g = registry.build_generator(cfg.generator, shape).double().eval()
    d_cl, g_cl = copy.deepcopy(d), copy.deepcopy(g)
    layout.use_memory_format(torch.channels_last, d_cl, g_cl)
    # the same state dict: a checkpoint from either layout loads into the other
    assert list(d_cl.state_dict()) == list(d.state_dict())
    assert list(g_cl.state_dict()) == list(g.state_dict())
    z = torch.randn(4, g.z_dim, dtype=torch.float64)
    torch.testing.assert_close(g_cl(z), g(z), rtol=1e-9, atol=1e-9)
    x = torch.randn(4, *shape, dtype=torch.float64)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    x = x.clone().requires_grad_(True)
    s, s_cl = d(x), d_cl(x_cl)
    torch.testing.assert_close(s_cl, s, rtol=1e-9, atol=1e-9)
    (gx,) = torch.autograd.grad(s.sum(), x)
    (gx_cl,) = torch.autograd.grad(s_cl.sum(), x_cl)
    torch.testing.assert_close(gx_cl, gx, rtol=1e-9, atol=1e-9)
    if arch == "resnet101":  # no class-conditional variant
        return
    # the AC-GAN class head reads the same map through its own MapLinear
    torch.manual_seed(1)
    d = registry.build_critic(cfg.critic, shape, num_classes=10).double()
    d_cl = copy.deepcopy(d)
    layout.use_memory_format(torch.channels_last, d_cl)
    for a, b in zip(d(x, with_logits=True), d_cl(x_cl, with_logits=True), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    ("arch", "dataset", "heads"),
    [("dcgan", "cifar10", 2), ("resnet", "celeba", 2), ("resnet101", "celeba", 1)],
)
def test_the_conversion_hands_the_critic_head_its_map_as_it_lies(arch, dataset, heads):
    """The plain critic flattens its last map for nn.Linear; converted for channels-last,
    its score and class heads read the NHWC map itself (no NCHW copy)."""
    from wgangp.models import registry

    cfg = compose_cfg(f"dataset={dataset}", f"critic={arch}")
    shape = (3, cfg.dataset.image_size, cfg.dataset.image_size)
    d = registry.build_critic(cfg.critic, shape, num_classes=10 if heads == 2 else 0)
    kinds = {type(m) for m in d.modules()}
    assert torch.nn.Flatten in kinds and layout.MapLinear not in kinds  # plain layers
    layout.use_memory_format(torch.channels_last, d)
    seen: list[torch.Tensor] = []
    for m in d.modules():
        if isinstance(m, layout.MapLinear):
            m.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    x = torch.randn(2, *shape).contiguous(memory_format=torch.channels_last)
    d(x, with_logits=True) if heads == 2 else d(x)
    assert len(seen) == heads
    assert all(h.dim() == 4 and layout.is_channels_last(h) for h in seen)
    assert layout.convert_for_channels_last(d) is d  # idempotent: nothing left to swap


def test_the_models_never_import_the_speed_layer():
    code = (
        "import sys, wgangp.models, wgangp.core.step, wgangp.core.losses\n"
        "assert not [m for m in sys.modules if m.startswith('wgangp.fast')], sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
