"""The README's configuration reference names every setting the code reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROLE_FOLDERS = ["src", "ingress", "operator", "jobs", "devcluster"]


def variables_read_by_the_code() -> set[str]:
    found: set[str] = set()
    for folder in ROLE_FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            # Whole quoted names only; prefixes such as "PINSTER_JOB_" are not settings.
            found.update(re.findall(r"[\"'](PINSTER_[A-Z0-9_]*[A-Z0-9])[\"']", text))
            # config.env_pem(env, NAME) also reads NAME_FILE.
            pem = re.findall(r"env_pem\([^,]+, [\"'](PINSTER_[A-Z0-9_]+)[\"']", text)
            found.update(f"{name}_FILE" for name in pem)
    return found


def configuration_reference() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Configuration reference")
    return readme[start : readme.index("\n## ", start + 1)]


def test_every_variable_the_code_reads_is_in_the_readme() -> None:
    variables = variables_read_by_the_code()
    assert len(variables) > 50  # the scan itself works
    reference = configuration_reference()
    missing = sorted(v for v in variables if f"`{v}`" not in reference)
    assert not missing, f"README's configuration reference lacks {missing}"


def test_every_variable_in_the_readme_exists() -> None:
    documented = set(re.findall(r"`(PINSTER_[A-Z0-9_]+)`", configuration_reference()))
    run_script_variables = {"PINSTER_RUN_DIR", "PINSTER_RUN_VALUES"}
    stale = sorted(documented - variables_read_by_the_code() - run_script_variables)
    assert not stale, f"README documents settings nothing reads: {stale}"
