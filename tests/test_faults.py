"""Faults survived in-process: NaN/Inf losses and gradients, bad weights never saved,
bad checkpoints named, ``resume=auto`` fallback, a full disk or an unwritable directory."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pytest
import torch

import wgangp.io.checkpoint as ckpt_mod
from tests.conftest import TINY, toy_trainer_factory
from wgangp.errors import CheckpointError
from wgangp.io.checkpoint import (
    CheckpointManager,
    latest_good_checkpoint,
    load_checkpoint,
    resolve_checkpoint_path,
)
from wgangp.train.trainer import NonFiniteError, Trainer

FAST = [*TINY, "trainer.n_critic=1", "trainer.sample_every=0", "trainer.ckpt_every=2"]


@pytest.fixture
def make_trainer(tmp_path, monkeypatch):
    """A tiny toy Trainer in ``tmp_path/run`` (the end-of-run picture skipped: speed)."""
    return toy_trainer_factory(tmp_path, monkeypatch, *FAST)


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def train_to(tr: Trainer, steps: int) -> None:
    tr.cfg.trainer.steps = steps
    tr.fit()


def nan_output(module: torch.nn.Module, calls: list[int] | None = None) -> None:
    """Make ``module``'s output NaN (for every call, or the call numbers in ``calls``)."""
    seen = [0]

    def hook(mod, inp, out):  # type: ignore[no-untyped-def]
        seen[0] += 1
        if calls is None or seen[0] in calls:
            return out * float("nan")
        return out

    module.register_forward_hook(hook)


# ------------------------------------------------------------------ non-finite steps


def test_nan_critic_loss_stops_naming_step_terms_and_last_good_checkpoint(make_trainer):
    tr = make_trainer()
    train_to(tr, 4)
    last = tr.ckpts.dir / "last.pt"
    before_file, before_c, before_g = last.read_bytes(), params(tr.critic), params(tr.generator)
    nan_output(tr.critic)
    with pytest.raises(NonFiniteError) as e:
        train_to(tr, 8)
    msg = str(e.value)
    assert "non-finite critic loss at step 5" in msg
    for term in ("critic loss=nan", "W estimate=nan", "GP="):
        assert term in msg, msg
    assert f"last good checkpoint: {last}" in msg and "nan_policy=skip" in msg
    # the update was not applied and the good checkpoint was not overwritten
    assert same(params(tr.critic), before_c) and same(params(tr.generator), before_g)
    assert tr.step == 4 and last.read_bytes() == before_file
    assert load_checkpoint(last)["step"] == 4


def test_nan_gradient_with_a_finite_loss_is_caught_before_the_update(make_trainer):
    tr = make_trainer()
    first = next(tr.critic.parameters())
    first.register_hook(lambda g: g * float("nan"))
    before = params(tr.critic)
    with pytest.raises(NonFiniteError) as e:
        train_to(tr, 3)
    msg = str(e.value)
    assert "non-finite critic gradient at step 1" in msg
    assert "critic loss=nan" not in msg and "no checkpoint written yet" in msg
    assert same(params(tr.critic), before)
    # Adam's moments never saw the NaN either
    assert all(torch.isfinite(v).all() for st in tr.opt_c.state.values() for v in st.values())


@pytest.mark.parametrize(
    ("loss", "bad_grad", "finite"),
    [
        (1.0, None, True),
        (1.0, 1e30, True),  # large but finite: its square would overflow fp32
        (-3e38, -3e38, True),
        (float("nan"), None, False),
        (float("inf"), None, False),
        (float("-inf"), None, False),
        (1.0, float("nan"), False),
        (1.0, float("inf"), False),
        (1.0, float("-inf"), False),
    ],
)
def test_finite_check_of_loss_and_gradients(make_trainer, loss, bad_grad, finite):
    tr = make_trainer()
    for p in tr.critic.parameters():
        p.grad = torch.ones_like(p)
    if bad_grad is not None:
        grads = [p.grad for p in tr.critic.parameters()]
        grads[0].view(-1)[0] = bad_grad  # a weight matrix
    assert bool(tr._nonfinite(torch.tensor(loss), tr.opt_c)) is not finite


