"""A local Kubernetes cluster for development and tests (``pinster-images devcluster``).

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as local processes,
and a real node of this machine runs the Pods: kubelet, kube-proxy and containerd with
runc and CNI, CoreDNS, and an image registry. Everything is built from its Go module by
``make binaries``. See docs/devcluster.md.
"""

from pinster_devcluster._binaries import check_bin_dir, default_bin_dir, default_cache_dir
from pinster_devcluster._cluster import ComponentStatus, DevCluster, StartupError, UpResult
from pinster_devcluster._components import COMPONENTS
from pinster_devcluster._images import ImageRef
from pinster_devcluster._network import NODE_IP, NODE_NAME
from pinster_devcluster._procs import ProcessRecord
from pinster_devcluster._settings import DevClusterSettings

__all__ = [
    "COMPONENTS",
    "NODE_IP",
    "NODE_NAME",
    "ComponentStatus",
    "DevCluster",
    "DevClusterSettings",
    "ImageRef",
    "ProcessRecord",
    "StartupError",
    "UpResult",
    "check_bin_dir",
    "default_bin_dir",
    "default_cache_dir",
]
