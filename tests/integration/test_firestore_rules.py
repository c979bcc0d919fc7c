"""firestore.rules deny every client: only the server's credentials reach the data."""

import base64
import json
import time

import pytest
import requests

from tests.support.stack import PROJECT_ID

COLLECTIONS = [
    "conversations", "intakes", "exports", "providers", "audit_events", "_migrations", "_meta",
    "rate_limits", "intake_days", "identity_links",
]  # fmt: skip


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _end_user_token() -> str:
    """A Firebase ID token for a signed-in user; the emulator accepts unsigned ones."""
    now = int(time.time())
    claims = {
        "iss": f"https://securetoken.google.com/{PROJECT_ID}", "aud": PROJECT_ID,
        "sub": "patient-uid", "user_id": "patient-uid", "iat": now, "exp": now + 3600,
        "auth_time": now, "email": "someone@example.com",
        "firebase": {"sign_in_provider": "password", "identities": {}},
    }  # fmt: skip
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."


CLIENTS = {
    "unauthenticated": {},
    "signed-in user": {"Authorization": f"Bearer {_end_user_token()}"},
}


@pytest.fixture
def documents_url(stack):
    return f"http://{stack.firestore.host}/v1/projects/{PROJECT_ID}/databases/(default)/documents"


@pytest.fixture
def seeded(components):
    for collection in COLLECTIONS:
        components.repos.firestore.collection(collection).document("seed").set({"value": 1})


def _assert_denied(response: requests.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"


@pytest.mark.parametrize("who", CLIENTS)
@pytest.mark.parametrize("collection", COLLECTIONS)
def test_clients_cannot_read_list_or_write(documents_url, seeded, collection, who):
    headers = CLIENTS[who]
    _assert_denied(requests.get(f"{documents_url}/{collection}/seed", headers=headers))
    _assert_denied(requests.get(f"{documents_url}/{collection}", headers=headers))
    query = {"structuredQuery": {"from": [{"collectionId": collection}]}}
    _assert_denied(requests.post(f"{documents_url}:runQuery", json=query, headers=headers))
    body = {"fields": {"value": {"integerValue": "2"}}}
    _assert_denied(requests.post(f"{documents_url}/{collection}", json=body, headers=headers))
    _assert_denied(requests.patch(f"{documents_url}/{collection}/seed", json=body, headers=headers))
    _assert_denied(requests.delete(f"{documents_url}/{collection}/seed", headers=headers))


def test_the_server_client_reads_and_writes_past_the_rules(components, seeded):
    for collection in COLLECTIONS:
        reference = components.repos.firestore.collection(collection).document("seed")
        assert reference.get().to_dict() == {"value": 1}
        reference.update({"value": 2})
        assert reference.get().to_dict() == {"value": 2}
