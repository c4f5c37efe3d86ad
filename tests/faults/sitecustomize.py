"""Fault injection for CLI tests, outside the product code.

A test puts this directory first on ``PYTHONPATH`` and sets ``WGANGP_FAULT``; Python
imports this module at start-up, before ``wgangp``, and it patches the library. Several
faults can be combined with commas (``tb_enospc_after:3,enospc_after:2``).

* ``slow_ckpt:SECONDS``: every ``os.fsync`` sleeps first, so a test can SIGKILL the
  process while a checkpoint's temporary file exists (mid-write, before the rename).
* ``enospc_after:N``: the (N+1)-th ``torch.save`` writes a few bytes then fails with
  ``ENOSPC`` (disk full), as a real full disk does.
* ``tb_enospc_after:N``: the (N+1)-th and every later write to a TensorBoard event
  file fails with ``ENOSPC``. The writes happen in tensorboard's writer thread; the
  first (N=0) is the file-version event written when the writer is created.
* ``log_enospc_after:N``: the (N+1)-th and every later write to a ``logging``
  file (Hydra's ``train.log``) fails with ``ENOSPC``.
* ``nan_critic_at:N``: the N-th critic loss (``wgangp.core.algorithm.critic_objective``,
  1-based) is NaN.
"""

from __future__ import annotations

import errno
import os
import time


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _slow_ckpt(arg: str) -> None:
    _fsync = os.fsync

    def _slow_fsync(fd: int) -> None:
        time.sleep(float(arg))
        _fsync(fd)

    os.fsync = _slow_fsync


def _enospc_after(arg: str) -> None:
    import torch

    _save, _left = torch.save, [int(arg)]

    def _full_disk_save(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        if _left[0] <= 0:
            f.write(b"PK\x03\x04partial")
            raise _enospc()
        _left[0] -= 1
        return _save(obj, f, *args, **kwargs)

    torch.save = _full_disk_save


def _tb_enospc_after(arg: str) -> None:
    from tensorboard.compat.tensorflow_stub.io import gfile

    fs, _left = gfile.LocalFileSystem, [int(arg)]
    _write = fs._write

    def _full_disk_write(self, filename, file_content, mode):  # type: ignore[no-untyped-def]
        if b"tfevents" in os.fsencode(filename):
            if _left[0] <= 0:
                raise _enospc()
            _left[0] -= 1
        return _write(self, filename, file_content, mode)

    fs._write = _full_disk_write


def _log_enospc_after(arg: str) -> None:
    import logging

    _open, _left = logging.FileHandler._open, [int(arg)]

    class _FullDiskStream:
        def __init__(self, stream):  # type: ignore[no-untyped-def]
            self._stream = stream

        def write(self, text):  # type: ignore[no-untyped-def]
            if _left[0] <= 0:
                raise _enospc()
            _left[0] -= 1
            return self._stream.write(text)

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(self._stream, name)

    def _full_disk_open(self):  # type: ignore[no-untyped-def]
        return _FullDiskStream(_open(self))

    logging.FileHandler._open = _full_disk_open


def _nan_critic_at(arg: str) -> None:
    import wgangp.core.algorithm

    _objective, _calls = wgangp.core.algorithm.critic_objective, [0]

    def _nan_critic_objective(*args, **kwargs):  # type: ignore[no-untyped-def]
        _calls[0] += 1
        loss, shown = _objective(*args, **kwargs)
        return (loss * float("nan"), shown) if _calls[0] == int(arg) else (loss, shown)

    wgangp.core.algorithm.critic_objective = _nan_critic_objective


_FAULTS = {
    "slow_ckpt": _slow_ckpt,
    "enospc_after": _enospc_after,
    "tb_enospc_after": _tb_enospc_after,
    "log_enospc_after": _log_enospc_after,
    "nan_critic_at": _nan_critic_at,
}

for _fault in filter(None, os.environ.get("WGANGP_FAULT", "").split(",")):
    _kind, _, _arg = _fault.partition(":")
    _FAULTS[_kind](_arg)
