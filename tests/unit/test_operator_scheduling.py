"""The controller's queue and timers under concurrency: the event loop owns them while
workers (threads) forget uploads, and PINSTER_WORKERS reconciles run at once."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pinster_operator import Controller

from tests.support.operator_units import FakeKube, settings
from tests.support.storage import DirectoryStorage


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switch every microsecond, so that races needing an unlucky switch happen."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def controller(tmp_path: Path, workers: int) -> Controller:
    return Controller(
        settings(PINSTER_WORKERS=str(workers)),
        FakeKube(),  # type: ignore[arg-type]
        DirectoryStorage(tmp_path),
    )


def test_a_worker_that_finds_an_upload_gone_changes_the_timers_on_the_loop(
    tmp_path: Path,
) -> None:
    c = controller(tmp_path, 2)
    cancelled_on: list[int] = []
    cancel = c.queue.cancel

    def recording_cancel(key: tuple[str, str]) -> None:
        cancelled_on.append(threading.get_ident())
        cancel(key)

    c.queue.cancel = recording_cancel  # type: ignore[method-assign]

    async def main() -> int:
        c.start()
        try:
            c.queue.enqueue_after(("ns", "gone"), 60)
            c.queue.enqueue(("ns", "gone"))  # a worker GETs it: 404, so it forgets it
            deadline = time.monotonic() + 5
            while not cancelled_on and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert c.queue.timers == 0
            return threading.get_ident()
        finally:
            await c.stop()

    loop_thread = asyncio.run(main())
    assert cancelled_on == [loop_thread]


def test_timers_keep_firing_while_workers_forget_uploads(
    tmp_path: Path, fast_switching: None
) -> None:
    c = controller(tmp_path, 2)
    fired: list[tuple[str, str]] = []

    async def main() -> None:
        c.start()
        c.queue.enqueue = fired.append  # type: ignore[method-assign]
        loop = asyncio.get_running_loop()
        keys = [("ns", f"u-{i}") for i in range(200)]
        stop = threading.Event()

        def forget_all() -> None:  # as workers do when uploads turn out deleted
            while not stop.is_set():
                for key in reversed(keys):
                    c.forget(key)

        forgetting = [loop.run_in_executor(None, forget_all) for _ in range(3)]
        try:
            started = time.monotonic()
            while time.monotonic() - started < 2:
                for key in keys:
                    c.queue.enqueue_after(key, 0.0005)
                await asyncio.sleep(0.001)
            stop.set()
            await asyncio.gather(*forgetting)
            fired.clear()
            c.queue.enqueue_after(("ns", "last"), 0.01)
            deadline = time.monotonic() + 5
            while ("ns", "last") not in fired and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert c.scheduler is not None and not c.scheduler.done()
        finally:
            stop.set()
            await c.stop()

    asyncio.run(main())
    assert ("ns", "last") in fired, "the scheduler died: timed retries, polls and TTLs stopped"


def test_reconciles_run_as_many_at_once_as_workers_say(tmp_path: Path) -> None:
    workers = 40  # more than asyncio's default executor has threads on this machine
    c = controller(tmp_path, workers)
    running, peak, lock = 0, 0, threading.Lock()
    release = threading.Event()

    def reconcile(key: tuple[str, str]) -> Any:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(10)
        with lock:
            running -= 1

    c.reconcile = reconcile  # type: ignore[method-assign]

    async def main() -> None:
        c.start()
        try:
            for i in range(workers * 2):
                c.queue.enqueue(("ns", f"u-{i}"))
            deadline = time.monotonic() + 10
            while peak < workers and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
        finally:
            release.set()
            await c.stop()

    asyncio.run(main())
    assert peak == workers
