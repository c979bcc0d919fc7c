import json

import pytest

from service import providers as provider_service
from service.cli import cli
from service.errors import NotFoundError


def _create(components, name="North Clinic"):
    return provider_service.create_provider(components.repos.providers, name)


def test_a_new_provider_token_opens_provider_endpoints(client, components):
    created = _create(components)
    response = client.get("/exports/password", headers={"Authorization": f"Bearer {created.token}"})
    assert response.status_code == 200
    assert len(response.json["password"]) >= 20
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic abc",
        "Bearer ipt_0123456789abcdef_wrong",
        "Bearer ipt_../x_y",
        "Bearer not-a-token",
    ],
)
def test_a_missing_or_unknown_token_gets_401_with_a_json_error(client, components, authorization):
    _create(components)
    headers = {"Authorization": authorization} if authorization is not None else {}
    response = client.get("/exports/password", headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert "password" not in response.json


def test_a_revoked_token_gets_401(client, components):
    created = _create(components)
    provider_service.revoke_provider(components.repos.providers, created.provider.provider_id)
    response = client.get("/exports/password", headers={"Authorization": f"Bearer {created.token}"})
    assert response.status_code == 401


def test_only_the_token_hash_is_stored(components):
    created = _create(components)
    stored = (
        components.repos.firestore.collection("providers")
        .document(created.provider.provider_id)
        .get()
        .to_dict()
    )
    assert created.token not in json.dumps(stored, default=str)
    assert created.token.split("_", 2)[2] not in json.dumps(stored, default=str)


def test_every_authentication_is_audited_without_the_token(client, components):
    created = _create(components)
    good = {"Authorization": f"Bearer {created.token}", "User-Agent": "clinic-script/1.0"}
    client.get("/exports/password", headers=good)
    client.get("/exports/password", headers={"Authorization": "Bearer ipt_0123456789abcdef_x"})
    events = components.repos.audit.list(action="provider.authenticate")
    assert [event.outcome for event in events] == ["success", "failure"]
    assert events[0].actor == created.provider.provider_id
    assert events[0].user_agent == "clinic-script/1.0"
    assert events[0].ip == "127.0.0.1"
    assert events[1].details["reason"] == "unknown"
    stored = [
        doc.to_dict() for doc in components.repos.firestore.collection("audit_events").stream()
    ]
    assert created.token.split("_", 2)[2] not in json.dumps(stored, default=str)


def test_revoking_an_unknown_provider_is_not_found(components):
    with pytest.raises(NotFoundError, match="provider nope not found"):
        provider_service.revoke_provider(components.repos.providers, "nope")


def test_cli_creates_lists_and_revokes_providers(components, client):
    from click.testing import CliRunner

    runner = CliRunner()
    created = runner.invoke(cli, ["providers", "create", "South Clinic"], obj=components)
    assert created.exit_code == 0, created.output
    lines = dict(line.split(": ", 1) for line in created.stdout.splitlines())
    token, provider_id = lines["token"], lines["provider_id"]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/exports/password", headers=headers).status_code == 200

    listed = runner.invoke(cli, ["providers", "list", "--json"], obj=components)
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(row["provider_id"], row["name"], row["revoked_at"]) for row in rows] == [
        (provider_id, "South Clinic", None)
    ]
    assert token not in listed.output

    revoked = runner.invoke(cli, ["providers", "revoke", provider_id], obj=components)
    assert revoked.exit_code == 0
    assert client.get("/exports/password", headers=headers).status_code == 401


def test_cli_errors_are_one_line_and_non_zero(components):
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["providers", "revoke", "nope"], obj=components)
    assert result.exit_code == 1
    assert result.output.strip() == "Error: provider nope not found"


def test_the_flask_cli_runner_reaches_the_same_commands(runner, components):
    result = runner.invoke(args=["intake", "providers", "create", "Via Flask"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in components.repos.providers.list()] == ["Via Flask"]


def test_repeated_bad_tokens_are_slowed_down_without_locking_out_a_good_token(client, components):
    created = _create(components)
    bad = {"Authorization": "Bearer ipt_0123456789abcdef_guess"}
    limit = components.auth_failures.max_failures
    statuses = [client.get("/exports/password", headers=bad).status_code for _ in range(limit)]
    assert statuses == [401] * limit
    throttled = client.get("/exports/password", headers=bad)
    assert throttled.status_code == 429
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert throttled.json["error"]["code"] == "rate_limited"
    good = client.get("/exports/password", headers={"Authorization": f"Bearer {created.token}"})
    assert good.status_code == 200
    # Throttled failures are not audited one by one: the log cannot be flooded.
    for _ in range(20):
        client.get("/exports/password", headers=bad)
    failures = [
        e
        for e in components.repos.audit.list(action="provider.authenticate")
        if e.outcome == "failure"
    ]
    assert len(failures) == limit
