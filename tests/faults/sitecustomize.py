"""Fault injection for CLI tests, outside the product code.

A test puts this directory first on ``PYTHONPATH`` and sets ``WGANGP_FAULT``; Python
imports this module at start-up, before ``wgangp``, and it patches the library:

* ``slow_ckpt:SECONDS``: every ``os.fsync`` sleeps first, so a test can SIGKILL the
  process while a checkpoint's temporary file exists (mid-write, before the rename).
* ``enospc_after:N``: the (N+1)-th ``torch.save`` writes a few bytes then fails with
  ``ENOSPC`` (disk full), as a real full disk does.
* ``nan_critic_at:N``: the N-th call of ``wgangp.losses.critic_loss`` (1-based)
  returns NaN.
"""

from __future__ import annotations

import errno
import os
import time

_fault = os.environ.get("WGANGP_FAULT", "")
_kind, _, _arg = _fault.partition(":")

if _kind == "slow_ckpt":
    _fsync = os.fsync

    def _slow_fsync(fd: int) -> None:
        time.sleep(float(_arg))
        _fsync(fd)

    os.fsync = _slow_fsync

elif _kind == "enospc_after":
    import torch

    _save, _left = torch.save, [int(_arg)]

    def _full_disk_save(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        if _left[0] <= 0:
            f.write(b"PK\x03\x04partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        _left[0] -= 1
        return _save(obj, f, *args, **kwargs)

    torch.save = _full_disk_save

elif _kind == "nan_critic_at":
    import wgangp.losses

    _critic_loss, _calls = wgangp.losses.critic_loss, [0]

    def _nan_critic_loss(*args, **kwargs):  # type: ignore[no-untyped-def]
        _calls[0] += 1
        out = _critic_loss(*args, **kwargs)
        return out * float("nan") if _calls[0] == int(_arg) else out

    wgangp.losses.critic_loss = _nan_critic_loss
