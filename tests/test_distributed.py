"""DDP under torchrun, on the CPU with gloo over 127.0.0.1.

* One critic step (with the gradient penalty) and one generator step on 2 gloo
  processes give the gradients and Adam updates of 1 process on the same global batch.
* ``torchrun --nproc_per_node=2 -m wgangp.cli.train``: one run directory, written by rank 0
  alone, and a resume under DDP that continues bitwise where an uninterrupted run goes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.conftest import REPO, TINY, compose_cfg, paper_recipe, pythonpath
from tests.test_images_e2e import make_folder, tiny_rgb
from wgangp.core import losses
from wgangp.io.checkpoint import load_checkpoint
from wgangp.train import distributed
from wgangp.train.trainer import Trainer

GLOBAL_BATCH = 16
# Under DDP the penalty runs plain autograd through the wrapper; the single process
# takes the same path. Real and fake go through separate forwards: the critic's output
# bias has a true gradient of exactly 0 (E[1] − E[1]), and Adam's first step, ≈ lr·sign(g),
# would turn the rounding noise a fused forward leaves there into ±lr differences.
NET = [
    "critic.dim=32",
    "generator.dim=32",
    "generator.z_dim=4",
    "gp.lambda=10",
    "speed.detach_relu_masks=false",
    "speed.fuse_real_fake=false",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_inputs() -> dict[str, torch.Tensor]:
    """One global batch: real, fake, interpolation weights ε and latents z."""
    g = torch.Generator().manual_seed(123)
    n = GLOBAL_BATCH
    return {
        "real": torch.randn(n, 2, generator=g),
        "fake": torch.randn(n, 2, generator=g) * 0.5,
        "eps": torch.rand(n, 1, generator=g),
        "z": torch.randn(n, 4, generator=g),
    }


def one_step(rank: int, world: int, static_graph: bool = False) -> dict[str, Any]:
    """Trainer.critic_step then Trainer.generator_step on this rank's slice of the batch."""
    per = GLOBAL_BATCH // world
    cfg = compose_cfg(*NET, f"trainer.batch_size={per}")
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, tmp, torch.device("cpu"))
    if static_graph:  # the trap: autograd.grad through a static-graph DDP output
        trainer.critic_ddp = torch.nn.parallel.DistributedDataParallel(
            trainer.critic, static_graph=True
        )
        trainer.critic_fwd = trainer.penalty_critic = trainer.critic_ddp
    x = {k: v[rank * per : (rank + 1) * per] for k, v in global_inputs().items()}
    trainer.noise = lambda n: x["z"]  # type: ignore[method-assign]
    orig = losses.interpolation_weights
    losses.interpolation_weights = lambda *a, **k: x["eps"]  # type: ignore[assignment]
    try:
        out: dict[str, Any] = {"critic_stats": trainer.critic_step(x["real"], x["fake"])}
    finally:
        losses.interpolation_weights = orig
    out["critic_grads"] = [p.grad.clone() for p in trainer.critic.parameters()]
    out["critic_params"] = [p.detach().clone() for p in trainer.critic.parameters()]
    trainer.generator_step()
    out["gen_grads"] = [p.grad.clone() for p in trainer.generator.parameters()]
    out["gen_params"] = [p.detach().clone() for p in trainer.generator.parameters()]
    out["critic_params_after_g"] = [p.detach().clone() for p in trainer.critic.parameters()]
    out["ddp"] = type(trainer.critic_ddp).__name__
    return out


