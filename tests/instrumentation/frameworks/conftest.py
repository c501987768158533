"""Fixtures of the Django tests (``pytestmark = pytest.mark.usefixtures("django_settings")``): the
test project's settings, and the process's client exporting into memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tallyhub.instrumentation.client import TallyhubClient

from ..conftest import capturing_client


@pytest.fixture(scope="module")
def django_settings() -> None:
    from .django_project import configure

    configure()  # once per process: the test project's settings


@pytest.fixture
def tallyhub(django_settings: None) -> Iterator[TallyhubClient]:
    """The process's client for this test: exporting into memory."""
    from tallyhub.instrumentation.frameworks.django import set_client

    client = capturing_client()
    set_client(client)
    yield client
    set_client(None)
