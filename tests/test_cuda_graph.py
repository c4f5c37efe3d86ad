"""speed.cuda_graph: the iteration it captures, the config it refuses, the optimizer it
needs; and, on a GPU, the replayed training against eager training step for step."""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from tests.conftest import TINY, compose_cfg
from tests.test_images_e2e import make_folder, tiny_rgb
from wgangp.config.validate import validate, validate_cuda_graph
from wgangp.core import losses
from wgangp.errors import ConfigError
from wgangp.fast import cuda_graph
from wgangp.fast.cuda_graph import CaptureCheck, GraphedIteration, check_capturable
from wgangp.train.optimizers import adam
from wgangp.train.step import NonFiniteStep as _NonFiniteStep
from wgangp.train.trainer import Trainer

CPU = torch.device("cpu")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def make(*overrides: str, device: torch.device = CPU, run_dir: str = "/tmp/unused-run") -> Trainer:
    return Trainer(compose_cfg(*TINY, *overrides), run_dir, device)


def tensors_of(t: Trainer) -> list[torch.Tensor]:
    """Everything training changes: weights, buffers, optimizer moments and steps."""
    out = [*t.critic.state_dict().values(), *t.generator.state_dict().values()]
    for opt in (t.opt_c, t.opt_g):
        for st in opt.state.values():
            out += [v for v in st.values() if isinstance(v, torch.Tensor)]
    if t.ema is not None:
        out += list(t.ema.state_dict().values())
    return out


def same_state(a: object, b: object) -> bool:
    """Equal nested state (dicts, lists, tensors compared element-wise)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def snapshot(t: Trainer) -> dict:
    """A checkpoint's content, detached from the live tensors (as torch.save would)."""
    return copy.deepcopy(t.state_dict())


def params_and_moments(t: Trainer) -> list[torch.Tensor]:
    out = [*t.critic.parameters(), *t.generator.parameters()]
    for opt in (t.opt_c, t.opt_g):
        for st in opt.state.values():
            out += [v for v in st.values() if isinstance(v, torch.Tensor)]
    return [x.detach() for x in out]


def assert_equal_lists(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    assert len(a) == len(b)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        assert torch.equal(x.cpu(), y.cpu()), i


def step_drawing_as_it_goes(t: Trainer) -> dict[str, torch.Tensor]:
    """The generator iteration as it was written before draw_inputs existed: every
    random number drawn at the moment it is used."""
    tc = t.cfg.trainer
    every = t.cfg.gp.every
    fakes: tuple[torch.Tensor, ...] = ()
    stats: dict[str, torch.Tensor] = {}
    for i in range(tc.n_critic):
        real = t.data.next_batch()
        with torch.no_grad():
            if t.cfg.speed.batch_fakes:
                if not fakes:
                    fakes = t.generator(t.noise(tc.batch_size * tc.n_critic)).chunk(tc.n_critic)
                fake = fakes[i]
            else:
                fake = t.generator(t.noise(tc.batch_size))
        penalty = (t.step * tc.n_critic + i) % every == 0
        stats = t.critic_step(real, fake, penalty=penalty, lam_scale=float(every))
    stats.update(t.generator_step())
    if t.ema is not None and t.step >= tc.ema.start:
        t.ema.update_parameters(t.generator)
    return stats


# ----------------------------------------------------------------- the captured iteration
@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("speed.batch_fakes=true",),
        ("gp.every=3", "trainer.n_critic=2"),
        ("trainer.ema.decay=0.9", "trainer.n_critic=2"),
    ],
    ids=["default", "batch_fakes", "lazy", "ema"],
)
def test_inputs_drawn_first_give_the_numbers_of_drawing_as_you_go(overrides):
    """draw_inputs + iteration (what a CUDA graph replays) is bitwise the eager step."""
    a, b = make(*overrides), make(*overrides)
    for _ in range(3):
        sa = a.train_step()
        sb = step_drawing_as_it_goes(b)
        a.step += 1
        b.step += 1
        assert sa.keys() == sb.keys()
        assert_equal_lists(list(sa.values()), list(sb.values()))
    assert_equal_lists(tensors_of(a), tensors_of(b))
    # and both streams are at the same place afterwards
    assert torch.equal(a.rng.get_state(), b.rng.get_state())
    assert same_state(a.data.state_dict(), b.data.state_dict())


