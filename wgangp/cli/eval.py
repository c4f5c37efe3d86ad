"""``wgangp-eval``: sample-quality metrics of a checkpoint, on demand.

    wgangp-eval checkpoint=PATH [metrics=a,b] [num_samples=N] [seed=0] [ema=true|false]
                [device=auto] [inception_weights=PATH] [stats_cache=DIR] [split=NAME]
                [json=PATH]

``checkpoint`` is a run directory (its ``checkpoints/last.pt``) or a checkpoint file
(``checkpoints/best.pt`` …). The metrics, sample count and real data default to the
run's own ``eval.*`` settings (and those to the defaults for its data type); the
samples come from the EMA generator when the checkpoint has one. ``critic_loss``
reads the checkpoint's critic against its training generator, held-out data from
``split=`` (or the run's ``eval.split``, the rest of a ``dataset.subset``, a toy
distribution's fresh draws), as training logs it. Prints a table;
``json=PATH`` also writes ``{"checkpoint", "step", "metrics": {...}}``.

    wgangp-eval samples=FOLDER_OR_NPZ (ref=FOLDER_OR_NPZ | dataset=NAME [dataset.KEY=V])
                [metrics=fid] [num_samples=N] [resize=legacy_tensorflow|clean]
                [save_ref=PATH.npz] [split=NAME] [json=PATH] ...

scores any sample set: a folder of images (any size, decoded to 8-bit RGB) or an
``.npz`` whose array ``samples`` is ``N×C×H×W`` or ``N×H×W×C`` (C = 1 or 3), uint8 in
[0, 255] or float in the data's pixel range ([-1, 1] unless ``dataset.pixel_range``
says otherwise). The reference is another folder, a data set as training sees it
(``num_samples`` draws, 10000 by default), or a ``mu``/``sigma`` ``.npz`` of published
statistics (then only ``fid`` and ``is``). ``save_ref=PATH.npz`` writes the reference's
float64 ``mu``/``sigma`` in that format (``samples=`` may then be left out).
``resize``: ``legacy_tensorflow`` (default: the network's TF1 bilinear resize to
299×299, as published FIDs) or ``clean`` (PIL bicubic, as clean-fid).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from wgangp.cli.eval_samples import check_sample_args, evaluate_samples, resize_line
from wgangp.cli.sample import check_output
from wgangp.config.schema import EvalConfig
from wgangp.config.validate import resolve_device
from wgangp.data import build_data
from wgangp.data.standardize import adopt_saved
from wgangp.errors import CheckpointError, ConfigError, MetricUnavailable, UserError
from wgangp.inference.generator import load_with_checkpoint
from wgangp.metrics import IMAGE_METRICS, METRIC_DIRECTION, METRIC_NAMES
from wgangp.metrics import evaluator as evaluate
from wgangp.metrics.evaluator import Evaluator
from wgangp.metrics.sample_sets import CleanResize
from wgangp.models import build_critic
from wgangp.models.sampling import check_bn_mode

USAGE = (
    "wgangp-eval checkpoint=RUN_DIR_OR_FILE [metrics=a,b] [num_samples=N] [seed=0] "
    "[ema=true|false] [device=auto] [inception_weights=PATH] [stats_cache=DIR] [split=NAME] "
    "[bn=running|batch] [resize=legacy_tensorflow|clean] [json=PATH] | wgangp-eval "
    "samples=FOLDER_OR_NPZ (ref=FOLDER_OR_NPZ | dataset=NAME [dataset.KEY=V]) [save_ref=PATH.npz]"
)


@dataclass
class EvalArgs:
    checkpoint: str | None = None
    metrics: str | None = None  # comma separated; None: the run's eval.metrics / defaults
    num_samples: int | None = None
    seed: int = 0
    ema: bool | None = None  # None: the EMA generator when the checkpoint has one
    device: str = "auto"
    inception_weights: str | None = None
    stats_cache: str | None = None
    split: str | None = None
    bn: str | None = None  # generator batch norm: running | batch; None: the run's eval.bn
    json: str | None = None
    samples: str | None = None  # a folder of images or an .npz to score (no checkpoint)
    ref: str | None = None  # the samples' reference: a folder or a mu/sigma .npz
    save_ref: str | None = None  # write the reference's mu/sigma .npz here
    resize: str = "legacy_tensorflow"  # how images reach 299x299: legacy_tensorflow | clean
    # dataset=NAME and its dataset.KEY=V, the samples' reference (as wgangp-train takes them)
    dataset_keys: list[str] = field(default_factory=list)


def parse_args(argv: list[str]) -> Any:
    """``key=value`` arguments checked against :class:`EvalArgs`."""
    bad = [a for a in argv if "=" not in a]
    if bad:
        raise ConfigError(bad[0].split("=")[0], bad[0], "key=value arguments", f"usage: {USAGE}")
    # metrics=a,b is one string here, not OmegaConf's list syntax
    raw = dict(a.split("=", 1) for a in argv)
    metrics = raw.pop("metrics", None)
    dataset_keys = [
        f"{k}={raw.pop(k)}" for k in list(raw) if k == "dataset" or k.startswith("dataset.")
    ]
    try:
        given = OmegaConf.from_dotlist([f"{k}={v}" for k, v in raw.items()])
        cfg = OmegaConf.merge(OmegaConf.structured(EvalArgs), given)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or "argument"
        raise ConfigError(key, str(e).splitlines()[0], f"see: {USAGE}") from None
    cfg.metrics = metrics.strip("[]") if metrics else None
    cfg.dataset_keys = dataset_keys
    check_sample_args(cfg, dataset_keys)  # which mode, and its arguments fit together
    if cfg.num_samples is not None and cfg.num_samples < 2:
        raise ConfigError("num_samples", cfg.num_samples, "an integer ≥ 2")
    if cfg.bn is not None:
        check_bn_mode("bn", cfg.bn)
    if cfg.json:
        check_output("json", cfg.json)  # before the metrics, not after
    return cfg


#: the run's config keys that this command sets with its own options
_OWN_NAMES = re.compile(
    r"\b(?:eval\.(metrics|num_samples|inception_weights|stats_cache|split)|trainer\.(device))\b"
)


def own_names(message: str) -> str:
    """``message`` with the run's keys (``eval.split``, ``trainer.device``) replaced by
    this command's options (``split``, ``device``)."""
    return _OWN_NAMES.sub(lambda m: m.group(1) or m.group(2), message)


