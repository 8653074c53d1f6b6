"""The operator's watch streams: list, then watch from the list's resourceVersion, for ever.

Two streams feed the controller: ImageUploads, and the Jobs it launched (label
``part-of=pinster-images``). Why not kopf's watching: kopf runs every event through its
handler pipeline (cause detection, diff-base, handler state, context variables, a
worker task per object), about 0.8 ms of CPU per event, and every upload makes six
ImageUpload events (its creation and the operator's own status writes) and a share of
its Jobs' events: over a third of the operator's CPU per upload. A stream parses each
event once and hands it to the controller. kopf runs the operator around them: login,
start-up and clean-up, signals, and the liveness endpoint.

One stream per kind and watched namespace (or per kind for the cluster), each in its
own thread, blocking on the API server like the rest of :mod:`._kube`. A watch that
ends (server timeout, dropped connection, a read silent for longer than the server's
timeout) resumes from the last resourceVersion seen; a version the API server no
longer has (410 Gone) means a fresh list. Deletions missed meanwhile need nothing here:
every upload the controller knows is due a reconcile, which finds it gone and forgets
it, and a Job that vanished is found missing by the reconcile that asks for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from pinster_images.resource import GROUP, LABEL_PART_OF, PART_OF, PLURAL, VERSION
from pinster_operator._kube import JsonCalls, _json

logger = logging.getLogger("pinster_operator")

#: Called in the stream's thread with a batch of (event type, object), the type None
#: for objects from a list, and whether to return only once the batch is taken.
Deliver = Callable[[list[tuple[str | None, dict[str, Any]]], bool], None]


class Expired(Exception):
    """The resourceVersion to resume from is gone (410): list again."""


@dataclass(frozen=True)
class Kind:
    """What a stream watches: an API group/version path, the plural, a label selector."""

    prefix: str
    plural: str
    selector: str = ""

    def path(self, namespace: str | None) -> str:
        if namespace is None:
            return f"{self.prefix}/{self.plural}"
        return f"{self.prefix}/namespaces/{quote(namespace)}/{self.plural}"


UPLOADS = Kind(f"/apis/{GROUP}/{VERSION}", PLURAL)
JOBS = Kind("/apis/batch/v1", "jobs", f"{LABEL_PART_OF}={PART_OF}")


def _lines(response: Any) -> Iterator[bytes]:
    """The newline-delimited JSON of a watch response, line by line, as it arrives."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from (line for line in complete if line.strip())
    if pending.strip():
        yield pending


class Stream:
    """One kind in one namespace (or the cluster), watched in its own thread: every
    listed object and every event goes to ``deliver`` (see :data:`Deliver`)."""

    def __init__(
        self,
        api: client.ApiClient,
        kind: Kind,
        namespace: str | None,
        deliver: Deliver,
        *,
        page_size: int = 500,
        server_timeout: int = 300,
    ) -> None:
        self.calls = JsonCalls(api)
        self.kind = kind
        self.namespace = namespace
        self.deliver = deliver
        self.page_size = page_size
        self.server_timeout = server_timeout
        self._stop = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None
        #: monotonic time of the API server's last answer (a list page, a watch
        #: opened, an event or bookmark): what the liveness probe calls fresh
        self.last_contact: float | None = None
        self._started = 0.0

    @property
    def scope(self) -> str:
        return f"{self.kind.plural} in {self.namespace or 'all namespaces'}"

    # --- lifecycle ---

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread = threading.Thread(
            target=self.run, name=f"{self.kind.plural}-{self.namespace or 'cluster'}", daemon=True
        )
        self._thread.start()

    def problem(self, now: float | None = None) -> str | None:
        """Why this stream cannot be trusted (its thread died, or the API server has
        not answered it for longer than a watch lasts), else None."""
        if self._thread is None or not self._thread.is_alive():
            return f"the stream of {self.scope} has stopped"
        now = time.monotonic() if now is None else now
        # A healthy watch hears from the server at least once per server_timeout (the
        # watch ends and is opened again), usually far more often (bookmarks, events).
        limit = self.server_timeout + 90.0
        heard = self.last_contact or self._started
        if now - heard > limit:
            return f"the stream of {self.scope} has not heard from the API server for {now - heard:.0f}s"
        return None

    def stop(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            response.shutdown()  # unblocks the read in the stream's thread
        if self._thread is not None:
            self._thread.join(timeout=5)

    def run(self) -> None:
        version: str | None = None
        delay = 1.0
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self.list()
                version = self.watch(version)
                delay = 1.0
            except Expired:
                logger.info("watch of %s expired; listing again", self.scope)
                version = None
            except Exception as exc:
                if self._stop.is_set():
                    return
                logger.warning(
                    "stream of %s failed (%s: %s); again in %.0fs",
                    self.scope,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                self._stop.wait(delay)
                delay = min(delay * 2, 30.0)

    # --- one list, one watch ---

    def list(self) -> str:
        """Deliver every object, page by page; returns the list's resourceVersion."""
        token = ""
        while True:
            query = {"limit": self.page_size, **({"continue": token} if token else {})}
            answer = _json(self._get(query, stream=False))
            self.last_contact = time.monotonic()
            # One batch per page, delivered before the next is read: with thousands of
            # uploads the bodies never pile up in the event loop's queue.
            self.deliver([(None, item) for item in answer.get("items") or []], True)
            meta = answer.get("metadata") or {}
            token = meta.get("continue") or ""
            if not token:
                return str(meta.get("resourceVersion") or "")

    def watch(self, version: str) -> str:
        """Deliver events from ``version`` until the server ends the watch; returns the
        last resourceVersion seen. Raises :class:`Expired` when ``version`` is gone."""
        query = {
            "watch": "true",
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": self.server_timeout,
        }
        try:
            self._response = response = self._get(query, stream=True)
        except ApiException as exc:
            if exc.status == 410:
                raise Expired from exc
            raise
        self.last_contact = time.monotonic()
        try:
            for line in _lines(response):
                self.last_contact = time.monotonic()
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired
                    raise RuntimeError(f"watch error: {obj.get('message') or obj}")
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if kind != "BOOKMARK":
                    self.deliver([(kind, obj)], False)
        except BaseException:
            response.close()  # left mid-stream: the connection cannot be reused
            raise
        finally:
            self._response = None
        response.release_conn()
        return version

    def _get(self, query: dict[str, Any], *, stream: bool) -> Any:
        # A watch's read timeout outlives the server's own watch timeout by a margin.
        timeout = (10.0, self.server_timeout + 30.0) if stream else (10.0, 60.0)
        if self.kind.selector:
            query = {**query, "labelSelector": self.kind.selector}
        return self.calls.send(
            "GET", f"{self.kind.path(self.namespace)}?{urlencode(query)}", timeout=timeout
        )
