"""Layout of a devcluster state directory, shared by the control plane and the node agent.

::

    <state>/
      cluster.json              ports and binary directory of the current cluster
      kubeconfig                admin (O=system:masters)
      pki/                      CA, serving and client certificates, service-account keys
      kubeconfigs/              one per control-plane client (controller-manager, scheduler)
      etcd/                     etcd data directory
      certs/<component>/        self-signed serving certificates of controller-manager, scheduler
      logs/<component>.log      stdout and stderr of each component
      pids/<component>.pid      JSON: pid and process start time (a recycled pid is never killed)
      pods/<ns>/<pod>/<container>.log   container output, written by the node agent
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


def pods_dir(state_dir: Path) -> Path:
    return state_dir / "pods"


def _segment(value: str, what: str) -> str:
    # Kubernetes validates these names, but a path must never escape the state directory.
    if not value or "/" in value or value in (".", ".."):
        raise ValueError(f"invalid {what} name for a path: {value!r}")
    return value


def pod_dir(state_dir: Path, namespace: str, pod: str) -> Path:
    """Where the node agent keeps everything of one Pod (logs, termination messages)."""
    return pods_dir(state_dir) / _segment(namespace, "namespace") / _segment(pod, "pod")


def container_log(state_dir: Path, namespace: str, pod: str, container: str) -> Path:
    """stdout and stderr of one container, as ``devcluster logs`` prints them."""
    return pod_dir(state_dir, namespace, pod) / f"{_segment(container, 'container')}.log"
