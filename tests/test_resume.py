"""Checkpoints: bitwise resume, SIGTERM, and refusing what doesn't fit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, TINY, cli, compose_cfg, paper_recipe, pythonpath
from wgangp.errors import CheckpointError
from wgangp.io.checkpoint import load_checkpoint
from wgangp.train.trainer import Trainer


def run_dir(root: Path) -> Path:
    (d,) = [p for p in (root / "outputs").glob("*/*") if p.is_dir()]
    return d


def assert_same_state(a: dict, b: dict) -> None:
    for key in ("critic", "generator"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs"
    for key in ("opt_critic", "opt_generator"):
        for pid, st in a[key]["state"].items():
            for k, v in st.items():
                assert torch.equal(v, b[key]["state"][pid][k]), f"{key}[{pid}].{k} differs"
    assert torch.equal(a["rng"]["noise"], b["rng"]["noise"])


def test_training_2n_equals_n_then_resume_to_2n_bitwise(tmp_path):
    common = [*TINY, "trainer.ckpt_every=5", "trainer.sample_every=0"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cli(*common, "trainer.steps=16", cwd=tmp_path / "a", check=True)
    cli(*common, "trainer.steps=8", cwd=tmp_path / "b", check=True)
    b = run_dir(tmp_path / "b")
    proc = cli(f"resume={b}", "trainer.steps=16", cwd=tmp_path / "b", check=True)
    # in place: still one run directory, and the change was accepted and recorded
    assert run_dir(tmp_path / "b") == b
    assert (
        "config changes accepted: trainer.steps 8→16" in proc.stderr + (b / "train.log").read_text()
    )
    assert list((b / ".hydra").glob("resume_*/overrides.yaml"))
    full = load_checkpoint(run_dir(tmp_path / "a") / "checkpoints" / "last.pt")
    resumed = load_checkpoint(b / "checkpoints" / "last.pt")
    assert full["step"] == resumed["step"] == 16
    assert_same_state(full, resumed)
    assert resumed["history"] == [{"step": 8, "changes": {"trainer.steps": [8, 16]}}]
    # the resumed run kept its own overrides (dims 32), not the defaults
    assert resumed["config"]["critic"]["dim"] == 32


def _snapshot(ckpts: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(ckpts.iterdir())}


def test_resume_from_the_newest_step_file_in_place(tmp_path):
    cli(*TINY, "trainer.steps=4", "trainer.ckpt_every=2", cwd=tmp_path, check=True)
    d = run_dir(tmp_path)
    cli(f"resume={d}/checkpoints/step_0000004.pt", "trainer.steps=6", cwd=tmp_path, check=True)
    assert load_checkpoint(d / "checkpoints" / "last.pt")["step"] == 6


def test_resume_from_an_older_step_file_branches_or_is_refused(tmp_path):
    """In place it would overwrite the newer last.pt and leave step 4 beside a step-3
    branch: refused, nothing touched; with hydra.run.dir it branches there."""
    cli(*TINY, "trainer.steps=4", "trainer.ckpt_every=2", cwd=tmp_path, check=True)
    d = run_dir(tmp_path)
    before = _snapshot(d / "checkpoints")
    old = d / "checkpoints" / "step_0000002.pt"
    proc = cli(f"resume={old}", "trainer.steps=6", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        f"wgangp: error: checkpoint {old}: resuming step 2 in {d} would overwrite that "
        "directory's later checkpoints (last.pt (step 4), step_0000004.pt (step 4)); to "
        "branch from step 2, add hydra.run.dir=NEW_DIR (the run continues there), or "
        "delete the later files"
    ) in proc.stderr
    assert _snapshot(d / "checkpoints") == before
    branch = tmp_path / "branch"
    cli(f"resume={old}", f"hydra.run.dir={branch}", "trainer.steps=6", cwd=tmp_path, check=True)
    assert load_checkpoint(branch / "checkpoints" / "last.pt")["step"] == 6
    assert load_checkpoint(branch / "checkpoints" / "last.pt")["config"]["critic"]["dim"] == 32
    assert _snapshot(d / "checkpoints") == before


def test_a_new_run_in_a_used_run_directory_is_refused(tmp_path):
    """Without resume=, a run directory holding checkpoints is not written over; the
    first run's .hydra/ record stays, the refused start is recorded beside it."""
    d = tmp_path / "run"
    cli(*TINY, f"hydra.run.dir={d}", "trainer.steps=2", "gp.lambda=3", cwd=tmp_path, check=True)
    before = _snapshot(d / "checkpoints")
    proc = cli(*TINY, f"hydra.run.dir={d}", "trainer.steps=1", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        f"wgangp: error: checkpoint {d}/checkpoints: a new run cannot start in {d}, which "
        f"already holds checkpoints (last.pt, step_0000002.pt); continue that run with "
        f"resume={d}, or train in a new directory (another hydra.run.dir); no checkpoint "
        "was touched"
    ) in proc.stderr
    assert _snapshot(d / "checkpoints") == before
    assert "lambda: 3.0" in (d / ".hydra" / "config.yaml").read_text()
    assert len(list((d / ".hydra").glob("rerun_*/config.yaml"))) == 1
    # resume=auto in the same directory continues it, and keeps the first record too
    cli(f"hydra.run.dir={d}", "resume=auto", "trainer.steps=3", cwd=tmp_path, check=True)
    assert load_checkpoint(d / "checkpoints" / "last.pt")["config"]["gp"]["lambda"] == 3.0
    assert "lambda: 3.0" in (d / ".hydra" / "config.yaml").read_text()
    assert len(list((d / ".hydra").glob("resume_*/config.yaml"))) == 1