def test_iteration_draws_nothing_itself():
    """Everything random comes in through IterationInputs: the RNG does not move."""
    t = make("trainer.n_critic=2")
    inputs = t.draw_inputs()
    state, data = t.rng.get_state(), t.data.state_dict()
    t.iteration(inputs)
    assert torch.equal(t.rng.get_state(), state)
    assert same_state(t.data.state_dict(), data)
    assert [e is not None for e in inputs.eps] == [True, True]
    assert inputs.eps[0].shape == (64, 1)  # one ε per sample
    assert len(inputs.tensors()) == 2 + 2 + 2 + 1


# ----------------------------------------------------------------- what a graph can hold
def _images(tmp_path: Path) -> list[str]:
    return tiny_rgb(make_folder(tmp_path / "data", n=16))


@pytest.mark.parametrize(
    "images,overrides",
    [
        (False, ()),
        (False, ("speed.batch_fakes=true", "trainer.ema.decay=0.9")),
        (False, ("trainer.precision=bf16", "gp.one_sided=true")),
        (True, ("speed.channels_last=false",)),
        (True, ("speed.channels_last=true", "trainer.precision=bf16")),
        (True, ("critic.norm=layernorm", "optim.lr_decay=linear")),
        (True, ("speed.native_conv_grads=false", "speed.detach_relu_masks=false")),
        (True, ("critic=resnet", "generator=resnet")),
        (True, ("loss=dcgan", "critic.norm=batchnorm")),
    ],
    ids=["mlp", "mlp-batch_fakes-ema", "mlp-bf16", "dcgan-nchw", "dcgan-nhwc-bf16",
         "dcgan-layernorm", "dcgan-plain-penalty", "resnet", "loss-dcgan-batchnorm"],
)  # fmt: skip
def test_the_iteration_holds_nothing_a_graph_cannot_capture(tmp_path, images, overrides):
    """What speed.cuda_graph captures (Trainer.iteration) makes no host sync, draws no
    random number, has no value-dependent shape and copies nothing between devices, for
    every model and option the graph accepts: checked operator by operator on the CPU,
    so that a GPU run is not the first to find out."""
    over = [*(_images(tmp_path) if images else ()), *overrides]
    t = make("speed.nan_check=iteration", "trainer.n_critic=2", *over, run_dir=str(tmp_path))
    t.train_step()  # optimizer state and other first-call set-up: outside the check
    inputs = t.draw_inputs()
    with CaptureCheck(CPU) as check:
        stats = t.iteration(inputs)
    assert check.found == {}
    penalty = "loss=dcgan" not in overrides
    assert {"loss/critic", "loss/generator", "gp" if penalty else "d_real"} <= stats.keys()


def test_capture_check_names_each_operator_a_graph_cannot_hold():
    x = torch.randn(6)
    with CaptureCheck(CPU) as check:
        y = x * 2 + torch.tensor(1.0)  # a 0-dim CPU tensor is a kernel argument: fine
        torch.ops.aten.is_same_size(x, y)  # a Python bool from metadata: no sync
        x.sum().item()
        torch.rand(3)
        x[x > 0]
        x.nonzero()
        torch.repeat_interleave(torch.tensor([1, 2]))
        x.to("meta")
    assert y.shape == (6,)
    # the trainer's device may be "cuda": a tensor on cuda:0 is on it, one on cuda:1 is not
    on = cuda_graph._on
    cuda0, cuda1 = (SimpleNamespace(device=torch.device("cuda", i)) for i in (0, 1))
    assert on(cuda0, torch.device("cuda")) and on(cuda1, torch.device("cuda"))
    assert on(cuda0, torch.device("cuda", 0)) and not on(cuda1, torch.device("cuda", 0))
    assert not on(SimpleNamespace(device=CPU), torch.device("cuda"))
    sync = "a host sync (a tensor read as a Python number: .item(), bool(), float())"
    sized = "an output whose size depends on the values (a host sync)"
    assert check.found == {
        "aten._local_scalar_dense.default": sync,
        "aten.rand.default": "a random draw (draw it in Trainer.draw_inputs, outside the graph)",
        "aten.index.Tensor": "indexing with a boolean mask (a nonzero, a host sync)",
        "aten.nonzero.default": sized,
        "aten.repeat_interleave.Tensor": sized,
        "aten._to_copy.default": "a tensor on meta, not cpu (a copy between host and device)",
    }


