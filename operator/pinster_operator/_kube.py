"""The Kubernetes calls the controller makes, with the official client, as plain dicts.

The frequent ones (status PUT, Event POST, GET of an upload) go through the client's
connection pool and credentials but skip its model (de)serialisation: see
:class:`JsonCalls`.

Blocking (run in worker threads). Status is written with PUT on the status subresource
carrying the ``resourceVersion`` read, so a decision taken on stale data fails with 409
and is taken again on fresh data.
"""

from __future__ import annotations

import os
import socket
from typing import Any
from urllib.parse import quote

import orjson
import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.client.rest import RESTResponse

from pinster_images import resource
from pinster_images.resource import (
    API_VERSION,
    GROUP,
    KIND,
    LABEL_MD5,
    LABEL_PART_OF,
    LABEL_STAGE,
    PART_OF,
    PLURAL,
    VERSION,
    Stage,
)

COMPONENT = "pinster-operator"


def _json(response: Any) -> Any:
    return orjson.loads(response.data)


def _discard(response: Any) -> None:
    """Read an unwanted answer to its end so its connection goes back to the pool.

    With ``_preload_content=False`` the client hands back urllib3's raw response; left
    unread, its connection is never returned and every later call (from any worker)
    pays a new TCP and TLS handshake with the API server.
    """
    response.drain_conn()
    response.release_conn()


def _uploads_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}"


def _upload_path(namespace: str, name: str) -> str:
    return f"{_uploads_path(namespace)}/{quote(name)}"


class JsonCalls:
    """The calls made several times per upload (upload GET, status PUT, Event POST), and
    the adoption sweep's upload POST, as plain JSON, through the client's connection pool, headers and credentials.

    The generated client walks every body through ``sanitize_for_serialization`` and
    every answer through its deserialiser: about a third of the CPU of such a call,
    for bodies that are plain JSON already. Errors are the client's own
    ``ApiException`` (404, 409, ...), as before. Methods carry the generated client's
    names, so what they do (and the RBAC they need) reads the same.
    """

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self._server_pool: urllib3.HTTPConnectionPool | None = None

    def get_namespaced_custom_object(self, namespace: str, name: str) -> Any:
        return self._request("GET", _upload_path(namespace, name))

    def create_namespaced_custom_object(self, namespace: str, body: dict[str, Any]) -> None:
        # The created upload arrives through the watch: its answer is not parsed.
        self._request("POST", _uploads_path(namespace), body, answer=False)

    def replace_namespaced_custom_object_status(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> Any:
        return self._request("PUT", _upload_path(namespace, name) + "/status", body)

    def read_namespaced_job(self, namespace: str, name: str) -> Any:
        return self._request(
            "GET", f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs/{quote(name)}"
        )

    def create_namespaced_event(self, namespace: str, body: dict[str, Any]) -> None:
        # The created Event is never read: its answer is not parsed.
        self._request("POST", f"/api/v1/namespaces/{quote(namespace)}/events", body, answer=False)

    def _request(
        self, method: str, path: str, body: dict[str, Any] | None = None, *, answer: bool = True
    ) -> Any:
        response = self._send(method, path, body)
        if not answer:
            _discard(response)
            return None
        return _json(response)

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """urllib3's response, unread: the caller reads it to its end. Raises
        ``ApiException`` for answers other than 2xx."""
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            **self.api.default_headers,
        }
        if self.api.cookie:
            headers["Cookie"] = self.api.cookie
        # Bearer tokens are read (and refreshed, e.g. projected ones) on every call.
        self.api.update_params_for_auth(headers, [], ["BearerToken"])
        pool = self._pool()
        if pool is None:
            return self.api.rest_client.request(
                method,
                self.api.configuration.host + path,
                headers=headers,
                body=body,
                _preload_content=False,
            )
        try:
            response = pool.urlopen(
                method,
                path,
                body=None if body is None else orjson.dumps(body),
                headers=headers,
                preload_content=False,
            )
        except urllib3.exceptions.SSLError as exc:
            raise ApiException(status=0, reason=f"{type(exc).__name__}\n{exc}") from exc
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=RESTResponse(response))
        return response

    def _pool(self) -> urllib3.HTTPConnectionPool | None:
        """The API server's connection pool from the client's pool manager (same TLS,
        size and retries), used directly: the manager's per-call URL parsing and pool
        lookup were a fifth of each call's CPU. None behind a proxy, where the
        manager's own request path is kept."""
        if self._server_pool is None:
            manager = self.api.rest_client.pool_manager
            if isinstance(manager, urllib3.ProxyManager):
                return None
            self._server_pool = manager.connection_from_url(self.api.configuration.host)
        return self._server_pool