@contextlib.contextmanager
def gloo_group(rank: int, world: int, port: int) -> Iterator[None]:
    """This spawned process as rank ``rank`` of a gloo group on 127.0.0.1:``port``
    (torchrun's environment, one thread), torn down on exit."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        yield
        # both ranks done before either closes its connections: a rank tearing gloo
        # down while its peer still talks to it can abort the peer at exit ("terminate
        # called without an active exception", seen once in ~30 CI runs)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    with gloo_group(rank, world, port):
        res = {"pattern": one_step(rank, world)}
        res["static_graph"] = one_step(rank, world, static_graph=True)
        torch.save(res, Path(out_dir) / f"rank{rank}.pt")


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b, strict=True))


def test_ddp_gradients_and_step_equal_one_process_on_the_global_batch(tmp_path):
    torch.set_num_threads(1)
    ref = one_step(0, 1)
    assert ref["ddp"] != "DistributedDataParallel"
    mp.start_processes(
        _worker, args=(2, free_port(), str(tmp_path)), nprocs=2, start_method="spawn", join=True
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for got in ranks:
        res = got["pattern"]
        assert res["ddp"] == "DistributedDataParallel"
        diffs = {
            k: max_diff(res[k], ref[k])
            for k in (
                "critic_grads",
                "critic_params",
                "gen_grads",
                "gen_params",
                "critic_params_after_g",
            )
        }
        print("max |DDP - 1 process|:", {k: f"{v:.1e}" for k, v in diffs.items()})
        for k, v in diffs.items():
            assert v < 1e-6, (k, v)
        # the generator step left the (frozen) critic alone
        assert max_diff(res["critic_params_after_g"], res["critic_params"]) == 0
    # the replicas are identical to each other
    assert max_diff(ranks[0]["pattern"]["gen_params"], ranks[1]["pattern"]["gen_params"]) == 0
    # the documented trap: static_graph=True with autograd.grad through the DDP output
    # does not average the critic's gradients (each rank keeps its own)
    static = [r["static_graph"]["critic_grads"] for r in ranks]
    print("static_graph: max |rank0 - 1 process| =", max_diff(static[0], ref["critic_grads"]))
    assert max_diff(static[0], static[1]) > 1e-4


def test_single_process_helpers_are_no_ops():
    assert distributed.world_size() == 1 and distributed.is_main()
    assert distributed.gather_objects(3) == [3]
    assert distributed.any_true(True, torch.device("cpu")) is True
    x = {"a": torch.tensor(2.0)}
    assert distributed.mean_over_ranks(x) is x
    assert distributed.rank_seed(7, 0) == 7 and distributed.rank_seed(7, 1) != 7
    assert distributed.env_info({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == (
        distributed.DistInfo(rank=3, local_rank=1, world_size=4)
    )


def test_sync_bn_in_one_process_says_it_does_nothing(caplog):
    g = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.BatchNorm1d(4))
    with caplog.at_level(logging.WARNING, logger="wgangp"):
        assert distributed.wrap(g, torch.device("cpu"), sync_bn=True) is g
    assert "trainer.sync_bn: one process, nothing to synchronise" in caplog.text
    assert isinstance(g[1], torch.nn.BatchNorm1d)


def torchrun(*args: str, cwd: Path) -> subprocess.Popen:
    """``torchrun --standalone --nproc_per_node=2 -m wgangp.cli.train ARGS`` (loopback only)."""
    env = {**os.environ, "PYTHONPATH": pythonpath(REPO), "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "wgangp.cli.train",
        *paper_recipe(args),
    ]
    return subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    return out


def only_run(root: Path) -> Path:
    (d,) = [p for p in (root / "outputs").glob("*/*") if p.is_dir()]
    return d


def test_torchrun_rank0_writes_and_resume_continues_bitwise(tmp_path):
    common = [
        *TINY,
        "trainer.batch_size=32",
        "trainer.ckpt_every=4",
        "trainer.sample_every=0",
        "trainer.keep_checkpoints=2",
    ]
    finish(torchrun(*common, "trainer.steps=8", cwd=tmp_path))
    run = only_run(tmp_path)
    # one run directory, written by rank 0 alone
    assert sorted(p.name for p in run.iterdir()) == [
        ".hydra",
        "checkpoints",
        "config.yaml",
        "samples",
        "tb",
        "train.log",
    ]
    assert sorted(p.name for p in (run / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    log = (run / "train.log").read_text()
    assert "rank 0 of 2" in log and "rank 1 of 2" not in log
    assert "effective batch size 64 (32 per rank × 2 ranks)" in log
    assert len(list((run / "tb").iterdir())) == 1
    full = load_checkpoint(run / "checkpoints" / "last.pt")
    assert full["step"] == 8 and len(full["ranks"]) == 2
    r0, r1 = full["ranks"]
    assert not torch.equal(r0["noise"], r1["noise"])  # per-rank seeds
    assert not torch.equal(r0["data"]["rng"], r1["data"]["rng"])
    # resume under DDP from step 4: every rank loads the same file, then its own streams
    # (in place, so the later checkpoints go first: resuming would refuse to overwrite them)
    for later in ("last.pt", "step_0000008.pt"):
        (run / "checkpoints" / later).unlink()
    finish(
        torchrun(
            f"resume={run / 'checkpoints' / 'step_0000004.pt'}", "trainer.steps=8", cwd=tmp_path
        )
    )
    assert only_run(tmp_path) == run
    assert "resumed from" in (run / "train.log").read_text()
    resumed = load_checkpoint(run / "checkpoints" / "last.pt")
    assert resumed["step"] == 8
    for key in ("critic", "generator"):
        for k, v in full[key].items():
            assert torch.equal(v, resumed[key][k]), f"{key}.{k}"
    for r in (0, 1):
        assert torch.equal(full["ranks"][r]["noise"], resumed["ranks"][r]["noise"])
        assert torch.equal(full["ranks"][r]["data"]["rng"], resumed["ranks"][r]["data"]["rng"])


@pytest.mark.parametrize("argv", [["wgangp-train", "-m", "gp.lambda=1,10"]])
def test_multirun_under_torchrun_is_refused(argv):
    from wgangp.cli.train import torchrun_argv
    from wgangp.errors import UserError

    with pytest.raises(UserError, match="torchrun"):
        torchrun_argv(argv, distributed.DistInfo(rank=1, world_size=2))
    quiet = torchrun_argv(["wgangp-train", "x=1"], distributed.DistInfo(rank=1, world_size=2))
    assert "hydra.output_subdir=null" in quiet


def test_stored_data_ranks_split_each_global_batch():
    """TensorSource and the image sampler: rank slices concatenate to the one-process batch."""
    from wgangp.data.base import TensorSource
    from wgangp.data.image_source import EpochSampler

    data = torch.arange(50.0).unsqueeze(1)
    one = TensorSource(data, 8, seed=3)
    ranks = [TensorSource(data, 4, seed=3) for _ in range(2)]
    for r, src in enumerate(ranks):
        src.shard(r, 2)
    for _ in range(14):  # several epochs (6 global batches each, 2 samples dropped)
        whole = one.next_batch()
        parts = torch.cat([src.next_batch() for src in ranks])
        assert torch.equal(whole, parts)
        assert ranks[0].state_dict() == ranks[1].state_dict() == one.state_dict()
    full = EpochSampler(50, seed=3)
    full.start = 8
    split = [EpochSampler(50, seed=3) for _ in range(2)]
    for r, s in enumerate(split):
        s.rank, s.world_size, s.block, s.start = r, 2, 4, 8
    seq, per = list(full)[:40], [list(s) for s in split]
    assert len(per[0]) == len(split[0]) == 20
    merged = [p for i in range(5) for s in per for p in s[4 * i : 4 * i + 4]]
    assert merged == seq[:40]


def test_torchrun_channels_last_images_keep_ddp_buckets_in_their_layout(tmp_path):
    """The image models take their memory format before DDP wraps them: DDP builds its
    gradient buckets from the parameters' strides, and converting afterwards made every
    backward warn "Grad strides do not match bucket view strides" (and copy).
    Diagnostics run on rank 0 alone, between steps, while rank 1 waits (no hang)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    data = make_folder(tmp_path / "images", n=32)
    out = finish(
        torchrun(
            *tiny_rgb(data),
            "trainer.steps=2",
            "trainer.sample_every=0",
            "trainer.ckpt_every=0",
            "speed.channels_last=true",
            "diagnostics.every=1",
            cwd=tmp_path,
        )
    )
    assert "memory format: torch.channels_last" in out
    assert "Grad strides do not match bucket view strides" not in out
    acc = EventAccumulator(str(only_run(tmp_path) / "tb"))
    acc.Reload()
    grads = [t for t in acc.Tags()["scalars"] if t.startswith("layer_grad/")]
    assert grads and all([e.step for e in acc.Scalars(t)] == [1, 2] for t in grads)
    assert any(h.startswith("weights/critic/") for h in acc.Tags()["histograms"])


