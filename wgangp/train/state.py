"""A run's checkpointed state: what a checkpoint holds, how it is loaded back so that a
resumed run continues bitwise where it stopped (networks, optimizers, EMA, every random
stream, the data position, every rank's own streams under torchrun), and the refusal of
a checkpoint whose networks or vocabulary differ from the configured ones."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, Protocol

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from wgangp.data.standardize import adopt_saved
from wgangp.data.text import Vocabulary
from wgangp.errors import CheckpointError
from wgangp.fast import layout
from wgangp.train import distributed

log = logging.getLogger("wgangp.train.trainer")  # the trainer's log lines, as users see them


class Checkpointed(Protocol):
    """What a training checkpoint holds of a run (the Trainer's attributes)."""

    cfg: DictConfig
    critic: nn.Module
    generator: nn.Module
    opt_c: torch.optim.Optimizer
    opt_g: torch.optim.Optimizer
    ema: AveragedModel | None
    rng: torch.Generator  # latents and interpolation weights
    data: Any  # the DataSource: its position
    dist: distributed.DistInfo
    step: int
    nan_skips: int
    train_seconds: float
    num_classes: int
    vocab: Vocabulary | None
    overrides: list[str]
    history: list[dict[str, Any]]
    best: dict[str, Any] | None


def new_ema(generator: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``generator``'s weights and buffers."""
    return AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def state_dict(run: Checkpointed, ranks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The checkpoint of ``run``; ``ranks``: every rank's own streams (torchrun)."""
    rng = {"torch": torch.get_rng_state(), "noise": run.rng.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    st = run.data.standardization
    state = {
        "step": run.step,
        "critic": run.critic.state_dict(),
        "generator": run.generator.state_dict(),
        "opt_critic": run.opt_c.state_dict(),
        "opt_generator": run.opt_g.state_dict(),
        "ema": run.ema.state_dict() if run.ema is not None else None,
        "rng": rng,
        "data": run.data.state_dict(),
        "nan_skips": run.nan_skips,
        "train_seconds": run.train_seconds,
        "sample_shape": list(run.data.sample_shape),
        "num_classes": run.num_classes,  # class-conditional: the generator's classes
        # text: how wgangp-sample decodes the generator's output without the data
        "vocab": None if run.vocab is None else dataclasses.asdict(run.vocab),
        # points: the map from the networks' coordinates back to the data's units
        "standardize": None if st is None else st.state_dict(),
        "config": OmegaConf.to_container(run.cfg, resolve=True),
        "overrides": list(run.overrides),
        "history": list(run.history),
        "best": run.best,
    }
    if ranks is not None:
        state["ranks"] = ranks
    return state


def load_state_dict(run: Checkpointed, ckpt: dict[str, Any], path: Any) -> None:  # noqa: ANN401
    """Load ``ckpt`` (read from ``path``, for messages) into ``run``."""
    check_same_architecture(ckpt, run.critic, run.generator, run.vocab, path)
    run.critic.load_state_dict(ckpt["critic"])
    run.generator.load_state_dict(ckpt["generator"])
    run.opt_c.load_state_dict(ckpt["opt_critic"])
    run.opt_g.load_state_dict(ckpt["opt_generator"])
    # saved under the other memory format (speed.channels_last, or auto on
    # another machine): fused Adam would pair the moments with the wrong elements
    for opt in (run.opt_c, run.opt_g):
        layout.match_param_layouts(opt)
    if run.ema is not None and ckpt.get("ema") is not None:
        run.ema.load_state_dict(ckpt["ema"])
    elif run.ema is not None:
        log.warning("%s has no EMA state; the EMA starts from the current generator", path)
        run.ema = new_ema(run.generator, run.cfg.trainer.ema.decay)
    rng = ckpt["rng"]
    torch.set_rng_state(rng["torch"])
    run.rng.set_state(rng["noise"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    run.data.load_state_dict(ckpt["data"])
    keep_standardization(run.data, ckpt, path)
    run.step = int(ckpt["step"])
    if run.dist.enabled:
        load_rank_state(run, ckpt.get("ranks"), path)
    run.nan_skips = int(ckpt.get("nan_skips", 0))
    run.train_seconds = float(ckpt.get("train_seconds", 0.0))  # older checkpoints: 0
    run.history = list(ckpt.get("history", []))
    run.best = ckpt.get("best")


def keep_standardization(data: Any, ckpt: dict[str, Any], path: Any) -> None:  # noqa: ANN401
    """A resumed points run keeps the coordinates its networks learned in: when the
    data's statistics moved since the checkpoint (an edited file), the checkpoint's
    transform stays; a checkpoint from before standardization trained in data units."""
    try:
        replaced = adopt_saved(data, ckpt.get("standardize"))
    except ValueError as e:
        raise CheckpointError(
            path,
            f"it was {e}; resume with the data set's settings it was trained on "
            "(dataset.scale, dataset.standardize)",
        ) from None
    if replaced is None:
        return
    if ckpt.get("standardize") is None:
        log.warning("%s was trained in the data's units; the run keeps them", path)
    else:
        log.warning(
            "%s was trained with the transform %s; the data's is now %s (an edited file?): "
            "the run keeps the checkpoint's",
            path,
            data.standardization.describe(),
            replaced.describe(),
        )


def use_implementation(
    opt: torch.optim.Optimizer,
    flags: dict[str, bool],
    lr_as_held: Callable[[Any], float | Tensor],
) -> None:
    """Give a loaded optimizer this device's implementation ``flags`` and learning-rate
    form (``lr_as_held``): a saved param group carries the ones it was saved with
    (e.g. foreach from an older checkpoint or another device), and the deferred
    non-finite check's found_inf needs the fused one."""
    for group in opt.param_groups:
        group.update(flags)
        group["lr"] = lr_as_held(group["lr"])
    # fused Adam (capturable included) keeps the step count on the parameter's
    # device (a foreach checkpoint kept it on the host)
    if opt.param_groups[0]["fused"]:
        for param, st in opt.state.items():
            if "step" in st:
                st["step"] = torch.as_tensor(st["step"], dtype=torch.float32, device=param.device)


def rank_state(run: Checkpointed) -> dict[str, Any]:
    """This rank's own random streams and data position."""
    return {
        "noise": run.rng.get_state(),
        "torch": torch.get_rng_state(),
        "data": run.data.state_dict(),
    }


def load_rank_state(run: Checkpointed, ranks: list[dict[str, Any]] | None, path: Any) -> None:  # noqa: ANN401
    """Every rank loads the same checkpoint, then takes its own random streams; with
    another world size ranks > 0 start fresh ones (seeded by the step)."""
    rank, world = run.dist.rank, run.dist.world_size
    if ranks is not None and len(ranks) == world:
        mine = ranks[rank]
        run.rng.set_state(mine["noise"])
        torch.set_rng_state(mine["torch"])
        run.data.load_state_dict(mine["data"])
        return
    had = len(ranks) if ranks is not None else 1
    if rank == 0:
        log.warning(
            "%s was written by %d process(es), this run has %d: ranks > 0 start fresh "
            "random streams (data position and weights are resumed)",
            path,
            had,
            world,
        )
    if rank > 0:
        seed = run.cfg.trainer.seed + run.step
        run.rng.manual_seed(distributed.rank_seed(seed + 1, rank))
        run.data.shard(rank, world)  # reseeds generated data for this rank


def check_same_architecture(
    ckpt: dict[str, Any],
    critic: nn.Module,
    generator: nn.Module,
    vocab: Vocabulary | None,
    path: Any,  # noqa: ANN401
) -> None:
    """Refuse a checkpoint whose networks differ, listing the differing parameter keys."""
    problems: list[str] = []
    for name, module in (("critic", critic), ("generator", generator)):
        have = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        got = {k: tuple(v.shape) for k, v in ckpt[name].items()}
        for k in sorted(set(have) | set(got)):
            if k not in got:
                problems.append(f"{name}.{k}: missing in checkpoint")
            elif k not in have:
                problems.append(f"{name}.{k}: not in the configured model")
            elif have[k] != got[k]:
                problems.append(f"{name}.{k}: checkpoint {got[k]} vs configured {have[k]}")
    saved_vocab = ckpt.get("vocab")
    if saved_vocab and vocab is not None and tuple(saved_vocab["symbols"]) != vocab.symbols:
        # text: the same index must mean the same symbol, or the networks' inputs and
        # outputs change meaning
        old, new = tuple(saved_vocab["symbols"]), vocab.symbols
        same = zip(old, new, strict=False)
        at = next((i for i, (a, b) in enumerate(same) if a != b), min(len(old), len(new)))
        raise CheckpointError(
            path,
            f"its vocabulary ({len(old)} symbols, {saved_vocab['unit']}s) differs from this "
            f"data set's ({len(new)}, {vocab.unit}s) from index {at} on; resume with the "
            f"data it was trained on (dataset.root, .max_examples, .max_vocab, .unit)",
        )
    if problems:
        shown = "; ".join(problems[:12]) + (
            f"; … {len(problems) - 12} more" if len(problems) > 12 else ""
        )
        raise CheckpointError(
            path, f"its networks differ from the configured ones ({len(problems)} keys): {shown}"
        )


__all__ = [
    "Checkpointed",
    "check_same_architecture",
    "load_rank_state",
    "load_state_dict",
    "new_ema",
    "rank_state",
    "state_dict",
    "use_implementation",
]