def eval_config(args: Any, ckpt: dict[str, Any]) -> Any:
    """The run's ``eval`` settings (or the defaults) with the command line on top."""
    base = OmegaConf.structured(EvalConfig)
    run_eval = ckpt["config"].get("eval")
    if run_eval:
        base = OmegaConf.merge(base, run_eval)
    base.keep_best = None
    if args.metrics:
        names = [n.strip() for n in args.metrics.split(",") if n.strip()]
        unknown = [n for n in names if n not in METRIC_NAMES]
        if unknown or not names:
            raise ConfigError(
                "metrics", args.metrics, "a comma-separated list of: " + ", ".join(METRIC_NAMES)
            )
        base.metrics = names
    for key in ("num_samples", "inception_weights", "stats_cache", "split", "bn"):
        if args[key] is not None:
            base[key] = args[key]
    base.seed = args.seed
    return base


def format_table(values: dict[str, float]) -> str:
    """A Markdown table of metric values, with the direction of each metric."""
    rows = ["| metric | value | better |", "|---|---:|---|"]
    for k, v in values.items():
        d = METRIC_DIRECTION.get(k)
        better = {"min": "lower", "max": "higher"}.get(d or "", "")
        if k.endswith("_real"):
            better = "(real vs real, for scale)"
        elif k.endswith("_std"):
            better = "(std)"
        elif k.endswith("_train"):
            better = "(training data, to compare)"
        shown = "inf" if math.isinf(v) else f"{v:.6g}"
        rows.append(f"| {k} | {shown} | {better} |")
    return "\n".join(rows)


