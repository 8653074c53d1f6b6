"""The devcluster's node is a real Kubernetes node: kubelet and containerd run Pods from
images pulled from the node's registry, kube-proxy serves Services, CoreDNS names them,
credentials are those of a production node, Pods cannot reach beyond this machine, and
``down`` leaves the machine as it found it."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from pinster_devcluster import NODE_IP, NODE_NAME, DevCluster
from pinster_devcluster._host import HostError
from pinster_devcluster._network import GUARD_TABLE
from pinster_devcluster.paths import pki_dir

from tests.support.kube import Kubectl
from tests.support.machine import differences, snapshot
from tests.support.pods import pod_manifest, run_to_completion, wait_running
from tests.support.waiting import wait_for

pytestmark = pytest.mark.cluster

#: Reports what the runtime enforces, from inside the container, as JSON.
INSPECT = r"""
import json, os, socket
facts = {"uid": os.getuid(), "gid": os.getgid()}
try:
    open("/written-to-root", "w")
    facts["root_writable"] = True
except OSError as exc:
    facts["root_writable"] = False
    facts["root_error"] = exc.strerror
with open("/tmp/probe", "w") as handle:
    handle.write("ok")
facts["tmp_writable"] = True
status = dict(line.split(":\t", 1) for line in open("/proc/self/status") if ":\t" in line)
facts["cap_eff"] = status["CapEff"].strip()
facts["cap_bnd"] = status["CapBnd"].strip()
facts["no_new_privs"] = status["NoNewPrivs"].strip()
facts["seccomp"] = status["Seccomp"].strip()
facts["memory_limit"] = int(open("/sys/fs/cgroup/memory/memory.limit_in_bytes").read())
facts["cpu_quota"] = int(open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read())
facts["cpu_period"] = int(open("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read())
facts["hostname"] = socket.gethostname()
print(json.dumps(facts))
"""


def test_the_node_runs_containerd_and_the_kubelet_of_the_cluster(kube_api: Any) -> None:
    node = client.CoreV1Api(kube_api).read_node(NODE_NAME)
    info = node.status.node_info
    assert info.container_runtime_version.startswith("containerd://2.")
    assert info.kubelet_version == "v1.35.4"
    assert info.kube_proxy_version in ("", "v1.35.4")  # deprecated field, may be empty
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["InternalIP"] == NODE_IP
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    assert ready and ready[0].status == "True"


def test_restricted_security_and_limits_are_enforced_by_the_runtime(
    kube_api: Any, namespace: str, product_image: Any
) -> None:
    resources = {
        "requests": {"cpu": "100m", "memory": "64Mi"},
        "limits": {"cpu": "300m", "memory": "150Mi"},
    }
    manifest = pod_manifest(
        "inspect", product_image.pinned, ["python3", "-c", INSPECT], resources=resources
    )
    code, logs = run_to_completion(kube_api, namespace, manifest)
    assert code == 0, logs
    facts = json.loads(logs.strip().splitlines()[-1])
    assert (facts["uid"], facts["gid"]) == (65532, 65532)
    assert facts["root_writable"] is False and facts["root_error"] == "Read-only file system"
    assert facts["tmp_writable"] is True
    assert facts["cap_eff"] == facts["cap_bnd"] == "0000000000000000"
    assert facts["no_new_privs"] == "1"
    assert facts["seccomp"] == "2"  # filter mode: RuntimeDefault
    assert facts["memory_limit"] == 150 * 1024 * 1024
    assert facts["cpu_quota"] * 1000 // facts["cpu_period"] == 300  # millicores
    assert facts["hostname"] == "inspect"


def test_a_root_image_user_is_refused_under_run_as_non_root(
    kube_api: Any, namespace: str, devcluster: Any
) -> None:
    """runAsNonRoot is checked by the kubelet against the image's user: the pause image
    is 65532, so ask for uid 0 explicitly and expect the kubelet's refusal."""
    core = client.CoreV1Api(kube_api)
    manifest = pod_manifest("as-root", _pause(devcluster), ["/pause"])
    manifest["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0}
    core.create_namespaced_pod(namespace, manifest)

    def refused() -> str | None:
        pod = core.read_namespaced_pod("as-root", namespace)
        for status in pod.status.container_statuses or []:
            waiting = status.state.waiting
            if waiting is not None and waiting.reason == "CreateContainerConfigError":
                return str(waiting.message)
        return None

    message = wait_for(refused, 60, what="the kubelet to refuse a root container")
    assert "non-root" in message


def _pause(devcluster: Any) -> str:
    from pinster_devcluster._builds import pause_name

    return f"{devcluster.registry}/{pause_name(devcluster.bin_dir)}"


@pytest.fixture
def web(kube_api: Any, namespace: str, product_image: Any) -> Iterator[str]:
    """A Pod serving HTTP on 8000 behind the Service ``web`` (port 80); yields its IP."""
    core = client.CoreV1Api(kube_api)
    manifest = pod_manifest(
        "web",
        product_image.pinned,
        ["python3", "-m", "http.server", "8000", "--directory", "/tmp"],
        labels={"app": "web"},
        restart="Always",
    )
    manifest["spec"]["containers"][0]["readinessProbe"] = {
        "tcpSocket": {"port": 8000},
        "periodSeconds": 1,
    }
    core.create_namespaced_pod(namespace, manifest)
    core.create_namespaced_service(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8000}]},
        },
    )
    pod = wait_running(kube_api, namespace, "web")
    # kube-proxy programs the Service a moment after the endpoint turns ready (until then
    # it rejects): as any client of a new Service, wait for it to answer.
    service = core.read_namespaced_service("web", namespace)
    wait_for(lambda: _get(f"http://{service.spec.cluster_ip}/") == 200, 30, what="Service web")
    yield str(pod.status.pod_ip)


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return int(answer.status)