def test_resume_auto_with_only_unreadable_checkpoints_is_refused(tmp_path):
    d = tmp_path / "run"
    cli(*TINY, f"hydra.run.dir={d}", "trainer.steps=2", cwd=tmp_path, check=True)
    for p in (d / "checkpoints").iterdir():
        p.write_bytes(b"not a checkpoint")
    proc = cli(f"hydra.run.dir={d}", "resume=auto", "trainer.steps=4", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        f"resume=auto could read none of the checkpoints in {d} (last.pt, "
        "step_0000002.pt; the reasons are logged above), and starting afresh would "
        "overwrite them"
    ) in proc.stderr
    assert {p.read_bytes() for p in (d / "checkpoints").iterdir()} == {b"not a checkpoint"}


def test_resume_with_steps_at_or_below_the_checkpoint(tmp_path):
    d = tmp_path / "run"
    cli(*TINY, f"hydra.run.dir={d}", "trainer.steps=4", cwd=tmp_path, check=True)
    before = _snapshot(d / "checkpoints")
    proc = cli(f"resume={d}", "trainer.steps=3", cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        f"wgangp: error: invalid value for trainer.steps: 3 (allowed: an integer ≥ 4, the "
        f"step of {d}/checkpoints/last.pt); the run is already at step 4; raise "
        "trainer.steps to train further"
    ) in proc.stderr
    proc = cli(f"resume={d}", cwd=tmp_path, check=True)  # steps = 4: already complete
    assert "the run is already complete" in proc.stderr + (d / "train.log").read_text()
    assert _snapshot(d / "checkpoints") == before


def test_resume_with_another_architecture_is_refused_listing_keys(tmp_path):
    cli(*TINY, "trainer.steps=2", cwd=tmp_path, check=True)
    d = run_dir(tmp_path)
    before = (d / "checkpoints" / "last.pt").read_bytes()
    proc = cli(f"resume={d}", "critic.dim=64", "critic.depth=2", cwd=tmp_path)
    assert proc.returncode == 2
    assert "cannot resume with a different architecture" in proc.stderr
    assert "critic.depth: 3 → 2" in proc.stderr and "critic.dim: 32 → 64" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (d / "checkpoints" / "last.pt").read_bytes() == before


