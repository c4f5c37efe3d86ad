#!/usr/bin/env python
"""Benchmark: our trainer's step against the textbook WGAN-GP loop, in one process.

For each configuration and device the two loops start from the same weights, data and
seed; their losses after the first generator iteration are compared (``loss_rel_diff``),
then they are timed interleaved (ours, reference, ours, ...) after a warm-up and the
medians over repeats are reported:

* ``ms_per_iter``: milliseconds per generator iteration (n_critic critic updates + one
  generator update), ours; ``ref_ms_per_iter`` the textbook loop's; ``speedup`` their ratio.
  ``paired_speedup``: the median over repeats of each repeat's textbook/ours ratio (the
  two are timed back to back, so on a shared machine a slow spell lands on both).
* ``critic_img_per_s``: samples through the critic per second, counted as
  ``n_critic·3·B + B`` per iteration (real, fake and interpolate forwards, G step).
* ``gp_step_ratio``: our critic update with the penalty / without it (same batches; on
  ``cuda_graph`` rows each update is captured alone and replayed).
* ``cuda_graph``: CUDA rows come twice by default (``--cuda-graph both``): our step eager
  and replayed from a captured graph (``speed.cuda_graph=true``, wgangp/fast/cuda_graph.py;
  warm-up and capture happen before the timing). FLOPs and ``kernel_ms`` are counted on
  the eager iteration, which runs the same kernels.
* ``peak_mem_mb``: CUDA: ``max_memory_allocated`` over one iteration; CPU: parameters and
  optimizer states plus the peak of tensors alive during one iteration
  (scripts/benchtools/memory.py).
* ``flops_fraction``: FLOP/s achieved (FlopCounterMode, double backward included) over
  the matrix-multiply peak measured in this run for the same dtype; ``ref_flops_fraction``.
* ``kernel_ms``: the convolutions and matrix multiplies of one of our iterations (forward,
  backward, double backward), each replayed alone on tensors of the same layout, best of
  5, and summed (scripts/benchtools/kernels.py); ``ref_kernel_ms`` the textbook's.
  ``ceiling_speedup`` =
  ``ref_ms_per_iter / kernel_ms``: the speed-up our kernels would give if everything
  else (elementwise ops, Adam, Python, autograd) took no time at all.
* ``ops_per_iter``: ATen operators that do work in one of our eager iterations (views and
  bare allocations left out; scripts/benchtools/kernels.py ``count_ops``), ``ref_ops_per_iter`` the
  textbook's: on CUDA each is a kernel launch, which is what bounds an eager step at
  these batch sizes. The count is the same on every machine.

Configurations: MLP on 2-D points (batch 256); DCGAN 32×32 and 64×64 and ResNet 32×32
(batch 64, width 64, z 128) from the model registry (skipped with a note while
``dcgan``/``resnet`` are not registered); ``dcgan32-ref`` uses a private DCGAN-like model
defined here so the 32×32 target can be measured before the registry has one. CPU
always (fp32); CUDA when present (fp32 and bf16).

    python scripts/bench.py [--quick] [--json PATH] [--configs mlp,dcgan32] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, autograd, nn, optim
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.benchtools.kernels import count_ops, kernel_ms, synchronize  # noqa: E402
from scripts.benchtools.memory import LiveBytes, state_bytes  # noqa: E402
from wgangp.config.compose import compose_config, config_dir  # noqa: E402
from wgangp.config.resume import with_recipe  # noqa: E402
from wgangp.config.validate import validate  # noqa: E402
from wgangp.core import losses  # noqa: E402
from wgangp.data import TensorSource, register_dataset  # noqa: E402
from wgangp.fast.cuda_graph import WARMUP, capture, on_side_stream  # noqa: E402
from wgangp.models import CRITICS, GENERATORS  # noqa: E402
from wgangp.models.registry import register_critic, register_generator  # noqa: E402
from wgangp.train.trainer import Trainer  # noqa: E402


# --------------------------------------------------------------------------- data/models
@register_dataset("bench_images")
def _bench_images(cfg: Any, batch_size: int, device: torch.device, seed: int) -> TensorSource:
    """Uniform noise images in [-1, 1] held on the device (the benchmark needs no files)."""
    g = torch.Generator().manual_seed(seed)
    n = max(16 * batch_size, 1024)
    x = torch.rand(n, cfg.channels, cfg.image_size, cfg.image_size, generator=g) * 2 - 1
    return TensorSource(x.to(device), batch_size, seed, "bench_images")


def _dcgan_critic(cfg: Any, shape: tuple[int, ...]) -> nn.Module:
    """Radford et al. DCGAN discriminator (4×4 stride-2 convs, LeakyReLU 0.2), no norm."""
    c_in, size, _ = shape
    d = cfg.dim
    layers: list[nn.Module] = [nn.Conv2d(c_in, d, 4, 2, 1), nn.LeakyReLU(0.2)]
    s = size // 2
    while s > 4:
        layers += [nn.Conv2d(d, 2 * d, 4, 2, 1), nn.LeakyReLU(0.2)]
        d, s = 2 * d, s // 2
    layers += [nn.Conv2d(d, 1, 4, 1, 0), nn.Flatten(0)]
    return nn.Sequential(*layers)


class _DCGANGenerator(nn.Module):
    """Radford et al. DCGAN generator (transposed convs, batch norm, ReLU, tanh)."""

    def __init__(self, cfg: Any, shape: tuple[int, ...]) -> None:
        super().__init__()
        c_out, size, _ = shape
        self.z_dim = cfg.z_dim
        d = cfg.dim * (size // 8)
        layers: list[nn.Module] = [
            nn.Unflatten(1, (cfg.z_dim, 1, 1)),
            nn.ConvTranspose2d(cfg.z_dim, d, 4, 1, 0),
            nn.BatchNorm2d(d),
            nn.ReLU(),
        ]
        s = 4
        while s < size // 2:
            layers += [nn.ConvTranspose2d(d, d // 2, 4, 2, 1), nn.BatchNorm2d(d // 2), nn.ReLU()]
            d, s = d // 2, s * 2
        layers += [nn.ConvTranspose2d(d, c_out, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


register_critic("bench_dcgan")(_dcgan_critic)
register_generator("bench_dcgan")(_DCGANGenerator)


@dataclass
class BenchConfig:
    name: str
    arch: str  # registry name of critic and generator
    overrides: list[str] = field(default_factory=list)


def _image(arch: str, size: int) -> list[str]:
    group = "critic" if (config_dir() / "critic" / f"{arch}.yaml").exists() else None
    pick = (
        [f"critic={arch}", f"generator={arch}"]
        if group
        else [f"critic.name={arch}", f"generator.name={arch}"]
    )
    return [
        *pick,
        "critic.dim=64",
        "generator.dim=64",
        "generator.z_dim=128",
        # the image keys' schema itself: no data set's group defaults come with it
        "dataset=image_schema",
        "dataset.name=bench_images",
        f"dataset.image_size={size}",
        "dataset.channels=3",
        "trainer.batch_size=64",
    ]


CONFIGS = [
    BenchConfig(
        "mlp",
        "mlp",
        [
            "dataset=gaussians8",
            "critic.dim=512",
            "critic.depth=3",
            "generator.dim=512",
            "generator.depth=3",
            "generator.z_dim=2",
            "trainer.batch_size=256",
        ],
    ),
    BenchConfig("dcgan32", "dcgan", _image("dcgan", 32)),
    BenchConfig("dcgan64", "dcgan", _image("dcgan", 64)),
    BenchConfig("resnet32", "resnet", _image("resnet", 32)),
    BenchConfig("dcgan32-ref", "bench_dcgan", _image("bench_dcgan", 32)),
]


def compose_cfg(overrides: list[str]) -> Any:
    """The paper's constants (``recipe=paper``: the toy data set the configurations
    start from would pick ``recipe=toy``, n_critic 3 among them) under ``overrides``."""
    return compose_config(with_recipe(overrides, "paper"))


# --------------------------------------------------------------------------- reference
class TextbookLoop:
    """The common tutorial WGAN-GP loop, kept as written (wgan_gp_*.py of the era):
    separate critic forwards for real, fake and interpolates, three backward calls, a
    fresh generator forward per critic step, fp32, default memory format, ``.item()``
    every step. Two deviations, neither a speed-up: random numbers come from ``rng`` in
    the trainer's order (noise, then α) so the losses can be compared, and the
    interpolates are a view of the leaf (FlopCounterMode needs a non-leaf, pytorch#131753).
    """

    def __init__(
        self,
        netD: nn.Module,
        netG: nn.Module,
        data: Any,
        rng: torch.Generator,  # noqa: N803
        cfg: Any,
        device: torch.device,
    ) -> None:
        self.netD, self.netG, self.data, self.rng, self.device = netD, netG, data, rng, device
        self.BATCH_SIZE = cfg.trainer.batch_size
        self.CRITIC_ITERS = cfg.trainer.n_critic
        self.LAMBDA = cfg.gp["lambda"]
        self.optimizerD = optim.Adam(
            netD.parameters(), lr=cfg.optim.critic.lr, betas=tuple(cfg.optim.critic.betas)
        )
        self.optimizerG = optim.Adam(
            netG.parameters(), lr=cfg.optim.generator.lr, betas=tuple(cfg.optim.generator.betas)
        )
        self.one = torch.tensor(1.0, device=device)
        self.mone = self.one * -1
        self.log: list[tuple[float, float]] = []

    def calc_gradient_penalty(
        self,
        netD: nn.Module,
        real_data: Tensor,
        fake_data: Tensor,  # noqa: N803
    ) -> Tensor:
        alpha = torch.rand(self.BATCH_SIZE, 1, device=self.device, generator=self.rng)
        alpha = alpha.expand(self.BATCH_SIZE, real_data.nelement() // self.BATCH_SIZE)
        alpha = alpha.contiguous().view(real_data.size())
        interpolates = alpha * real_data + ((1 - alpha) * fake_data)
        interpolates = interpolates.requires_grad_(True)
        interpolates = interpolates.view_as(interpolates)  # non-leaf, pytorch#131753
        disc_interpolates = netD(interpolates)
        gradients = autograd.grad(
            outputs=disc_interpolates,
            inputs=interpolates,
            grad_outputs=torch.ones(disc_interpolates.size(), device=self.device),
            create_graph=True,
            retain_graph=True,
            only_inputs=True,
        )[0]
        gradients = gradients.view(gradients.size(0), -1)
        gradient_penalty = ((gradients.norm(2, dim=1) - 1) ** 2).mean() * self.LAMBDA
        return gradient_penalty

    def iteration(self) -> tuple[float, float]:
        netD, netG = self.netD, self.netG  # noqa: N806
        for p in netD.parameters():
            p.requires_grad = True
        for _ in range(self.CRITIC_ITERS):
            real_data = self.data.next_batch()
            netD.zero_grad()
            D_real = netD(real_data)  # noqa: N806
            D_real = D_real.mean()  # noqa: N806
            D_real.backward(self.mone)
            noise = torch.randn(self.BATCH_SIZE, netG.z_dim, device=self.device, generator=self.rng)
            with torch.no_grad():
                fake = netG(noise).detach()
            D_fake = netD(fake)  # noqa: N806
            D_fake = D_fake.mean()  # noqa: N806
            D_fake.backward(self.one)
            gradient_penalty = self.calc_gradient_penalty(netD, real_data, fake)
            gradient_penalty.backward()
            D_cost = D_fake - D_real + gradient_penalty  # noqa: N806
            Wasserstein_D = D_real - D_fake  # noqa: N806
            self.optimizerD.step()
            d_cost, w = D_cost.item(), Wasserstein_D.item()
        for p in netD.parameters():
            p.requires_grad = False
        netG.zero_grad()
        noise = torch.randn(self.BATCH_SIZE, netG.z_dim, device=self.device, generator=self.rng)
        fake = netG(noise)
        G = netD(fake)  # noqa: N806
        G = G.mean()  # noqa: N806
        G.backward(self.mone)
        G_cost = -G  # noqa: N806
        self.optimizerG.step()
        self.log.append((d_cost, w))
        return d_cost, G_cost.item()


def textbook_like(trainer: Trainer) -> TextbookLoop:
    """The textbook loop from ``trainer``'s current weights (NCHW, its default memory
    format), data stream and random numbers: call it before either has taken a step."""
    netD, netG = copy.deepcopy(trainer.critic), copy.deepcopy(trainer.generator)  # noqa: N806
    netD.to(memory_format=torch.contiguous_format)
    netG.to(memory_format=torch.contiguous_format)
    rng = torch.Generator(device=trainer.device)
    rng.set_state(trainer.rng.get_state())
    data = copy.deepcopy(trainer.data)
    return TextbookLoop(netD, netG, data, rng, trainer.cfg, trainer.device)


# --------------------------------------------------------------------------- measuring
def _time(fn: Callable[[], Any], n: int, device: torch.device) -> float:
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    synchronize(device)
    return (time.perf_counter() - t0) / n * 1000.0


def _graph_of(fn: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """``fn`` (no host sync, no random draw inside) captured as a CUDA graph after
    ``WARMUP`` calls on a side stream; returns the graph's replay."""
    for _ in range(WARMUP):
        on_side_stream(fn, device)
    graph, _ = capture(fn, device)
    return graph.replay