CLIENT = r"""
import json, socket, sys, urllib.request
out = {}
for name in sys.argv[1:]:
    try:
        out[name] = socket.gethostbyname(name)
    except OSError as exc:
        out[name] = f"error: {exc}"
namespace = open("/var/run/secrets/kubernetes.io/serviceaccount/namespace").read()
url = f"http://web.{namespace}.svc.cluster.local/"
out["service_status"] = urllib.request.urlopen(url, timeout=10).status
# In-cluster config, exactly as the operator loads it.
from kubernetes import client, config
config.load_incluster_config()
out["api_host"] = client.Configuration.get_default_copy().host
out["namespaces_seen"] = len(client.CoreV1Api().list_namespace().items) > 0
print(json.dumps(out))
"""


def test_dns_services_and_in_cluster_config_work_as_on_any_cluster(
    kube_api: Any, namespace: str, product_image: Any, web: str, kubectl: Kubectl
) -> None:
    # The client lists namespaces: its service account may view the cluster.
    account, binding = "reader", f"{namespace}-reader"
    client.CoreV1Api(kube_api).create_namespaced_service_account(
        namespace, {"metadata": {"name": account}}
    )
    kubectl(
        "create",
        "clusterrolebinding",
        binding,
        "--clusterrole=view",
        f"--serviceaccount={namespace}:{account}",
    )
    try:
        names = [
            f"web.{namespace}",
            "kubernetes.default",
            "kube-dns.kube-system.svc.cluster.local",
            "pypi.org",
        ]
        manifest = pod_manifest(
            "dns-client",
            product_image.pinned,
            ["python3", "-c", CLIENT, *names],
            service_account=account,
        )
        code, logs = run_to_completion(kube_api, namespace, manifest)
    finally:
        kubectl.run("delete", "clusterrolebinding", binding, "--ignore-not-found", check=False)
    assert code == 0, logs
    out = json.loads(logs.strip().splitlines()[-1])
    web_service = client.CoreV1Api(kube_api).read_namespaced_service("web", namespace)
    assert out[f"web.{namespace}"] == web_service.spec.cluster_ip
    assert out["kubernetes.default"] == "10.96.0.1"
    assert out["kube-dns.kube-system.svc.cluster.local"] == "10.96.0.10"
    assert out["pypi.org"].startswith("error:"), "names outside the cluster must not resolve"
    assert out["service_status"] == 200
    assert out["api_host"] == "https://10.96.0.1:443"
    assert out["namespaces_seen"] is True