def evaluate_checkpoint(args: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """The metrics of ``args.checkpoint`` and the checkpoint itself."""
    device = resolve_device(args.device)
    loaded, ckpt = load_with_checkpoint(args.checkpoint, args.ema, device)
    gen = loaded.network  # the network itself: text metrics take its distributions
    cfg = OmegaConf.create(ckpt["config"])
    ev_cfg = eval_config(args, ckpt)
    # the evaluator only draws data.sample(n), never a training batch: batch size 1
    # builds any set the run trained on, however small
    data = build_data(cfg.dataset, 1, device, seed=int(cfg.trainer.seed))  # its fixed sets
    try:  # points: the coordinates the networks learned in, whatever the file says now
        adopt_saved(data, ckpt.get("standardize"))
    except ValueError as e:
        raise CheckpointError(args.checkpoint, f"it was {e}") from None
    evaluator = Evaluator(ev_cfg, cfg.dataset, data, device)
    if evaluator.needs_extractor:  # load Inception here: the evaluator's warning is training's
        try:
            evaluator.extractor = evaluate.make_extractor(ev_cfg, device)
            if args.resize == "clean":
                evaluator.extractor = CleanResize(evaluator.extractor)
        except MetricUnavailable as e:
            evaluator.unavailable = own_names(str(e))
    values = evaluator(gen)
    if evaluator.measures_critic:
        values.update(checkpoint_critic_losses(evaluator, args, ckpt, cfg, device))
    if evaluator.unavailable is not None:
        if not values:
            raise MetricUnavailable(evaluator.unavailable)
        print(
            f"wgangp-eval: warning: image metrics skipped: {own_names(evaluator.unavailable)}",
            file=sys.stderr,
        )
    return values, ckpt


def checkpoint_critic_losses(
    evaluator: Evaluator,
    args: Any,
    ckpt: dict[str, Any],
    cfg: Any,
    device: Any,  # noqa: ANN401
) -> dict[str, float]:
    """``critic_loss`` and ``critic_loss_train`` of a checkpoint: its critic and loss
    settings, against its training generator (not the EMA, whatever ``ema=``), as
    training measures them (fp32)."""
    critic = build_critic(
        cfg.critic, tuple(ckpt["sample_shape"]), int(ckpt.get("num_classes") or 0)
    )
    critic.load_state_dict(ckpt["critic"])
    critic.to(device)
    gen = load_with_checkpoint(args.checkpoint, False, device)[0].network
    settings = evaluate.CriticLossSettings.from_cfg(cfg)

    def loss_fn(real: Any, fake: Any, rng: Any) -> Any:  # noqa: ANN401
        return evaluate.measure_critic_batch(critic, real, fake, rng, settings)

    return evaluator.critic_losses(loss_fn, gen, int(cfg.trainer.batch_size))


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        args = parse_args(argv)
        if not args.checkpoint:
            main_samples(args)
            return
        values, ckpt = evaluate_checkpoint(args)
    except UserError as e:
        print(f"wgangp-eval: error: {own_names(str(e))}", file=sys.stderr)
        sys.exit(e.exit_code)
    print(f"{args.checkpoint} (step {ckpt['step']})")
    if any(k in IMAGE_METRICS for k in values):
        print(resize_line(args.resize))
    print(format_table(values))
    if args.json:
        out = Path(args.json).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "checkpoint": str(args.checkpoint),
            "step": int(ckpt["step"]),
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in values.items()},
        }
        out.write_text(json.dumps(payload, indent=2) + "\n")


def main_samples(args: Any) -> None:  # noqa: ANN401
    """``wgangp-eval samples=…`` / ``save_ref=…``: score, print, write the files asked."""
    scores = evaluate_samples(args, list(args.dataset_keys))
    if scores.saved is not None:
        print(f"reference statistics (mu, sigma; float64) written to {scores.saved}")
    print(f"reference: {scores.reference}")
    print(resize_line(scores.resize))
    if not args.samples:
        return
    print(f"samples: {args.samples} ({scores.num_samples} images)")
    print(format_table(scores.values))
    if args.json:
        out = Path(args.json).expanduser()
        out.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "samples": str(args.samples),
            "num_samples": scores.num_samples,
            "reference": scores.reference,
            "resize": scores.resize,
            "metrics": {k: (v if math.isfinite(v) else None) for k, v in scores.values.items()},
        }
        out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