class Kube:
    def __init__(self, api: client.ApiClient, namespaces: tuple[str, ...] = ()) -> None:
        self.api = api
        self.namespaces = namespaces
        self.custom = client.CustomObjectsApi(api)
        self.batch = client.BatchV1Api(api)
        self.core = client.CoreV1Api(api)
        self.json = JsonCalls(api)
        self.instance = os.environ.get("POD_NAME") or socket.gethostname()

    # --- ImageUploads ---

    def get_upload(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            obj: dict[str, Any] = self.json.get_namespaced_custom_object(namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return obj

    def create_upload(self, manifest: dict[str, Any]) -> bool:
        """Create; False when it already exists (the name is deterministic)."""
        try:
            self.json.create_namespaced_custom_object(manifest["metadata"]["namespace"], manifest)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    def replace_status(self, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "resourceVersion": meta["resourceVersion"],
            },
            "spec": obj.get("spec"),
            "status": status,
        }
        result: dict[str, Any] = self.json.replace_namespaced_custom_object_status(
            meta["namespace"], meta["name"], body
        )
        return result

    def remove_annotation(self, namespace: str, name: str, key: str) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"annotations": {key: None}}}
        )

    def delete_upload(self, namespace: str, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def uploads_with_md5(self, md5: str) -> list[dict[str, Any]]:
        selector = f"{LABEL_MD5}={md5}"
        if self.namespaces:
            items: list[dict[str, Any]] = []
            for namespace in self.namespaces:
                listed = self.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL, label_selector=selector
                )
                items += listed.get("items", [])
            return items
        listed = self.custom.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, label_selector=selector
        )
        return list(listed.get("items", []))

    # --- Jobs ---

    def list_jobs(self, namespace: str, stage: Stage) -> list[dict[str, Any]]:
        """The stage's Jobs that have not succeeded (running, or failed).

        Succeeded Jobs are never reused (see ``_batching.plan``) and are most of what
        a namespace holds until their TTL: listing them made every batch parse all
        the Jobs of the last hour.
        """
        response = self.batch.list_namespaced_job(
            namespace,
            label_selector=f"{LABEL_PART_OF}={PART_OF},{LABEL_STAGE}={stage.value}",
            field_selector="status.successful=0",
            _preload_content=False,
        )
        return list(_json(response).get("items", []))

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            job: dict[str, Any] = self.json.read_namespaced_job(namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return job

    def create_job(self, manifest: dict[str, Any]) -> bool:
        """Create; False when it already exists (same deterministic name)."""
        try:
            response = self.batch.create_namespaced_job(
                manifest["metadata"]["namespace"], manifest, _preload_content=False
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        _discard(response)
        return True

    def job_pods(self, namespace: str, job: str) -> list[dict[str, Any]]:
        response = self.core.list_namespaced_pod(
            namespace, label_selector=f"job-name={job}", _preload_content=False
        )
        return list(_json(response).get("items", []))

    # --- Events ---

    def event(self, obj: dict[str, Any], type_: str, reason: str, message: str) -> None:
        body = resource.event(
            obj, type_, reason, message, component=COMPONENT, instance=self.instance
        )
        self.json.create_namespaced_event(obj["metadata"]["namespace"], body)
