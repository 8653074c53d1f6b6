"""A local Kubernetes control plane for development and tests (``pinster-images devcluster``).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local processes
(built from their Go modules by ``make binaries``), with the node agent
(:mod:`pinster_devcluster.agent`) standing in for a kubelet. See docs/devcluster.md.
"""

from pinster_devcluster._binaries import check_bin_dir, default_bin_dir
from pinster_devcluster._cluster import (
    ComponentStatus,
    DevCluster,
    StartupError,
    UpResult,
    agent_available,
)
from pinster_devcluster._components import COMPONENTS, NODE_NAME
from pinster_devcluster._procs import ProcessRecord
from pinster_devcluster._settings import DevClusterSettings

__all__ = [
    "COMPONENTS",
    "NODE_NAME",
    "ComponentStatus",
    "DevCluster",
    "DevClusterSettings",
    "ProcessRecord",
    "StartupError",
    "UpResult",
    "agent_available",
    "check_bin_dir",
    "default_bin_dir",
]
