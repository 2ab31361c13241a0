"""Fixtures of the server tests: a fake engine, and servers that stop when the test ends."""

from contextlib import ExitStack

import pytest

from llmc.runtime.server import create_app
from serve_harness import FakeEngine, running_server


@pytest.fixture
def fake_engine():
    return FakeEngine()


@pytest.fixture
def serve():
    """serve(engine, graceful_timeout=5.0, **create_app_kwargs) -> a Served, running until the test ends."""
    with ExitStack() as stack:
        yield lambda engine, graceful_timeout=5.0, **kwargs: stack.enter_context(
            running_server(create_app(engine, **kwargs), graceful_timeout))
