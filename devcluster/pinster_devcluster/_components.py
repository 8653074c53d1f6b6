"""The command line of each component, and the ports the cluster listens on.

Flags follow what kubeadm and controller-runtime's envtest pass, trimmed to one node.
The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) runs
for every cluster; the node (image registry, object store and its website front,
containerd, kubelet, kube-proxy) only when the cluster has one. With a node, the API
server, the kubelet, the registry, the object store and the website listen on the node
address (Pods reach them there);
everything else listens on 127.0.0.1.
Their configuration files are in ``_configs.py``.
"""

from __future__ import annotations

import json
import socket
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pinster_devcluster import _configs, _objectstore, paths
from pinster_devcluster._network import NODE_IP, NODE_NAME, SERVICE_CIDR
from pinster_devcluster._pki import Pki

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
REGISTRY = "registry"
OBJECTSTORE = "objectstore"
WEBSITE = "website"
CONTAINERD = "containerd"
KUBELET = "kubelet"
KUBE_PROXY = "kube-proxy"
CONTROL_PLANE = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER)
NODE = (REGISTRY, OBJECTSTORE, WEBSITE, CONTAINERD, KUBELET, KUBE_PROXY)
#: start order; ``down`` stops in reverse
COMPONENTS = CONTROL_PLANE + NODE

ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    registry: int
    objectstore: int
    objectstore_console: int
    website: int
    website_admin: int
    kubelet: int
    kubelet_healthz: int
    kube_proxy_healthz: int
    kube_proxy_metrics: int

    @classmethod
    def pick(cls, previous: Ports | None = None, hosts: tuple[str, ...] = ("127.0.0.1",)) -> Ports:
        """Keep the previous ports where still free on every one of ``hosts`` (a restarted
        cluster keeps its URLs, and the registry its image names), else take new ones."""
        taken: set[int] = set()
        chosen: dict[str, int] = {}
        for field in fields(cls):
            old = getattr(previous, field.name, None) if previous is not None else None
            if old is not None and old not in taken and all(_free(h, old) for h in hosts):
                port = old
            else:
                port = _any_free(taken, hosts)
            taken.add(port)
            chosen[field.name] = port
        return cls(**chosen)

    @classmethod
    def load(cls, path: Path) -> Ports | None:
        try:
            return cls(**json.loads(path.read_text())["ports"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None


def _free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As the Go servers bind: a port whose old connections linger in TIME_WAIT (a
        # restart) is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _any_free(taken: set[int], hosts: tuple[str, ...]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind((hosts[0], 0))
            port: int = sock.getsockname()[1]
        if port not in taken and all(_free(h, port) for h in hosts[1:]):
            return port


@dataclass(frozen=True)
class Layout:
    """Everything a command line needs: where the files are and which ports to use."""

    state_dir: Path
    bin_dir: Path
    ports: Ports
    #: whether this cluster has a node (and so listens on the node address)
    node: bool = True

    def save(self, path: Path) -> None:
        """``cluster.json``: the ports, and whether the cluster has a node."""
        path.write_text(json.dumps({"ports": asdict(self.ports), "node": self.node}, indent=2))

    @classmethod
    def load(cls, path: Path, state_dir: Path, bin_dir: Path) -> Layout | None:
        """The layout of the cluster last started in ``state_dir``, if it can be read."""
        ports = Ports.load(path)
        if ports is None:
            return None
        return cls(state_dir, bin_dir, ports, node=bool(json.loads(path.read_text()).get("node")))

    @property
    def pki(self) -> Pki:
        return Pki(paths.pki_dir(self.state_dir))

    @property
    def host(self) -> str:
        """Where the API server listens: the node address, or loopback without a node."""
        return NODE_IP if self.node else "127.0.0.1"

    @property
    def server(self) -> str:
        return f"https://{self.host}:{self.ports.apiserver}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.etcd_client}"

    @property
    def registry(self) -> str:
        """``host:port`` of the node's image registry, as image names spell it."""
        return f"{NODE_IP}:{self.ports.registry}"

    @property
    def objectstore_url(self) -> str:
        return f"http://{NODE_IP}:{self.ports.objectstore}"

    @property
    def website_url(self) -> str:
        """The object store's public front: anonymous reads, path-style (``_website``)."""
        return f"http://{NODE_IP}:{self.ports.website}"

    @property
    def website_admin(self) -> str:
        return f"127.0.0.1:{self.ports.website_admin}"

    @property
    def containerd_socket(self) -> Path:
        return paths.node_dir(self.state_dir) / "containerd" / "containerd.sock"

    def client_kubeconfig(self, component: str) -> Path:
        return paths.kubeconfigs_dir(self.state_dir) / f"{component}.kubeconfig"

    def components(self) -> tuple[str, ...]:
        return COMPONENTS if self.node else CONTROL_PLANE

    def argv(self, component: str) -> list[str]:
        return getattr(self, "_" + component.replace("-", "_"))()  # type: ignore[no-any-return]

    def env(self, component: str) -> dict[str, str]:
        """Variables a component is configured by, besides its command line."""
        if component == WEBSITE:
            # Caddy's own files (autosave, locks) go to the state directory, not ~/.config.
            home = str(paths.node_dir(self.state_dir) / "website")
            return {"XDG_CONFIG_HOME": home, "XDG_DATA_HOME": home}
        if component != OBJECTSTORE:
            return {}
        access, secret = _objectstore.credentials(self.state_dir)
        return {
            "MINIO_ROOT_USER": access,
            "MINIO_ROOT_PASSWORD": secret,
            "MINIO_REGION": _objectstore.REGION,
            # Nothing that calls out: no web console, update checks or call-home.
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
            "MINIO_CALLHOME_ENABLE": "off",
            # S3 calls wait until the bucket notification rules and targets are loaded
            # (MinIO loads them after it starts answering): without it, an upload just
            # after a start or restart may send no event.
            "MINIO_SYNC_BOOT": "on",
            # Storage events: one webhook target per bucket with a rule (``_objectstore``).
            **_objectstore.webhook_env(self.state_dir),
        }

    def write_configs(self) -> None:
        """The configuration files of the node's components (none for the control plane)."""
        if self.node:
            _configs.write_node(self)

    def _etcd(self) -> list[str]:
        peer = f"http://127.0.0.1:{self.ports.etcd_peer}"
        return [
            str(self.bin_dir / "etcd"),
            "--name=devcluster",
            f"--data-dir={paths.etcd_dir(self.state_dir)}",
            f"--listen-client-urls={self.etcd_url}",
            f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=devcluster={peer}",
            # A throw-away development store: durability is not worth the fsync latency.
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _kube_apiserver(self) -> list[str]:
        pki = self.pki
        argv = [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            f"--bind-address={self.host}",
            f"--advertise-address={self.host}",
            f"--secure-port={self.ports.apiserver}",
            f"--cert-dir={paths.certs_dir(self.state_dir, APISERVER)}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            # Kubelets are authorized by what is bound to their node, users by RBAC.
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--requestheader-client-ca-file={pki.ca_cert}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki.client_cert('front-proxy')}",
            f"--proxy-client-key-file={pki.client_key('front-proxy')}",
            "--allow-privileged=true",
            "--profiling=false",
        ]
        if self.node:
            argv += [
                f"--kubelet-client-certificate={pki.client_cert('apiserver-kubelet-client')}",
                f"--kubelet-client-key={pki.client_key('apiserver-kubelet-client')}",
                f"--kubelet-certificate-authority={pki.ca_cert}",
                # Otherwise it looks the node's name up in DNS.
                "--kubelet-preferred-address-types=InternalIP",
            ]
        else:
            # Endpoints may not hold a loopback address, so the reconciler of the
            # `kubernetes` Service would fail forever; nothing runs Pods anyway.
            argv.append("--endpoint-reconciler-type=none")
        return argv

    def _kube_controller_manager(self) -> list[str]:
        pki = self.pki
        kubeconfig = self.client_kubeconfig(CONTROLLER_MANAGER)
        return [
            str(self.bin_dir / "kube-controller-manager"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.controller_manager}",
            f"--cert-dir={paths.certs_dir(self.state_dir, CONTROLLER_MANAGER)}",
            "--controllers=*",
            # Each controller acts as its own service account: RBAC as on a real cluster.
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={pki.sa_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--leader-elect=false",
            # The defaults (20/s, burst 30) throttle the start of ~40 controllers that
            # each fetch their own service-account token.
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            # Otherwise it creates /usr/libexec/kubernetes/... on the host.
            f"--flex-volume-plugin-dir={self.state_dir / 'flexvolume'}",
            "--profiling=false",
        ]

    def _kube_scheduler(self) -> list[str]:
        kubeconfig = self.client_kubeconfig(SCHEDULER)
        return [
            str(self.bin_dir / "kube-scheduler"),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={self.ports.scheduler}",
            f"--cert-dir={paths.certs_dir(self.state_dir, SCHEDULER)}",
            "--leader-elect=false",
            "--profiling=false",
        ]

    def _registry(self) -> list[str]:
        return [str(self.bin_dir / "registry"), "serve", str(_configs.path(self, REGISTRY))]

    def _objectstore(self) -> list[str]:
        return [
            str(self.bin_dir / "minio"),
            "server",
            "--quiet",
            "--address",
            f"{NODE_IP}:{self.ports.objectstore}",
            "--console-address",
            f"127.0.0.1:{self.ports.objectstore_console}",
            str(paths.node_dir(self.state_dir) / "objectstore" / "data"),
        ]

    def _website(self) -> list[str]:
        return [str(self.bin_dir / "caddy"), "run", "--config", str(_configs.path(self, WEBSITE))]

    def _containerd(self) -> list[str]:
        return [str(self.bin_dir / "containerd"), "--config", str(_configs.path(self, CONTAINERD))]

    def _kubelet(self) -> list[str]:
        return [
            str(self.bin_dir / "kubelet"),
            f"--config={_configs.path(self, KUBELET)}",
            f"--kubeconfig={self.client_kubeconfig(KUBELET)}",
            f"--root-dir={paths.node_dir(self.state_dir) / 'kubelet'}",
            f"--node-ip={NODE_IP}",
            f"--hostname-override={NODE_NAME}",
        ]

    def _kube_proxy(self) -> list[str]:
        return [
            str(self.bin_dir / "kube-proxy"),
            f"--config={_configs.path(self, KUBE_PROXY)}",
            f"--hostname-override={NODE_NAME}",
        ]