def _critic_that_syncs(t: Trainer) -> None:
    forward = t.critic.forward

    def syncing(x: torch.Tensor) -> torch.Tensor:
        out = forward(x)
        if float(out.detach().abs().max()) > 1e6:  # e.g. a user's model logging or clipping
            out = out.clamp(-1e6, 1e6)
        return out

    t.critic.forward = syncing  # type: ignore[method-assign]


def test_check_capturable_stops_a_model_that_syncs_naming_the_operator():
    t = make("speed.nan_check=iteration", "trainer.n_critic=1")
    _critic_that_syncs(t)
    inputs = t.draw_inputs()
    with pytest.raises(ConfigError) as e:
        check_capturable(lambda: t.iteration(inputs), CPU)
    assert e.value.key == "speed.cuda_graph"
    assert str(e.value) == (
        "invalid value for speed.cuda_graph: True (allowed: an iteration with no host "
        "sync, random draw, value-dependent shape or host-device copy); the iteration runs "
        "aten._local_scalar_dense.default: a host sync (a tensor read as a Python number: "
        ".item(), bool(), float()); set speed.cuda_graph=false to train this model eagerly"
    )


def test_the_last_warmup_iteration_is_checked_before_the_capture(monkeypatch):
    """GraphedIteration runs check_capturable on its last eager warm-up, so a model that
    cannot be captured stops the run with that message, before any capture."""
    t = make("speed.nan_check=iteration", "trainer.n_critic=1")
    monkeypatch.setattr(cuda_graph, "on_side_stream", lambda fn, device: fn())
    g = object.__new__(GraphedIteration)  # the CPU cannot construct one: no CUDA device
    g.device, g.draw_inputs, g.iteration, g.checks, g.warmup = (
        CPU,
        t.draw_inputs,
        t.iteration,
        t.updates,
        2,
    )
    g.reset()
    _critic_that_syncs(t)
    g.step()  # the first warm-up iteration runs unchecked
    with pytest.raises(ConfigError, match="aten._local_scalar_dense.default: a host sync"):
        g.step()
    assert g.graph is None


# ----------------------------------------------------------------- config
def _cuda_graph_error(*overrides: str, device: str = "cuda") -> str:
    cfg = compose_cfg(*TINY, "speed.cuda_graph=true", *overrides)
    with pytest.raises(ConfigError) as e:
        validate_cuda_graph(cfg, torch.device(device))
    assert e.value.key == "speed.cuda_graph"
    return str(e.value)


def test_cuda_graph_on_the_cpu_is_refused_before_any_work():
    cfg = compose_cfg(*TINY, "speed.cuda_graph=true")
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert str(e.value) == (
        "invalid value for speed.cuda_graph: True (allowed: false on cpu); "
        "CUDA graphs need a CUDA device (trainer.device=cuda)"
    )


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "trainer.precision=fp16",
            "invalid value for speed.cuda_graph: True (allowed: false together with "
            "trainer.precision=fp16); GradScaler adjusts its scale on the host; use "
            "trainer.precision=bf16 or speed.cuda_graph=false",
        ),
        (
            "speed.compile=true",
            "invalid value for speed.cuda_graph: True (allowed: false together with "
            "speed.compile=true); choose one: speed.compile=false or "
            "speed.cuda_graph=false",
        ),
        (
            "gp.every=4",
            "invalid value for speed.cuda_graph: True (allowed: false together with "
            "gp.every=4); the lazy penalty changes the iteration from one step to the next; "
            "use gp.every=1 or speed.cuda_graph=false",
        ),
        (
            "speed.nan_check=step",
            "invalid value for speed.cuda_graph: True (allowed: false together with "
            "speed.nan_check=step); a host check after every update cannot run inside a "
            "graph; use speed.nan_check=iteration (or auto) or speed.cuda_graph=false",
        ),
    ],
)
def test_cuda_graph_conflicts_name_the_setting_and_the_way_out(override, message):
    assert _cuda_graph_error(override) == message


