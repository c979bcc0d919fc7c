"""The published OpenAPI description matches the service: schemathesis calls every documented
operation with generated input and a valid provider token, and checks each answer against it."""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import schemathesis
import yaml
from hypothesis import given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devtools.devstack import ROOT
from service.accounts import providers as provider_service
from service.archive.records import archive_record
from service.shell.app import create_app
from tests.records import make_record

OPENAPI = ROOT / "docs" / "openapi.yaml"
DESCRIPTION = yaml.safe_load(OPENAPI.read_text())
EXAMPLES = 12  # per operation and mode: about 200 requests, a few seconds
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
PROVIDER_PATHS = {
    "/startConversation",
    "/extractData",
    "/exports/{export_id}/download",
    "/exports/password",
    "/healthz",
    "/readyz",
}


@pytest.fixture
def token(components) -> str:
    """An admin's token: the one role every provider and task route admits."""
    return provider_service.create_provider(
        components.repos.providers, "North Clinic", provider_service.Role.ADMIN
    ).token


def documented_operations() -> list[tuple[str, str]]:
    return [
        (method.upper(), path) for path, item in DESCRIPTION["paths"].items() for method in item
    ]


def has_inputs(method: str, path: str) -> bool:
    """Negative data needs something to break: parameters or a body."""
    operation = DESCRIPTION["paths"][path][method.lower()]
    return bool(operation.get("parameters") or operation.get("requestBody"))


def generation_runs() -> list:
    """Every operation with schema-valid input, and those with inputs with invalid input too."""
    return [
        pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
        for method, path in documented_operations()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        if mode is GenerationMode.POSITIVE or has_inputs(method, path)
    ]


# Not schemathesis' pytest loader (`schemathesis.pytest.from_fixture`): with pytest 9.2 it fails
# on `request.node._nodeid`, which pytest no longer has. The Python API below does the same
# per operation, and the schema is the one the running app serves.
@pytest.mark.parametrize(("method", "path", "mode"), generation_runs())
def test_every_operation_answers_as_documented_without_a_server_error(
    app, token, method, path, mode
):
    operation = schemathesis.openapi.from_wsgi("/openapi.yaml", app)[path][method]
    headers = {"Authorization": f"Bearer {token}"}

    @settings(max_examples=EXAMPLES, deadline=None, database=None)
    @given(case=operation.as_strategy(mode))
    def answers_as_documented(case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    answers_as_documented()


def test_a_real_export_and_its_download_answer_as_documented(app, components, token):
    """Generated links never verify, so the documented 200 of a download is checked here."""
    archive_record(components, make_record())
    schema = schemathesis.openapi.from_wsgi("/openapi.yaml", app)
    headers = {"Authorization": f"Bearer {token}"}
    password = schema["/exports/password"]["GET"].Case()
    password.call_and_validate(headers=headers, checks=CHECKS)
    created = schema["/extractData"]["GET"].Case(query={"format": "xlsx"})
    export = created.call_and_validate(headers=headers, checks=CHECKS).json()
    assert export["records"] == 1
    link = urlsplit(export["download_url"])
    download = schema["/exports/{export_id}/download"]["GET"].Case(
        path_parameters={"export_id": export["export_id"]},
        query={"token": parse_qs(link.query)["token"][0]},
    )
    response = download.call_and_validate(checks=CHECKS)
    assert response.status_code == 200
    assert response.headers["content-type"] == ["application/zip"]


@pytest.mark.parametrize(
    ("role", "method", "path"),
    [
        ("scheduler", "GET", "/extractData"),
        ("scheduler", "GET", "/exports/password"),
        ("scheduler", "POST", "/startConversation"),
        ("staff", "POST", "/tasks/flush-outbox"),
    ],
)
def test_a_role_refused_on_an_operation_gets_the_documented_403(
    app, components, role, method, path
):
    token = provider_service.create_provider(components.repos.providers, "Other", role).token
    operation = schemathesis.openapi.from_wsgi("/openapi.yaml", app)[path][method]
    case = operation.Case(body={"to": "+34612345678"}) if "start" in path else operation.Case()
    response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS)
    assert response.status_code == 403


def test_the_description_is_served_publicly_as_yaml_and_matches_the_file(client):
    response = client.get("/openapi.yaml")
    assert response.status_code == 200
    assert response.mimetype == "application/yaml"
    assert response.data == OPENAPI.read_bytes()
    description = yaml.safe_load(response.data)
    assert description["openapi"].startswith("3.")
    assert PROVIDER_PATHS <= set(description["paths"])


def test_every_provider_route_of_the_app_is_documented(app):
    """A provider endpoint added to the app without its description fails here."""
    documented = {re.sub(r"\{(\w+)\}", r"<\1>", path) for path in DESCRIPTION["paths"]}
    served = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.split(".")[0] in ("exports", "health", "docs")
        or rule.rule in ("/startConversation", "/tasks/flush-outbox")
    }
    assert served <= documented


def test_the_production_app_serves_the_description_without_a_token(components):
    production = dataclasses.replace(
        components, config=components.config.replace(app_env="production")
    )
    response = create_app(components=production).test_client().get("/openapi.yaml")
    assert response.status_code == 200
    assert yaml.safe_load(response.data)["paths"]


def test_the_production_image_ships_the_description():
    """blueprints/docs.py reads docs/openapi.yaml at start: the image must contain it."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^COPY .*docs/openapi\.yaml", dockerfile, re.MULTILINE)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    if "docs" in ignored:  # a later `!` line re-includes a file of an ignored folder
        assert "!docs/openapi.yaml" in ignored[ignored.index("docs") :]
