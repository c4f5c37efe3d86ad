"""Path helpers shared by the data sets and the checkpoints."""

from __future__ import annotations

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