def test_finite_check_tests_elements_and_leaves_the_gradients_alone(make_trainer):
    """Every element near the fp32 maximum: finite, though any sum or norm of them
    overflows to inf; and the check (GradScaler's, "unscaling" by 1) changes no bit."""
    tr = make_trainer()
    for p in tr.critic.parameters():
        p.grad = torch.full_like(p, -3e38)
        p.grad.view(-1)[::3] = 3e38
    before = [p.grad.clone() for p in tr.critic.parameters()]
    assert not bool(tr._nonfinite(torch.tensor(1.0), tr.opt_c))
    assert all(torch.equal(p.grad, b) for p, b in zip(tr.critic.parameters(), before, strict=True))
    last = list(tr.critic.parameters())[-1]
    last.grad.view(-1)[-1] = float("nan")  # the last element of the last tensor
    assert bool(tr._nonfinite(torch.tensor(1.0), tr.opt_c))


def test_inf_generator_gradient_is_caught_and_names_the_generator_loss(make_trainer):
    tr = make_trainer()
    train_to(tr, 2)
    next(tr.generator.parameters()).register_hook(lambda g: g * float("inf"))
    before = params(tr.generator)
    with pytest.raises(NonFiniteError) as e:
        train_to(tr, 4)
    assert "non-finite generator gradient at step 3 (generator loss=" in str(e.value)
    assert same(params(tr.generator), before)


def test_skip_policy_skips_transient_nans_and_finishes(make_trainer, caplog):
    tr = make_trainer("trainer.nan_policy=skip", "trainer.max_nan_skips=2")
    nan_output(tr.critic, calls=[1, 5])  # a forward pass: d_real, d_fake, the GP's
    with caplog.at_level(logging.WARNING):
        train_to(tr, 4)
    assert tr.step == 4 and tr.nan_skips == 2
    assert "skipping (1/2)" in caplog.text and "skipping (2/2)" in caplog.text
    assert all(torch.isfinite(p).all() for p in tr.critic.parameters())
    assert load_checkpoint(tr.ckpts.dir / "last.pt")["nan_skips"] == 2


def test_skip_policy_stops_after_max_nan_skips(make_trainer):
    tr = make_trainer("trainer.nan_policy=skip", "trainer.max_nan_skips=3")
    nan_output(tr.critic)
    with pytest.raises(NonFiniteError, match="non-finite critic loss at step 1") as e:
        train_to(tr, 4)
    assert tr.nan_skips == 3 and tr.step == 0
    # the advice fits the policy in force: not "set trainer.nan_policy=skip" again
    assert str(e.value).endswith(
        "; 3 such steps were skipped already (trainer.max_nan_skips=3); lower the learning "
        "rate, or raise trainer.max_nan_skips"
    )


def test_nonfinite_weights_are_never_saved_over_the_last_good_checkpoint(make_trainer):
    tr = make_trainer()
    train_to(tr, 2)
    last = tr.ckpts.dir / "last.pt"
    before = last.read_bytes()
    files = sorted(p.name for p in tr.ckpts.dir.iterdir())
    with torch.no_grad():
        next(tr.generator.parameters())[0, 0] = float("nan")
    tr.step = 3
    with pytest.raises(CheckpointError) as e:
        tr.save()
    msg = str(e.value)
    assert "refusing to save step 3: NaN/Inf in generator.net.0.weight" in msg
    assert "previous checkpoint is kept" in msg
    assert last.read_bytes() == before
    assert sorted(p.name for p in tr.ckpts.dir.iterdir()) == files


# ------------------------------------------------------------------ bad checkpoints


def _good(tmp_path: Path, make_trainer) -> Path:
    tr = make_trainer()
    train_to(tr, 2)
    return tr.ckpts.dir / "last.pt"


class Boom:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("true",))


