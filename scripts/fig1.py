#!/usr/bin/env python
"""The paper's Figure 1: weight clipping against the gradient penalty, measured.

    python scripts/fig1.py [--out docs] [--json docs/fig1.json]
                           [--surface-steps 2000] [--train-steps 200] [--quick]

(a) Value surfaces. A critic (the toy script's 3×512 ReLU MLP) is trained alone against
    a fixed "generator", the real data plus unit Gaussian noise, on 8 Gaussians, 25
    Gaussians and the Swiss roll, with weight clipping (``loss=wgan``: c = 0.01, TF1's
    RMSProp at 5e-5) and with the penalty (``loss=wgan_gp``, λ = 10, Adam 1e-4,
    β = (0.5, 0.9)). Each update is :meth:`wgangp.train.trainer.Trainer.critic_step`, the
    training's own. Drawn: the critic's contours over the real points; measured: its
    Wasserstein estimate E D(x) − E D(x̃) and its mean gradient norm ‖∇D‖ at the
    interpolates on fresh batches.
(b) Layer gradients. WGANs of 12-layer ReLU MLPs (width 512, no batch norm) trained on
    the Swiss roll with c = 0.1, 0.01, 0.001 and with the penalty; at the end, the norm of
    the critic loss's gradient with respect to each layer's input
    (:func:`wgangp.metrics.diagnostics.layer_grad_norms`, what ``diagnostics.every`` logs) and
    the critic's weights.

Writes ``fig1a_value_surfaces.png``, ``fig1b_layer_grads.png`` and ``fig1b_weights.png``
into ``--out`` and the numbers to ``--json``. The paper states λ = 10 for all its
experiments; the official toy script uses 0.1 (``experiment=toy_paper``), which is
why λ is set here. ``--quick``: a few steps, for a smoke test, not the figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from wgangp.config.compose import compose_config  # noqa: E402
from wgangp.core import losses  # noqa: E402
from wgangp.metrics import diagnostics  # noqa: E402
from wgangp.train.trainer import Trainer  # noqa: E402

SURFACE_DATA = ("gaussians8", "gaussians25", "swissroll")
#: label → the overrides of one method (after experiment=toy_paper)
METHODS = {
    "weight clipping (c = 0.01)": ["loss=wgan"],
    "gradient penalty (λ = 10)": ["loss=wgan_gp", "gp.lambda=10"],
}
CLIPS = (0.1, 0.01, 0.001)
SURFACE_NUMBERS = ("wasserstein", "wasserstein_half", "grad_norm")
BATCH = 256


def trainer_for(overrides: list[str], run_dir: Path) -> Trainer:
    cfg = compose_config(
        [
            "experiment=toy_paper",
            "trainer.device=cpu",
            "trainer.progress=false",
            "trainer.ckpt_every=0",
            "trainer.sample_every=0",
            *overrides,
        ]
    )
    return Trainer(cfg, run_dir, torch.device("cpu"))


def noisy_data(t: Trainer, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A real batch, and the fixed "generator"'s: other real points plus N(0, I)."""
    real = t.data.sample(BATCH, generator=g)
    fake = t.data.sample(BATCH, generator=g) + torch.randn(BATCH, 2, generator=g)
    return real, fake


def value_surface(dataset: str, overrides: list[str], steps: int, work: Path) -> dict[str, Any]:
    """A critic trained alone against real + N(0, I); its contours and measurements.
    The Wasserstein estimate is also taken half-way (``wasserstein_half``): how far the
    critic still was from settling."""
    t = trainer_for([f"dataset={dataset}", *overrides], work / f"a-{dataset}")
    g = torch.Generator().manual_seed(0)
    real, fake = noisy_data(t, torch.Generator().manual_seed(1))  # the measuring batch

    def estimate() -> float:
        with torch.no_grad():
            return float(t.critic(real).mean() - t.critic(fake).mean())

    half = None
    for i in range(steps):
        t.critic_step(*noisy_data(t, g))
        if i + 1 == steps // 2:
            half = estimate()
    norm = losses.gradient_penalty(t.critic, real, fake, generator=g).grad_norm
    return {
        "critic": t.critic,
        "real": real,
        "wasserstein": estimate(),
        "wasserstein_half": half,
        "grad_norm": float(norm.mean()),
    }


def deep_run(overrides: list[str], steps: int, work: Path, name: str) -> dict[str, Any]:
    """A 12-layer WGAN on the Swiss roll; its layer gradients and weights at the end."""
    t = trainer_for(
        [
            "dataset=swissroll",
            "critic.depth=12",
            "generator.depth=12",
            f"trainer.steps={steps}",
            f"trainer.log_every={steps}",
            f"diagnostics.every={steps}",
            *overrides,
        ],
        work / f"b-{name}",
    )
    last = t.fit()
    keys = sorted(k for k in last if k.startswith(diagnostics.LAYER_GRAD_PREFIX))
    weights = torch.cat([w.flatten() for _, w in diagnostics.weight_tensors(t.critic)[1:-1]])
    return {
        "layers": [k.removeprefix(diagnostics.LAYER_GRAD_PREFIX) for k in keys],
        "norms": [last[k] for k in keys],
        "at_clip": last.get("weights/critic_at_clip"),
        "wasserstein": last["wasserstein"],
        "hidden_weights": weights,
    }


