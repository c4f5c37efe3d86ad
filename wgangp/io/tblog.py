"""The run's TensorBoard log, failing with one clear error instead of a thread's traceback.

``torch.utils.tensorboard.SummaryWriter`` hands its events to a background thread
(tensorboard's ``EventFileWriter``), which writes them to ``tb/events.out.tfevents.*``.
When a write fails (disk full, ``tb/`` removed, read-only or over quota), that thread
dies with the ``OSError``: Python prints the thread's traceback to stderr, and the
error reaches the training loop only at its next call into the writer (tensorboard
keeps it and raises it there).

:class:`EventLog` wraps the writer so that:

* every ``OSError`` of the log, raised by a call or kept from the thread, becomes one
  :class:`EventLogError` naming the directory (a :class:`~wgangp.errors.UserError`,
  printed as one line by ``wgangp-train``);
* while it is open, an ``OSError`` that ends one of tensorboard's event-writer threads
  is not printed: tensorboard has kept it for the main thread, which reports it. Any
  other exception, in that thread or any other, goes to the previous
  ``threading.excepthook`` unchanged;
* :meth:`EventLog.flush` waits until the queued events are written, so a failure
  surfaces at the step whose events could not be written.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

from wgangp.errors import UserError

#: the module of tensorboard's event-writer thread class (``_AsyncWriterThread``)
_WRITER_THREAD_MODULE = "tensorboard.summary.writer.event_file_writer"
#: how long to wait for a dying writer thread to finish (it only drains its queue)
_JOIN_TIMEOUT_S = 10.0


class EventLogError(UserError):
    """The TensorBoard event file cannot be written (disk full, no permission, ...)."""

    def __init__(self, log_dir: Path, error: OSError, message: str | None = None) -> None:
        self.log_dir, self.error = log_dir, error
        self.reason = error.strerror or str(error) or type(error).__name__
        super().__init__(message or f"cannot write the TensorBoard log {log_dir} ({self.reason})")


def _is_writer_thread(thread: threading.Thread | None) -> bool:
    return thread is not None and type(thread).__module__ == _WRITER_THREAD_MODULE


# ------------------------------------------------------------------ threading.excepthook
_hook_lock = threading.Lock()
_hook_users = 0
_previous_hook: Any = None


def _excepthook(args: Any) -> None:  # noqa: ANN401 - threading.ExceptHookArgs
    """An event-writer thread ended by an OSError: quiet (its writer raises the error on
    the main thread). Everything else: the previous hook, as if this one were absent."""
    if isinstance(args.exc_value, OSError) and _is_writer_thread(args.thread):
        return
    (_previous_hook or threading.__excepthook__)(args)


def _install_hook() -> None:
    global _hook_users, _previous_hook
    with _hook_lock:
        if _hook_users == 0 and threading.excepthook is not _excepthook:
            _previous_hook = threading.excepthook
            threading.excepthook = _excepthook
        _hook_users += 1


def _uninstall_hook() -> None:
    global _hook_users, _previous_hook
    with _hook_lock:
        _hook_users = max(_hook_users - 1, 0)
        if _hook_users == 0:
            if threading.excepthook is _excepthook:  # else someone replaced it since: keep
                threading.excepthook = _previous_hook or threading.__excepthook__
            _previous_hook = None


def _join(threads: set[threading.Thread]) -> None:
    """Wait for writer threads that are ending: their excepthook runs before they end."""
    for t in threads:
        if t is not threading.current_thread():
            t.join(_JOIN_TIMEOUT_S)


def _new_writer_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    return {t for t in threading.enumerate() if _is_writer_thread(t) and t not in before}


class EventLog:
    """A ``SummaryWriter`` on ``log_dir`` whose failures are one :class:`EventLogError`.

    ``close()`` raises the error of a failed log (once); ``discard()`` closes without
    raising, for when another error is already on its way.
    """

    def __init__(self, log_dir: str | Path, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._error: EventLogError | None = None
        self._closed = False
        _install_hook()
        before = set(threading.enumerate())
        try:
            # writes the file-version event (and the purge events) and waits for them
            self._writer = SummaryWriter(str(self.log_dir), purge_step=purge_step)
        except OSError as e:
            _join(_new_writer_threads(before))  # its excepthook has run: quiet
            _uninstall_hook()
            self._closed = True
            raise self._fail(e) from None
        except BaseException:
            _join(_new_writer_threads(before))
            _uninstall_hook()
            raise
        self._threads = _new_writer_threads(before)

    def _fail(self, error: OSError) -> EventLogError:
        if self._error is None:
            self._error = EventLogError(self.log_dir, error)
        return self._error

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:  # noqa: ANN401
        if self._error is not None:  # failed before: the same error, once more
            raise self._error
        try:
            return getattr(self._writer, method)(*args, **kwargs)
        except OSError as e:  # this call's write, or one the writer thread failed
            raise self._fail(e) from None

    def add_scalar(self, *args: Any, **kwargs: Any) -> None:
        self._call("add_scalar", *args, **kwargs)

    def add_image(self, *args: Any, **kwargs: Any) -> None:
        self._call("add_image", *args, **kwargs)

    def add_text(self, *args: Any, **kwargs: Any) -> None:
        self._call("add_text", *args, **kwargs)

    def add_histogram(self, *args: Any, **kwargs: Any) -> None:
        self._call("add_histogram", *args, **kwargs)

    def add_summary(self, summary: Any, step: int | None = None) -> None:  # noqa: ANN401
        """A ready ``Summary`` proto (the HParams plugin's), into this run's event file."""
        if self._error is not None:
            raise self._error
        try:
            self._writer._get_file_writer().add_summary(summary, step)
        except OSError as e:
            raise self._fail(e) from None

    def add_figure(
        self, tag: str, figure: Any, *args: Any, close: bool = True, **kwargs: Any
    ) -> None:
        try:
            self._call("add_figure", tag, figure, *args, close=close, **kwargs)
        except EventLogError:
            if close:  # the writer closes it once rendered: it may not have got there
                import matplotlib.pyplot as plt

                plt.close(figure)
            raise

    def flush(self) -> None:
        """Write every queued event now; :class:`EventLogError` if that fails."""
        self._call("flush")

    def close(self) -> None:
        """Flush and close; :class:`EventLogError` if any write of the log failed."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._error is None:
                self._writer.close()  # flushes, stops the thread (joins it), closes the file
        except OSError as e:
            self._fail(e)
        finally:
            if self._error is not None:  # the flush failed: stop the thread, close the file
                for w in list((self._writer.all_writers or {}).values()):
                    with contextlib.suppress(Exception):
                        w.close()
            _join(self._threads)
            _uninstall_hook()
        if self._error is not None:
            raise self._error

    def discard(self) -> None:
        """Close, never raising: another error is being reported, which this one must
        not replace."""
        with contextlib.suppress(Exception):
            self.close()
