"""Batching: uploads that need a Job for the same stage and namespace within a short
window share one Job (at most ``max_size`` uploads each).

:func:`plan` is the pure part: given the uploads waiting and the Jobs that already exist,
which uploads join an existing unfinished Job (after an operator restart, or when a
status write was lost) and which new batches to create. :class:`Batcher` collects
uploads on the event loop and calls a flush function once the window closes or the
batch is full, as long as fewer than ``max_running`` of the key's Jobs are unfinished.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Sequence
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


#: Creates the Jobs of a group; answers the names of the Jobs that serve it.
FlushFn = Callable[[str, Stage, list[UploadRef]], Awaitable[Collection[str]]]
Key = tuple[str, Stage]


class Batcher:
    """Groups uploads per (namespace, stage); flushes when full or when the window ends.

    The window starts with the first upload after a Job was started for the same key.
    A quiet key (no Job started within the window) flushes as soon as its uploads stop
    coming (``SETTLE`` without a new one, ``GATHER`` at most): a lone upload is hardly
    delayed, while the uploads one finished Job releases together (reconciled one after
    the other by the workers, milliseconds apart) still share the next stage's Job.

    With ``max_running`` Jobs of a key unfinished, a group whose window is over is *held*:
    it keeps growing until one of them ends (:meth:`job_ended`), then starts with as many
    Jobs as there are free slots. Under a burst, uploads then wait in larger Jobs instead
    of each window starting its own: every pod start costs the node about a second of
    CPU, which is spent on nothing else when the cores are already busy. A lone upload
    is never held (no Job is running). The controller reports the Jobs it sees
    (:meth:`job_running`, :meth:`job_ended`); a Job counts for ``job_lifetime`` seconds at
    most (its deadline), so a lost event cannot hold a key for ever.
    """

    #: the longest wait of a quiet key: a fraction of a Pod's start
    GATHER = 0.2
    #: a quiet key's group is complete when no upload joined it for this long: several
    #: times the gap between two workers' reconciles of one finished Job's uploads
    SETTLE = 0.04

    #: Jobs remembered as ended (a Job may end before its creation is reported back)
    ENDED_MEMORY = 1024

    def __init__(
        self,
        window: float,
        max_size: int,
        flush: FlushFn,
        *,
        max_running: int = 0,
        job_lifetime: float = math.inf,
    ) -> None:
        self.window = window
        self.max_size = max_size
        self.max_running = max_running  # 0: no cap
        self.job_lifetime = job_lifetime
        self._flush = flush
        #: unfinished Jobs per key: name -> loop time after which it no longer counts
        self._running: dict[Key, dict[str, float]] = {}
        #: Jobs being created per key (a flush in progress)
        self._creating: dict[Key, int] = {}
        self._ended: OrderedDict[tuple[str, str], None] = OrderedDict()
        #: keys whose window is over, waiting for a free slot
        self._held: set[Key] = set()
        self._groups: dict[Key, list[UploadRef]] = {}
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        #: a quiet key's group -> when its gathering ends at the latest (loop time)
        self._gathering: dict[Key, float] = {}
        #: (namespace, name, stage) waiting or being flushed: adding again is a no-op.
        self._members: set[tuple[str, str, Stage]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_start: dict[Key, float] = {}

    def add(self, stage: Stage, ref: UploadRef) -> None:
        """Must be called on the event loop."""
        member = (ref.namespace, ref.name, stage)
        if member in self._members:
            return
        self._members.add(member)
        key = (ref.namespace, stage)
        group = self._groups.setdefault(key, [])
        group.append(ref)
        if key in self._held:  # it starts when a Job of the key ends
            return
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

    def _start(self, key: Key) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._gathering.pop(key, None)
        group = self._groups.pop(key, [])
        if not group:
            self._held.discard(key)
            return
        loop = asyncio.get_running_loop()
        slots = self._free_slots(key, loop.time())
        taken = group if slots is None else group[: slots * self.max_size]
        if len(taken) < len(group):
            self._groups[key] = group[len(taken) :]
            self._held.add(key)
            # Looked at again now and then: the Job that would free a slot may end unseen.
            self._timers[key] = loop.call_at(loop.time() + max(self.window, 1.0), self._start, key)
        else:
            self._held.discard(key)
        if not taken:
            return
        self._last_start[key] = loop.time()
        creating = math.ceil(len(taken) / self.max_size)
        self._creating[key] = self._creating.get(key, 0) + creating
        task = loop.create_task(self._run(key, taken, creating))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _free_slots(self, key: Key, now: float) -> int | None:
        """How many more Jobs the key may start now (``None``: no cap)."""
        if self.max_running <= 0:
            return None
        running = self._running.get(key, {})
        for name in [n for n, until in running.items() if until <= now]:
            del running[name]
        return max(0, self.max_running - len(running) - self._creating.get(key, 0))

    def job_running(self, namespace: str, stage: Stage, name: str) -> None:
        """One of our Jobs is unfinished (from its events: after a restart too). On the loop."""
        if (namespace, name) in self._ended:
            return
        until = asyncio.get_running_loop().time() + self.job_lifetime
        self._running.setdefault((namespace, stage), {}).setdefault(name, until)

    def job_ended(self, namespace: str, stage: Stage, name: str) -> None:
        """One of our Jobs has finished or is gone: a held group may start. On the loop."""
        self._ended[(namespace, name)] = None
        if len(self._ended) > self.ENDED_MEMORY:
            self._ended.popitem(last=False)
        key = (namespace, stage)
        if self._running.get(key, {}).pop(name, None) is not None and key in self._held:
            self._start(key)

    async def _run(self, key: Key, group: list[UploadRef], creating: int) -> None:
        namespace, stage = key
        jobs: Collection[str] = ()
        try:
            jobs = await self._flush(namespace, stage, group)
        except Exception:
            # The uploads are re-added by their next reconcile (poll interval).
            logger.exception("creating a %s Job in %s failed", stage, namespace)
        finally:
            self._creating[key] -= creating
            for name in jobs:
                self.job_running(namespace, stage, name)
            for ref in group:
                self._members.discard((ref.namespace, ref.name, stage))
            if key in self._held and not jobs:  # the slots it held are free again
                self._start(key)

    async def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._gathering.clear()
        self._groups.clear()
        self._held.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
