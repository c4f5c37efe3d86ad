"""User-facing errors: raised for a user mistake, printed as one clear message, no traceback."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any


class Interrupted(Exception):  # noqa: N818 - a signal, not an error
    """SIGINT, SIGTERM, SIGUSR1 or SIGUSR2 arrived; a checkpoint was written.
    ``exit_code`` = 128 + signal."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        self.signum, self.checkpoint = signum, checkpoint
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoint: {checkpoint}")


class UserError(Exception):
    """A mistake the user can fix (bad config, missing data, wrong checkpoint)."""

    exit_code = 2


class ConfigError(UserError):
    """A config key holds a value that is not allowed.

    The message names the key, the value, what is allowed and how to fix it.
    """

    def __init__(self, key: str, value: Any, allowed: str, fix: str | None = None) -> None:
        self.key, self.value, self.allowed, self.fix = key, value, allowed, fix
        msg = f"invalid value for {key}: {value!r} (allowed: {allowed})"
        if fix:
            msg += f"; {fix}"
        super().__init__(msg)


class CheckpointError(UserError):
    """A checkpoint that cannot be used: missing, corrupt, foreign, incompatible."""

    def __init__(self, path: Any, problem: str) -> None:
        self.path, self.problem = path, problem
        super().__init__(f"checkpoint {path}: {problem}")


class DataError(UserError):
    """A data set that is missing, incomplete or malformed."""


class MetricUnavailable(UserError):
    """A metric cannot be computed here, e.g. the Inception weights are missing offline.

    The message is one line saying how to make it available.
    """