def _minor_faults() -> int:
    """Minor page faults of this process so far (0 where ``resource`` is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def matmul_peak(device: torch.device, dtype: torch.dtype, quick: bool) -> float:
    """Best FLOP/s of a square matmul on ``device`` in ``dtype``, measured now."""
    n = 4096 if device.type == "cuda" else (512 if quick else 2048)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = min(
        _time(lambda: a @ b, 3 if device.type == "cuda" else 1, device)
        for _ in range(3 if quick else 7)
    )
    return 2 * n**3 / (best / 1000.0)


def _flops(fn: Callable[[], Any]) -> int:
    with FlopCounterMode(display=False) as fc:
        fn()
    return fc.get_total_flops()


def _peak_mem_mb(fn: Callable[[], Any], device: torch.device, *state: Any) -> float:
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**20
    with LiveBytes() as lb:
        fn()
    return (state_bytes(*state) + lb.peak) / 2**20


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-8)


def run_one(
    bc: BenchConfig,
    device: torch.device,
    precision: str,
    args: argparse.Namespace,
    peaks: dict[tuple[str, torch.dtype], float],
    cuda_graph: bool = False,
) -> dict[str, Any]:
    cfg = compose_cfg(
        [
            *bc.overrides,
            f"trainer.device={device}",
            f"trainer.precision={precision}",
            "trainer.progress=false",
            f"speed.cuda_graph={str(cuda_graph).lower()}",
            *args.set,
        ]
    )
    validate(cfg)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        ours = Trainer(cfg, tmp, device)
        ref = textbook_like(ours)
        s = ours.train_step()
        d_ref, g_ref = ref.iteration()
        loss_rel_diff = max(
            _rel(float(s["loss/critic"]), d_ref), _rel(float(s["loss/generator"]), g_ref)
        )

        warm, reps, iters = args.warmup, args.repeats, args.iters
        if ours.graphed is not None:  # time replays only: warm up and capture first
            warm = max(warm, ours.graphed.warmup + 2)
        if bc.arch == "mlp" and not args.quick:
            iters *= 4
        for _ in range(warm):
            ours.train_step()
            ref.iteration()
        t_ours: list[float] = []
        t_ref: list[float] = []
        faults: dict[str, list[float]] = {"ours": [], "ref": []}
        for _ in range(reps):  # interleaved
            pair = (("ours", ours.train_step, t_ours), ("ref", ref.iteration, t_ref))
            for name, fn, times in pair:
                f0 = _minor_faults()
                times.append(_time(fn, iters, device))
                faults[name].append((_minor_faults() - f0) / iters)
        ms, ref_ms = statistics.median(t_ours), statistics.median(t_ref)

        # a critic update with and without the penalty, same batches (cuda_graph rows:
        # each update captured alone and replayed)
        real = ours.data.next_batch()
        with torch.no_grad():
            fake = ours.generator(ours.noise(cfg.trainer.batch_size)).float()
        eps = losses.interpolation_weights(
            real.shape[0], real.dim(), device=device, dtype=real.dtype, generator=ours.rng
        )

        def gp_update() -> None:
            ours.critic_step(real, fake, eps=eps)

        def plain_update() -> None:
            ours.critic_step(real, fake, penalty=False)

        if ours.graphed is not None:
            gp_update, plain_update = _graph_of(gp_update, device), _graph_of(plain_update, device)
        t_gp: list[float] = []
        t_plain: list[float] = []
        for _ in range(reps):
            t_gp.append(_time(gp_update, iters, device))
            t_plain.append(_time(plain_update, iters, device))
        gp_ratio = statistics.median(t_gp) / statistics.median(t_plain)

        # counted on the eager iteration: a graph replay dispatches no operator to count
        def eager_iteration() -> None:
            ours.iteration(ours.draw_inputs())

        flops = _flops(eager_iteration)
        ref_flops = _flops(ref.iteration)
        ops, ref_ops = count_ops(eager_iteration), count_ops(ref.iteration)
        k_reps = 3 if args.quick else 5
        k_ms, _ = kernel_ms(eager_iteration, k_reps)
        ref_k_ms, _ = kernel_ms(ref.iteration, k_reps)
        mm_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        key = (str(device), mm_dtype)
        if key not in peaks:
            peaks[key] = matmul_peak(device, mm_dtype, args.quick)
        if key[1] != torch.float32 and (str(device), torch.float32) not in peaks:
            peaks[(str(device), torch.float32)] = matmul_peak(device, torch.float32, args.quick)
        peak = peaks[key]
        fp32_peak = peaks[(str(device), torch.float32)]
        mem = _peak_mem_mb(
            ours.train_step, device, ours.critic, ours.generator, ours.opt_c, ours.opt_g
        )
        ref_mem = _peak_mem_mb(
            ref.iteration, device, ref.netD, ref.netG, ref.optimizerD, ref.optimizerG
        )
        n_critic, b = cfg.trainer.n_critic, cfg.trainer.batch_size
        return {
            "config": bc.name,
            "device": device.type,
            "precision": precision,
            "cuda_graph": ours.graphed is not None,
            "batch_size": b,
            "n_critic": n_critic,
            "ms_per_iter": ms,
            "ref_ms_per_iter": ref_ms,
            "speedup": ref_ms / ms,
            "paired_speedup": paired_speedup(t_ref, t_ours),
            "critic_img_per_s": (n_critic * 3 * b + b) / (ms / 1000.0),
            "ref_critic_img_per_s": (n_critic * 3 * b + b) / (ref_ms / 1000.0),
            "gp_step_ratio": gp_ratio,
            "peak_mem_mb": mem,
            "ref_peak_mem_mb": ref_mem,
            "gflop_per_iter": flops / 1e9,
            "ref_gflop_per_iter": ref_flops / 1e9,
            "matmul_peak_gflops": peak / 1e9,
            "flops_fraction": flops / (ms / 1000.0) / peak,
            "ref_flops_fraction": ref_flops / (ref_ms / 1000.0) / fp32_peak,
            "kernel_ms": k_ms,
            "ref_kernel_ms": ref_k_ms,
            "ceiling_speedup": ref_ms / k_ms,
            "loss_rel_diff": loss_rel_diff,
            # ATen operators that do work per iteration: kernel launches of an eager CUDA step
            "ops_per_iter": ops,
            "ref_ops_per_iter": ref_ops,
            # page faults per iteration (wgangp/fast/host_memory.py: speed.keep_freed_memory)
            "minor_faults_per_iter": statistics.median(faults["ours"]),
            "ref_minor_faults_per_iter": statistics.median(faults["ref"]),
            "keep_freed_memory": bool(cfg.speed.keep_freed_memory),
            # speed.channels_last resolved (auto: wgangp/fast/layout.py); textbook: NCHW
            "memory_format": "channels_last"
            if ours.memory_format == torch.channels_last
            else "contiguous",
            "machine": machine_info(device),
            "overrides": list(args.set),
            "ms_samples": t_ours,
            "ref_ms_samples": t_ref,
        }


def _cpu_details() -> dict[str, Any]:
    """Model name, matrix/bf16 extensions and L3 size (Linux; empty elsewhere): two
    hosts that both say "Intel(R) Xeon(R) Processor" and AVX512 can differ in these."""
    out: dict[str, Any] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and "cpu" not in out:
            out["cpu"] = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
            wanted = ("avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")
            out["cpu_flags"] = [f for f in wanted if f in flags]
            break
    l3 = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
    if l3.exists():
        out["l3_cache"] = l3.read_text().strip()
    return out


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: the CPU (and GPU), its kernel level, torch."""
    details = _cpu_details()
    info = {
        "cpu": details.pop("cpu", platform.processor() or platform.machine()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **details,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("config", "{}"),
        ("device", "{}"),
        ("precision", "{}"),
        ("cuda_graph", "{}"),
        ("memory_format", "{}"),
        ("ms_per_iter", "{:.1f}"),
        ("ref_ms_per_iter", "{:.1f}"),
        ("speedup", "{:.2f}x"),
        ("paired_speedup", "{:.2f}x"),
        ("critic_img_per_s", "{:.0f}"),
        ("gp_step_ratio", "{:.2f}"),
        ("peak_mem_mb", "{:.0f}"),
        ("ref_peak_mem_mb", "{:.0f}"),
        ("gflop_per_iter", "{:.1f}"),
        ("flops_fraction", "{:.2f}"),
        ("ref_flops_fraction", "{:.2f}"),
        ("kernel_ms", "{:.1f}"),
        ("ceiling_speedup", "{:.2f}x"),
        ("loss_rel_diff", "{:.1e}"),
        ("ops_per_iter", "{}"),
        ("ref_ops_per_iter", "{}"),
        ("minor_faults_per_iter", "{:.0f}"),
        ("ref_minor_faults_per_iter", "{:.0f}"),
    ]
    cells = [[c for c, _ in cols]] + [[f.format(r[c]) for c, f in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = ("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke test: tiny repeats")
    ap.add_argument("--json", type=Path, help="write the results (a list of objects) here")
    ap.add_argument("--configs", default=",".join(c.name for c in CONFIGS))
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--precisions", default=None, help="CUDA precisions (default fp32,bf16)")
    ap.add_argument(
        "--cuda-graph",
        choices=("off", "on", "both"),
        default="both",
        help="CUDA rows: our step eager, replayed from a CUDA graph, or both (default)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra config override for our trainer, e.g. speed.channels_last=true",
    )
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--iters", type=int, default=None, help="iterations per timed repeat")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = ap.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 5)
    args.iters = args.iters or (1 if args.quick else 2)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 2)
    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = args.configs.split(",")
    unknown = sorted(set(wanted) - {c.name for c in CONFIGS})
    if unknown:
        ap.error(f"unknown --configs {unknown}; known: {[c.name for c in CONFIGS]}")
    devices = [torch.device("cpu")] if "cpu" in args.devices.split(",") else []
    if "cuda" in args.devices.split(","):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        else:
            print("note: no CUDA device here; CUDA rows skipped", file=sys.stderr)
    rows: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    peaks: dict[tuple[str, torch.dtype], float] = {}
    by_name = {c.name: c for c in CONFIGS}
    for bc in (by_name[name] for name in dict.fromkeys(wanted)):  # in the order asked for
        if bc.arch not in CRITICS or bc.arch not in GENERATORS:
            print(
                f"note: {bc.name} skipped: no '{bc.arch}' critic/generator registered "
                "in wgangp.models yet",
                file=sys.stderr,
            )
            continue
        for device in devices:
            cuda_precs = (args.precisions or "fp32,bf16").split(",")
            precs = ["fp32"] if device.type == "cpu" else cuda_precs
            graphs = [False]
            if device.type == "cuda":
                graphs = {"off": [False], "on": [True], "both": [False, True]}[args.cuda_graph]
            for precision in precs:
                for graph in graphs:
                    try:
                        row = run_one(bc, device, precision, args, peaks, cuda_graph=graph)
                    except Exception as e:  # noqa: BLE001 - one failed row must not cost the rest
                        # (a CUDA check has a fixed time slot: report the failure, keep measuring)
                        row = {
                            "config": bc.name,
                            "device": device.type,
                            "precision": precision,
                            "cuda_graph": graph,
                        }
                        row["error"] = report_failure(_label(row), e)
                        errors.append(row)
                    else:
                        print(_table([row]).splitlines()[-1], file=sys.stderr, flush=True)
                    rows.append(row)
                    if args.json:  # after every row: a run cut short keeps what it measured
                        args.json.parent.mkdir(parents=True, exist_ok=True)
                        args.json.write_text(json.dumps(rows, indent=2))
    for device in devices:
        print(f"{device.type}: " + ", ".join(f"{k} {v}" for k, v in machine_info(device).items()))
    good = [r for r in rows if "error" not in r]
    if good:
        print(_table(good))
    for row in errors:
        print(f"failed: {_label(row)}: {row['error']}")
    return 1 if errors else 0


def paired_speedup(ref_ms: list[float], ms: list[float]) -> float:
    """The median over repeats of each repeat's reference/ours time ratio (the two are
    timed back to back, so a slow spell of a shared machine lands on both)."""
    return statistics.median(r / m for r, m in zip(ref_ms, ms, strict=True))


def report_failure(what: str, e: Exception) -> str:
    """Print ``e``'s traceback and a one-line ``error: WHAT: ...`` to stderr; return the
    line's message (what a failed row records)."""
    traceback.print_exc()
    msg = f"{type(e).__name__}: {e}"
    print(f"error: {what}: {msg}", file=sys.stderr, flush=True)
    return msg


def _label(row: dict[str, Any]) -> str:
    graph = " cuda_graph" if row.get("cuda_graph") else ""
    return f"{row['config']} {row['device']} {row['precision']}{graph}"


if __name__ == "__main__":
    raise SystemExit(main())
