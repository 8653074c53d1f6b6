"""The node's network on this machine: its address, the pod bridge, and the egress guard.

There is no ``dummy`` kernel module here and the kubelet refuses a loopback node IP, so
the node address lives on an empty bridge of its own. Pods get addresses on a second
bridge (made here, with the pods' gateway address, used by the CNI bridge plugin).
A Service answered by another Pod is DNAT'ed by kube-proxy and then forwarded across
the bridge, so ``net.ipv4.ip_forward`` must be on, as on every Kubernetes node (it is
put back by ``down``). What keeps Pods on this machine is the guard: an nftables table
of our own that rejects anything a pod sends beyond the node's addresses and the pod
and service ranges. Being a separate table at an earlier priority, it holds whatever
iptables rules others (kube-proxy, Docker) add or reorder.

The names and ranges are fixed: the node is one per machine (``_machine.py``).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pinster_devcluster._host import HostError, run

#: the one Node, registered by the kubelet
NODE_NAME = "devcluster-node"
NODE_BRIDGE = "pinster-node"
NODE_IP = "10.253.0.1"
POD_BRIDGE = "pinster-pods"
POD_CIDR = "10.254.0.0/24"
#: the pods' default gateway, the pod bridge's own address
POD_GATEWAY = "10.254.0.1"
SERVICE_CIDR = "10.96.0.0/16"
#: the first address of SERVICE_CIDR: the ``kubernetes`` Service, in the serving cert
SERVICE_IP = "10.96.0.1"
#: the cluster DNS Service (CoreDNS), as on kubeadm clusters
DNS_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
#: nftables table holding the egress guard (family inet: IPv4 and IPv6)
GUARD_TABLE = "pinster_devcluster_guard"


@dataclass(frozen=True)
class Addresses:
    """What is already on this machine, read once before anything is changed."""

    links: frozenset[str]
    #: address -> interface
    owners: dict[str, str]

    @classmethod
    def read(cls) -> Addresses:
        raw = run(["ip", "-j", "addr", "show"]).stdout
        links: set[str] = set()
        owners: dict[str, str] = {}
        for link in json.loads(raw or "[]"):
            links.add(link["ifname"])
            for info in link.get("addr_info", []):
                owners[info["local"]] = link["ifname"]
        return cls(frozenset(links), owners)


def overlapping_routes(routes: list[dict[str, Any]]) -> list[str]:
    """Routes (``ip -j route`` entries) of other interfaces that cover one of our ranges:
    another network is there, and Pods or the node would be routed into it."""
    ours = [ipaddress.ip_network(n) for n in (POD_CIDR, SERVICE_CIDR, f"{NODE_IP}/32")]
    clashes = []
    for route in routes:
        dst, dev = route.get("dst", ""), route.get("dev", "")
        if dst == "default" or dev in (NODE_BRIDGE, POD_BRIDGE):
            continue
        network = ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        if any(network.overlaps(mine) for mine in ours):
            clashes.append(f"{dst} dev {dev}")
    return clashes


def check_free() -> None:
    """Refuse, saying why, when our addresses or ranges are taken by something else."""
    found = Addresses.read()
    for address, expected in ((NODE_IP, NODE_BRIDGE), (POD_GATEWAY, POD_BRIDGE)):
        owner = found.owners.get(address)
        if owner is not None and owner != expected:
            raise HostError(
                f"{address} is already assigned to {owner}; the devcluster node needs it "
                f"on {expected}. Remove it from {owner} or stop what uses it."
            )
    clashes = overlapping_routes(json.loads(run(["ip", "-j", "route", "show"]).stdout or "[]"))
    if clashes:
        raise HostError(
            f"routes of this machine overlap the devcluster's ranges ({POD_CIDR}, "
            f"{SERVICE_CIDR}, {NODE_IP}): {'; '.join(clashes)}"
        )


def _ensure_bridge(name: str, address: str, prefix: int) -> None:
    links = Addresses.read()
    if name not in links.links:
        run(["ip", "link", "add", name, "type", "bridge"])
    if links.owners.get(address) != name:
        run(["ip", "addr", "replace", f"{address}/{prefix}", "dev", name])
    run(["ip", "link", "set", name, "up"])


_GUARD_RULES = f"""
table inet {GUARD_TABLE} {{
    chain forward {{
        # Before the filter hook (priority 0) where iptables-nft and kube-proxy live.
        type filter hook forward priority -10; policy accept;
        iifname "{POD_BRIDGE}" ip daddr {{ {POD_CIDR}, {SERVICE_CIDR} }} accept
        iifname "{POD_BRIDGE}" reject with icmpx admin-prohibited
    }}
}}
"""


def setup() -> None:
    """Bridges and guard; idempotent (a restarted node keeps what is there)."""
    check_free()
    _ensure_bridge(NODE_BRIDGE, NODE_IP, 32)
    _ensure_bridge(POD_BRIDGE, POD_GATEWAY, ipaddress.ip_network(POD_CIDR).prefixlen)
    # Replace the whole table in one transaction: never a moment without the guard.
    script = f"table inet {GUARD_TABLE}\ndelete table inet {GUARD_TABLE}\n{_GUARD_RULES}"
    run(["nft", "-f", "-"], input=script)
    # Only once the guard is in place (``_host.save`` recorded the old value).
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")


def teardown() -> list[str]:
    """Remove the bridges (their veths went with the pods' namespaces) and the guard.
    Returns what was removed."""
    removed = []
    links = Addresses.read().links
    for name in (POD_BRIDGE, NODE_BRIDGE):
        if name in links:
            run(["ip", "link", "delete", name])
            removed.append(f"link {name}")
    # Veths whose pod namespace is gone already vanished; any left on our bridge would
    # have been deleted with it.
    if _table_exists():
        run(["nft", "delete", "table", "inet", GUARD_TABLE])
        removed.append(f"nft table inet {GUARD_TABLE}")
    return removed


def _table_exists() -> bool:
    result = subprocess.run(
        ["nft", "list", "table", "inet", GUARD_TABLE], capture_output=True, check=False
    )
    return result.returncode == 0