def test_cuda_graph_under_torchrun_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert "torchrun (WORLD_SIZE > 1)" in _cuda_graph_error()


def test_cuda_graph_accepts_what_it_can_capture():
    capturable = ("trainer.precision=bf16", "trainer.ema.decay=0.999", "optim.lr_decay=linear")
    for extra in ((), capturable):
        cfg = compose_cfg(*TINY, "speed.cuda_graph=true", *extra)
        validate_cuda_graph(cfg, torch.device("cuda"))  # no error


# ----------------------------------------------------------------- the optimizer it needs
def test_capturable_adam_with_a_tensor_lr_steps_like_the_plain_one():
    """Under a graph Adam is capturable and reads lr from a tensor that linear decay
    writes into; the updates are bitwise those of a float lr."""
    torch.manual_seed(0)
    node = SimpleNamespace(lr=1e-3, betas=(0.0, 0.9))
    p1 = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(3))]
    p2 = [torch.nn.Parameter(p.detach().clone()) for p in p1]
    plain, graphed = adam(p1, node, CPU, graphed=False), adam(p2, node, CPU, graphed=True)
    assert isinstance(graphed.param_groups[0]["lr"], torch.Tensor)
    assert graphed.param_groups[0]["capturable"] and not plain.param_groups[0]["capturable"]
    lr_tensor = graphed.param_groups[0]["lr"]
    cfg = SimpleNamespace(
        trainer=SimpleNamespace(steps=4), optim=SimpleNamespace(critic=node, generator=node)
    )
    for step in range(4):
        for a, b in zip(p1, p2, strict=True):
            g = torch.randn_like(a)
            a.grad, b.grad = g, g.clone()
        for opt in (plain, graphed):
            fake_trainer = SimpleNamespace(step=step, cfg=cfg, opt_c=opt, opt_g=opt)
            Trainer._decay_lr(fake_trainer)  # type: ignore[arg-type]
            opt.step()
        assert_equal_lists(p1, p2)
    # decay wrote into the same tensor (a graph holds its address), not a new one
    assert graphed.param_groups[0]["lr"] is lr_tensor
    assert float(lr_tensor) == pytest.approx(1e-3 * 0.25)


def test_a_checkpoint_with_a_tensor_lr_resumes_eagerly(tmp_path):
    """A checkpoint written under speed.cuda_graph (tensor lr, capturable Adam)
    resumes without a graph: float lr, not capturable, bitwise the same next step."""
    a = make("trainer.n_critic=1")
    a.train_step()
    a.step += 1
    for opt, node in ((a.opt_c, a.cfg.optim.critic), (a.opt_g, a.cfg.optim.generator)):
        for group in opt.param_groups:  # as speed.cuda_graph holds them
            group.update(capturable=True, lr=torch.tensor(float(node.lr)))
    ckpt = snapshot(a)
    b = make("trainer.n_critic=1")
    b.load_state_dict(copy.deepcopy(ckpt))
    for opt in (b.opt_c, b.opt_g):
        for group in opt.param_groups:
            assert isinstance(group["lr"], float) and group["capturable"] is False
    b.train_step()
    # against the same checkpoint with float learning rates, as an eager run writes it
    for key in ("opt_critic", "opt_generator"):
        for group in ckpt[key]["param_groups"]:
            group.update(capturable=False, lr=float(group["lr"]))
    plain = make("trainer.n_critic=1")
    plain.load_state_dict(ckpt)
    plain.train_step()
    assert_equal_lists(tensors_of(b), tensors_of(plain))


# ----------------------------------------------------------------- on a GPU
CUDA_TINY = [o for o in TINY if not o.startswith("trainer.device=")] + ["trainer.device=cuda"]


def make_cuda(*overrides: str, run_dir: str = "/tmp/unused-run") -> Trainer:
    cfg = compose_cfg(*CUDA_TINY, *overrides)
    return Trainer(cfg, run_dir, validate(cfg))


