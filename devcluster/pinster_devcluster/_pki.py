"""Certificates and keys of the devcluster, generated once per state directory.

One self-signed CA signs the serving certificates (API server, kubelet, image registry)
and a client certificate per user of the API server or the kubelet; the user is the
certificate's CN and its groups the O entries, which is how both authenticate x509
clients. ECDSA P-256 keeps generation fast.
The service-account key pair is RSA so that tokens are RS256, as on real clusters.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pinster_devcluster._network import NODE_NAME

_VALIDITY = datetime.timedelta(days=3650)
# Tolerate small clock differences between generation and first use.
_BACKDATE = datetime.timedelta(hours=1)

#: name -> (CN, groups) of each client certificate.
CLIENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": ("devcluster-admin", ("system:masters",)),
    "controller-manager": ("system:kube-controller-manager", ()),
    "scheduler": ("system:kube-scheduler", ()),
    # How the apiserver authenticates to aggregated APIs; it also fills the request-header
    # CA that controller-manager and scheduler otherwise complain about on every sync.
    "front-proxy": ("front-proxy-client", ()),
    # The node's own identity: what the Node authorizer and NodeRestriction key on.
    "kubelet": (f"system:node:{NODE_NAME}", ("system:nodes",)),
    # Bound to system:node-proxier by the API server's default RBAC policy.
    "kube-proxy": ("system:kube-proxy", ()),
    # How the API server authenticates to kubelets (logs, exec); the kubelet asks the API
    # server whether it may (webhook authorization), so it is bound to
    # system:kubelet-api-admin at start, as kubeadm does.
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ()),
}

#: name -> CN of each serving certificate (their addresses are given to ``generate``).
SERVERS = ("apiserver", "kubelet", "registry")


@dataclass(frozen=True)
class Pki:
    """Paths of the generated files inside ``<state>/pki``."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.server_cert("apiserver")

    @property
    def serving_key(self) -> Path:
        return self.server_key("apiserver")

    def server_cert(self, name: str) -> Path:
        return self.directory / f"serving-{name}.crt"

    def server_key(self, name: str) -> Path:
        return self.directory / f"serving-{name}.key"

    @property
    def sa_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub(self) -> Path:
        return self.directory / "sa.pub"

    def client_cert(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def client_key(self, name: str) -> Path:
        return self.directory / f"{name}.key"

    def complete(self) -> bool:
        files = [self.ca_cert, self.ca_key, self.sa_key, self.sa_pub]
        files += [self.server_cert(n) for n in SERVERS] + [self.server_key(n) for n in SERVERS]
        files += [self.client_cert(n) for n in CLIENTS] + [self.client_key(n) for n in CLIENTS]
        return all(f.is_file() for f in files)


def _write(path: Path, data: bytes, *, private: bool) -> None:
    # Keys are written 0600 from the start, never briefly world-readable.
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, groups: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in groups]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + _VALIDITY)
    )


def _serves(cert_file: Path, ips: list[str]) -> bool:
    # An address changed since the certificates were made: they must be made again.
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = sans.get_values_for_type(x509.IPAddress)
    return all(ipaddress.ip_address(ip) in have for ip in ips)


def generate(directory: Path, *, service_ip: str, node_ip: str) -> Pki:
    """Create every file (idempotent: an existing complete set is kept, so a restarted
    cluster keeps trusting the kubeconfigs already handed out).

    The API server serves on 127.0.0.1, the node address and the ``kubernetes`` Service
    address; the kubelet and the registry on the node address."""
    pki = Pki(directory)
    if (
        pki.complete()
        and _serves(pki.serving_cert, ["127.0.0.1", node_ip, service_ip])
        and _serves(pki.server_cert("kubelet"), [node_ip])
        and _serves(pki.server_cert("registry"), [node_ip])
    ):
        return pki
    directory.mkdir(parents=True, exist_ok=True)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("devcluster-ca")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(pki.ca_key, _key_pem(ca_key), private=True)
    _write(pki.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM), private=False)

    def leaf(
        subject: x509.Name, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            _builder(subject, ca_name, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)

    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    servers: dict[str, tuple[str, list[str], list[str]]] = {
        "apiserver": ("kube-apiserver", dns, ["127.0.0.1", node_ip, service_ip]),
        "kubelet": (NODE_NAME, [NODE_NAME], [node_ip]),
        "registry": ("devcluster-registry", ["localhost"], [node_ip, "127.0.0.1"]),
    }
    for server, (common_name, names, ips) in servers.items():
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in names]
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
        cert_pem, key_pem = leaf(_name(common_name), ExtendedKeyUsageOID.SERVER_AUTH, sans)
        _write(pki.server_key(server), key_pem, private=True)
        _write(pki.server_cert(server), cert_pem, private=False)

    for client, (common_name, groups) in CLIENTS.items():
        subject = _name(common_name, groups)
        cert_pem, key_pem = leaf(subject, ExtendedKeyUsageOID.CLIENT_AUTH, [])
        _write(pki.client_key(client), key_pem, private=True)
        _write(pki.client_cert(client), cert_pem, private=False)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki.sa_key, _key_pem(sa_key), private=True)
    sa_pub = sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write(pki.sa_pub, sa_pub, private=False)
    return pki
