#!/usr/bin/env python
"""Interleaved A/B: our step under several config variants, and the textbook loop.

``scripts/bench.py`` times one setting of our trainer against the textbook loop. Asking
whether an option pays (``speed.channels_last``, ``speed.native_conv_grads``, ...) needs
the variants side by side in one process, because a shared machine drifts by more than
most options change: every variant gets its own trainer from the same seed, and the
loops take turns (variant 1, variant 2, ..., textbook; repeat), so a slow spell lands on
all of them. Reported per loop: the median ms per generator iteration, the fastest
repeat, and the speed-up over the textbook both as a ratio of medians and as the median
of the per-repeat ratios (each repeat's loops ran back to back).

    python scripts/bench_ab.py --config dcgan32 \\
        --variant speed.channels_last=false --variant speed.channels_last=true

A variant is a space-separated list of overrides (``--variant ""`` is the defaults).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402  (scripts/bench.py: configurations, the textbook loop)

from wgangp.config.validate import validate  # noqa: E402
from wgangp.train.trainer import Trainer  # noqa: E402

TEXTBOOK = "textbook"


def build_loops(
    config: str, variants: list[list[str]], device: torch.device, tmp: str
) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """One training step per variant (same seed each), then the textbook loop built from
    the initial weights, data and random stream of the first variant that could be built.

    Returns the loops and the variants that could not be built or warmed up, with their
    error: in a CUDA check's fixed time slot one failing variant (a graph capture, say)
    must not cost the others.
    """
    (bc,) = [c for c in bench.CONFIGS if c.name == config]
    loops: dict[str, Callable[[], Any]] = {}
    failed: dict[str, str] = {}
    trainers: list[tuple[str, Trainer]] = []
    for i, overrides in enumerate(variants):
        name = " ".join(overrides) or "defaults"
        if name in loops or name in failed:
            raise SystemExit(f"bench_ab: variant {name!r} given twice")
        try:
            cfg = bench.compose_cfg(
                [*bc.overrides, f"trainer.device={device}", "trainer.progress=false", *overrides]
            )
            validate(cfg)
            torch.manual_seed(0)
            trainer = Trainer(cfg, Path(tmp) / f"v{i}", device)
        except Exception as e:  # noqa: BLE001 - reported, and the other variants run
            failed[name] = bench.report_failure(f"variant {name!r}", e)
            continue
        trainers.append((name, trainer))
        loops[name] = trainer.train_step
    if not trainers:
        raise SystemExit("bench_ab: no variant could be built: " + "; ".join(failed.values()))
    loops[TEXTBOOK] = bench.textbook_like(trainers[0][1]).iteration
    for name, t in trainers:  # speed.cuda_graph: warm up and capture before any timing
        if t.graphed is not None:
            try:
                for _ in range(t.graphed.warmup + 1):
                    t.train_step()
            except Exception as e:  # noqa: BLE001
                failed[name] = bench.report_failure(f"variant {name!r}", e)
                del loops[name]
    return loops, failed


def interleave(
    loops: dict[str, Callable[[], Any]],
    repeats: int,
    iters: int,
    warmup: int,
    device: torch.device,
) -> dict[str, list[float]]:
    """ms per call of each loop, ``repeats`` samples of ``iters`` calls, taking turns."""
    for fn in loops.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for _ in range(repeats):
        for name, fn in loops.items():
            bench.synchronize(device)
            t0 = time.perf_counter()
            for _ in range(iters):
                fn()
            bench.synchronize(device)
            samples[name].append((time.perf_counter() - t0) / iters * 1000.0)
    return samples


def summarize(samples: dict[str, list[float]]) -> list[dict[str, Any]]:
    ref = samples[TEXTBOOK]
    ref_med = statistics.median(ref)
    rows = []
    for name, ms in samples.items():
        rows.append(
            {
                "variant": name,
                "ms_per_iter": statistics.median(ms),
                "min_ms": min(ms),
                "speedup": ref_med / statistics.median(ms),
                "paired_speedup": bench.paired_speedup(ref, ms),
                "ms_samples": ms,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="dcgan32", choices=[c.name for c in bench.CONFIGS])
    ap.add_argument("--variant", action="append", default=[], help="space-separated overrides")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--iters", type=int, default=2, help="iterations per timed repeat")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--json", type=Path, help="write the rows (a list of objects) here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v.split() for v in (args.variant or [""])]
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        loops, failed = build_loops(args.config, variants, device, tmp)
        rows = summarize(interleave(loops, args.repeats, args.iters, args.warmup, device))
    machine = bench.machine_info(device)
    print(f"{args.config} on {device.type}: " + ", ".join(f"{k} {v}" for k, v in machine.items()))
    width = max(len(r["variant"]) for r in rows)
    print(f"{'variant':<{width}}  ms/iter      min  speedup  paired")
    for r in rows:
        print(
            f"{r['variant']:<{width}}  {r['ms_per_iter']:7.1f}  {r['min_ms']:7.1f}"
            f"  {r['speedup']:6.3f}x  {r['paired_speedup']:6.3f}x"
        )
    for name, msg in failed.items():
        print(f"failed: {name}: {msg}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        rows += [{"variant": name, "error": msg} for name, msg in failed.items()]
        for r in rows:
            r.update(config=args.config, device=device.type, machine=machine)
        args.json.write_text(json.dumps(rows, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
