"""A container's environment, resolved as the kubelet does (pure functions, unit-tested)."""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

#: (kind, namespace, name) -> data, or None when the object does not exist.
Lookup = Callable[[str, str, str], Mapping[str, str] | None]

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


class EnvError(Exception):
    """A reference cannot be resolved: the container must not start (CreateContainerConfigError)."""


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined names are replaced, ``$$`` escapes a
    ``$``, and references to undefined names are left as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)

    return _REFERENCE.sub(replace, value)


def _field(pod: Mapping[str, Any], path: str) -> str:
    metadata = pod.get("metadata", {})
    status = pod.get("status", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIPs": ",".join(ip.get("ip", "") for ip in status.get("podIPs", [])),
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    raise EnvError(f"unsupported fieldRef {path!r}")


_QUANTITY = re.compile(r"^([0-9.]+)([a-zA-Z]*)$")
_FACTORS = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip


def quantity(value: str) -> float:
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _FACTORS:
        raise EnvError(f"cannot parse quantity {value!r}")
    return float(match.group(1)) * _FACTORS[match.group(2)]


def _resource(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    section, _, name = str(ref.get("resource", "")).partition(".")
    resources = container.get("resources", {}) or {}
    value = (resources.get(section) or {}).get(name)
    if value is None:  # the kubelet falls back to node allocatable; ours is generous
        value = {"cpu": "64", "memory": "256Gi"}.get(name, "0")
    divisor = quantity(str(ref.get("divisor", "1")))
    return str(math.ceil(quantity(str(value)) / divisor))


def _from_object(lookup: Lookup, kind: str, namespace: str, ref: Mapping[str, Any]) -> str | None:
    data = lookup(kind, namespace, ref["name"])
    optional = bool(ref.get("optional", False))
    if data is None:
        if optional:
            return None
        raise EnvError(f'{kind} "{ref["name"]}" not found')
    if ref["key"] not in data:
        if optional:
            return None
        raise EnvError(f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}")
    return data[ref["key"]]


def resolve(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    lookup: Lookup,
    base: Mapping[str, str],
) -> dict[str, str]:
    """The environment of one container: ``base`` (the node's variables, service links),
    then ``envFrom`` in order, then ``env`` in order with ``$(VAR)`` expansion."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(key)
            if ref is None:
                continue
            data = lookup(kind, namespace, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvError(f'{kind} "{ref["name"]}" not found')
            env.update({f"{prefix}{k}": v for k, v in data.items()})
    for var in container.get("env") or []:
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
            continue
        source = var["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = _field(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            value = _resource(container, source["resourceFieldRef"])
        elif "configMapKeyRef" in source:
            value = _from_object(lookup, "ConfigMap", namespace, source["configMapKeyRef"])
        elif "secretKeyRef" in source:
            value = _from_object(lookup, "Secret", namespace, source["secretKeyRef"])
        else:
            raise EnvError(f"unsupported valueFrom for {name}: {sorted(source)}")
        if value is not None:
            env[name] = value
    return env


def decode_secret(data: Mapping[str, str] | None) -> dict[str, str]:
    return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (data or {}).items()}


def service_links(services: list[Mapping[str, Any]]) -> dict[str, str]:
    """The kubelet's Docker-links style variables for the Services of a namespace."""
    env: dict[str, str] = {}
    for service in services:
        spec = service.get("spec", {})
        ip = spec.get("clusterIP")
        if not ip or ip == "None":
            continue
        prefix = service["metadata"]["name"].upper().replace("-", "_")
        ports = spec.get("ports") or []
        if not ports:
            continue
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            protocol = str(port.get("protocol", "TCP"))
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(
                    port["port"]
                )
            base = f"{prefix}_PORT_{port['port']}_{protocol}"
            env[base] = f"{protocol.lower()}://{ip}:{port['port']}"
            env[f"{base}_PROTO"] = protocol.lower()
            env[f"{base}_PORT"] = str(port["port"])
            env[f"{base}_ADDR"] = ip
        env[f"{prefix}_PORT"] = (
            f"{str(ports[0].get('protocol', 'TCP')).lower()}://{ip}:{ports[0]['port']}"
        )
    return env
