"""The upload service's HTTP contract as deployed: schemathesis (every check, positive and
negative cases, stateful links, a fixed seed) against the Service the chart installs on
the devcluster, with a token for the uploading imageable and one for another imageable
(tests/support/contract.py). The same check runs in-process in
tests/unit/test_contract_local.py."""

from __future__ import annotations

import pytest

from pinster_images import keys
from tests.support.contract import run_contract
from tests.support.stack import SERVICE_URL, Stack

SEED = 20261201
#: Long enough for the whole run (minutes); the service checks exp with 10 s leeway.
TOKEN_TTL = 3600.0


@pytest.fixture
def contract_target(stack: Stack) -> tuple[str, str, str]:
    """(base URL, token of the uploading imageable, token of another imageable), for
    the e2e ``stack`` (the chart on the devcluster, PinsterApi's stand-in as issuer)."""
    stack.start()

    def token(imageable_id: str) -> str:
        claims = {"user_id": "u-contract", "imageable_type": "Pin", "imageable_id": imageable_id}
        return keys.mint(
            stack.api_private,
            issuer=stack.api.url,
            audience=SERVICE_URL,
            claims=claims,
            ttl=TOKEN_TTL,
        )

    return stack.url, token("contract-owner"), token("contract-other")


def test_the_deployed_service_keeps_its_documented_contract(
    contract_target: tuple[str, str, str],
) -> None:
    url, token, other = contract_target
    run_contract(url, token, other, seed=SEED)
