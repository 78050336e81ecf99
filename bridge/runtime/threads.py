"""Blocking calls off the event loop that nothing waits for once their caller gives up on them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def in_daemon_thread(function: Callable[[], T], name: str = "bridge-blocking") -> T:
    """`function()` in a daemon thread of its own.

    Unlike `asyncio.to_thread`, whose executor `asyncio.run` joins before the process may exit, a call left
    behind by a cancelled caller (a start-up cut short by SIGTERM, a close past its deadline) never holds the
    exit up: librdkafka calls can block for their whole timeout, or longer.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def deliver(settle: Callable[[], None]) -> None:
        def apply() -> None:
            if not done.done():
                settle()

        # The loop is closed when a call given up on ends after it: nobody waits for its answer then.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(apply)

    def run() -> None:
        try:
            result = function()
        except BaseException as error:  # handed to the caller, whatever it is
            deliver(functools.partial(done.set_exception, error))
            return
        deliver(functools.partial(done.set_result, result))

    threading.Thread(target=run, name=name, daemon=True).start()
    return await done
