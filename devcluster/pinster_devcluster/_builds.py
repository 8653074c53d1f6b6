"""The images the devcluster builds: its node's own, the local base, and the product's.

Image names in the node's registry:

==========================================  ==============================================
``devcluster/pause:<binary hash>``          the Pods' sandbox (containerd's pinned image)
``devcluster/coredns:<binary hash>``        cluster DNS
``devcluster/python:3.11-bookworm-<key>``   Debian bookworm + python3, the product's base
``pinster-images:<git revision>``           the product, from the repository's Dockerfile
==========================================  ==============================================
"""

from __future__ import annotations

import hashlib
import os
import ssl
import subprocess
from pathlib import Path

from pinster_devcluster._images import (
    BuildKit,
    ImageRef,
    registry_digest,
    registry_host,
    scratch_context,
)
from pinster_devcluster._rootfs import rootfs_tarball

PRODUCT_REPOSITORY = "pinster-images"
#: non-root, as the upstream images run (ports below 1024 are open to non-root in Pods:
#: containerd sets ip_unprivileged_port_start=0 in every Pod's network namespace)
_NOBODY = "65532:65532"


def _short_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with path.resolve().open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:12]


def pause_name(bin_dir: Path) -> str:
    return f"devcluster/pause:{_short_hash(bin_dir / 'pause')}"


def coredns_name(bin_dir: Path) -> str:
    return f"devcluster/coredns:{_short_hash(bin_dir / 'coredns')}"


def _single_binary(buildkit: BuildKit, registry: str, name: str, binary: Path) -> ImageRef:
    repository, tag = name.rsplit(":", 1)
    dockerfile = (
        "FROM scratch\n"
        f"COPY {binary.name} /{binary.name}\n"
        f"USER {_NOBODY}\n"
        f'ENTRYPOINT ["/{binary.name}"]\n'
    )
    with scratch_context({binary.name: binary}, dockerfile) as context:
        return buildkit.build(context, repository=f"{registry}/{repository}", tag=tag)


def push_node_images(
    buildkit: BuildKit, bin_dir: Path, registry: str, ca_cert: Path
) -> dict[str, ImageRef]:
    """Build and push pause and CoreDNS where the registry lacks them; return both."""
    refs = {}
    for key, name in (("pause", pause_name(bin_dir)), ("coredns", coredns_name(bin_dir))):
        repository, tag = name.split(":", 1)
        digest = registry_digest(registry, repository, tag, ca_cert)
        if digest is None:
            refs[key] = _single_binary(buildkit, registry, name, bin_dir / key)
        else:
            refs[key] = ImageRef(f"{registry}/{repository}", tag, digest)
    return refs


def base_image_ref(
    buildkit: BuildKit, cache_dir: Path, registry: str, ca_cert: Path | None
) -> ImageRef:
    """Debian bookworm with python3, pushed to ``registry`` (once per rootfs)."""
    tarball = rootfs_tarball(cache_dir)
    repository, tag = "devcluster/python", f"3.11-bookworm-{tarball.stem.rsplit('-', 1)[-1]}"
    digest = registry_digest(registry, repository, tag, ca_cert)
    if digest is not None:
        return ImageRef(f"{registry}/{repository}", tag, digest)
    dockerfile = 'FROM scratch\nADD rootfs.tar /\nCMD ["python3"]\n'
    with scratch_context({"rootfs.tar": tarball}, dockerfile) as context:
        return buildkit.build(context, repository=f"{registry}/{repository}", tag=tag)


def source_revision(context: Path) -> str:
    """The git revision of ``context``, with ``-dirty`` when the work tree has changes
    (the digest still tells two dirty builds apart)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(context), *args], capture_output=True, text=True, check=False
        ).stdout.strip()

    revision = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return f"{revision}-dirty" if git("status", "--porcelain") else revision


def ca_bundle() -> Path | None:
    """The CA bundle this machine's pip trusts (it may sit behind an intercepting proxy);
    given to the build as a secret, never stored in a layer."""
    for candidate in (
        os.environ.get("PIP_CERT"),
        os.environ.get("SSL_CERT_FILE"),
        ssl.get_default_verify_paths().cafile,
        "/etc/ssl/certs/ca-certificates.crt",
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def product_image(
    buildkit: BuildKit,
    context: Path,
    *,
    registry: str,
    base: str | None,
    repository: str = PRODUCT_REPOSITORY,
    tag: str | None = None,
    extras: str = "",
) -> ImageRef:
    """The repository's Dockerfile, built from ``base`` (None: the Dockerfile's default,
    python:3.11-slim) and pushed as ``registry/repository:tag``."""
    build_args = {"EXTRAS": extras} if extras else {}
    if base is not None:
        build_args["BASE_IMAGE"] = base
    bundle = ca_bundle()
    return buildkit.build(
        context,
        repository=f"{registry}/{repository}",
        tag=tag or source_revision(context),
        build_args=build_args,
        secrets={"ca-bundle": bundle} if bundle else None,
    )


def build_and_push(
    bin_dir: Path,
    cache_dir: Path,
    context: Path,
    *,
    registry: str,
    registry_ca: Path | None = None,
    base_image: str | None = None,
    repository: str = PRODUCT_REPOSITORY,
    tag: str | None = None,
    extras: str = "",
) -> ImageRef:
    """The product's image into ``registry`` (any registry: the node's, or a user's, with
    credentials from the Docker config as buildctl reads it). Its base is the Debian
    bookworm made here and pushed beside it, unless ``base_image`` names another."""
    cas = {registry_host(registry): registry_ca} if registry_ca else {}
    with BuildKit(bin_dir, cache_dir, registry_cas=cas) as buildkit:
        if base_image is None:
            base_image = base_image_ref(buildkit, cache_dir, registry, registry_ca).pinned
        return product_image(
            buildkit,
            context,
            registry=registry,
            base=base_image,
            repository=repository,
            tag=tag,
            extras=extras,
        )
