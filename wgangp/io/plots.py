"""Pictures of a run: point scatters with the critic's contours (the paper's Figure 1)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402


@torch.no_grad()
def critic_grid(critic: nn.Module, lo: Tensor, hi: Tensor, n: int = 128) -> tuple[Tensor, ...]:
    """D evaluated on an n×n grid over the box [lo, hi] (2-D data)."""
    device = next(critic.parameters()).device
    xs = torch.linspace(float(lo[0]), float(hi[0]), n)
    ys = torch.linspace(float(lo[1]), float(hi[1]), n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    pts = torch.stack([gx.flatten(), gy.flatten()], dim=1).to(device)
    vals = critic(pts).float().reshape(n, n).cpu()
    return gx, gy, vals


def scatter_figure(
    fake: Tensor,
    real: Tensor,
    critic: nn.Module | None = None,
    title: str = "",
) -> plt.Figure:
    """Real (orange) and generated (blue) points over the critic's contour lines."""
    fake, real = fake.detach().float().cpu(), real.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    both = torch.cat([fake[:, :2], real[:, :2]])
    lo, hi = both.quantile(0.005, dim=0), both.quantile(0.995, dim=0)
    pad = (hi - lo).clamp_min(1e-3) * 0.25
    lo, hi = lo - pad, hi + pad
    if critic is not None and real.shape[1] == 2:
        was_training = critic.training
        critic.eval()
        gx, gy, vals = critic_grid(critic, lo, hi)
        critic.train(was_training)
        cs = ax.contour(
            gx.numpy(), gy.numpy(), vals.numpy(), levels=15, cmap="viridis", linewidths=0.8
        )
        fig.colorbar(cs, ax=ax, shrink=0.7, label="D(x)")
    ax.scatter(real[:, 0], real[:, 1], s=3, c="tab:orange", alpha=0.5, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=3, c="tab:blue", alpha=0.5, label="generated")
    ax.set_xlim(float(lo[0]), float(hi[0]))
    ax.set_ylim(float(lo[1]), float(hi[1]))
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4, fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def layer_grad_figure(profiles: dict[str, list[float]], title: str = "") -> plt.Figure:
    """log10 ‖∂L/∂a_k‖ against the layer k, one line per label (the paper's Figure 1b,
    left; ``diagnostics``' ``layer_grad/*``). The output layer is on the left and the
    input on the right: the way the gradient flows. A zero (an underflow) is drawn at
    the bottom of the axis, at 1e-45."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for label, norms in profiles.items():
        ks = range(1, len(norms) + 1)
        logs = [math.log10(max(v, 1e-45)) for v in norms]
        ax.plot(ks, logs, marker="o", ms=3, label=label[:60])
    ax.set_xlabel("critic layer (1: the input)")
    ax.set_ylabel("log10 ‖∂L/∂a‖")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    if profiles:
        ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def image_grid(images: Tensor, path: Path | None = None, nrow: int = 8) -> Tensor:
    """A ``make_grid`` picture of images in [-1, 1]; saved as PNG when ``path`` is given."""
    from torchvision.utils import make_grid, save_image

    x = images.detach().float().cpu().clamp(-1, 1) * 0.5 + 0.5
    grid = make_grid(x, nrow=nrow, padding=2)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
    return grid
