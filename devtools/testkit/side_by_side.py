"""Several end-to-end cases of one test run at once, each with a Post API sandbox of its own.

A case that spends its time in designed waits (a drain deadline, a request timeout, a stall timeout) costs
the same wall time beside others as alone: N such cases together cost about the slowest one, not the sum.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TypeVar

from bridge.sandbox.config import Keys
from bridge.sandbox.server import Sandbox, SandboxOptions
from devtools.testkit.records import APP, KEY

T = TypeVar("T")


async def side_by_side(cases: Mapping[str, Callable[[], Awaitable[T]]]) -> dict[str, T]:
    """Run every case at once; their results by name. A failing case cancels the others (their own clean-up
    runs) and its exception names it, so the report says which case broke."""
    results: dict[str, T] = {}

    async def run(name: str, case: Callable[[], Awaitable[T]]) -> None:
        try:
            results[name] = await case()
        except Exception as exc:
            exc.add_note(f"in the case {name!r}")
            raise

    async with asyncio.TaskGroup() as group:
        for name, case in cases.items():
            group.create_task(run(name, case))
    return results


@contextlib.asynccontextmanager
async def own_sandbox() -> AsyncIterator[Sandbox]:
    """The local Post API, accepting the tests' key for their application; seeded, so fault draws replay. The `sandbox`
    fixture's, and one of its own for each case whose faults must not reach the other cases."""
    server = Sandbox(SandboxOptions(keys=Keys(post_api_key=KEY, application_id=APP), seed=7))
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
