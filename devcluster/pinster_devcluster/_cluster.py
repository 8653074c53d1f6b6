"""``DevCluster``: bring the cluster up, down, and say how it is doing."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pinster_devcluster import (
    _addons,
    _builds,
    _configs,
    _health,
    _host,
    _kubeconfig,
    _machine,
    _network,
    _objectstore,
    _procs,
    _website,
    paths,
)
from pinster_devcluster._binaries import check_bin_dir, default_bin_dir, default_cache_dir
from pinster_devcluster._components import (
    APISERVER,
    COMPONENTS,
    CONTAINERD,
    CONTROL_PLANE,
    CONTROLLER_MANAGER,
    ETCD,
    KUBE_PROXY,
    KUBELET,
    NODE,
    OBJECTSTORE,
    REGISTRY,
    SCHEDULER,
    WEBSITE,
    Layout,
    Ports,
)
from pinster_devcluster._images import BuildKit, ImageRef
from pinster_devcluster._network import NODE_IP, NODE_NAME, SERVICE_IP
from pinster_devcluster._pki import generate
from pinster_devcluster._settings import DevClusterSettings
from pinster_images.errors import PermanentError

log = logging.getLogger(__name__)

_LOG_TAIL = 20
#: what the kubelet and CNI plugins create outside the state directory
_HOST_DIRS = (
    Path("/var/lib/kubelet"),
    Path("/var/log/containers"),
    Path("/var/log/pods"),
    Path("/run/containerd"),
)
#: iptables chains of kube-proxy and the kubelet (KUBE-*) and the CNI plugins (CNI-*)
_CHAIN_PREFIXES = ("KUBE-", "CNI-")


class StartupError(PermanentError):
    """A component died or the cluster did not become ready; the message has the log tail."""

    reason = "DevClusterStartFailed"


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    #: running | stopped | crashed (pid file present, process gone) | disabled
    state: str
    pid: int | None
    detail: str
    log: Path


@dataclass(frozen=True)
class UpResult:
    seconds: float
    already_running: bool
    kubeconfig: Path


def log_tail(path: Path, lines: int = _LOG_TAIL) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class DevCluster:
    """One local cluster whose files all live in ``state_dir``: a control plane, and
    (``node=True``) a real node of this machine running Pods in containers."""

    def __init__(
        self,
        state_dir: Path,
        bin_dir: Path | None = None,
        *,
        start_timeout: float = 120.0,
        stop_grace: float = 10.0,
        node: bool = True,
        cache_dir: Path | None = None,
    ) -> None:
        self.state_dir = Path(state_dir).expanduser().absolute()
        self.bin_dir = (Path(bin_dir) if bin_dir else default_bin_dir(os.environ)).absolute()
        self.cache_dir = (cache_dir or default_cache_dir(os.environ)).absolute()
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        self.node = node

    @classmethod
    def from_settings(cls, settings: DevClusterSettings) -> DevCluster:
        return cls(
            settings.state_dir,
            settings.bin_dir,
            start_timeout=settings.start_timeout,
            stop_grace=settings.stop_grace,
            node=settings.node,
            cache_dir=settings.cache_dir,
        )

    # -- what callers use -----------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return paths.kubeconfig(self.state_dir)

    @property
    def env(self) -> dict[str, str]:
        """The environment for subprocesses: KUBECONFIG set, the binaries first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", os.defpath)])
        return env

    @property
    def server(self) -> str | None:
        layout = self._saved_layout()
        return None if layout is None else layout.server

    @property
    def node_ip(self) -> str:
        """The node's address: where Pods reach the machine (servers tests run for them
        listen here)."""
        return NODE_IP

    @property
    def registry(self) -> str:
        """``host:port`` of the node's image registry (HTTPS, trusting ``ca_cert``)."""
        layout = self._layout()
        return layout.registry

    @property
    def s3(self) -> _objectstore.S3Endpoint:
        """The node's object store: URL, credentials, the two buckets made at start."""
        access, secret = _objectstore.credentials(self.state_dir)
        layout = self._layout()
        return _objectstore.S3Endpoint(layout.objectstore_url, access, secret, layout.website_url)

    @property
    def ca_cert(self) -> Path:
        return paths.pki_dir(self.state_dir) / "ca.crt"

    def components(self) -> tuple[str, ...]:
        """The components this cluster runs: as it was started (cluster.json), else as
        this object was asked to start it."""
        layout = self._saved_layout()
        node = layout.node if layout is not None else self.node
        return COMPONENTS if node else CONTROL_PLANE

    def info(self) -> dict[str, object]:
        """What a script needs to deploy onto this cluster (``devcluster info``)."""
        layout = self._layout()
        info: dict[str, object] = {
            "kubeconfig": str(self.kubeconfig),
            "server": layout.server,
            "ca_cert": str(self.ca_cert),
        }
        if layout.node:
            s3 = self.s3
            info |= {
                "node_ip": NODE_IP,
                "registry": layout.registry,
                "s3": {
                    "url": s3.url,
                    "region": s3.region,
                    "upload_bucket": s3.upload_bucket,
                    "public_bucket": s3.public_bucket,
                    "public_url": s3.public_url(),
                    "access_key": s3.access_key,
                    "secret_key": s3.secret_key,
                },
            }
        return info

    def up(self) -> UpResult:
        started_at = time.monotonic()
        check_bin_dir(self.bin_dir, node=self.node)
        wanted = COMPONENTS if self.node else CONTROL_PLANE
        with self._lock(), _machine.locked() if self.node else contextlib.nullcontext():
            if self.node:
                self._claim_machine()
            states = {s.name: s.state for s in self.status()}
            running = [c for c in wanted if states[c] == "running"]
            if (
                len(running) == len(wanted)
                and self.components() == wanted
                and self._apiserver_ready()
            ):
                return UpResult(time.monotonic() - started_at, True, self.kubeconfig)
            if any(state in ("running", "crashed") for state in states.values()):
                # Half a cluster is no cluster: start again from a clean process table
                # (etcd's data, the certificates and the registry's images are kept).
                log.info("restarting a partly running devcluster: %s", states)
                self._stop_all()
            self._start()
        return UpResult(time.monotonic() - started_at, False, self.kubeconfig)

    def down(self, *, purge: bool = False) -> list[_procs.ProcessRecord]:
        """Stop every process (and what it spawned, the Pods' containers included) and
        undo what the node changed on this machine; return the processes stopped.
        ``purge`` also deletes the state directory (etcd data, certificates, images)."""
        with self._lock():
            stopped = self._stop_all()
        if purge and self.state_dir.exists():
            if not (
                paths.cluster_file(self.state_dir).exists()
                or paths.pki_dir(self.state_dir).exists()
            ):
                raise PermanentError(
                    f"refusing to delete {self.state_dir}: it does not look like a devcluster state directory"
                )
            shutil.rmtree(self.state_dir)
        return stopped

    def status(self) -> list[ComponentStatus]:
        expected = self.components()
        layout = self._saved_layout()
        result = []
        for name in COMPONENTS:
            record = _procs.read_record(paths.pid_file(self.state_dir, name))
            logfile = paths.component_log(self.state_dir, name)
            if record is None:
                state = "stopped" if name in expected else "disabled"
                detail = "" if name in expected else "disabled (no node: --no-node)"
                result.append(ComponentStatus(name, state, None, detail, logfile))
            elif _procs.is_alive(record):
                detail = self._url(name, layout)
                if name == APISERVER:
                    detail += " (ready)" if self._apiserver_ready() else " (not ready)"
                result.append(ComponentStatus(name, "running", record.pid, detail, logfile))
            else:
                code = _procs.exit_code(record.pid)
                said = f"exit code {code}" if code is not None else "process gone"
                detail = f"pid {record.pid}: {said}; last log lines:\n{log_tail(logfile, 10)}"
                result.append(ComponentStatus(name, "crashed", record.pid, detail, logfile))
        return result

    def healthy(self) -> bool:
        states = {s.name: s.state for s in self.status()}
        return all(states[c] == "running" for c in self.components()) and self._apiserver_ready()

    def stop_component(self, name: str) -> None:
        """Stop one component (an outage, in tests); ``start_component`` brings it back.
        ``status`` shows it stopped meanwhile; ``up`` would restart the whole cluster."""
        with self._lock():
            self._stop(name, _procs.read_record(paths.pid_file(self.state_dir, name)))

    def start_component(self, name: str) -> None:
        """Start one stopped component again, as ``up`` starts it (same ports, data)."""
        with self._lock():
            self._spawn(self._layout(), name)

    def set_website_redirect(self, bucket: str, generate_url: str | None) -> None:
        """Send reads of missing keys of ``bucket`` through the website front to
        ``generate_url`` (the service's ``GET /generate``), as the original's bucket
        redirect rule did; ``None`` removes the rule. Kept across restarts."""
        with self._lock():
            layout = self._layout()
            rules = _website.load_rules(self.state_dir)
            if generate_url is None:
                rules.pop(bucket, None)
            else:
                rules[bucket] = generate_url
            _website.save_rules(self.state_dir, rules)
            document = _configs.write(layout, WEBSITE)
            if paths.pid_file(self.state_dir, WEBSITE).exists():
                _website.apply(layout.website_admin, json.loads(document.read_text()))

    def set_storage_events(
        self, bucket: str, endpoint: str | None, token: str | None = None
    ) -> None:
        """Send ``bucket``'s ``s3:ObjectCreated:Post`` events (presigned POST uploads) of
        keys under ``raw/`` to ``endpoint`` as MinIO's webhook body, with
        ``Authorization: Bearer <token>`` (no header without a token); ``None`` removes
        the bucket's webhook target and its notification configuration. Each bucket has
        a target of its own with a queue in the state directory: MinIO delivers from it
        within about 3 s (it polls each queue every 3 s), and keeps an event there, retried
        every 3 s, while the endpoint is unreachable or answers non-2xx. Kept across
        restarts: ``up`` after ``down`` restores them.

        MinIO reads webhook targets only at start, so a change restarts the object store
        (SIGTERM, start, wait until S3 calls are answered: about 0.5 s; a call that changes
        nothing restarts nothing). A restart interrupts the object store only: requests
        in flight fail (the connection closes) and new connections are refused until it
        answers again, so clients retry: boto3's default retries (3 attempts within about
        0.15 s) are shorter than that, so callers must take a connection error as
        temporary, as the product's storage layer does. Reads through the website front
        answer 502 meanwhile; listeners of bucket notifications are disconnected. Queued
        events are kept. Set while the object store is not running, a rule applies at the
        next ``up``.
        """
        rule = None if endpoint is None else _objectstore.EventRule(endpoint, token)
        with self._lock():
            layout = self._layout()
            if not layout.node:
                raise PermanentError("this devcluster has no node, so no object store")
            s3 = self.s3
            rules = _objectstore.load_event_rules(self.state_dir)
            record = self._running(OBJECTSTORE)
            if record is None:
                log.info("the object store is not running: storage events apply at its next start")
            elif rule is not None and not _objectstore.bucket_exists(s3, bucket):
                raise PermanentError(f"no bucket {bucket!r} in the object store at {s3.url}")
            if rule is None:
                if record is not None:
                    # First, while the target still exists: MinIO refuses configurations
                    # naming a target it does not have.
                    _objectstore.delete_event_config(s3, bucket)
                rules.pop(bucket, None)
                _objectstore.save_event_rules(self.state_dir, rules)
                # Undelivered events go too, once no MinIO has the target (one added
                # again later would receive them).
                drop_queue = functools.partial(_objectstore.drop_queue, self.state_dir, bucket)
                if record is not None and not self._objectstore_env_current(record, layout):
                    self._restart_objectstore(layout, record, while_stopped=drop_queue)
                else:
                    drop_queue()
                return
            rules[bucket] = rule
            _objectstore.save_event_rules(self.state_dir, rules)
            if record is not None:
                if not self._objectstore_env_current(record, layout):
                    self._restart_objectstore(layout, record)
                # After the restart: the ARN names a target MinIO has only now.
                _objectstore.put_event_config(s3, bucket)

    def build_image(
        self,
        context: Path,
        *,
        repository: str = _builds.PRODUCT_REPOSITORY,
        tag: str | None = None,
        extras: str = "",
    ) -> ImageRef:
        """Build the Dockerfile in ``context`` and push it to this cluster's registry."""
        return _builds.build_and_push(
            self.bin_dir,
            self.cache_dir,
            context,
            registry=self._layout().registry,
            registry_ca=self.ca_cert,
            repository=repository,
            tag=tag,
            extras=extras,
        )

    # -- internals --------------------------------------------------------------------------

    @staticmethod
    def _url(name: str, layout: Layout | None) -> str:
        if layout is None:
            return ""
        ports = layout.ports
        return {
            ETCD: layout.etcd_url,
            APISERVER: layout.server,
            CONTROLLER_MANAGER: f"https://127.0.0.1:{ports.controller_manager}/healthz",
            SCHEDULER: f"https://127.0.0.1:{ports.scheduler}/healthz",
            REGISTRY: f"https://{layout.registry}",
            OBJECTSTORE: layout.objectstore_url,
            WEBSITE: layout.website_url,
            CONTAINERD: f"unix://{layout.containerd_socket}",
            KUBELET: f"node {NODE_NAME} https://{NODE_IP}:{ports.kubelet}",
            KUBE_PROXY: f"http://127.0.0.1:{ports.kube_proxy_healthz}/healthz",
        }[name]

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        # Two `up`s at once (two terminals, parallel test sessions) would start two etcds.
        return _host.exclusive(self.state_dir / ".lock")

    def _saved_layout(self) -> Layout | None:
        return Layout.load(paths.cluster_file(self.state_dir), self.state_dir, self.bin_dir)

    def _layout(self) -> Layout:
        layout = self._saved_layout()
        if layout is None:
            raise PermanentError(f"no devcluster in {self.state_dir} (run `devcluster up`)")
        return layout

    def _stop(self, name: str, record: _procs.ProcessRecord | None) -> None:
        """Stop one component (under the lock) and forget its pid file."""
        if record is not None:
            _procs.stop(record, self.stop_grace)
        paths.pid_file(self.state_dir, name).unlink(missing_ok=True)

    def _running(self, name: str) -> _procs.ProcessRecord | None:
        record = _procs.read_record(paths.pid_file(self.state_dir, name))
        return record if record is not None and _procs.is_alive(record) else None

    def _objectstore_env_current(self, record: _procs.ProcessRecord, layout: Layout) -> bool:
        """Whether the running object store has the webhook targets the rules ask for
        (its environment, as it was started)."""
        try:
            raw = Path(f"/proc/{record.pid}/environ").read_bytes()
        except OSError:
            return False
        running: dict[str, str] = {}
        for item in raw.decode("utf-8", "replace").split("\0"):
            name, _, value = item.partition("=")
            if _objectstore.is_webhook_variable(name):
                running[name] = value
        wanted = layout.env(OBJECTSTORE)
        return running == {k: v for k, v in wanted.items() if _objectstore.is_webhook_variable(k)}

    #: MinIO's boot can die on an upstream race: a nil-pointer panic in its JSON decoder
    #: while it loads the buckets' policies (goccy/go-json, seen once in about 15 quick
    #: restarts of one test run). A start that dies is made again, this many times at most.
    _OBJECTSTORE_STARTS = 3

    def _restart_objectstore(
        self,
        layout: Layout,
        record: _procs.ProcessRecord,
        while_stopped: Callable[[], None] | None = None,
    ) -> None:
        """Stop MinIO and start it again with the environment the rules make now; return
        once S3 calls are answered (bounded by ``start_timeout`` per start; StartupError,
        with the log's last lines, otherwise)."""
        from botocore.exceptions import BotoCoreError

        started_at = time.monotonic()
        self._stop(OBJECTSTORE, record)
        stopped_at = time.monotonic()
        if while_stopped is not None:
            while_stopped()
        for start in range(1, self._OBJECTSTORE_STARTS + 1):
            started = self._spawn(layout, OBJECTSTORE)
            try:
                self._wait_for_objectstore(layout, started)
                break
            except (StartupError, BotoCoreError) as exc:
                if _procs.is_alive(started) or start == self._OBJECTSTORE_STARTS:
                    raise
                log.warning(
                    "the object store died while starting (%s); starting it again (%d of %d)",
                    str(exc).splitlines()[0],
                    start + 1,
                    self._OBJECTSTORE_STARTS,
                )
        log.info(
            "object store restarted in %.2fs (stop %.2fs)",
            time.monotonic() - started_at,
            stopped_at - started_at,
        )

    def _wait_for_objectstore(self, layout: Layout, record: _procs.ProcessRecord) -> None:
        wait = _Waiter(self.state_dir, {OBJECTSTORE: record}, time.monotonic() + self.start_timeout)
        wait(
            lambda: _health.ok(f"{layout.objectstore_url}/minio/health/ready"),
            f"object store {layout.objectstore_url} after its restart",
            max_delay=0.02,  # it answers about 0.35 s after its start: poll closely
        )
        # S3 calls wait (MINIO_SYNC_BOOT) until the notification rules are loaded.
        self.s3.client().list_buckets()

    def _apiserver_ready(self) -> bool:
        try:
            layout = self._layout()
            context = _health.admin_context(layout.pki)
        except (PermanentError, OSError):
            return False
        return _health.ok(f"{layout.server}/readyz", context)

    def _claim_machine(self) -> None:
        holder = _machine.holder()
        if holder is not None and holder != self.state_dir:
            other = DevCluster(holder, self.bin_dir, node=True)
            if any(s.state == "running" for s in other.status() if s.name in NODE):
                raise _machine.refuse(holder)
            log.info("the node of %s is gone; clearing what it left", holder)
            other._clear_leftovers()
        _machine.claim(self.state_dir)

    def _prepare(self) -> Layout:
        previous = Ports.load(paths.cluster_file(self.state_dir))
        hosts = ("127.0.0.1", NODE_IP) if self.node else ("127.0.0.1",)
        layout = Layout(self.state_dir, self.bin_dir, Ports.pick(previous, hosts), node=self.node)
        for directory in (paths.logs_dir, paths.pids_dir, paths.etcd_dir):
            directory(self.state_dir).mkdir(parents=True, exist_ok=True)
        # etcd refuses a data directory that others can read.
        paths.etcd_dir(self.state_dir).chmod(0o700)
        pki = generate(paths.pki_dir(self.state_dir), service_ip=SERVICE_IP, node_ip=NODE_IP)
        for user, target, cert_name in (
            ("admin", self.kubeconfig, "admin"),
            (
                CONTROLLER_MANAGER,
                layout.client_kubeconfig(CONTROLLER_MANAGER),
                "controller-manager",
            ),
            (SCHEDULER, layout.client_kubeconfig(SCHEDULER), "scheduler"),
            (KUBELET, layout.client_kubeconfig(KUBELET), "kubelet"),
            (KUBE_PROXY, layout.client_kubeconfig(KUBE_PROXY), "kube-proxy"),
        ):
            _kubeconfig.write(
                target,
                server=layout.server,
                ca_cert=pki.ca_cert,
                client_cert=pki.client_cert(cert_name),
                client_key=pki.client_key(cert_name),
                user=user,
            )
        layout.write_configs()
        layout.save(paths.cluster_file(self.state_dir))
        return layout

    def _start(self) -> None:
        if self.node:
            # What the kubelet will change, as it was before any node ran here.
            _host.save(paths.host_record(self.state_dir), _HOST_DIRS)
            _network.setup()
        layout = self._prepare()
        started: dict[str, _procs.ProcessRecord] = {}

        def start(name: str) -> None:
            started[name] = self._spawn(layout, name)

        deadline = time.monotonic() + self.start_timeout
        wait = _Waiter(self.state_dir, started, deadline)
        try:
            context = _health.admin_context(layout.pki)
            # The apiserver retries etcd by itself, so both start at once.
            start(ETCD)
            start(APISERVER)
            if self.node:
                start(REGISTRY)
                start(OBJECTSTORE)
                start(WEBSITE)
                start(CONTAINERD)
            wait(lambda: _health.ok(f"{layout.server}/readyz", context), "kube-apiserver /readyz")
            # The controller-manager gives up after ~10 s without an apiserver: start it now.
            start(CONTROLLER_MANAGER)
            start(SCHEDULER)
            if self.node:
                self._start_node(layout, context, start, wait)
            sa_url = f"{layout.server}/api/v1/namespaces/default/serviceaccounts/default"
            wait(lambda: _health.ok(sa_url, context), "the default service account")
            cm_url = self._url(CONTROLLER_MANAGER, layout)
            sched_url = self._url(SCHEDULER, layout)
            insecure = _health.self_signed_context()
            wait(lambda: _health.ok(cm_url, insecure), "kube-controller-manager /healthz")
            wait(lambda: _health.ok(sched_url, insecure), "kube-scheduler /healthz")
            if self.node:
                wait(
                    lambda: _health.node_ready(layout.server, context, NODE_NAME),
                    f"node {NODE_NAME} Ready",
                )
                wait(
                    lambda: _health.deployment_available(
                        layout.server, context, _addons.DNS_NAMESPACE, _addons.DNS_NAME
                    ),
                    "cluster DNS (deployment kube-system/coredns available)",
                )
        except BaseException:
            # Leave nothing half-started behind (also on Ctrl-C).
            self._stop_all()
            raise

    def _start_node(
        self,
        layout: Layout,
        context: ssl.SSLContext,
        start: Callable[[str], None],
        wait: _Waiter,
    ) -> None:
        registry_ca = _health.ca_context(layout.pki)
        wait(
            lambda: _health.ok(f"https://{layout.registry}/v2/", registry_ca),
            f"registry https://{layout.registry}/v2/",
        )
        with BuildKit(
            self.bin_dir, self.cache_dir, registry_cas={layout.registry: layout.pki.ca_cert}
        ) as buildkit:
            images = _builds.push_node_images(
                buildkit, self.bin_dir, layout.registry, layout.pki.ca_cert
            )
        wait(layout.containerd_socket.exists, f"containerd socket {layout.containerd_socket}")
        wait(
            lambda: _health.ok(f"{layout.objectstore_url}/minio/health/ready"),
            f"object store {layout.objectstore_url}",
        )
        endpoint = self.s3
        _objectstore.create_buckets(endpoint, endpoint.upload_bucket, endpoint.public_bucket)
        # Rules set while the cluster was down have no bucket configuration yet.
        for bucket in _objectstore.load_event_rules(self.state_dir):
            if _objectstore.bucket_exists(endpoint, bucket):
                _objectstore.put_event_config(endpoint, bucket)
            else:
                log.warning("storage events of bucket %s: no such bucket", bucket)
        wait(
            lambda: _health.ok(f"http://{layout.website_admin}/config/"),
            f"website front {layout.website_url}",
        )
        _addons.apply(layout.server, context, [_addons.kubelet_api_binding()])
        start(KUBELET)
        start(KUBE_PROXY)
        _addons.apply(layout.server, context, _addons.coredns(images["coredns"]))

    def _spawn(self, layout: Layout, name: str) -> _procs.ProcessRecord:
        log.info("starting %s", name)
        env = self.env
        env.pop("KUBECONFIG")  # every component is told its kubeconfig explicitly
        # runc and iptables live in sbin; the components find them on PATH.
        env["PATH"] = os.pathsep.join([env["PATH"], "/usr/local/sbin", "/usr/sbin", "/sbin"])
        # The registry's OpenTelemetry exporter would otherwise try localhost:4318.
        env["OTEL_TRACES_EXPORTER"] = "none"
        if name == OBJECTSTORE:
            # Webhook targets come from the storage-event rules only.
            env = {k: v for k, v in env.items() if not _objectstore.is_webhook_variable(k)}
        record = _procs.spawn(
            layout.argv(name),
            log=paths.component_log(self.state_dir, name),
            env={**env, **layout.env(name)},
            cwd=self.state_dir,
        )
        _procs.write_record(paths.pid_file(self.state_dir, name), record)
        return record

    def _stop_all(self) -> list[_procs.ProcessRecord]:
        stopped: list[_procs.ProcessRecord] = []

        def stop(name: str) -> None:
            pid_path = paths.pid_file(self.state_dir, name)
            record = _procs.read_record(pid_path)
            if record is not None:
                log.info("stopping %s (pid %d)", name, record.pid)
                stopped.extend(_procs.stop(record, self.stop_grace))
            pid_path.unlink(missing_ok=True)

        layout = self._saved_layout()
        # Whatever was recorded is stopped, even when cluster.json is unreadable.
        node = (layout is not None and layout.node) or any(
            paths.pid_file(self.state_dir, name).exists() for name in NODE
        )
        if node:
            # The kubelet first, or it would start the Pods again as they go.
            stop(KUBELET)
            stop(KUBE_PROXY)
            self._kill_containers()
            stop(CONTAINERD)
            stop(WEBSITE)
            stop(OBJECTSTORE)
            stop(REGISTRY)
        for name in reversed(CONTROL_PLANE):
            stop(name)
        if node:
            # Last: the API server needs the node address until it has stopped.
            self._restore_host()
        return stopped

    def _kill_containers(self) -> None:
        """The Pods' processes, then the shims that watched them (they are not
        containerd's children: stopping containerd leaves them running)."""
        killed = _host.kill_cgroup_trees(["kubepods"])
        socket = paths.node_dir(self.state_dir) / "containerd" / "containerd.sock"
        _host.kill_all(_host.processes_with(str(socket)))
        log.info("node down: %d container processes killed", killed)

    def _restore_host(self) -> None:
        """Undo every change the node made to this machine: mounts, iptables chains,
        bridges and the guard, sysctls, directories, the machine claim."""
        node_dir = paths.node_dir(self.state_dir)
        _host.unmount_under([node_dir])
        kube_proxy = self.bin_dir / "kube-proxy"
        if kube_proxy.exists():
            _host.run([str(kube_proxy), "--cleanup"], check=False)
        _host.remove_iptables_chains(_CHAIN_PREFIXES)
        _network.teardown()
        # Leases of Pods that no longer exist.
        shutil.rmtree(node_dir / "cni" / "ipam", ignore_errors=True)
        _host.restore(paths.host_record(self.state_dir), _HOST_DIRS)
        _machine.release(self.state_dir)

    def _clear_leftovers(self) -> None:
        """What a node whose processes died (a crash, a reboot) left on this machine."""
        self._kill_containers()
        self._restore_host()


