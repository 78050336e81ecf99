"""SIGTERM and Ctrl-C for the dead-letter commands: stop at the next safe point, and within GRACE_S whatever Kafka does.

A command checks `requested()` between records and chunks. A Kafka call already waiting on a broker that does not
answer cannot be cut short from Python, so GRACE_S after the signal the process ends anyway, with one line: what a
replay had not committed then is aborted by the next run's `init_transactions`, and read by no read_committed
consumer meanwhile; a second signal ends it at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from types import FrameType

from bridge.errors import EXIT_TOOL_FAILED

GRACE_S = 5.0
EXIT_INTERRUPTED = EXIT_TOOL_FAILED


class Stopping:
    def __init__(self, grace_s: float = GRACE_S) -> None:
        self._grace_s = grace_s
        self._requested = threading.Event()

    def install(self) -> Stopping:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        return self

    def requested(self) -> bool:
        return self._requested.is_set()

    def _on_signal(self, signum: int, _: FrameType | None) -> None:
        if self._requested.is_set():
            self._give_up()
        self._requested.set()
        timer = threading.Timer(self._grace_s, self._give_up)
        timer.daemon = True
        timer.start()

    def _give_up(self) -> None:
        print(
            "appmetrica-bridge dead-letters: interrupted; Kafka did not let the command stop within "
            f"{self._grace_s:g} s, so it ended without committing what it was doing: run the same command again",
            file=sys.stderr,
            flush=True,
        )
        os._exit(EXIT_INTERRUPTED)