def test_keys_added_since_a_checkpoint_resume_at_their_default(tmp_path):
    """A checkpoint written before a schema key existed (here generator.input_norm)
    resumes: the key at its default describes what that run did. Set to anything
    else it is an architecture change and refused like any other."""
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from wgangp.config.compose import config_dir
    from wgangp.config.resume import keys_added_at_default, resume_config

    # an image set: dataset.pixel_range is a key of the image data sets only
    run = [*TINY, "dataset=mnist", "trainer.steps=2"]
    written = OmegaConf.to_container(compose_cfg(*run), resolve=True)
    assert written["generator"].pop("input_norm") == "channel"  # as before the key existed
    assert written["dataset"].pop("pixel_range") == [-1.0, 1.0]
    assert written.pop("conditional")["enabled"] is False  # a whole group added later
    ckpt = {"config": written, "overrides": run}
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg, _, changes = resume_config(ckpt, tmp_path / "last.pt", ["trainer.steps=3"])
        assert changes == {"trainer.steps": (2, 3)}
        assert cfg.generator.input_norm == "channel" and cfg.trainer.steps == 3
        for key, value in (
            ("generator.input_norm", "feature"),
            ("dataset.pixel_range", "[0,1]"),
            ("conditional.enabled", "true"),
        ):
            with pytest.raises(CheckpointError, match="cannot resume with a different") as e:
                resume_config(ckpt, tmp_path / "last.pt", [f"{key}={value}"])
            assert f"{key}: None → " in str(e.value)

    old = {"generator": {"name": "mlp"}, "trainer": {"ema": {"decay": None}}}
    changes = {
        "generator.input_norm": (None, "channel"),  # absent before, at its default
        "trainer.ema.decay": (None, 0.999),  # present (null) before: a real change
        "generator.z_dim": (None, 2),  # absent, at its default
        "critic.dim": (None, 64),  # absent, not the default (512)
        "dataset.pixel_range": (None, [-1.0, 1.0]),  # absent, the default (a list)
    }
    assert keys_added_at_default(old, changes) == [
        "generator.input_norm",
        "generator.z_dim",
        "dataset.pixel_range",
    ]
    assert keys_added_at_default(old, {"dataset.pixel_range": (None, [0.0, 1.0])}) == []
    assert keys_added_at_default(old, {"generator.input_norm": (None, "feature")}) == []


def test_state_dict_mismatch_lists_the_differing_parameters():
    small = Trainer(compose_cfg(*TINY), "/tmp/unused-run", torch.device("cpu"))
    big = Trainer(compose_cfg(*TINY, "critic.dim=48"), "/tmp/unused-run", torch.device("cpu"))
    with pytest.raises(CheckpointError) as e:
        big.load_state_dict(small.state_dict(), "x.pt")
    msg = str(e.value)
    assert msg.startswith("checkpoint x.pt: its networks differ from the configured ones")
    assert "critic.net.0.weight: checkpoint (32, 2) vs configured (48, 2)" in msg


def test_sigterm_saves_a_checkpoint_and_exits_143(tmp_path):
    env = {**os.environ, "PYTHONPATH": pythonpath(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wgangp.cli.train",
            *paper_recipe(TINY),
            "trainer.steps=100000",
            "trainer.log_every=1",
            "trainer.ckpt_every=0",
            "trainer.sample_every=0",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    log = None
    while time.time() < deadline:
        logs = list(tmp_path.glob("outputs/*/*/train.log"))
        if logs and "step 3 |" in logs[0].read_text():
            log = logs[0]
            break
        time.sleep(0.2)
    assert log is not None, "training did not start"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    ck = load_checkpoint(log.parent / "checkpoints" / "last.pt")
    assert ck["step"] >= 3
    assert "SIGTERM" in out + err and "Traceback" not in out + err


def test_training_time_adds_up_over_a_resume_and_leaves_the_pause_out(tmp_path, monkeypatch):
    """perf/train_s: the wall time of fit() up to each log, carried in the checkpoint,
    so a resumed run continues from it; the pause before the resume does not count."""
    from tests.conftest import toy_trainer_factory

    make = toy_trainer_factory(tmp_path, monkeypatch, *TINY, "trainer.log_every=2")
    first = make("trainer.steps=4")
    tic = time.perf_counter()
    last = first.fit()
    took = time.perf_counter() - tic
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert 0 < last["perf/train_s"] == saved["train_seconds"] <= took
    time.sleep(1.0)  # the pause
    second = make("trainer.steps=8")
    second.load_state_dict(saved)
    tic = time.perf_counter()
    last = second.fit()
    took_again = time.perf_counter() - tic
    grew = last["perf/train_s"] - saved["train_seconds"]
    assert 0 < grew <= took_again < 1.0 + grew  # this fit's time, not the pause
    assert (
        load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["train_seconds"]
        == (last["perf/train_s"])
    )