class _Waiter:
    """Waits for a readiness condition while watching that nothing started has died."""

    def __init__(
        self, state_dir: Path, started: dict[str, _procs.ProcessRecord], deadline: float
    ) -> None:
        self.state_dir = state_dir
        self.started = started
        self.deadline = deadline

    def __call__(self, predicate: Callable[[], bool], what: str, max_delay: float = 0.5) -> None:
        delay = min(0.05, max_delay)
        while True:
            self._check_alive()
            if predicate():
                return
            if time.monotonic() >= self.deadline:
                raise StartupError(self._explain(f"timed out waiting for {what}", COMPONENTS))
            time.sleep(delay)
            delay = min(delay * 1.5, max_delay)

    def _check_alive(self) -> None:
        for name, record in self.started.items():
            if not _procs.is_alive(record):
                code = _procs.exit_code(record.pid)
                said = f" with exit code {code}" if code is not None else ""
                raise StartupError(self._explain(f"{name} exited during startup{said}", [name]))

    def _explain(self, headline: str, names: Sequence[str]) -> str:
        parts = [headline]
        for name in names:
            if name in self.started:
                logfile = paths.component_log(self.state_dir, name)
                parts.append(f"--- last lines of {logfile}:\n{log_tail(logfile)}")
        return "\n".join(parts)
