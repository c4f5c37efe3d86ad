"""Path helpers shared by the data sets and the checkpoints."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def expand_path(path: str | Path) -> Path:
    """``Path(path).expanduser()``, leaving ``~unknown_user/...`` as it is.

    ``Path.expanduser`` raises ``RuntimeError`` for a user with no home directory; a
    typo in a config path must end in a clear "no such file" message instead.
    """
    try:
        return Path(path).expanduser()
    except RuntimeError:  # "Could not determine home directory"
        return Path(path)


def unwritable_reason(directory: str | Path) -> str | None:
    """Why ``directory`` cannot be created or written to, or None if it looks fine.

    Checks the directory, or its nearest existing ancestor, is a directory this process
    may write into: ``os.access`` (a read-only mount fails it even for root), then a
    temporary file created and removed there, since for root ``os.access`` says yes to
    places such as ``/proc`` where nothing can be created. Leaves nothing behind.
    """
    p = Path(os.path.abspath(expand_path(directory)))
    probe = p
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():  # a dangling link
            return f"{probe} is a broken symbolic link"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"no permission to write in {probe} (or it is on a read-only file system)"
    try:
        fd, name = tempfile.mkstemp(prefix=".wgangp-write-test-", dir=probe)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        return f"cannot create files in {probe} ({e.strerror or type(e).__name__})"
    return None
