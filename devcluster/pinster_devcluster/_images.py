"""Container images: built by BuildKit, pushed to a registry, pulled by the node.

A ``BuildKit`` runs buildkitd (built from its Go module) for the length of a ``with``
block, its cache kept outside the repository, so a second build of unchanged sources
only pushes. Three kinds of image go through it:

- the node's own: the Pods' sandbox (``pause``) and CoreDNS, each one static binary;
- the base the product image builds from here: Debian bookworm with its python3, made
  by debootstrap (``_rootfs.py``), because no outside image registry is reachable;
- the product's image, from the repository's ``Dockerfile``.

Every image is pushed with ``buildctl --output type=image,push=true``; callers deploy it
by digest, so a Pod never runs a stale image that happens to carry the same tag.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from pinster_devcluster import _host, _procs
from pinster_images.errors import PermanentError

log_name = "buildkitd"


class BuildError(PermanentError):
    """An image did not build or push; the message holds buildctl's last lines."""

    reason = "ImageBuildFailed"


@dataclass(frozen=True)
class ImageRef:
    """A pushed image: ``repository`` (``host:port/name``), ``tag`` and ``digest``."""

    repository: str
    tag: str
    digest: str

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}@{self.digest}"

    @property
    def pinned(self) -> str:
        """What a Pod spec should name: the digest decides, the tag is for people."""
        return str(self)


def registry_context(ca_cert: Path | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca_cert) if ca_cert else None)


def registry_host(registry: str) -> str:
    """``host[:port]`` of ``host[:port][/path]``: what TLS and credentials are keyed by."""
    return registry.split("/", 1)[0]