def _train(t: Trainer, steps: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for _ in range(steps):
        if t.cfg.optim.lr_decay == "linear":
            t._decay_lr()
        out.append(t.train_step())
        t.step += 1
    return out


def _graph_and_eager(*overrides: str, steps: int = 7) -> tuple[Trainer, Trainer, list, list]:
    eager = make_cuda("speed.cuda_graph=false", *overrides)
    graphed = make_cuda("speed.cuda_graph=true", *overrides)
    se, sg = _train(eager, steps), _train(graphed, steps)
    return eager, graphed, se, sg


def _assert_close(a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
    # the same kernels on the same inputs; cuDNN's choice of algorithm may differ
    # between the two trainers, so allow float rounding
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.float(), y.float(), atol=1e-5, rtol=1e-4)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize(
    "overrides",
    [
        ("trainer.n_critic=2",),
        ("trainer.n_critic=2", "speed.batch_fakes=true", "optim.lr_decay=linear"),
        ("trainer.n_critic=2", "trainer.precision=bf16", "trainer.ema.decay=0.9"),
    ],
    ids=["fp32", "batch_fakes+decay", "bf16+ema"],
)
def test_cuda_graph_trains_like_eager(overrides):
    eager, graphed, se, sg = _graph_and_eager(*overrides, "trainer.steps=7")
    # 3 eager warm-up iterations, one capture, replays after
    assert graphed.graphed is not None
    assert graphed.graphed.captures == 1 and graphed.graphed.replays == 4
    for a, b in zip(se, sg, strict=True):
        assert a.keys() == b.keys()
        _assert_close(list(a.values()), list(b.values()))
    _assert_close(tensors_of(eager), tensors_of(graphed))
    pairs = zip(tensors_of(eager), tensors_of(graphed), strict=True)
    print("bitwise:", all(torch.equal(x, y) for x, y in pairs))


@pytest.mark.cuda
@needs_cuda
def test_cuda_graph_replays_update_the_weights_each_time():
    t = make_cuda("speed.cuda_graph=true", "trainer.n_critic=1")
    _train(t, 4)  # warm-up and capture
    before = [p.detach().clone() for p in t.critic.parameters()]
    _train(t, 1)
    assert any(not torch.equal(p, q) for p, q in zip(t.critic.parameters(), before, strict=True))
    # the statistics returned are copies: the next replay does not change them
    s = _train(t, 1)[0]
    kept = {k: v.clone() for k, v in s.items()}
    _train(t, 1)
    assert all(torch.equal(s[k], kept[k]) for k in s)


@pytest.mark.cuda
@needs_cuda
def test_cuda_graph_images_and_resume(tmp_path: Path):
    """A DCGAN on image files: graph vs eager, then a resume that captures again."""
    data = make_folder(tmp_path / "data")
    over = [o for o in tiny_rgb(data) if not o.startswith("trainer.progress")] + [
        "critic=dcgan",
        "generator=dcgan",
        "trainer.n_critic=2",
    ]
    eager, graphed, se, sg = _graph_and_eager(*over, steps=6)
    _assert_close(tensors_of(eager), tensors_of(graphed))
    ckpt = snapshot(graphed)
    resumed = make_cuda("speed.cuda_graph=true", *over)
    resumed.load_state_dict(ckpt)
    _train(resumed, 5)
    _train(graphed, 5)
    assert resumed.graphed.captures == 1
    _assert_close(tensors_of(resumed), tensors_of(graphed))


@pytest.mark.cuda
@needs_cuda
def test_cuda_graph_nonfinite_update_never_reaches_the_weights():
    t = make_cuda("speed.cuda_graph=true", "trainer.n_critic=2")
    _train(t, 5)  # replaying from here
    snap = [x.clone() for x in params_and_moments(t)]
    real_next = t.data.next_batch

    def poisoned() -> torch.Tensor:
        return real_next() * float("nan")

    t.data.next_batch = poisoned  # type: ignore[method-assign]
    with pytest.raises(_NonFiniteStep) as e:
        t.train_step()
    assert e.value.who == "critic"
    t.data.next_batch = real_next  # type: ignore[method-assign]
    # the captured updates were skipped on the device: weights, moments, step counts
    assert_equal_lists(params_and_moments(t), snap)
    stats = t.train_step()  # and the graph trains on afterwards
    assert all(torch.isfinite(v).all() for v in stats.values())


def test_losses_interpolation_weights_shape_matches_draw_inputs():
    # draw_inputs draws ε with losses.interpolation_weights: one per sample, broadcast
    eps = losses.interpolation_weights(4, 4)
    assert eps.shape == (4, 1, 1, 1)
