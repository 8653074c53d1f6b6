"""Batching: uploads that need a Job for the same stage and namespace within a short
window share one Job (at most ``max_size`` uploads each).

:func:`plan` is the pure part: given the uploads waiting and the Jobs that already exist,
which uploads join an existing unfinished Job (after an operator restart, or when a
status write was lost) and which new batches to create. :class:`Batcher` collects
uploads on the event loop and calls a flush function once the window closes or the
batch is full.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pinster_images.resource import Stage
from pinster_operator._jobs import UploadRef, is_finished, serves

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    #: upload name -> name of an existing Job already serving it
    reuse: dict[str, str] = field(default_factory=dict)
    #: new Jobs to create, each a list of uploads
    batches: list[list[UploadRef]] = field(default_factory=list)


def plan(waiting: Sequence[UploadRef], existing: Sequence[dict[str, Any]], max_size: int) -> Plan:
    """Reuse unfinished Jobs that serve an upload; batch the rest in arrival order.

    Finished Jobs are never reused: a failed one is why the upload waits again, and a
    successful one would have left a result the controller reads first.
    """
    reuse: dict[str, str] = {}
    rest: list[UploadRef] = []
    seen: set[str] = set()
    live = [job for job in existing if not is_finished(job)]
    for ref in waiting:
        if ref.name in seen:
            continue
        seen.add(ref.name)
        match = next((job for job in live if serves(job, ref)), None)
        if match is not None:
            reuse[ref.name] = str(match["metadata"]["name"])
        else:
            rest.append(ref)
    batches = [rest[i : i + max_size] for i in range(0, len(rest), max_size)]
    return Plan(reuse=reuse, batches=batches)


FlushFn = Callable[[str, Stage, list[UploadRef]], Awaitable[None]]


class Batcher:
    """Groups uploads per (namespace, stage); flushes when full or when the window ends.

    The window starts with the first upload after a Job was started for the same key.
    A quiet key (no Job started within the window) flushes as soon as its uploads stop
    coming (``SETTLE`` without a new one, ``GATHER`` at most): a lone upload is hardly
    delayed, while the uploads one finished Job releases together (reconciled one after
    the other by the workers, milliseconds apart) still share the next stage's Job.
    """

    #: the longest wait of a quiet key: a fraction of a Pod's start
    GATHER = 0.2
    #: a quiet key's group is complete when no upload joined it for this long: several
    #: times the gap between two workers' reconciles of one finished Job's uploads
    SETTLE = 0.04

    def __init__(self, window: float, max_size: int, flush: FlushFn) -> None:
        self.window = window
        self.max_size = max_size
        self._flush = flush
        self._groups: dict[tuple[str, Stage], list[UploadRef]] = {}
        self._timers: dict[tuple[str, Stage], asyncio.TimerHandle] = {}
        #: a quiet key's group -> when its gathering ends at the latest (loop time)
        self._gathering: dict[tuple[str, Stage], float] = {}
        #: (namespace, name, stage) waiting or being flushed: adding again is a no-op.
        self._members: set[tuple[str, str, Stage]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_start: dict[tuple[str, Stage], float] = {}

    def add(self, stage: Stage, ref: UploadRef) -> None:
        """Must be called on the event loop."""
        member = (ref.namespace, ref.name, stage)
        if member in self._members:
            return
        self._members.add(member)
        key = (ref.namespace, stage)
        group = self._groups.setdefault(key, [])
        group.append(ref)
        if len(group) >= self.max_size:
            self._start(key)
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        if key in self._gathering:  # one more companion: wait a little longer for the next
            self._timers[key].cancel()
        elif key in self._timers:  # under load: the window's timer stands
            return
        elif now - self._last_start.get(key, float("-inf")) >= self.window:
            # Leading edge: a quiet key gathers only the companions arriving now.
            self._gathering[key] = now + min(self.GATHER, self.window)
        else:  # under load: everything that comes within the window
            self._timers[key] = loop.call_at(now + self.window, self._start, key)
            return
        at = min(now + self.SETTLE, self._gathering[key])
        self._timers[key] = loop.call_at(at, self._start, key)

    def _start(self, key: tuple[str, Stage]) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._gathering.pop(key, None)
        group = self._groups.pop(key, [])
        if not group:
            return
        self._last_start[key] = asyncio.get_running_loop().time()
        task = asyncio.get_running_loop().create_task(self._run(key, group))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, key: tuple[str, Stage], group: list[UploadRef]) -> None:
        namespace, stage = key
        try:
            await self._flush(namespace, stage, group)
        except Exception:
            # The uploads are re-added by their next reconcile (poll interval).
            logger.exception("creating a %s Job in %s failed", stage, namespace)
        finally:
            for ref in group:
                self._members.discard((ref.namespace, ref.name, stage))

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._gathering.clear()
        self._groups.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