def test_host_reaches_cluster_ips_and_pods_through_kube_proxy(
    kube_api: Any, namespace: str, web: str
) -> None:
    service = client.CoreV1Api(kube_api).read_namespaced_service("web", namespace)
    assert service.spec.cluster_ip.startswith("10.96.")
    for _ in range(20):  # every time, not once: kube-proxy's rules, not luck
        assert _get(f"http://{service.spec.cluster_ip}/") == 200
    assert _get(f"http://{web}:8000/") == 200


def test_kubectl_logs_and_exec_go_through_the_authenticated_kubelet(
    kube_api: Any, namespace: str, web: str, kubectl: Kubectl, devcluster: Any
) -> None:
    assert kubectl("exec", "-n", namespace, "web", "--", "id", "-u").strip() == "65532"
    kubectl("exec", "-n", namespace, "web", "--", "python3", "-c", "print('to the log')")
    logs = kubectl("logs", "-n", namespace, "web")
    assert "Serving HTTP on 0.0.0.0 port 8000" in logs

    # The kubelet's own API: no anonymous access, and a client the CA signed is still
    # asked about by the API server (webhook authorization), so the node's identity may
    # not read its Pods' logs through it.
    node = client.CoreV1Api(kube_api).read_node(NODE_NAME)
    port = node.status.daemon_endpoints.kubelet_endpoint.port
    anonymous = ssl.create_default_context(cafile=str(devcluster.ca_cert))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"https://{NODE_IP}:{port}/pods", timeout=5, context=anonymous)
    assert refused.value.code == 401
    pki = pki_dir(devcluster.state_dir)
    as_proxy = ssl.create_default_context(cafile=str(devcluster.ca_cert))
    as_proxy.load_cert_chain(str(pki / "kube-proxy.crt"), str(pki / "kube-proxy.key"))
    with pytest.raises(urllib.error.HTTPError) as forbidden:
        urllib.request.urlopen(f"https://{NODE_IP}:{port}/pods", timeout=5, context=as_proxy)
    assert forbidden.value.code == 403


