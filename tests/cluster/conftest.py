"""The cluster tier: every test here runs on the local cluster topology (3 KRaft brokers, a
Redis Cluster of 3 masters and 3 replicas, services/devstack/cluster.py), whatever
PBSEG_TOPOLOGY says, and may kill its nodes. `make test` runs it in its cluster pass, together
with the end-to-end tier and the crash proof on the same cluster."""

from __future__ import annotations

import pytest

from stack_fixture import running_stack  # noqa: F401 - the fixture
from topology import local_cluster


@pytest.fixture(scope="session")
def infra():
    yield from local_cluster()
