"""Shutdown belongs to the bridge: its transform workers outlive the signals it handles, and never outlive it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import psutil
import pytest

from bridge.decoding.transform import start_worker
from devtools.testkit.records import ROOT


@pytest.fixture
def pool() -> Iterator[ProcessPoolExecutor]:
    executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker)
    yield executor
    executor.shutdown(wait=False, cancel_futures=True)
    for child in multiprocessing.active_children():
        child.kill()


def gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_worker_ignores_the_signals_the_bridge_drains_on(pool: ProcessPoolExecutor, signum: int) -> None:
    """SIGTERM or Ctrl-C to the process group reaches the workers too; a worker dead of it would break the pool."""
    pid = pool.submit(os.getpid).result(timeout=30)
    os.kill(pid, signum)
    assert not gone(pid, 1.0), "the worker is still there"
    assert pool.submit(os.getpid).result(timeout=10) == pid, "and still works"


def test_workers_end_when_the_pool_shuts_down(pool: ProcessPoolExecutor) -> None:
    pid = pool.submit(os.getpid).result(timeout=30)
    pool.shutdown(wait=True)
    assert gone(pid, 5.0)


def test_workers_end_when_the_bridge_is_killed() -> None:
    """SIGKILL leaves the pool no chance to stop its workers: each watches its parent and ends with it."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import multiprocessing, os, time
                from concurrent.futures import ProcessPoolExecutor
                from bridge.decoding.transform import start_worker
                if __name__ == "__main__":
                    pool = ProcessPoolExecutor(
                        2, mp_context=multiprocessing.get_context("spawn"), initializer=start_worker
                    )
                    print(*{pool.submit(os.getpid).result() for _ in range(8)}, flush=True)
                    time.sleep(60)
                """
            ),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert workers
        parent.kill()
        parent.wait()
        assert all(gone(pid, 10.0) for pid in workers), "no worker outlives the bridge"
    finally:
        parent.kill()
