"""Failed logins and failed download links are limited per address across every instance."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from devtools.devstack import free_port
from repositories.clients import make_firestore_client
from repositories.ratelimits import RateLimitRepository
from service.accounts.ratelimit import SharedFailureLimiter
from service.exports import links
from service.shell.app import create_app
from service.shell.components import build_components
from tests.support.servers import gunicorn

BAD = {"Authorization": "Bearer ipt_0123456789abcdef_guess"}
CLIENT_IP = "198.51.100.7"  # what Cloud Run's front end appends to X-Forwarded-For
LIMIT = 10


def from_client(index: int = 0, client_ip: str = CLIENT_IP) -> dict[str, str]:
    """Headers as Cloud Run delivers them: whatever the caller sent, then the real address."""
    return {"X-Forwarded-For": f"10.66.{index // 250}.{index % 250}, {client_ip}"}


@pytest.fixture
def two_apps(components, config):
    """Two apps with their own components: two instances sharing only Firestore."""
    other = create_app(components=build_components(config))
    first = create_app(components=components)
    return first.test_client(), other.test_client()


def audited(components, action: str, outcome: str) -> list:
    return [e for e in components.repos.audit.list(action=action) if e.outcome == outcome]


def export_url(client, provider) -> str:
    headers = {"Authorization": f"Bearer {provider.token}"}
    response = client.get("/extractData", query_string={"format": "csv"}, headers=headers)
    assert response.status_code == 200, response.json
    return response.json["download_url"]


def tampered(url: str) -> str:
    token = parse_qs(urlsplit(url).query)["token"][0]
    return url.replace(token, token[:-2] + ("zz" if not token.endswith("zz") else "yy"))


# -- provider tokens ----------------------------------------------------------------------------
@pytest.mark.parametrize("eleventh", [0, 1])
def test_bad_tokens_spread_over_two_instances_share_one_limit(two_apps, components, eleventh):
    statuses = [
        two_apps[index % 2].get("/exports/password", headers={**BAD, **from_client()}).status_code
        for index in range(LIMIT)
    ]
    assert statuses == [401] * LIMIT
    throttled = two_apps[eleventh].get("/exports/password", headers={**BAD, **from_client()})
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    again = two_apps[1 - eleventh].get("/exports/password", headers={**BAD, **from_client()})
    assert again.status_code == 429
    assert len(audited(components, "provider.authenticate", "failure")) == LIMIT
    (summary,) = audited(components, "provider.authenticate", "throttled")
    assert (summary.ip, summary.details["reason"]) == (CLIENT_IP, "rate_limited")


def test_bad_tokens_are_limited_across_two_gunicorn_servers(config, components, tmp_path):
    log = tmp_path / "gunicorn.log"
    with gunicorn(config, log, workers=1) as first, gunicorn(config, log, workers=1) as second:
        bases = (first, second)
        statuses = [
            requests.get(
                f"{bases[index % 2]}/exports/password",
                headers={**BAD, **from_client(index)},
                timeout=10,
            ).status_code
            for index in range(LIMIT + 2)
        ]
    # The caller's own X-Forwarded-For hops changed on every request: the address did not.
    assert statuses == [401] * LIMIT + [429, 429]
    assert len(audited(components, "provider.authenticate", "failure")) == LIMIT
    assert len(audited(components, "provider.authenticate", "throttled")) == 1


def test_a_good_token_gets_in_from_an_address_throttled_on_another_instance(
    two_apps, components, provider
):
    for index in range(LIMIT + 1):
        two_apps[0].get("/exports/password", headers={**BAD, **from_client(index)})
    good = {"Authorization": f"Bearer {provider.token}", **from_client()}
    assert two_apps[1].get("/exports/password", headers=good).status_code == 200
    assert two_apps[1].get("/exports/password", headers={**BAD, **from_client()}).status_code == 429


def test_spoofed_forwarded_hops_do_not_rotate_the_address_but_real_addresses_differ(client):
    for index in range(LIMIT):
        client.get("/exports/password", headers={**BAD, **from_client(index)})
    assert client.get("/exports/password", headers={**BAD, **from_client(99)}).status_code == 429
    elsewhere = from_client(0, client_ip="203.0.113.9")
    assert client.get("/exports/password", headers={**BAD, **elsewhere}).status_code == 401


def test_without_a_configured_proxy_the_socket_peer_is_the_client_whatever_it_forwards(
    components,
):
    direct = dataclasses.replace(components, config=components.config.replace(trusted_proxy_hops=0))
    client = create_app(components=direct).test_client()
    for index in range(LIMIT + 1):
        forged = {"X-Forwarded-For": f"198.51.100.{index}", "X-Forwarded-Proto": "https"}
        response = client.get(
            "/exports/password",
            headers={**BAD, **forged},
            environ_base={"REMOTE_ADDR": "203.0.113.9"},
        )
    assert response.status_code == 429  # one address, however many it claimed
    failures = audited(components, "provider.authenticate", "failure")
    assert {event.ip for event in failures} == {"203.0.113.9"}


def test_the_counter_holds_a_keyed_hash_and_every_refusal_but_no_address(client, components):
    for index in range(LIMIT + 5):
        client.get("/exports/password", headers={**BAD, **from_client(index)})
    documents = [doc for doc in components.repos.firestore.collection("rate_limits").stream()]
    (document,) = documents
    assert document.id == components.auth_failures.document_id(CLIENT_IP)
    stored = document.to_dict()
    assert (stored["scope"], stored["failures"]) == ("auth", LIMIT + 1)
    assert stored["throttled"] == 1  # the rest are counted by this process, in batches
    assert stored["expires_at"] > datetime.now(UTC)
    text = json.dumps({"id": document.id, **stored}, default=str)
    assert CLIENT_IP not in text and "198.51.100" not in text


# -- signed download links ----------------------------------------------------------------------
def test_failed_links_are_limited_across_instances_and_summarised_in_the_audit(
    two_apps, components, config, provider
):
    url = export_url(two_apps[0], provider)
    export_id = url.split("/exports/")[1].split("/")[0]
    expired, _ = links.sign_download_token(
        config.secret_key,
        export_id,
        provider.provider.provider_id,
        datetime.now(UTC) - timedelta(seconds=config.export_link_ttl_seconds + 5),
        config.export_link_ttl_seconds,
    )
    unknown_id = "0" * 32
    unknown, _ = links.sign_download_token(
        config.secret_key, unknown_id, provider.provider.provider_id, datetime.now(UTC), 900
    )
    attempts = (
        [tampered(url)] * 4
        + [f"/exports/{export_id}/download?token={expired}"] * 3
        + [f"/exports/{unknown_id}/download?token={unknown}"] * 3
    )
    statuses = [
        two_apps[index % 2].get(attempt, headers=from_client(index)).status_code
        for index, attempt in enumerate(attempts)
    ]
    assert statuses == [403] * 4 + [410] * 3 + [404] * 3
    for index in range(20):
        refused = two_apps[index % 2].get(tampered(url), headers=from_client(index))
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.json["error"]["code"] == "rate_limited"
    assert len(audited(components, "export.download", "failure")) == LIMIT
    (summary,) = audited(components, "export.download", "throttled")
    assert (summary.ip, summary.details["limit"]) == (CLIENT_IP, LIMIT)
    assert summary.details["path"] == "/exports/<export_id>/download"
    stored = [
        doc.to_dict() for doc in components.repos.firestore.collection("audit_events").stream()
    ]
    assert parse_qs(urlsplit(url).query)["token"][0][:20] not in json.dumps(stored, default=str)


def test_a_valid_link_is_honoured_from_a_throttled_address(two_apps, components, provider):
    url = export_url(two_apps[0], provider)
    for index in range(LIMIT + 1):
        two_apps[0].get(tampered(url), headers=from_client(index))
    assert two_apps[1].get(tampered(url), headers=from_client()).status_code == 429
    good = two_apps[1].get(url, headers=from_client())
    assert good.status_code == 200
    assert good.headers["Content-Type"] == "application/zip"
    assert len(audited(components, "export.download", "success")) == 1


def test_download_and_login_failures_are_counted_apart(client, components, provider):
    url = export_url(client, provider)
    for index in range(LIMIT + 1):
        client.get(tampered(url), headers=from_client(index))
    assert client.get("/exports/password", headers={**BAD, **from_client()}).status_code == 401


# -- Firestore down -----------------------------------------------------------------------------
@pytest.fixture
def store_down(components, config, monkeypatch):
    """Point only the limiters' counters at a port where nothing answers."""
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    dead = RateLimitRepository(make_firestore_client(config))
    monkeypatch.undo()
    components.auth_failures = SharedFailureLimiter(dead, config.secret_key, "auth")
    components.download_failures = SharedFailureLimiter(dead, config.secret_key, "download")


def test_with_the_counter_store_down_bad_tokens_get_401_then_429_and_good_tokens_get_in(
    client, components, provider, store_down
):
    statuses = [
        client.get("/exports/password", headers={**BAD, **from_client()}).status_code
        for _ in range(LIMIT + 1)
    ]
    assert statuses == [401] * LIMIT + [429]  # the per-process limit still holds
    good = {"Authorization": f"Bearer {provider.token}", **from_client()}
    assert client.get("/exports/password", headers=good).status_code == 200
    url = export_url(client, provider)
    assert client.get(tampered(url), headers=from_client()).status_code == 403
    assert client.get(url, headers=from_client()).status_code == 200
    assert len(audited(components, "provider.authenticate", "throttled")) == 1
    assert not list(components.repos.firestore.collection("rate_limits").stream())
