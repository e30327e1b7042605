"""Fixtures for the black-box suite: a client of the server at $JSONKV_ADDR (test.sh starts the
real server and sets it) and a fresh key prefix per test, so tests sharing a server never meet."""

import os
import uuid

import pytest

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
