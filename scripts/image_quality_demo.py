#!/usr/bin/env python
"""Image metrics moving over a short CPU run (FID / KID with a STAND-IN feature network).

    python scripts/image_quality_demo.py [--steps 300] [--every 50] [--out DIR]

Draws a small image_folder data set on the fly (16×16 grayscale: a bright square,
disc or cross at a random place on a dark background, 600 PNGs), trains the DCGAN
WGAN-GP on it on the CPU with evaluation every ``--every`` steps, and prints FID, KID
and IS from ``run_dir/metrics.jsonl``.

**The numbers are not Inception FID/KID/IS.** The standard Inception-v3 weights need a
download, which this demo avoids: features come from a fixed, randomly initialised
small conv net (:class:`RandomConvFeatures`, seed 0). Random conv features are a
common sanity check for distribution distances; they move the same way (down as the
samples improve) but their scale is unrelated to published FIDs. With the Inception
weights, the same run reports the real metrics: drop ``--stand-in`` logic and pass
``eval.inception_weights=PATH``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class RandomConvFeatures:
    """STAND-IN for Inception: a fixed random conv net (pool 64-d, 10 'logits')."""

    name = "stand-in-random-conv-16px-v1"

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        ).eval()
        self.head = torch.randn(64, 10, generator=g)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> dict[str, Tensor]:
        x = images.float()
        if images.dtype == torch.uint8:
            x = x / 127.5 - 1
        pool = 10 * self.net(x.mean(1, keepdim=True))  # ×10: FIDs of order 1, not 0.01
        return {"pool": pool, "logits": pool @ self.head}


def make_shapes(root: Path, n: int = 600, size: int = 16, seed: int = 0) -> Path:
    """n grayscale PNGs: a square, disc or cross (random place and size) on dark."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = np.full((size, size), 25, np.uint8)
        r = int(rng.integers(3, 6))
        cy, cx = rng.integers(r, size - r, size=2)
        kind = i % 3
        if kind == 0:
            mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
        elif kind == 1:
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        else:
            mask = ((abs(yy - cy) <= 1) & (abs(xx - cx) <= r)) | (
                (abs(xx - cx) <= 1) & (abs(yy - cy) <= r)
            )
        img[mask] = 230
        Image.fromarray(img).save(root / f"{i:04d}.png")
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--num-samples", type=int, default=400)
    ap.add_argument("--out", help="working directory (default: a temporary one)")
    ap.add_argument("--json", help="copy metrics.jsonl's evaluations here as a JSON list")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from wgangp.config.compose import compose_config
    from wgangp.train.trainer import Trainer

    work = Path(args.out or tempfile.mkdtemp(prefix="wgangp-image-demo-"))
    data = make_shapes(work / "shapes")
    cfg = compose_config(
        [
            "dataset=image_folder",
            f"dataset.root={data}",
            "dataset.image_size=16",
            "dataset.channels=1",
            "dataset.num_workers=0",
            "dataset.on_device=true",
            "critic.dim=16",
            "generator.dim=16",
            "generator.z_dim=32",
            "trainer.batch_size=32",
            "trainer.n_critic=5",
            f"trainer.steps={args.steps}",
            "trainer.log_every=50",
            "trainer.sample_every=0",
            "trainer.ckpt_every=0",
            "trainer.progress=false",
            "trainer.device=cpu",
            "optim.critic.lr=2e-4",
            "optim.generator.lr=2e-4",
            f"eval.every={args.every}",
            f"eval.num_samples={args.num_samples}",
            "eval.metrics=[fid,kid,is]",
            "eval.keep_best=fid",
            f"eval.stats_cache={work / 'stats'}",
        ],
    )
    run_dir = work / "run"
    trainer = Trainer(cfg, run_dir, torch.device("cpu"))
    assert trainer.evaluator is not None
    trainer.evaluator.extractor = RandomConvFeatures()  # STAND-IN, not Inception
    # step 0 (untrained generator) as the starting point
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir / "tb")) as w:
        trainer.evaluate(w)
    tick = time.perf_counter()
    trainer.fit()
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    print("\nSTAND-IN features (fixed random conv net), NOT Inception: compare runs, not papers")
    print("| step | FID (stand-in) | KID (stand-in) | IS (stand-in) |")
    print("|---:|---:|---:|---:|")
    for r in lines:
        print(f"| {r['step']} | {r['fid']:.3f} | {r['kid']:.4f} | {r['is']:.3f} |")
    print(f"\ntrained {args.steps} steps in {time.perf_counter() - tick:.0f} s; run dir {run_dir}")
    first, last = lines[0], lines[-1]
    print(
        f"FID {first['fid']:.3f} → {last['fid']:.3f}, KID {first['kid']:.4f} → {last['kid']:.4f}"
        f" ({'down' if last['fid'] < first['fid'] and last['kid'] < first['kid'] else 'NOT down'})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(lines, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
