"""The bridge's transform workers as the operating system sees them."""

from __future__ import annotations

import psutil

from devtools.testkit.bridge_child import BridgeProcess


def transform_workers(bridge: BridgeProcess) -> list[psutil.Process]:
    """The bridge's transform worker processes (not multiprocessing's resource tracker)."""
    children = psutil.Process(bridge.process.pid).children()
    return [child for child in children if "--multiprocessing-fork" in child.cmdline()]


def alive(process: psutil.Process) -> bool:
    try:
        return bool(process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
