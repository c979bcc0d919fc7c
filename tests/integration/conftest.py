"""Fixtures for tests against the real local stack: config, components, app, client, runner,
and the patient and provider accounts several test modules use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from devtools.devstack import LocalStack
from service.accounts import providers as provider_service
from service.conversation.sender import ReplySender
from service.shell.app import create_app
from service.shell.components import (
    Components,
    build_backend_readiness,
    build_components,
    build_export_slots,
    build_failure_limiter,
)
from service.shell.config import CLOUD_RUN_PROXY_HOPS, Config
from tests.support.browser import chromium
from tests.support.fakes.graph import FakeGraphApi
from tests.support.fakes.kms import FakeKms
from tests.support.stack import (
    APP_SECRET,
    BUCKET,
    GRAPH_TOKEN,
    KMS_KEY_NAME,
    PHONE_NUMBER_ID,
    PROJECT_ID,
    START_TEMPLATE,
)
from tests.support.whatsapp import Patient


@pytest.fixture(scope="session")
def config(stack: LocalStack, fake_kms: FakeKms, fake_graph: FakeGraphApi) -> Config:
    return Config(
        app_env="test",
        project_id=PROJECT_ID,
        archive_bucket=BUCKET,
        firestore_emulator_host=stack.env["FIRESTORE_EMULATOR_HOST"],
        storage_emulator_host=stack.env["STORAGE_EMULATOR_HOST"],
        kms_key_uri=f"gcp-kms://{KMS_KEY_NAME}",
        kms_endpoint=fake_kms.endpoint,
        graph_api_url=fake_graph.base_url,
        meta_access_token=GRAPH_TOKEN,
        whatsapp_phone_number_id=PHONE_NUMBER_ID,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_start_template=START_TEMPLATE,
        # Requests arrive as through Cloud Run's front end: the rate-limit tests send the
        # X-Forwarded-For it appends.
        trusted_proxy_hops=CLOUD_RUN_PROXY_HOPS,
    )


@pytest.fixture(scope="session")
def components(config: Config) -> Components:
    built = build_components(config)
    built.repos.ensure_bucket()
    built.sender = sender_without_retries(built)
    return built


def sender_without_retries(components: Components) -> ReplySender:
    """The app's sender without its own retries of a failed round.

    Tests of the outbox check what the flush task and a patient's next message recover; a
    retry of the sender's own, a second later, would race them. tests/integration/
    test_sender.py checks those retries with a sender of its own.
    """
    return ReplySender(components, 8, 1.0, retry_delays=())


@pytest.fixture(scope="session")
def initial_keyset(components: Components) -> bytes:
    """Create the session's KMS-wrapped keyset once, as `keys init` does in production."""
    components.keys.init()
    return components.repos.bucket.blob(components.config.tink_keyset).download_as_bytes()


@pytest.fixture
def reset_data(
    stack: LocalStack,
    components: Components,
    fake_graph: FakeGraphApi,
    fake_kms: FakeKms,
    initial_keyset: bytes,
) -> Callable[[], None]:
    """Return the function that empties every store; hypothesis tests call it per example."""

    def reset() -> None:
        fake_graph.reset()
        # Nothing an earlier test left to the sender (a poll of a lease) reaches this one.
        components.sender.stop(5.0)
        components.sender = sender_without_retries(components)
        # Fresh per-process fronts; their shared counts go with the Firestore data below.
        components.auth_failures = build_failure_limiter(
            components.config, components.repos, "auth"
        )
        components.download_failures = build_failure_limiter(
            components.config, components.repos, "download"
        )
        components.export_slots = build_export_slots(components.config)
        # No readiness answer carried over from an earlier test (it is cached for seconds).
        components.backend_readiness = build_backend_readiness(components.repos)
        fake_kms.set_unavailable(False)
        stack.clear_firestore(PROJECT_ID)
        components.repos.ensure_bucket()
        blobs = list(components.repos.bucket.list_blobs())
        if blobs:
            components.repos.bucket.delete_blobs(blobs)
        # Every test starts with the same one-key keyset, whatever an earlier test rotated.
        keyset_blob = components.repos.bucket.blob(components.config.tink_keyset)
        keyset_blob.upload_from_string(initial_keyset, content_type="application/json")
        components.keys.forget()
        fake_kms.reset_calls()

    return reset


@pytest.fixture(autouse=True)
def clean_data(reset_data: Callable[[], None]) -> None:
    """Start every test from empty data; clear before, not after, so failures leave evidence."""
    reset_data()


@pytest.fixture
def app(components: Components) -> Iterator[Flask]:
    application = create_app(components=components)
    application.config["TESTING"] = True
    yield application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


@pytest.fixture
def patient(client: FlaskClient, fake_graph: FakeGraphApi) -> Patient:
    """A patient on WhatsApp, known by phone number, writing to the app through its webhook."""
    return Patient(client, fake_graph, APP_SECRET)


@pytest.fixture
def provider(components: Components) -> provider_service.NewProvider:
    """A staff account, with the token shown once at creation."""
    return provider_service.create_provider(components.repos.providers, "North Clinic")


@pytest.fixture
def provider_headers(components: Components) -> dict[str, str]:
    """The Authorization header of a staff account."""
    token = provider_service.create_provider(components.repos.providers, "Clinic").token
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def admin_token(components: Components) -> str:
    """An admin's token: the one role every provider and task route admits."""
    return provider_service.create_provider(
        components.repos.providers, "North Clinic", provider_service.Role.ADMIN
    ).token


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (one per browser test module)."""
    with chromium() as launched:
        yield launched
