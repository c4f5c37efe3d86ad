"""Checkpoints: atomic writes, safe loads, rotation, and finding the one to resume from.

A checkpoint is a plain dict of tensors and primitives (no pickled classes), written
with ``torch.save`` to a temporary file in the same directory, fsynced and renamed over
the target, so a crash or a full disk leaves either the old file or the new one, never
half of one. Loading always uses ``torch.load(weights_only=True)``: a file carrying
code is refused, not executed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from wgangp.errors import CheckpointError
from wgangp.io.paths import expand_path

log = logging.getLogger(__name__)

FORMAT = "wgangp-checkpoint"
VERSION = 1
LAST = "last.pt"
BEST = "best.pt"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")
#: temporary files of :func:`atomic_save` (``.last.pt.<random>.tmp``) a crash can leave
_TMP_RE = re.compile(r"^\.(last|best|step_\d+)\.pt\..+\.tmp$")
#: what a checkpoint must hold for a resume
REQUIRED_KEYS = (
    "step",
    "critic",
    "generator",
    "opt_critic",
    "opt_generator",
    "rng",
    "data",
    "config",
)
#: the entries whose tensors must be finite before anything is written
CHECKED_FOR_FINITE = ("critic", "generator", "ema", "opt_critic", "opt_generator")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (temp file, fsync, rename, fsync dir)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600 files; give the checkpoint the user's usual permissions
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _load_problem(e: Exception) -> str:
    """What ``torch.load(weights_only=True)``'s exception says, in one short phrase."""
    text = str(e).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    code = [ln for ln in lines if "GLOBAL" in ln or "Unsupported global" in ln]
    if code:
        return (
            "refused by the safe loader (weights_only=True): it references Python code or "
            f"classes, so it is not a wgangp checkpoint and was not executed ({code[0][:200]})"
        )
    # torch prefixes unpickler errors with a paragraph about weights_only: skip it
    useful = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Check the "))]
    detail = useful[0][:200] if useful else type(e).__name__
    return (
        f"unreadable: truncated or corrupted, or not a PyTorch file ({type(e).__name__}: {detail})"
    )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and check a wgangp checkpoint; every failure is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, code in the pickle, ...
        raise CheckpointError(path, _load_problem(e)) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            path, "not a wgangp checkpoint (no 'format: wgangp-checkpoint' field)"
        )
    version = ckpt.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(path, f"invalid format version {version!r} (expected 1…{VERSION})")
    if version > VERSION:
        raise CheckpointError(
            path,
            f"written in format version {version}, newer than this wgangp reads ({VERSION}); "
            "upgrade wgangp",
        )
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(path, f"incomplete: missing {', '.join(missing)}")
    return ckpt


