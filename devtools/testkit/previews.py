"""Helpers shared by more than one test module."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from devtools.testkit.bridge_child import bridge_command
from devtools.testkit.records import KEY

NOW_US = int(time.time() * 1_000_000)


def game(seq: int) -> dict[str, Any]:
    return {
        "user": {"id": 1000 + seq},
        "type": f"level_{seq}",
        "ts": NOW_US - seq * 1_000_000,
        "props": {"zone": "north"},
        "level": seq,
        "price": None,
    }


async def preview(*args: str) -> tuple[int, str, str]:
    async with bridge_command("preview", *args, env={"BRIDGE_POST_API_KEY": KEY}) as process:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    assert KEY not in out.decode() + err.decode(), "the Post API key is never shown"
    return process.returncode, out.decode(), err.decode()
