"""The upload service's HTTP contract, checked by schemathesis against a running service.

:func:`run_contract` points schemathesis at ``<base_url>/openapi.json`` with every check,
positive and negative cases, the stateful links the document declares (upload, then read
its status), a fixed seed, and two identities: ``owner`` sends every request and
``other`` (another imageable) replays the owner's status reads, which must not show it
the upload (schemathesis' ``object_level_authorization``). It runs the ``st`` CLI in a
child process: the CLI is schemathesis' stable interface, its report is the readable one
(with a curl line per failure), and the test process keeps no schemathesis state.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

#: Upload answers a schema cannot foresee: what the bytes of a well-formed request are
#: (an image of the declared format, whole, within the limits) is for the service to find.
IMAGE_VERDICTS = ("413", "415", "422")
UPLOADS = ("uploadLegacy", "upload", "uploadTrailingSlash")
# schemathesis' defaults (4.x); 413 added to the refusals: it is one like any other.
POSITIVE_STATUSES = ("2xx", "3xx", "401", "403", "404", "409", "429", "5xx")
NEGATIVE_STATUSES = (
    *("400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"),
    "5xx",
)

REPO = Path(__file__).resolve().parents[2]


class ContractFailure(AssertionError):
    """schemathesis found a difference between the document and the service; the
    message is its report."""


def config(auth_file: Path, seed: int, max_examples: int) -> dict[str, Any]:
    """``schemathesis.toml``, as data."""
    return {
        "seed": seed,
        # One worker: the same seed gives the same requests in the same order.
        "workers": 1,
        "color": False,
        "continue-on-failure": True,
        # /generate answers 301 to the object store; the answer is the contract, not the image.
        "max-redirects": 0,
        "request-timeout": 30,
        "cache": {"enabled": False},
        "hooks": "tests.support.contract_hooks",
        "generation": {"mode": "all", "max-examples": max_examples, "database": "none"},
        "checks": {
            "enabled": True,
            "positive_data_acceptance": {"expected-statuses": list(POSITIVE_STATUSES)},
            "negative_data_rejection": {"expected-statuses": list(NEGATIVE_STATUSES)},
        },
        "auth": {"wfc": {"path": str(auth_file), "user": "owner", "peers": ["owner", "other"]}},
        "operations": [
            {
                "include-operation-id": list(UPLOADS),
                "checks": {
                    "positive_data_acceptance": {
                        "expected-statuses": [*POSITIVE_STATUSES, *IMAGE_VERDICTS]
                    }
                },
            }
        ],
    }


def toml(data: dict[str, Any], prefix: str = "") -> str:
    """Just enough TOML for :func:`config`: JSON scalars and lists are TOML values too."""
    lines: list[str] = []
    tables: list[str] = []
    for key, value in data.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            tables.append(f"[{name}]\n" + toml(value, name))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            tables.extend(f"[[{name}]]\n" + _inline(item) for item in value)
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join([*lines, *tables]) + "\n"


def _inline(table: dict[str, Any], prefix: str = "") -> str:
    """A table's keys as dotted keys (nested tables inside an array of tables)."""
    lines: list[str] = []
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            lines.append(_inline(value, name).rstrip("\n"))
        else:
            lines.append(f"{name} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def wfc_auth(token: str, other_token: str) -> dict[str, Any]:
    """The two identities, in Web Fuzzing Commons' auth format (what schemathesis reads)."""
    return {
        "auth": [
            {"name": name, "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {t}"}]}
            for name, t in (("owner", token), ("other", other_token))
        ]
    }


def run_contract(
    base_url: str,
    token: str,
    other_token: str,
    seed: int,
    *,
    max_examples: int = 100,
    timeout: float = 1800,
) -> str:
    """schemathesis against the service at ``base_url``: its report when every check
    passed, else :class:`ContractFailure` carrying it.

    ``token`` speaks for the imageable that uploads; ``other_token`` for another one.
    Tokens must stay valid for the whole run (minutes).
    """
    with tempfile.TemporaryDirectory(prefix="pinster-contract-") as tmp:
        work = Path(tmp)
        auth_file = work / "auth.json"
        auth_file.write_text(json.dumps(wfc_auth(token, other_token)))
        config_file = work / "schemathesis.toml"
        config_file.write_text(toml(config(auth_file, seed, max_examples)))
        command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config_file)]
        command += ["run", f"{base_url.rstrip('/')}/openapi.json"]
        # cwd: anything schemathesis writes (reports, crash files) stays in the temp dir.
        done = subprocess.run(
            command,
            cwd=work,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": _pythonpath()},
            check=False,
        )
    report = done.stdout + done.stderr
    if done.returncode != 0:
        raise ContractFailure(f"schemathesis exited {done.returncode}:\n{report}")
    return report


def _pythonpath() -> str:
    """The repository first, so the child process finds the hooks module."""
    return os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
