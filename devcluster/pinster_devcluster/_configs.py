"""Configuration files of the node's components, written under ``<state>/node/``.

Each function writes one file and returns its path. The settings that differ from the
upstream defaults are the ones this machine needs (see docs/devcluster.md):
- no CAP_SYS_RESOURCE even for root, so nothing may lower an oom_score_adj;
- cgroup v1 with the cgroupfs driver;
- every file, socket and mount of the node lives in the state directory, so that ``down``
  finds all of it (the few fixed host paths are in ``_host.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from pinster_devcluster import _website, paths
from pinster_devcluster._builds import pause_name
from pinster_devcluster._network import (
    CLUSTER_DOMAIN,
    DNS_IP,
    NODE_IP,
    NODE_NAME,
    POD_BRIDGE,
    POD_CIDR,
    POD_GATEWAY,
)

if TYPE_CHECKING:
    from pinster_devcluster._components import Layout

CNI_NETWORK = "devcluster"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _node(layout: Layout, *parts: str) -> Path:
    return paths.node_dir(layout.state_dir).joinpath(*parts)


def cni_conflist() -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": POD_BRIDGE,
                # The bridge already carries the gateway address (``_network.setup``).
                "isGateway": False,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR, "gateway": POD_GATEWAY}]],
                    "routes": [{"dst": "0.0.0.0/0", "gw": POD_GATEWAY}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def cni_config(layout: Layout) -> str:
    conflist = cni_conflist()
    # host-local keeps its leases here, not in /var/lib/cni.
    conflist["plugins"][0]["ipam"]["dataDir"] = str(_node(layout, "cni", "ipam"))
    return json.dumps(conflist, indent=2)


def registry_hosts(layout: Layout) -> str:
    """containerd's hosts.toml for the node registry: HTTPS, trusting the cluster CA."""
    url = f"https://{layout.registry}"
    text = (
        f'server = "{url}"\n\n'
        f'[host."{url}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        f'  ca = "{layout.pki.ca_cert}"\n'
    )
    return text


def containerd_config(layout: Layout) -> str:
    base = _node(layout, "containerd")
    # containerd's config format is TOML; the values here are plain strings and lists.
    text = f"""version = 3
root = "{base / "root"}"
state = "{base / "run"}"

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"

[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = "{layout.registry}/{pause_name(layout.bin_dir)}"

[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = "{base / "certs.d"}"

[plugins.'io.containerd.cri.v1.runtime']
  # Without CAP_SYS_RESOURCE runc cannot set the -998 the kubelet asks for a sandbox.
  restrict_oom_score_adj = true
  # Network namespaces under the state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  enable_cdi = false

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = ["{layout.bin_dir / "cni"}"]
  conf_dir = "{base.parent / "cni" / "net.d"}"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
  SystemdCgroup = false
  # runc's own state, otherwise in /run/containerd/runc.
  Root = "{base / "runc"}"
"""
    return text


def registry_config(layout: Layout) -> str:
    pki = layout.pki
    document = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(_node(layout, "registry", "data"))},
            "delete": {"enabled": True},
        },
        "http": {
            "addr": layout.registry,
            "tls": {
                "certificate": str(pki.server_cert("registry")),
                "key": str(pki.server_key("registry")),
            },
        },
    }
    return yaml.safe_dump(document)


def kubelet_config(layout: Layout) -> str:
    pki = layout.pki
    document = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": layout.ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": layout.ports.kubelet_healthz,
        "tlsCertFile": str(pki.server_cert("kubelet")),
        "tlsPrivateKeyFile": str(pki.server_key("kubelet")),
        # Only certificate holders and bearer tokens the API server vouches for, and only
        # for what RBAC lets them do on this node: as a production kubelet.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_cert)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [DNS_IP],
        # No outside resolver for any Pod: cluster names only.
        "resolvConf": "",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "podLogsDir": str(_node(layout, "pod-logs")),
        "staticPodPath": "",
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        # A shared development machine: evict only when it is really full.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "shutdownGracePeriod": "0s",
    }
    return yaml.safe_dump(document)


def kube_proxy_config(layout: Layout) -> str:
    document = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.client_kubeconfig("kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "detectLocalMode": "ClusterCIDR",
        "healthzBindAddress": f"127.0.0.1:{layout.ports.kube_proxy_healthz}",
        "metricsBindAddress": f"127.0.0.1:{layout.ports.kube_proxy_metrics}",
        "nodePortAddresses": [f"{NODE_IP}/32"],
        # No CAP_SYS_RESOURCE; and leave the host's conntrack sysctls as they are.
        "oomScoreAdj": 0,
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": {"localhostNodePorts": False},
    }
    return yaml.safe_dump(document)


def website_config(layout: Layout) -> str:
    document = _website.config(
        listen=layout.website_url.removeprefix("http://"),
        admin=layout.website_admin,
        objectstore=layout.objectstore_url.removeprefix("http://"),
        data_dir=_node(layout, "website", "data"),
        rules=_website.load_rules(layout.state_dir),
    )
    return json.dumps(document, indent=2)


def path(layout: Layout, name: str) -> Path:
    """Where the file ``name`` (a key of ``FILES``) lives."""
    if name == "registry-hosts":
        return _node(layout, "containerd", "certs.d", layout.registry, "hosts.toml")
    return _node(layout, *_PATHS[name])


_PATHS = {
    "containerd": ("containerd", "config.toml"),
    "cni": ("cni", "net.d", "10-devcluster.conflist"),
    "registry": ("registry", "config.yml"),
    "kubelet": ("kubelet.yaml",),
    "kube-proxy": ("kube-proxy.yaml",),
    "website": ("website", "caddy.json"),
}

FILES = {
    "containerd": containerd_config,
    "registry-hosts": registry_hosts,
    "cni": cni_config,
    "registry": registry_config,
    "kubelet": kubelet_config,
    "kube-proxy": kube_proxy_config,
    "website": website_config,
}


def write(layout: Layout, name: str) -> Path:
    """Render the file ``name`` (a key of ``FILES``) again."""
    return _write(path(layout, name), FILES[name](layout))


def write_node(layout: Layout) -> None:
    for name in FILES:
        write(layout, name)