def _nonfinite_tensors(node: Any, prefix: str, out: list[str]) -> None:
    if isinstance(node, torch.Tensor):
        if node.is_floating_point() and not bool(torch.isfinite(node).all()):
            out.append(prefix)
    elif isinstance(node, dict):
        for k, v in node.items():
            _nonfinite_tensors(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _nonfinite_tensors(v, f"{prefix}[{i}]", out)


def nonfinite_tensors(state: dict[str, Any]) -> list[str]:
    """Names of the floating tensors holding NaN/Inf in the weights, EMA and optimizer state."""
    out: list[str] = []
    for key in CHECKED_FOR_FINITE:
        if state.get(key) is not None:
            _nonfinite_tensors(state[key], key, out)
    return out


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A run directory → its ``checkpoints/last.pt``; a file → itself."""
    p = expand_path(path)
    if p.is_dir():
        for cand in (p / "checkpoints" / LAST, p / LAST):
            if cand.is_file():
                return cand
        raise CheckpointError(p, f"directory holds no checkpoints/{LAST}")
    if not p.exists():
        raise CheckpointError(p, "no such file or directory")
    return p


def run_dir_of(checkpoint: Path) -> Path:
    """The run directory a checkpoint file belongs to."""
    checkpoint = checkpoint.resolve()
    parent = checkpoint.parent
    return parent.parent if parent.name == "checkpoints" else parent


def step_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """``step_*.pt`` files in ``ckpt_dir``, newest step first."""
    out = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            m = _STEP_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
    return sorted(out, reverse=True)


def latest_good_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest loadable checkpoint of a run (``resume=auto``), skipping bad ones with a warning.

    Candidates: ``last.pt`` and every ``step_*.pt``, ordered by the step they hold.
    """
    ckpt_dir = run_dir / "checkpoints"
    cands = [p for _, p in step_checkpoints(ckpt_dir)]
    if (ckpt_dir / LAST).is_file():
        cands.insert(0, ckpt_dir / LAST)
    good: list[tuple[int, Path, dict[str, Any]]] = []
    for p in cands:
        try:
            ck = load_checkpoint(p)
        except CheckpointError as e:
            log.warning("resume=auto: skipping %s", e)
            continue
        good.append((int(ck.get("step", 0)), p, ck))
    if not good:
        return None
    step, p, ck = max(good, key=lambda t: t[0])
    return p, ck


def checkpoint_files(ckpt_dir: Path) -> list[Path]:
    """The checkpoints in ``ckpt_dir`` (``last.pt``, ``best.pt``, ``step_*.pt``), by name."""
    if not ckpt_dir.is_dir():
        return []
    names = (LAST, BEST)
    return sorted(p for p in ckpt_dir.iterdir() if p.name in names or _STEP_RE.match(p.name))


def _step_of(path: Path) -> int | None:
    """The step a checkpoint file holds: from a step file's name, else from its contents
    (None when it cannot be read: such a file is not a run anyone can continue)."""
    m = _STEP_RE.match(path.name)
    if m:
        return int(m.group(1))
    try:
        return int(load_checkpoint(path).get("step", 0))
    except CheckpointError:
        return None


def newer_checkpoints(ckpt_dir: Path, step: int, resumed: Path) -> list[str]:
    """Files in ``ckpt_dir`` holding a step after ``step`` (other than ``resumed``):
    what continuing from ``step`` in that directory would overwrite or mix with."""
    resumed = resumed.resolve()
    out = []
    for p in checkpoint_files(ckpt_dir):
        if p.resolve() == resumed:
            continue
        s = _step_of(p)
        if s is not None and s > step:
            out.append(f"{p.name} (step {s})")
    return out


class CheckpointManager:
    """Writes ``last.pt`` and ``step_<N>.pt`` under ``run_dir/checkpoints``; keeps the newest k."""

    def __init__(self, run_dir: Path, keep: int) -> None:
        self.dir = Path(run_dir) / "checkpoints"
        self.keep = keep

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete the ``.*.pt.*.tmp`` files a killed process left mid-write; return them.

        They are never read (a checkpoint only exists once renamed into place); this
        only reclaims their disk space. Call it before this process writes anything.
        """
        removed: list[Path] = []
        if self.dir.is_dir():
            for p in sorted(self.dir.iterdir()):
                if _TMP_RE.match(p.name):
                    with contextlib.suppress(OSError):
                        p.unlink()
                        removed.append(p)
        if removed:
            log.warning(
                "removed %d incomplete checkpoint file(s) left by an interrupted write: %s",
                len(removed),
                ", ".join(p.name for p in removed),
            )
        return removed

    def _refuse_nonfinite(self, state: dict[str, Any], step: int) -> None:
        bad = nonfinite_tensors(state)
        if bad:
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise CheckpointError(
                self.dir / LAST,
                f"refusing to save step {step}: NaN/Inf in {shown}; the previous checkpoint "
                "is kept unchanged (not overwritten by bad weights)",
            )

    def save(self, state: dict[str, Any], step: int, *, step_file: bool = True) -> Path:
        """Write ``step_<step>.pt`` (if ``step_file``) and ``last.pt``, then prune.

        Raises :class:`CheckpointError` when the state holds NaN/Inf (nothing is
        written) or the disk refuses the write (the previous files stay intact).
        """
        state = {"format": FORMAT, "version": VERSION, **state}
        self._refuse_nonfinite(state, step)
        had_one = (self.dir / LAST).is_file()
        written: Path | None = None
        try:
            if step_file and self.keep > 0:
                atomic_save(state, self.dir / f"step_{step:07d}.pt")
                written = self.dir / f"step_{step:07d}.pt"
            atomic_save(state, self.dir / LAST)
        except OSError as e:
            if written is not None:  # the step file is whole; only last.pt lags
                status = f"{written.name} was written (resume=auto continues from it), " + (
                    f"{LAST} still holds the previous checkpoint" if had_one else f"{LAST} was not"
                )
            else:
                status = "the previous checkpoint is intact" if had_one else "none was written yet"
            raise CheckpointError(
                self.dir,
                f"cannot write a checkpoint at step {step} ({e.strerror or e}); {status}"
                " — free disk space or fix permissions",
            ) from None
        self._prune()
        return self.dir / LAST

    def save_best(self, state: dict[str, Any]) -> Path:
        self._refuse_nonfinite(state, int(state.get("step", -1)))
        atomic_save({"format": FORMAT, "version": VERSION, **state}, self.dir / BEST)
        return self.dir / BEST

    def _prune(self) -> None:
        for _, p in step_checkpoints(self.dir)[max(self.keep, 0) :]:
            with contextlib.suppress(OSError):
                p.unlink()
