"""Firestore or Cloud Storage failing under any route: 503 `unavailable` with Retry-After,
never a 500, within seconds (the emulators stopped, frozen, or refusing a request)."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator

import pytest
from flask import Flask
from google.api_core.exceptions import InvalidArgument

from devtools import payloads
from devtools.devstack import LocalStack, free_port
from repositories.archive import ArchiveRepository
from service.accounts.providers import create_provider
from service.shell.app import create_app
from service.shell.components import build_components
from tests.support.records import make_record
from tests.support.stack import APP_SECRET
from tests.support.whatsapp import Patient, post_signed

PROVIDER_CALLS = [
    ("GET", "/exports/password", None),
    ("GET", "/extractData?format=csv", None),
    ("POST", "/startConversation", {"to": "+34612345678"}),
    ("POST", "/tasks/flush-outbox", None),
]


@pytest.fixture
def token(components) -> str:
    return create_provider(components.repos.providers, "Clinic").token


@pytest.fixture
def firestore_down(config, monkeypatch) -> Iterator[Flask]:
    """An app whose Firestore client points at a port nobody listens on."""
    # The client library reads the emulator address from the environment when it is built.
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    app = create_app(components=build_components(config))
    app.config["TESTING"] = True
    yield app


@pytest.fixture
def storage_down(config) -> Flask:
    """An app whose Cloud Storage client points at a port nobody listens on."""
    dead = config.replace(storage_emulator_host=f"http://127.0.0.1:{free_port()}")
    app = create_app(components=build_components(dead))
    app.config["TESTING"] = True
    return app


def call(app: Flask, method: str, path: str, body: dict | None, token: str):
    started = time.monotonic()
    response = app.test_client().open(
        path, method=method, json=body, headers={"Authorization": f"Bearer {token}"}
    )
    return response, time.monotonic() - started


def assert_unavailable(response, elapsed: float) -> None:
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.json["error"]["code"] == "unavailable"
    assert int(response.headers["Retry-After"]) >= 1
    assert elapsed < 20


def signed_download_url(client, token: str) -> str:
    created = client.get("/extractData?format=csv", headers={"Authorization": f"Bearer {token}"})
    assert created.status_code == 200, created.json
    return created.json["download_url"]


@pytest.mark.parametrize(("method", "path", "body"), PROVIDER_CALLS)
def test_every_provider_endpoint_answers_503_with_retry_after_when_firestore_is_down(
    firestore_down, token, method, path, body
):
    response, elapsed = call(firestore_down, method, path, body, token)
    assert_unavailable(response, elapsed)


def test_a_download_link_answers_503_when_firestore_is_down(client, firestore_down, token):
    url = signed_download_url(client, token)
    started = time.monotonic()
    response = firestore_down.test_client().get(url)
    assert_unavailable(response, time.monotonic() - started)


def test_provider_endpoints_answer_503_while_firestore_is_frozen(client, token, stack: LocalStack):
    """Frozen (SIGSTOP), the emulator accepts connections and answers nothing: the token
    lookup gives up within seconds instead of the library's default of minutes."""
    url = signed_download_url(client, token)
    emulator = stack.firestore.process
    os.killpg(emulator.pid, signal.SIGSTOP)
    try:
        for method, path, body in PROVIDER_CALLS[:2]:
            response, elapsed = call(client.application, method, path, body, token)
            assert_unavailable(response, elapsed)
        started = time.monotonic()
        assert_unavailable(client.get(url), time.monotonic() - started)
    finally:
        os.killpg(emulator.pid, signal.SIGCONT)


def test_exports_and_downloads_answer_503_when_storage_is_down(
    client, components, storage_down, token
):
    url = signed_download_url(client, token)
    started = time.monotonic()
    assert_unavailable(storage_down.test_client().get(url), time.monotonic() - started)
    ArchiveRepository.archive(components.repos.archive, make_record())
    response, elapsed = call(storage_down, "GET", "/extractData?format=csv", None, token)
    assert_unavailable(response, elapsed)
    response, elapsed = call(storage_down, "GET", "/exports/password", None, token)
    assert response.status_code == 200  # needs no Storage


def fill_to_the_size_limit(reference) -> None:
    """Pad a document to within 100 bytes of Firestore's 1 MiB limit, as a runaway field would."""
    for size in range(1_048_500, 1_000_000, -100):
        try:
            reference.update({"padding": "x" * size})
            return
        except InvalidArgument:
            continue
    raise AssertionError("the document could not be padded")


def test_a_conversation_document_over_firestores_size_limit_gets_503_not_a_500(
    client, components, fake_graph, caplog
):
    """Firestore refuses a document over 1 MiB with InvalidArgument: the webhook must answer
    503 (Meta retries; one ERROR line with the traceback a minute), never a 500 per retry."""
    patient = Patient(client, fake_graph, APP_SECRET)
    patient.says("hello")
    conversations = components.repos.firestore.collection("conversations")
    (document,) = list(conversations.stream())
    fill_to_the_size_limit(document.reference)
    message = payloads.button_reply("language:en", "English", timestamp=patient._timestamp())
    envelope = payloads.envelope([payloads.message_value(patient.wa_id, message)])
    with caplog.at_level(logging.ERROR):
        responses = [post_signed(client, APP_SECRET, envelope) for _ in range(2)]
    for response in responses:
        assert response.status_code == 503, response.get_data(as_text=True)
        assert response.json["error"] == {
            "code": "unavailable",
            "message": "Firestore or Cloud Storage refused the request (InvalidArgument)",
        }
        assert response.headers["Retry-After"] == "10"
    lines = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert len(lines) == 1 and lines[0].exc_info is not None
    assert "internal" not in caplog.text