@pytest.mark.parametrize(
    "kind,problem",
    [
        ("truncated", "unreadable: truncated or corrupted"),
        ("garbage", "unreadable: truncated or corrupted"),
        ("empty", "unreadable: truncated or corrupted"),
        ("foreign", "not a wgangp checkpoint (no 'format: wgangp-checkpoint' field)"),
        ("foreign_list", "not a wgangp checkpoint"),
        ("newer", "written in format version 2, newer than this wgangp reads (1); upgrade"),
        ("bad_version", "invalid format version 'one'"),
        ("incomplete", "incomplete: missing critic, opt_critic"),
        ("code", "refused by the safe loader (weights_only=True): it references Python code"),
    ],
)
def test_bad_checkpoints_get_an_error_naming_file_and_problem(
    tmp_path, make_trainer, kind, problem
):
    good = _good(tmp_path, make_trainer)
    data = good.read_bytes()
    ck = torch.load(good, weights_only=True)
    bad = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        bad.write_bytes(os.urandom(4096))
    elif kind == "empty":
        bad.write_bytes(b"")
    elif kind == "foreign":
        torch.save({"state_dict": {"w": torch.zeros(2)}}, bad)
    elif kind == "foreign_list":
        torch.save([torch.zeros(2)], bad)
    elif kind == "newer":
        torch.save({**ck, "version": 2}, bad)
    elif kind == "bad_version":
        torch.save({**ck, "version": "one"}, bad)
    elif kind == "incomplete":
        torch.save({k: v for k, v in ck.items() if k not in ("critic", "opt_critic")}, bad)
    elif kind == "code":
        torch.save({**ck, "extra": Boom()}, bad)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(bad)
    assert str(e.value).startswith(f"checkpoint {bad}: "), str(e.value)
    assert problem in str(e.value)


def test_resume_auto_falls_back_to_the_previous_good_checkpoint_with_a_warning(
    tmp_path, make_trainer, caplog
):
    tr = make_trainer("trainer.keep_checkpoints=3")
    train_to(tr, 6)
    d = tr.ckpts.dir
    assert sorted(p.name for p in d.iterdir()) == [
        "last.pt",
        "step_0000002.pt",
        "step_0000004.pt",
        "step_0000006.pt",
    ]
    # a full disk truncated the newest two files (as a non-atomic writer would)
    for name in ("last.pt", "step_0000006.pt"):
        (d / name).write_bytes((d / name).read_bytes()[:1000])
    with caplog.at_level(logging.WARNING):
        path, ck = latest_good_checkpoint(tr.run_dir)
    assert path == d / "step_0000004.pt" and ck["step"] == 4
    assert f"resume=auto: skipping checkpoint {d / 'last.pt'}: unreadable" in caplog.text
    assert f"skipping checkpoint {d / 'step_0000006.pt'}" in caplog.text
    # an explicit resume of the bad file is an error naming it, not a fallback
    with pytest.raises(CheckpointError, match="last.pt: unreadable: truncated"):
        load_checkpoint(resolve_checkpoint_path(tr.run_dir))


def test_resume_auto_with_nothing_usable_returns_none(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"junk")
    assert latest_good_checkpoint(tmp_path) is None


# ------------------------------------------------------------------ crash leftovers


def test_stale_temporaries_of_a_killed_write_are_ignored_and_removed(tmp_path, make_trainer):
    good = _good(tmp_path, make_trainer)
    d = good.parent
    stale = [d / ".last.pt.k9x2_a.tmp", d / ".step_0000004.pt.zz.tmp"]
    for p in stale:
        p.write_bytes(good.read_bytes()[:500])
    keep = d / "notes.tmp"  # not ours: left alone
    keep.write_text("x")
    path, _ = latest_good_checkpoint(tmp_path / "run")
    assert path == good
    make_trainer()  # a new process starting in the run directory cleans up
    assert not any(p.exists() for p in stale) and keep.exists()


# ------------------------------------------------------------------ disk full, no permission


def _failing_save(monkeypatch, err: int) -> None:
    real = torch.save

    def save(obj, f, *a, **k):  # type: ignore[no-untyped-def]
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(ckpt_mod.torch, "save", save)
    del real


