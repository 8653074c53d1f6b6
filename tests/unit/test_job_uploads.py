"""What the operator tells a Job of its uploads (``PINSTER_UPLOADS``), and what a Job
pod does without Kubernetes: no credentials, no kubernetes client."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pinster_operator._settings import BatchSettings

from pinster_images.resource import JobUpload, decode_job_uploads, encode_job_uploads

ONE = JobUpload("u-1", "0" * 32, "raw/" + "0" * 32, ("512x512", "100xauto"))
#: Linux refuses to start a process with an environment string longer than this.
MAX_ARG_STRLEN = 128 * 1024


def test_uploads_round_trip() -> None:
    two = JobUpload("u-2", "1" * 32, "raw/" + "1" * 32)
    assert decode_job_uploads(encode_job_uploads({"one": ONE, "two": two})) == {
        "one": ONE,
        "two": two,
    }


def test_the_largest_batch_fits_one_environment_variable() -> None:
    """As many uploads as a Job may carry, each at the limits the CRD and Kubernetes set
    (name 253, key 1024, 32 sizes)."""
    longest = JobUpload("0" * 36, "0" * 32, "k" * 1024, ("1000x1000",) * 32)
    uploads = {f"{i:03d}" + "n" * 250: longest for i in range(BatchSettings.MAX_SIZE_LIMIT)}
    assert len(encode_job_uploads(uploads).encode()) < MAX_ARG_STRLEN


@pytest.mark.parametrize(
    "text",
    ["", "[]", '{"x": 1}', '{"x": {"uid": "u"}}', '{"x": {"uid": "u", "md5": "m", "key": "k"}}'],
)
def test_anything_else_is_refused_with_what_is_wrong(text: str) -> None:
    with pytest.raises(ValueError, match="not a list of uploads by name"):
        decode_job_uploads(text)


def test_a_job_process_never_imports_the_kubernetes_client() -> None:
    probe = (
        "import sys; from pinster_jobs import cli; from pinster_images.cli import COMMANDS; "
        "print('kubernetes' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"