def test_ranks_meet_before_leaving_the_group_after_a_run_and_not_after_an_error(monkeypatch):
    """torchrun: after a finished run every rank waits at a barrier before
    destroy_process_group (a gloo rank whose peer tore down first could abort with
    SIGABRT at exit, failing the run); after a user error (the task's sys.exit) it does
    not wait: the other ranks may never arrive. (Hydra stands in for the run here.)"""
    import wgangp.cli.train as train_mod

    calls: list[str] = []
    monkeypatch.setattr(distributed, "barrier", lambda: calls.append("barrier"))
    monkeypatch.setattr(distributed, "cleanup", lambda: calls.append("cleanup"))
    monkeypatch.setattr(sys, "argv", ["wgangp-train", *TINY])

    def finishing(**kwargs):  # type: ignore[no-untyped-def]
        return lambda task: lambda: calls.append("run")

    def failing(**kwargs):  # type: ignore[no-untyped-def]
        def run() -> None:
            calls.append("run")
            sys.exit(2)

        return lambda task: run

    monkeypatch.setattr(train_mod.hydra, "main", finishing)
    train_mod.main()
    assert calls == ["run", "barrier", "cleanup"]
    calls.clear()
    monkeypatch.setattr(train_mod.hydra, "main", failing)
    with pytest.raises(SystemExit) as e:
        train_mod.main()
    assert e.value.code == 2 and calls == ["run", "cleanup"]
