import json

import pytest

from service.accounts import providers as provider_service
from service.errors import NotFoundError
from service.shell.cli import cli


def _create(components, name="North Clinic", role="staff"):
    return provider_service.create_provider(components.repos.providers, name, role)


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


@pytest.mark.parametrize("wrong_secret", ["flipped", "empty", "short", "another accounts"])
def test_a_real_account_id_with_a_wrong_secret_gets_401(client, components, wrong_secret):
    created = _create(components)
    other = _create(components, "South Clinic")
    prefix, provider_id, secret = created.token.split("_", 2)
    secret = {
        "flipped": secret[:-1] + ("A" if secret[-1] != "A" else "B"),
        "empty": "",
        "short": secret[:8],
        "another accounts": other.token.split("_", 2)[2],
    }[wrong_secret]
    headers = {"Authorization": f"Bearer {prefix}_{provider_id}_{secret}"}
    response = client.get("/exports/password", headers=headers)
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    [event] = components.repos.audit.list(action="provider.authenticate")
    assert (event.outcome, event.actor, event.details["reason"]) == ("failure", None, "unknown")


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


# -- roles -------------------------------------------------------------------------------------
PEOPLE_ENDPOINTS = [
    ("GET", "/extractData", None),
    ("GET", "/exports/password", None),
    ("POST", "/startConversation", {"to": "+34 612 34 56 78"}),
]
ALLOWED = {"GET": 200, "POST": 202}


def _call(client, method, path, body, token):
    return client.open(path, method=method, json=body, headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize(("method", "path", "body"), PEOPLE_ENDPOINTS)
def test_a_scheduler_token_gets_403_on_every_provider_endpoint_and_nothing_happens(
    client, components, fake_graph, method, path, body
):
    created = _create(components, "Cloud Scheduler", role="scheduler")
    response = _call(client, method, path, body, created.token)
    assert response.status_code == 403
    assert response.json["error"]["code"] == "permission_denied"
    assert "scheduler" in response.json["error"]["message"]
    assert set(response.json) == {"error"}
    assert fake_graph.messages == []
    assert list(components.repos.firestore.collection("exports").limit(1).stream()) == []
    [event] = components.repos.audit.list(action="provider.authenticate")
    assert (event.outcome, event.actor) == ("denied", created.provider.provider_id)
    assert event.details == {
        "path": path,
        "reason": "insufficient_role",
        "role": "scheduler",
        "allowed_roles": ["admin", "staff"],
    }
    assert created.token.split("_", 2)[2] not in json.dumps(event.details)


@pytest.mark.parametrize("role", ["staff", "admin"])
@pytest.mark.parametrize(("method", "path", "body"), PEOPLE_ENDPOINTS)
def test_staff_and_admin_tokens_open_every_provider_endpoint(
    client, components, role, method, path, body
):
    created = _create(components, role=role)
    response = _call(client, method, path, body, created.token)
    assert response.status_code == ALLOWED[method], response.json
    [event] = components.repos.audit.list(action="provider.authenticate")
    assert (event.outcome, event.details["role"]) == ("success", role)


@pytest.mark.parametrize(("role", "status"), [("scheduler", 200), ("admin", 200), ("staff", 403)])
def test_the_flush_task_admits_scheduler_and_admin_tokens_only(client, components, role, status):
    created = _create(components, role=role)
    response = client.post(
        "/tasks/flush-outbox", headers={"Authorization": f"Bearer {created.token}"}
    )
    assert response.status_code == status
    if status == 200:
        assert response.json == {"sent": 0, "failed": 0}
    else:
        assert response.json["error"]["code"] == "permission_denied"


def _drop_role(components, provider_id):
    """Store the account as it was before roles existed: no `role` field at all."""
    from google.cloud import firestore

    reference = components.repos.firestore.collection("providers").document(provider_id)
    reference.update({"role": firestore.DELETE_FIELD})
    assert "role" not in reference.get().to_dict()


def test_an_account_stored_without_a_role_works_as_staff(client, components):
    created = _create(components, "Old Clinic")
    _drop_role(components, created.provider.provider_id)
    headers = {"Authorization": f"Bearer {created.token}"}
    assert client.get("/exports/password", headers=headers).status_code == 200
    assert client.post("/tasks/flush-outbox", headers=headers).status_code == 403
    assert [p.role for p in provider_service.list_providers(components.repos.providers)] == [
        "staff"
    ]


def test_the_role_migration_makes_role_less_accounts_staff_once_and_keeps_other_roles(
    components,
):
    from migrations.runner import discover, run_migrations

    old = _create(components, "Old Clinic")
    scheduler = _create(components, "Cloud Scheduler", role="scheduler")
    admin = _create(components, "Administrator", role="admin")
    _drop_role(components, old.provider.provider_id)
    _drop_role(components, admin.provider.provider_id)
    components.repos.firestore.collection("providers").document(admin.provider.provider_id).update(
        {"role": "admin"}
    )  # set again by hand: a role that is there is never touched

    [migration] = [m for m in discover() if m.migration_id == "0004_provider_roles"]
    assert run_migrations(components, available=[migration]).applied == ["0004_provider_roles"]

    def stored_roles():
        return {
            snapshot.id: snapshot.to_dict().get("role")
            for snapshot in components.repos.firestore.collection("providers").stream()
        }

    assert stored_roles() == {
        old.provider.provider_id: "staff",
        scheduler.provider.provider_id: "scheduler",
        admin.provider.provider_id: "admin",
    }
    migration.apply(components)  # idempotent even when run again by hand
    assert components.repos.providers.fill_missing_roles("staff") == 0
    assert stored_roles()[old.provider.provider_id] == "staff"


def test_cli_creates_an_account_with_a_role_and_lists_it(components, client):
    from click.testing import CliRunner

    runner = CliRunner()
    created = runner.invoke(
        cli, ["providers", "create", "Cloud Scheduler", "--role", "scheduler"], obj=components
    )
    assert created.exit_code == 0, created.output
    lines = dict(line.split(": ", 1) for line in created.stdout.splitlines())
    assert lines["role"] == "scheduler"
    headers = {"Authorization": f"Bearer {lines['token']}"}
    assert client.post("/tasks/flush-outbox", headers=headers).status_code == 200
    assert client.get("/exports/password", headers=headers).status_code == 403

    runner.invoke(cli, ["providers", "create", "Front desk"], obj=components)
    listed = runner.invoke(cli, ["providers", "list", "--json"], obj=components)
    assert [(row["name"], row["role"]) for row in map(json.loads, listed.stdout.splitlines())] == [
        ("Cloud Scheduler", "scheduler"),
        ("Front desk", "staff"),
    ]
    table = runner.invoke(cli, ["providers", "list"], obj=components).stdout.splitlines()
    assert "scheduler" in table[0] and "staff" in table[1]


def test_cli_refuses_an_unknown_role(components):
    from click.testing import CliRunner

    result = CliRunner().invoke(
        cli, ["providers", "create", "Root", "--role", "superuser"], obj=components
    )
    assert result.exit_code != 0
    assert components.repos.providers.list() == []


def test_an_unknown_role_is_refused_when_creating_an_account(components):
    from service.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="role must be one of admin, staff, scheduler"):
        _create(components, role="owner")


