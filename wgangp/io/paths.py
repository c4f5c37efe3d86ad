"""Path helpers shared by the data sets and the checkpoints."""

from __future__ import annotations

import contextlib
import errno
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


#: what the write probe writes: more than Hydra's ``.hydra/`` files and the first log lines
PROBE_BYTES = 64 * 1024


def unwritable_reason(directory: str | Path) -> str | None:
    """Why ``directory`` cannot be created or written to, or None if it looks fine.

    Checks the directory, or its nearest existing ancestor, is a directory this process
    may write into: ``os.access`` (a read-only mount fails it even for root), then a
    temporary file created there, since for root ``os.access`` says yes to places such
    as ``/proc`` where nothing can be created, and :data:`PROBE_BYTES` written into it,
    since a full disk still lets an empty file be created. Leaves nothing behind.
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
    except OSError as e:
        return f"cannot create files in {probe} ({e.strerror or type(e).__name__})"
    try:
        # an empty file needs no free space: write some, as the run's first files do
        data = memoryview(bytes(PROBE_BYTES))
        while data:
            written = os.write(fd, data)
            if written <= 0:  # no progress: no room
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            data = data[written:]
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return f"the file system of {probe} is full ({e.strerror}), free some space"
        return f"cannot write files in {probe} ({e.strerror or type(e).__name__})"
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name)
    return None
