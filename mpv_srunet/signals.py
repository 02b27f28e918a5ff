"""Signals that end a command (SIGINT, SIGTERM, SIGHUP) as an exception in the main thread.

So every ``finally`` runs (temporary outputs removed, threads joined) and the process exits with
128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP.

A hang-up that was ignored when the process started (``nohup mpv-srunet upscale ... &``, or an
mpv started with nohup that starts the frame server) stays ignored, as nohup promises and as mpv
itself does: :func:`exit_signals` leaves SIGHUP out then. SIGINT and SIGTERM always end a command.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

EXIT_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def exit_signals() -> tuple[signal.Signals, ...]:
    """The signals to end on: :data:`EXIT_SIGNALS`, less SIGHUP while it is ignored (nohup)."""
    return tuple(s for s in EXIT_SIGNALS if not (s == signal.SIGHUP and signal.getsignal(s) == signal.SIG_IGN))


class Signalled(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived; ``exit_code`` is 128 + its number."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def raise_on_exit_signals(only: Iterable[int] | None = None) -> Iterator[None]:
    """Within the block, the first exit signal (of ``only``, when given) raises :class:`Signalled`
    in the main thread; later ones are ignored, so they cannot cut short the (bounded) clean-up the
    first one started. Outside the main thread, where Python cannot set handlers, it does nothing."""
    got: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if not got:
            got.append(signum)
            raise Signalled(signum)

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = exit_signals() if only is None else set(only)
    previous = {s: signal.signal(s, on_signal) for s in exit_signals() if s in wanted}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