def test_an_account_with_a_role_the_code_does_not_know_is_refused_everywhere(client, components):
    created = _create(components)
    components.repos.firestore.collection("providers").document(
        created.provider.provider_id
    ).update({"role": "Admin"})  # a typo made in the console must not open anything
    headers = {"Authorization": f"Bearer {created.token}"}
    assert client.get("/exports/password", headers=headers).status_code == 403
    assert client.post("/tasks/flush-outbox", headers=headers).status_code == 403


def test_the_email_migration_gives_older_accounts_a_null_email_and_keeps_set_ones(components):
    from google.cloud import firestore as google_firestore

    from migrations.runner import discover, run_migrations
    from service.accounts.providers import create_provider

    old = _create(components, "Old Clinic")
    person = create_provider(components.repos.providers, "Sam", "staff", "sam@clinic.example")
    accounts = components.repos.firestore.collection("providers")
    accounts.document(old.provider.provider_id).update({"email": google_firestore.DELETE_FIELD})

    [migration] = [m for m in discover() if m.migration_id == "0005_account_emails"]
    assert run_migrations(components, available=[migration]).applied == ["0005_account_emails"]

    stored = {snapshot.id: snapshot.to_dict() for snapshot in accounts.stream()}
    assert "email" in stored[old.provider.provider_id]
    assert stored[old.provider.provider_id]["email"] is None
    assert stored[person.provider.provider_id]["email"] == "sam@clinic.example"
    assert components.repos.providers.by_email("sam@clinic.example").name == "Sam"
