"""The command line of each component, and the ports the cluster listens on.

Flags follow what kubeadm and controller-runtime's envtest pass, trimmed to one loopback
node. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import socket
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from pinster_devcluster import paths
from pinster_devcluster._pki import Pki

ETCD = "etcd"
APISERVER = "kube-apiserver"
CONTROLLER_MANAGER = "kube-controller-manager"
SCHEDULER = "kube-scheduler"
AGENT = "node-agent"
#: start order; ``down`` stops in reverse
COMPONENTS = (ETCD, APISERVER, CONTROLLER_MANAGER, SCHEDULER, AGENT)

NODE_NAME = "devcluster-node"
# Loopback, so that the node agent can serve Service cluster IPs as a userspace proxy
# (kube-apiserver v1.35 accepts a 127.x range).
SERVICE_CIDR = "127.96.0.0/16"
#: the first address of SERVICE_CIDR: the ``kubernetes`` Service, in the serving cert
SERVICE_IP = "127.96.0.1"
ISSUER = "https://kubernetes.default.svc.cluster.local"
AGENT_MODULE = "pinster_devcluster.agent"


@dataclass(frozen=True)
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int

    @classmethod
    def pick(cls, previous: Ports | None = None) -> Ports:
        """Keep the previous ports where still free (a restarted cluster keeps its URL),
        else take ones the kernel hands out."""
        taken: set[int] = set()
        chosen: dict[str, int] = {}
        for field in fields(cls):
            old = getattr(previous, field.name) if previous is not None else None
            port = old if old is not None and old not in taken and _free(old) else _any_free(taken)
            taken.add(port)
            chosen[field.name] = port
        return cls(**chosen)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"ports": asdict(self)}, indent=2))

    @classmethod
    def load(cls, path: Path) -> Ports | None:
        try:
            return cls(**json.loads(path.read_text())["ports"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _any_free(taken: set[int]) -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in taken:
            return port


@dataclass(frozen=True)
class Layout:
    """Everything a command line needs: where the files are and which ports to use."""

    state_dir: Path
    bin_dir: Path
    ports: Ports
    python: str = sys.executable

    @property
    def pki(self) -> Pki:
        return Pki(paths.pki_dir(self.state_dir))

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.etcd_client}"

    def client_kubeconfig(self, component: str) -> Path:
        return paths.kubeconfigs_dir(self.state_dir) / f"{component}.kubeconfig"

    def argv(self, component: str) -> list[str]:
        return getattr(self, "_" + component.replace("-", "_"))()  # type: ignore[no-any-return]

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
        return [
            str(self.bin_dir / "kube-apiserver"),
            f"--etcd-servers={self.etcd_url}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports.apiserver}",
            f"--cert-dir={paths.certs_dir(self.state_dir, APISERVER)}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={ISSUER}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # Endpoints may not hold loopback addresses, so the reconciler of the
            # `kubernetes` Service would fail forever; Pods reach the API by KUBECONFIG.
            "--endpoint-reconciler-type=none",
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

    def _node_agent(self) -> list[str]:
        return [
            self.python,
            "-m",
            AGENT_MODULE,
            "--kubeconfig",
            str(paths.kubeconfig(self.state_dir)),
            "--state-dir",
            str(self.state_dir),
            "--node-name",
            NODE_NAME,
        ]
