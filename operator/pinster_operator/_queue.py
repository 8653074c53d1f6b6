"""The work queue: ImageUploads waiting to be reconciled, and the timers that re-queue them.

One owner: the event loop. Every method here is called on it; worker threads reach the
queue only through :meth:`WorkQueue.threadsafe` (``call_soon_threadsafe``), so no lock is
needed and no timer can be lost to a race between a worker and the scheduler.

Each key is handed to one worker at a time: a key queued again while a worker has it is
marked dirty and queued once that worker is done. A single scheduler task fires the
timers (waiting for a Job, a notification backoff, a retention or TTL deadline), so no
per-object timer task exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

Key = tuple[str, str]


class WorkQueue:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[Key] = asyncio.Queue()
        self._queued: set[Key] = set()
        self._processing: set[Key] = set()
        self._dirty: set[Key] = set()
        self._due: dict[Key, float] = {}
        self._heap: list[tuple[float, Key]] = []
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._owner: int | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that owns the queue (the one :meth:`run_scheduler` runs on)."""
        self._loop = loop
        self._owner = threading.get_ident()

    def threadsafe(self, method: Callable[..., Any], *args: Any) -> None:
        """Call ``method(*args)`` on the queue's loop, from any thread (at once when
        called on it, or before the queue is bound to one: nothing else runs then)."""
        if self._loop is None or threading.get_ident() == self._owner:
            method(*args)
        else:
            self._loop.call_soon_threadsafe(method, *args)

    # --- on the loop ---

    @property
    def depth(self) -> int:
        """Keys waiting for a worker (timers not counted)."""
        return self._queue.qsize()

    @property
    def timers(self) -> int:
        return len(self._due)

    def in_progress(self, key: Key) -> bool:
        return key in self._processing

    def enqueue(self, key: Key) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        if key in self._queued:
            return
        self._queued.add(key)
        self._queue.put_nowait(key)

    def enqueue_after(self, key: Key, delay: float) -> None:
        """Queue ``key`` in ``delay`` seconds, or earlier if already due earlier."""
        if delay <= 0:
            self.enqueue(key)
            return
        when = time.monotonic() + delay
        current = self._due.get(key)
        if current is not None and current <= when:
            return
        self._due[key] = when
        heapq.heappush(self._heap, (when, key))
        self._wakeup.set()

    def cancel(self, key: Key) -> None:
        """Drop the key's timer (the upload is gone). A queued key still reaches a
        worker, which finds nothing to do."""
        self._due.pop(key, None)

    async def take(self) -> Key:
        """The next key for a worker; pass it back with :meth:`done`."""
        key = await self._queue.get()
        self._queued.discard(key)
        self._processing.add(key)
        return key

    def done(self, key: Key, requeue_after: float | None) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.enqueue(key)
        elif requeue_after is not None:
            self.enqueue_after(key, requeue_after)

    async def run_scheduler(self) -> None:
        """Fire timers as they fall due, for ever."""
        while True:
            now = time.monotonic()
            while self._heap and self._heap[0][0] <= now:
                when, key = heapq.heappop(self._heap)
                if self._due.get(key) == when:
                    del self._due[key]
                    self.enqueue(key)
            timeout = self._heap[0][0] - now if self._heap else 3600.0
            self._wakeup.clear()
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
            # that arrives as the event is set, and stop() then waits out the timeout.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
