"""Session-wide real components: the Firestore emulator and fake-gcs-server, started once."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.devstack import LocalStack
from tests.support.fakes.graph import FakeGraphApi
from tests.support.fakes.kms import FakeKms
from tests.support.stack import (
    GRAPH_TOKEN,
    KMS_KEY_NAME,
    PHONE_NUMBER_ID,
    PROJECT_ID,
    REENGAGE_TEMPLATE,
    REMINDER_TEMPLATE,
    START_TEMPLATE,
)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Start the emulators once per test session and stop them at the end, even on failure."""
    log_dir = Path(tmp_path_factory.mktemp("devstack"))
    local_stack = LocalStack(log_dir)
    local_stack.start()
    saved = {name: os.environ.get(name) for name in (*local_stack.env, "GOOGLE_CLOUD_PROJECT")}
    # The Google client libraries find the emulators through these standard variables.
    os.environ.update(local_stack.env)
    os.environ["GOOGLE_CLOUD_PROJECT"] = PROJECT_ID
    try:
        yield local_stack
    finally:
        local_stack.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def fake_kms() -> Iterator[FakeKms]:
    """A protocol-level Cloud KMS, reached through the real google-cloud-kms client."""
    with FakeKms() as kms:
        kms.create_key(KMS_KEY_NAME)
        yield kms


@pytest.fixture(scope="session")
def fake_graph() -> Iterator[FakeGraphApi]:
    """A Graph API that records requests and enforces Meta's limits and errors."""
    with FakeGraphApi(
        GRAPH_TOKEN,
        PHONE_NUMBER_ID,
        approved_templates=[START_TEMPLATE, REENGAGE_TEMPLATE, REMINDER_TEMPLATE],
    ) as graph:
        yield graph
