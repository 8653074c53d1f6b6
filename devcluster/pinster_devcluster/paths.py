"""Layout of a devcluster state directory.

::

    <state>/
      cluster.json              ports of the current cluster, and whether it has a node
      kubeconfig                admin (O=system:masters)
      pki/                      CA, serving and client certificates, service-account keys
      kubeconfigs/              one per client (controller-manager, scheduler, kubelet, kube-proxy)
      etcd/                     etcd data directory
      certs/<component>/        self-signed serving certificates of controller-manager, scheduler
      logs/<component>.log      stdout and stderr of each component
      pids/<component>.pid      JSON: pid and process start time (a recycled pid is never killed)
      node/                     containerd (root, state, socket), kubelet root, CNI config and
                                leases, registry data, pod logs, the config file of each
"""

from __future__ import annotations

from pathlib import Path


def cluster_file(state_dir: Path) -> Path:
    return state_dir / "cluster.json"


def kubeconfig(state_dir: Path) -> Path:
    return state_dir / "kubeconfig"


def pki_dir(state_dir: Path) -> Path:
    return state_dir / "pki"


def kubeconfigs_dir(state_dir: Path) -> Path:
    return state_dir / "kubeconfigs"


def etcd_dir(state_dir: Path) -> Path:
    return state_dir / "etcd"


def certs_dir(state_dir: Path, component: str) -> Path:
    return state_dir / "certs" / component


def logs_dir(state_dir: Path) -> Path:
    return state_dir / "logs"


def component_log(state_dir: Path, component: str) -> Path:
    return logs_dir(state_dir) / f"{component}.log"


def pids_dir(state_dir: Path) -> Path:
    return state_dir / "pids"


def pid_file(state_dir: Path, component: str) -> Path:
    return pids_dir(state_dir) / f"{component}.pid"


def node_dir(state_dir: Path) -> Path:
    """Everything of the node: containerd, the kubelet, CNI, the registry, their configs."""
    return state_dir / "node"


def host_record(state_dir: Path) -> Path:
    """The machine's own sysctl values, saved before the node first changed them."""
    return node_dir(state_dir) / "host-sysctls.json"
