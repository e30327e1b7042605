"""Fixtures for the black-box suite: a client of the server at $JSONKV_ADDR (test.sh starts the
real server and sets it), a fresh key prefix per test, so tests sharing a server never meet,
and servers of a test's own ($JSONKV_SERVER_BIN) for TLS, tokens, restarts and failover."""

import os
import uuid

import pytest
from servers import ServerProcess, make_pki

import jsonkv_client


@pytest.fixture(scope="session")
def target() -> str:
    addr = os.environ.get("JSONKV_ADDR")
    if not addr:
        pytest.fail("JSONKV_ADDR is not set: run the suite with clients/python/test.sh")
    return addr


@pytest.fixture(scope="session")
def kv(target: str):
    with jsonkv_client.connect(target) as client:
        yield client


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> str:
    return f"py/{request.node.name}/{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def start_server(tmp_path):
    """Starts a server of the test's own: `start_server("--in-memory")`; stopped at the end."""
    binary = os.environ.get("JSONKV_SERVER_BIN")
    if not binary:
        pytest.fail("JSONKV_SERVER_BIN is not set: run the suite with clients/python/test.sh")
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        server = ServerProcess(binary, list(args), tmp_path / f"server-{len(started)}")
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))