def save_small(fig: Any, path: Path) -> None:
    """``fig`` as a PNG of 128 colours (contour plots are a few hundred KB otherwise)."""
    import io

    import matplotlib.pyplot as plt
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.open(buf).convert("RGB")
    image.quantize(colors=128).save(path, optimize=True)


def plot_surfaces(results: dict[tuple[str, str], dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    from wgangp.io.plots import critic_grid

    fig, axes = plt.subplots(2, 3, figsize=(10, 6.6), dpi=110)
    for col, dataset in enumerate(SURFACE_DATA):
        for row, method in enumerate(METHODS):
            r, ax = results[(dataset, method)], axes[row, col]
            real = r["real"]
            lo, hi = real.min(0).values - 1.0, real.max(0).values + 1.0
            gx, gy, vals = critic_grid(r["critic"], lo, hi, n=96)
            ax.contour(gx.numpy(), gy.numpy(), vals.numpy(), levels=20, cmap="viridis")
            ax.scatter(real[:, 0], real[:, 1], s=2, c="tab:orange", alpha=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_aspect("equal")
            if row == 0:
                ax.set_title(dataset, fontsize=10)
            if col == 0:
                ax.set_ylabel(method, fontsize=9)
    fig.suptitle("Critics trained against real + N(0, I) (the paper's Figure 1a)", fontsize=10)
    fig.tight_layout()
    save_small(fig, path)


def plot_layer_grads(runs: dict[str, dict[str, Any]], path: Path) -> None:
    from wgangp.io.plots import layer_grad_figure

    title = "12-layer ReLU critics on the Swiss roll (the paper's Figure 1b)"
    save_small(layer_grad_figure({k: r["norms"] for k, r in runs.items()}, title), path)


def plot_weights(runs: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    shown = [k for k in runs if "0.01" in k or "penalty" in k]
    fig, axes = plt.subplots(len(shown), 1, figsize=(6, 2.2 * len(shown)), dpi=110)
    for ax, label in zip(axes, shown, strict=True):
        ax.hist(runs[label]["hidden_weights"].numpy(), bins=100, color="tab:blue")
        ax.set_title(label, fontsize=9)
        ax.set_yticks([])
    axes[-1].set_xlabel("critic weights (hidden layers)")
    fig.tight_layout()
    save_small(fig, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs", help="folder for the three PNGs")
    ap.add_argument("--json", help="write the measurements here")
    ap.add_argument("--surface-steps", type=int, default=2000, help="critic updates (a)")
    ap.add_argument("--train-steps", type=int, default=200, help="generator steps (b)")
    ap.add_argument("--quick", action="store_true", help="a few steps: a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.surface_steps, args.train_steps = 3, 2
    out = Path(args.out)
    with tempfile.TemporaryDirectory(prefix="wgangp-fig1-") as tmp:
        work = Path(tmp)
        surfaces = {}
        for dataset in SURFACE_DATA:
            for method, overrides in METHODS.items():
                surfaces[(dataset, method)] = value_surface(
                    dataset, overrides, args.surface_steps, work
                )
                r = surfaces[(dataset, method)]
                print(
                    f"(a) {dataset:12s} {method:28s} W estimate {r['wasserstein']:.4f} "
                    f"(half-way {r['wasserstein_half'] or float('nan'):.4f})  "
                    f"mean ‖∇D(x̂)‖ {r['grad_norm']:.4f}",
                    flush=True,
                )
        plot_surfaces(surfaces, out / "fig1a_value_surfaces.png")
        deep: dict[str, dict[str, Any]] = {}
        for c in CLIPS:
            deep[f"weight clipping (c = {c})"] = deep_run(
                ["loss=wgan", f"loss.clip={c}"], args.train_steps, work, f"clip{c}"
            )
        deep["gradient penalty (λ = 10)"] = deep_run(
            ["loss=wgan_gp", "gp.lambda=10"], args.train_steps, work, "gp"
        )
        for label, r in deep.items():
            norms = " ".join(f"{v:.1e}" for v in r["norms"])
            print(f"(b) {label:28s} layer 1..{len(r['norms'])}: {norms}", flush=True)
        plot_layer_grads(deep, out / "fig1b_layer_grads.png")
        plot_weights(deep, out / "fig1b_weights.png")
    result = {
        "surface_steps": args.surface_steps,
        "train_steps": args.train_steps,
        "value_surfaces": [
            {"dataset": d, "method": m, **{k: r[k] for k in SURFACE_NUMBERS}}
            for (d, m), r in surfaces.items()
        ],
        "layer_grads": [
            {
                "method": label,
                "layers": r["layers"],
                "norms": r["norms"],
                "at_clip": r["at_clip"],
                "wasserstein": r["wasserstein"],
            }
            for label, r in deep.items()
        ],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return result


if __name__ == "__main__":
    main()