def registry_digest(registry: str, name: str, tag: str, ca_cert: Path | None) -> str | None:
    """The digest ``registry`` (``host[:port][/path]``) has for ``name:tag``; None when it
    has none, or will not say without credentials (then the image is pushed again)."""
    host, _, prefix = registry.partition("/")
    path = f"{prefix}/{name}" if prefix else name
    request = urllib.request.Request(
        f"https://{host}/v2/{path}/manifests/{tag}",
        method="HEAD",
        headers={
            "Accept": ", ".join(
                [
                    "application/vnd.oci.image.index.v1+json",
                    "application/vnd.oci.image.manifest.v1+json",
                    "application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.docker.distribution.manifest.list.v2+json",
                ]
            )
        },
    )
    try:
        context = registry_context(ca_cert)
        # https only (the URL is built above): S310's concern, file: URLs, does not apply.
        with urllib.request.urlopen(request, timeout=5, context=context) as answer:  # noqa: S310
            digest = answer.headers.get("Docker-Content-Digest")
            return str(digest) if digest else None
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403, 404):
            return None
        raise BuildError(f"registry {registry} answered {exc.code} for {name}:{tag}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise BuildError(f"registry {registry} is not reachable: {exc}") from exc


class BuildKit:
    """buildkitd for the length of a ``with`` block; one at a time per cache directory
    (others wait for the lock), since two daemons must not share a root."""

    def __init__(
        self,
        bin_dir: Path,
        cache_dir: Path,
        *,
        registry_cas: Mapping[str, Path] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.bin_dir = bin_dir
        self.root = cache_dir / "buildkit"
        self.registry_cas = dict(registry_cas or {})
        self.timeout = timeout
        self._lock: int | None = None
        self._record: _procs.ProcessRecord | None = None

    @property
    def socket(self) -> Path:
        return self.root / "buildkitd.sock"

    @property
    def log(self) -> Path:
        return self.root / "buildkitd.log"

    def _config(self) -> str:
        lines = [
            f'root = "{self.root / "state"}"',
            "[log]",
            '  level = "warn"',
            "[grpc]",
            f'  address = ["unix://{self.socket}"]',
            "[cdi]",
            "  disabled = true",
            "[worker.oci]",
            "  enabled = true",
            '  snapshotter = "overlayfs"',
            # Build steps (pip) use the machine's network; nothing else runs here.
            '  networkMode = "host"',
            "  gc = true",
            # Every source change leaves a venv layer of a few hundred MB behind.
            '  maxUsedSpace = "5GB"',
            "[worker.containerd]",
            "  enabled = false",
        ]
        for registry, ca in sorted(self.registry_cas.items()):
            lines += [f'[registry."{registry}"]', f'  ca = ["{ca}"]']
        return "\n".join(lines) + "\n"

    def __enter__(self) -> BuildKit:
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            config = self.root / "buildkitd.toml"
            config.write_text(self._config())
            self.socket.unlink(missing_ok=True)
            env = dict(os.environ)
            env["PATH"] = os.pathsep.join([str(self.bin_dir), env.get("PATH", ""), "/usr/sbin"])
            self._record = _procs.spawn(
                [str(self.bin_dir / "buildkitd"), "--config", str(config)], log=self.log, env=env
            )
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            assert self._record is not None
            if not _procs.is_alive(self._record):
                raise BuildError(f"buildkitd exited at start:\n{_tail(self.log)}")
            if (
                self.socket.exists()
                and self._buildctl(["debug", "workers"], check=False).returncode == 0
            ):
                return
            if time.monotonic() > deadline:
                raise BuildError(
                    f"buildkitd not ready after {self.timeout:.0f}s:\n{_tail(self.log)}"
                )
            time.sleep(0.1)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._record is not None:
                _procs.stop(self._record, grace=10)
                self._record = None
            # Build containers are gone with the daemon; what they mounted and the
            # cgroups they ran in are not.
            _host.unmount_under([self.root / "state"])
            _host.kill_cgroup_trees(["buildkit"])
        finally:
            if self._lock is not None:
                os.close(self._lock)
                self._lock = None

    def _buildctl(self, args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bin_dir / "buildctl"), f"--addr=unix://{self.socket}", *args]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if check and result.returncode != 0:
            raise BuildError(
                f"`buildctl {' '.join(args[:1])}` failed ({result.returncode}):\n{_last(result.stderr, 40)}"
            )
        return result

    def build(
        self,
        context: Path,
        *,
        repository: str,
        tag: str,
        dockerfile: Path | None = None,
        build_args: Mapping[str, str] | None = None,
        secrets: Mapping[str, Path] | None = None,
    ) -> ImageRef:
        """Build ``context`` with its Dockerfile (or ``dockerfile``), push it as
        ``repository:tag`` and return it with its digest."""
        dockerfile_dir = (dockerfile or context / "Dockerfile").parent
        with tempfile.TemporaryDirectory() as scratch:
            metadata = Path(scratch) / "metadata.json"
            args = [
                "build",
                "--progress=plain",
                "--frontend=dockerfile.v0",
                f"--local=context={context}",
                f"--local=dockerfile={dockerfile_dir}",
                f"--opt=filename={(dockerfile or context / 'Dockerfile').name}",
                f"--output=type=image,name={repository}:{tag},push=true",
                f"--metadata-file={metadata}",
            ]
            args += [f"--opt=build-arg:{k}={v}" for k, v in sorted((build_args or {}).items())]
            args += [f"--secret=id={k},src={v}" for k, v in sorted((secrets or {}).items())]
            self._buildctl(args)
            digest = json.loads(metadata.read_text())["containerimage.digest"]
        return ImageRef(repository, tag, str(digest))


def _last(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _tail(path: Path) -> str:
    try:
        return _last(path.read_text(errors="replace"), 20)
    except FileNotFoundError:
        return "(no log)"


@contextlib.contextmanager
def scratch_context(files: Mapping[str, Path], dockerfile: str) -> Iterator[Path]:
    """A build context holding ``files`` (name -> source) and a Dockerfile."""
    with tempfile.TemporaryDirectory(prefix="pinster-image-") as directory:
        root = Path(directory)
        for name, source in files.items():
            target = root / name
            try:
                os.link(source.resolve(), target)  # no copy of a 100 MB rootfs if possible
            except OSError:
                shutil.copy2(source.resolve(), target)
        (root / "Dockerfile").write_text(dockerfile)
        yield root