@pytest.mark.parametrize(
    "how,strerror",
    [
        ("enospc", "No space left on device"),
        ("eacces", "Permission denied"),
        ("erofs", "Read-only file system"),
    ],
)
def test_full_disk_or_unwritable_dir_is_a_clear_error_and_the_previous_checkpoint_is_intact(
    tmp_path, make_trainer, monkeypatch, how, strerror
):
    tr = make_trainer()
    train_to(tr, 2)
    d = tr.ckpts.dir
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    if how == "enospc":
        _failing_save(monkeypatch, errno.ENOSPC)
    else:  # as root chmod does not stop writes: refuse the rename as the kernel would
        code = errno.EACCES if how == "eacces" else errno.EROFS

        def replace(src, dst):  # type: ignore[no-untyped-def]
            raise OSError(code, os.strerror(code), str(dst))

        monkeypatch.setattr(ckpt_mod.os, "replace", replace)
    with pytest.raises(CheckpointError) as e:
        train_to(tr, 4)
    msg = str(e.value)
    assert msg.startswith(f"checkpoint {d}: cannot write a checkpoint at step 4 ({strerror})")
    assert "the previous checkpoint is intact" in msg
    # nothing changed on disk: no half-written file, no leftover temporary
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert load_checkpoint(d / "last.pt")["step"] == 2


def test_a_failed_first_save_does_not_claim_a_previous_checkpoint(tmp_path, monkeypatch):
    _failing_save(monkeypatch, errno.ENOSPC)
    with pytest.raises(CheckpointError) as e:
        CheckpointManager(tmp_path, keep=2).save({"step": 1}, 1)
    assert str(e.value) == (
        f"checkpoint {tmp_path / 'checkpoints'}: cannot write a checkpoint at step 1 (No "
        "space left on device); none was written yet — free disk space or fix permissions"
    )


def test_a_save_that_wrote_the_step_file_but_not_last_says_so(tmp_path, monkeypatch):
    """The step file is whole when only last.pt fails: the message names it (and
    resume=auto takes it, being the newest), instead of "none was written yet"."""
    from wgangp.io.checkpoint import latest_good_checkpoint

    m = CheckpointManager(tmp_path, keep=2)
    real = ckpt_mod.atomic_save
    full = dict.fromkeys(ckpt_mod.REQUIRED_KEYS, {})  # loadable: every required key

    def last_fails(obj, path):  # type: ignore[no-untyped-def]
        if Path(path).name == "last.pt":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(obj, path)

    monkeypatch.setattr(ckpt_mod, "atomic_save", last_fails)
    with pytest.raises(CheckpointError) as e:
        m.save({**full, "step": 1}, 1)
    d = tmp_path / "checkpoints"
    assert str(e.value) == (
        f"checkpoint {d}: cannot write a checkpoint at step 1 (No space left on device); "
        "step_0000001.pt was written (resume=auto continues from it), last.pt was not — "
        "free disk space or fix permissions"
    )
    monkeypatch.setattr(ckpt_mod, "atomic_save", real)
    m.save({**full, "step": 2}, 2)
    monkeypatch.setattr(ckpt_mod, "atomic_save", last_fails)
    with pytest.raises(CheckpointError) as e:
        m.save({**full, "step": 3}, 3)
    assert "step_0000003.pt was written (resume=auto continues from it), last.pt still " in str(
        e.value
    )
    found = latest_good_checkpoint(tmp_path)
    assert found is not None and found[0].name == "step_0000003.pt" and found[1]["step"] == 3


def test_checkpoint_manager_keeps_only_the_newest_k(tmp_path):
    m = CheckpointManager(tmp_path, keep=2)
    state = {
        "step": 0,
        "critic": {},
        "generator": {},
        "opt_critic": {},
        "opt_generator": {},
        "rng": {},
        "data": {},
        "config": {},
    }
    for step in range(1, 6):
        m.save({**state, "step": step}, step)
    assert sorted(p.name for p in m.dir.iterdir()) == [
        "last.pt",
        "step_0000004.pt",
        "step_0000005.pt",
    ]
    assert load_checkpoint(m.dir / "last.pt")["step"] == 5