def test_node_credentials_are_limited_by_the_node_authorizer(
    devcluster: Any, namespace: str, kube_api: Any
) -> None:
    kubelet = Kubectl(
        devcluster.bin_dir / "kubectl",
        {
            **devcluster.env,
            "KUBECONFIG": str(devcluster.state_dir / "kubeconfigs" / "kubelet.kubeconfig"),
        },
    )
    client.CoreV1Api(kube_api).create_namespaced_secret(
        namespace, {"metadata": {"name": "unbound"}, "stringData": {"a": "b"}}
    )
    assert (
        kubelet("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
        == f"system:node:{NODE_NAME}"
    )
    denied = kubelet.run("get", "secret", "unbound", "-n", namespace, check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    # NodeRestriction: a node may not label itself into node-restricted label keys.
    restricted = kubelet.run(
        "label", "node", NODE_NAME, "node-restriction.kubernetes.io/role=x", check=False
    )
    assert restricted.returncode != 0 and "Forbidden" in restricted.stderr


OUTSIDE = "198.51.100.1"  # TEST-NET-2: played by a network namespace on this machine


@pytest.fixture
def outside_host() -> Iterator[int]:
    """A pretend host beyond the machine: a network namespace with a TCP server, routed
    from here. If the guard failed, Pod traffic would reach it, and nothing else."""
    run = lambda *argv: subprocess.run(argv, check=True, capture_output=True)  # noqa: E731
    netns, host_if, peer_if = "pinster-test-outside", "pt-outside0", "pt-outside1"
    had_netns_dir = Path("/run/netns").exists()
    run("ip", "netns", "add", netns)
    try:
        run("ip", "link", "add", host_if, "type", "veth", "peer", "name", peer_if, "netns", netns)
        run("ip", "addr", "add", "198.51.100.2/30", "dev", host_if)
        run("ip", "link", "set", host_if, "up")
        run("ip", "-n", netns, "addr", "add", f"{OUTSIDE}/30", "dev", peer_if)
        run("ip", "-n", netns, "link", "set", peer_if, "up")
        run("ip", "-n", netns, "link", "set", "lo", "up")
        # Replies to the pod range must find their way back (as a real network's would).
        run("ip", "-n", netns, "route", "add", "default", "via", "198.51.100.2")
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                netns,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                OUTSIDE,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:

            def listening() -> bool:
                with socket.socket() as sock:
                    sock.settimeout(1)
                    return sock.connect_ex((OUTSIDE, 8080)) == 0

            wait_for(listening, 30, what="the outside server")
            yield 8080
        finally:
            server.kill()
            server.wait()
    finally:
        subprocess.run(["ip", "link", "delete", host_if], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "delete", netns], check=False, capture_output=True)
        if not had_netns_dir:  # `ip netns add` made /run/netns a mount point of its own
            subprocess.run(["umount", "/run/netns"], check=False, capture_output=True)
            Path("/run/netns").rmdir()


REACH = r"""
import json, socket, sys
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    sock = socket.socket()
    sock.settimeout(5)
    try:
        sock.connect((host, int(port)))
        out[target] = "connected"
    except OSError as exc:
        out[target] = exc.__class__.__name__
    finally:
        sock.close()
print(json.dumps(out))
"""


def test_pods_reach_the_node_but_nothing_beyond_the_machine(
    kube_api: Any, namespace: str, product_image: Any, devcluster: Any, outside_host: int
) -> None:
    from urllib.parse import urlsplit

    # From this machine the pretend outside host answers: the test can see a leak.
    with urllib.request.urlopen(f"http://{OUTSIDE}:{outside_host}/", timeout=5) as answer:
        assert answer.status == 200
    objectstore = urlsplit(devcluster.s3.url)
    targets = [f"{OUTSIDE}:{outside_host}", f"{objectstore.hostname}:{objectstore.port}"]
    manifest = pod_manifest("reach", product_image.pinned, ["python3", "-c", REACH, *targets])
    code, logs = run_to_completion(kube_api, namespace, manifest)
    assert code == 0, logs
    out = json.loads(logs.strip().splitlines()[-1])
    assert out[targets[1]] == "connected"  # the node's own address
    assert out[targets[0]] != "connected", "a Pod reached beyond the machine"
    assert out[targets[0]] in ("OSError", "ConnectionRefusedError", "TimeoutError")
    guard = subprocess.run(
        ["nft", "list", "table", "inet", GUARD_TABLE], capture_output=True, text=True, check=True
    )
    assert "reject" in guard.stdout


def test_a_second_node_on_the_machine_is_refused(devcluster: Any, tmp_path: Path) -> None:
    second = DevCluster(tmp_path / "second", start_timeout=30)
    with pytest.raises(HostError) as refused:
        second.up()
    message = str(refused.value)
    assert str(devcluster.state_dir) in message and "devcluster down" in message
    assert not (tmp_path / "second" / "pids").exists() or not list(
        (tmp_path / "second" / "pids").iterdir()
    )


def test_down_gives_the_machine_back_and_up_brings_the_node_back(
    devcluster: Any, kube_api: Any
) -> None:
    """On the session's own cluster: `down` leaves no process, mount, interface, iptables
    chain, nftables table, cgroup, sysctl change or directory that the node made; `up`
    on the same state brings everything back (the other tests go on using it)."""
    devcluster.down()
    left = differences(devcluster.machine_before, snapshot())
    restarted = devcluster.up()
    assert left == [], "down left behind:\n" + "\n".join(left)
    assert restarted.already_running is False
    node = client.CoreV1Api(kube_api).read_node(NODE_NAME)
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
