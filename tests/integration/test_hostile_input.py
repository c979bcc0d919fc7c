"""Hostile input at the HTTP edge: raw webhook bytes, the body limit, caching and reflection.

A signed body never gets a 500 (Meta would retry it for a week), an unsigned one changes
nothing, and every response, errors included, stays out of caches and never echoes input as
HTML. The URL walkers below cover every rule in `app.url_map`, so a new endpoint is checked
the day it is added.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

import pytest
import requests

from devtools import payloads
from devtools.devstack import ROOT
from service.shell.app import MAX_BODY_BYTES
from service.whatsapp.webhook import sign
from tests.support.servers import gunicorn
from tests.support.whatsapp import Patient, replies_sent

WEBHOOK = "/getIncomingMessages"
WA_ID = "34612345678"


@pytest.fixture
def secret(components) -> str:
    return components.config.whatsapp_app_secret


def post_raw(client, raw: bytes, secret: str | None, content_type: str | None = "application/json"):
    """POST exact bytes to the webhook, signed over those bytes when a secret is given; return
    once the replies it queued were sent."""
    headers = {"X-Hub-Signature-256": sign(secret, raw)} if secret else {}
    response = client.post(WEBHOOK, data=raw, content_type=content_type, headers=headers)
    return replies_sent(client, response)


def conversations(components) -> dict[str, dict]:
    """Every conversation document as stored (what support staff see in the console)."""
    return {
        snapshot.id: snapshot.to_dict()
        for snapshot in components.repos.firestore.collection("conversations").stream()
    }


def hello(message_id: str = "wamid.HELLO1") -> bytes:
    return payloads.encode(
        payloads.envelope(
            [payloads.message_value(WA_ID, payloads.text_message("hello", message_id))]
        )
    )


def padded(raw: bytes, size: int) -> bytes:
    """A Meta payload grown to exactly `size` bytes by an unknown top-level field."""
    filler = size - len(raw) - len(b',"padding":""')
    return raw[:-1] + b',"padding":"' + b"x" * filler + b'"}'


def nested(depth: int) -> bytes:
    """A Meta envelope whose `entry` is nested `depth` lists deep."""
    return b'{"object":"whatsapp_business_account","entry":' + b"[" * depth + b"]" * depth + b"}"


# -- raw webhook bytes --------------------------------------------------------------------------
NOT_JSON = {
    "invalid UTF-8 in a text body": hello().replace(b"hello", b"hel\xff\xfelo"),
    "overlong UTF-8 encoding of /": hello().replace(b"hello", b"\xc0\xaf"),
    "100,000 opening brackets": b"[" * 100_000,
    "an envelope nested 100,000 deep": nested(100_000),
    "plain text": b"hello, this is not JSON",
    "an empty body": b"",
    "a truncated payload": hello()[:-7],
    "an integer of 5,000 digits": b'{"entry":' + b"9" * 5000 + b"}",
}
NOT_A_META_PAYLOAD = {
    "a top-level array": b"[]",
    "a top-level number": b"42",
    "a top-level string": b'"whatsapp"',
    "null": b"null",
    "an object without entries": b'{"object":"whatsapp_business_account"}',
    "entries of the wrong type": b'{"entry":{"changes":7}}',
    "an envelope nested 500 deep": nested(500),
    "NaN and Infinity": b'{"entry":[{"changes":[{"value":{"messages":[{"timestamp":NaN,'
    b'"from":Infinity}]}}]}]}',
}


@pytest.mark.parametrize("raw", NOT_JSON.values(), ids=NOT_JSON.keys())
def test_a_signed_body_that_is_not_json_gets_a_clear_400_and_stores_nothing(
    client, components, fake_graph, secret, raw
):
    response = post_raw(client, raw, secret)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_input"
    assert conversations(components) == {}
    assert fake_graph.messages_to(WA_ID) == []


@pytest.mark.parametrize("raw", NOT_A_META_PAYLOAD.values(), ids=NOT_A_META_PAYLOAD.keys())
def test_well_formed_json_that_is_not_a_meta_payload_is_acknowledged_and_ignored(
    client, components, secret, raw
):
    # DESIGN: every well-formed payload gets 200, so Meta does not retry it for a week.
    response = post_raw(client, raw, secret)
    assert response.status_code == 200
    assert conversations(components) == {}


def test_a_body_over_the_limit_gets_413_in_our_json_shape_and_stores_nothing(
    client, components, fake_graph, secret
):
    response = post_raw(client, padded(hello(), MAX_BODY_BYTES + 1), secret)
    assert response.status_code == 413
    assert response.json["error"]["code"] == "request_entity_too_large"
    assert conversations(components) == {}
    assert fake_graph.messages_to(WA_ID) == []


def test_a_meta_payload_at_the_limit_is_processed(client, components, fake_graph, secret):
    # Meta's payloads go up to 3 MB: a lower limit would drop real deliveries after retries.
    fake_graph.customer_wrote(WA_ID)
    response = post_raw(client, padded(hello(), MAX_BODY_BYTES), secret)
    assert response.status_code == 200
    assert list(conversations(components)) == [components.repos.conversations.find(WA_ID)]
    assert len(fake_graph.messages_to(WA_ID)) == 1


def test_duplicate_keys_count_once_with_the_last_value_and_a_redelivery_is_not_answered_again(
    client, components, fake_graph, secret
):
    # The signature covers the bytes and the bytes are parsed once, so no second parser can
    # read a different message out of them; the last value wins, as in JavaScript.
    raw = hello("wamid.LAST").replace(
        b'"messages":[', b'"messages":[{"id":"wamid.FIRST","from":"34699999999"}],"messages":['
    )
    raw = raw.replace(b'"id":"wamid.LAST"', b'"id":"wamid.DECOY","id":"wamid.LAST"')
    fake_graph.customer_wrote(WA_ID)
    assert post_raw(client, raw, secret).status_code == 200
    assert post_raw(client, raw, secret).status_code == 200
    assert list(conversations(components)) == [components.repos.conversations.find(WA_ID)]
    assert len(fake_graph.messages_to(WA_ID)) == 1
    assert "wamid.LAST" in json.dumps(components.repos.conversations.raw(WA_ID), default=str)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=xyz",
        "application/json; charset=latin-1",
        None,
    ],
)
def test_a_signed_meta_payload_is_processed_whatever_content_type_it_claims(
    client, components, fake_graph, secret, content_type
):
    # The signature is over the raw bytes; a form parser must never get to consume them first.
    fake_graph.customer_wrote(WA_ID)
    response = post_raw(client, hello(), secret, content_type)
    assert response.status_code == 200
    assert len(fake_graph.messages_to(WA_ID)) == 1


@pytest.mark.parametrize("text", ["\\ud800", "Maria \\udfff Lopez", "\\u0000", "\\ufeff\\u202e"])
def test_unpaired_surrogates_and_control_characters_in_a_text_are_answered(
    client, components, fake_graph, secret, text
):
    # A JSON escape can name a lone surrogate that no UTF-8 encoder accepts later; sent as
    # the name, the first answer that is stored (encrypted) in the draft.
    patient = Patient(client, fake_graph, secret, wa_id=WA_ID)
    patient.starts_form()
    raw = payloads.encode(
        payloads.envelope(
            [payloads.message_value(WA_ID, payloads.text_message("PLACEHOLDER", "wamid.ODD1"))]
        )
    ).replace(b"PLACEHOLDER", text.encode())
    assert post_raw(client, raw, secret).status_code == 200
    assert patient.new_replies(), "the patient gets an answer"


HOSTILE_UNSIGNED = {
    **NOT_JSON,
    **NOT_A_META_PAYLOAD,
    "a valid Meta payload": hello("wamid.FORGED"),
    "a body over the limit": padded(hello("wamid.BIG"), MAX_BODY_BYTES + 1),
}


@pytest.mark.parametrize("signature", ["missing", "wrong secret"])
@pytest.mark.parametrize("raw", HOSTILE_UNSIGNED.values(), ids=HOSTILE_UNSIGNED.keys())
def test_an_unsigned_hostile_body_changes_nothing(
    client, components, fake_graph, secret, raw, signature
):
    patient = Patient(client, fake_graph, secret, wa_id=WA_ID)
    patient.says("hello")
    before, replies = conversations(components), len(fake_graph.messages_to(WA_ID))
    response = post_raw(client, raw, "not-the-app-secret" if signature == "wrong secret" else None)
    assert response.status_code == (413 if len(raw) > MAX_BODY_BYTES else 401)
    assert conversations(components) == before
    assert len(fake_graph.messages_to(WA_ID)) == replies


def test_a_deeply_nested_body_gets_400_from_every_json_endpoint(app, client, secret, admin_token):
    """100,000 `[` to any POST route: a RecursionError must never surface as a 500."""
    raw = b"[" * 100_000
    for rule, _method, url in rule_requests(app, "x", methods={"POST"}):
        headers = {
            "Authorization": f"Bearer {admin_token}",
            "X-Hub-Signature-256": sign(secret, raw),
        }
        response = client.post(url, data=raw, content_type="application/json", headers=headers)
        assert response.status_code < 500, (rule, response.get_data(as_text=True))


def test_hostile_bodies_neither_crash_nor_restart_a_gunicorn_worker(config, tmp_path: Path):
    log_path = tmp_path / "gunicorn.log"
    secret = config.whatsapp_app_secret
    deep, big = b"[" * 100_000, padded(hello(), MAX_BODY_BYTES + 1)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold while streaming
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    with gunicorn(config, log_path, workers=1, threads=2) as base:
        signed = {"Content-Type": "application/json"}
        answers = [
            requests.post(
                base + WEBHOOK,
                data=deep,
                headers={**signed, "X-Hub-Signature-256": sign(secret, deep)},
                timeout=30,
            ),
            requests.post(
                base + WEBHOOK,
                data=chunks(),
                headers={**signed, "X-Hub-Signature-256": sign(secret, big)},
                timeout=30,
            ),
        ]
        assert [answer.status_code for answer in answers] == [400, 413]
        assert requests.get(base + "/healthz", timeout=5).status_code == 200
    log = log_path.read_text()
    assert log.count("Booting worker") == 1, log
    assert "Traceback" not in log


# -- every route: caching and reflection --------------------------------------------------------
@functools.cache
def _names_read_by_the_code() -> list[str]:
    """Every query parameter and JSON field name the blueprints (and simulator) read.

    Taken from the source so that a parameter added later is attacked too.
    """
    sources = [
        *sorted((ROOT / "blueprints").glob("*.py")),
        ROOT / "devtools" / "blueprint.py",
        ROOT / "devtools" / "simulator.py",
    ]
    found = set()
    for source in sources:
        found.update(re.findall(r'\.get\(\s*"([A-Za-z_][\w.]*)"', source.read_text()))
    return sorted(found)


def rule_requests(app, value: str, methods: set[str] | None = None) -> Iterator[tuple]:
    """Yield (rule, method, url) for every rule and method, each path argument set to value."""
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        path = rule.rule
        for argument in rule.arguments:
            path = re.sub(rf"<(?:\w+:)?{argument}>", quote(value, safe=""), path)
        for method in sorted(rule.methods & (methods or rule.methods)):
            yield rule.rule, method, path


def call(client, method: str, url: str, value: str, token: str):
    """Send value in every query parameter and JSON field the code reads, with a valid token."""
    names = _names_read_by_the_code()
    return client.open(
        url,
        method=method,
        query_string={name: value for name in names},
        json={name: value for name in names} if method in ("POST", "PUT", "PATCH") else None,
        headers={"Authorization": f"Bearer {token}"},
    )


def test_every_route_and_every_error_answers_cache_control_no_store(app, client, admin_token):
    app.add_url_rule("/test-only/boom", "boom", lambda: 1 / 0)  # an unexpected error: 500
    checked = []
    for rule, method, url in [
        *rule_requests(app, "x"),
        ("(unknown path)", "GET", "/no-such-page"),
        ("(wrong method)", "DELETE", "/extractData"),
    ]:
        response = call(client, method, url, "x", admin_token)
        assert "no-store" in response.headers.get("Cache-Control", ""), (method, rule)
        assert response.headers.get("Pragma") == "no-cache", (method, rule)
        checked.append(response.status_code)
    big = client.post(
        "/startConversation",
        data=b"x" * (MAX_BODY_BYTES + 1),
        content_type="application/json",
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    assert (big.status_code, big.headers["Cache-Control"]) == (413, "no-store")
    assert {200, 400, 401, 403, 404, 405, 500} <= set(checked)


def test_passwords_export_links_and_downloads_are_not_cached(client, admin_token):
    headers = {"Authorization": f"Bearer {admin_token}"}
    password = client.get("/exports/password", headers=headers)
    export = client.get("/extractData", headers=headers)
    download = client.get(export.json["download_url"])
    for response in (password, export, download):
        assert response.status_code == 200
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Pragma"] == "no-cache"


SCRIPTS = ["<script>alert(1)</script>", '"><img src=x onerror=alert(1)>']


@pytest.mark.parametrize("script", SCRIPTS)
def test_no_route_reflects_a_script_into_html_and_no_api_error_page_is_html(
    app, client, admin_token, script
):
    html_checked = 0
    for rule, method, url in [
        *rule_requests(app, script),
        *[(rule, "DELETE", url) for rule, _, url in rule_requests(app, script, {"GET"})],
        ("(unknown path)", "GET", "/" + quote(script, safe="")),
        ("(double slash)", "GET", "/exports//password"),
        ("(trailing slash)", "GET", "/exports/password/"),
    ]:
        response = call(client, method, url, script, admin_token)
        body = response.get_data(as_text=True)
        # The portal is HTML by design (its errors are pages a person reads, escaped like
        # every page): it may send a browser on with 303, only ever to one of its own pages.
        portal = rule.startswith("/portal")
        if portal and 300 <= response.status_code < 400:
            location = response.headers["Location"]
            assert location.startswith("/portal/") and script not in unquote(location), rule
        else:
            assert not 300 <= response.status_code < 400, (method, rule, "no HTML redirects")
        if response.status_code >= 400 and not portal:
            assert response.mimetype == "application/json", (method, rule, body[:200])
        if "html" in response.mimetype:
            assert script not in body, (method, rule)
            html_checked += 1
    assert html_checked, "the simulator page is HTML and must have been checked"


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_webhook_handshake_echoes_the_challenge_only_as_plain_text(client, config, script):
    response = client.get(
        WEBHOOK,
        query_string={
            "hub.mode": "subscribe",
            "hub.verify_token": config.whatsapp_verify_token,
            "hub.challenge": script,
        },
    )
    assert response.status_code == 200
    assert response.get_data(as_text=True) == script  # by design: Meta checks the echo
    assert response.mimetype == "text/plain"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_a_rejected_handshake_does_not_echo_the_challenge(client):
    script = SCRIPTS[0]
    response = client.get(
        WEBHOOK,
        query_string={"hub.mode": "subscribe", "hub.verify_token": "no", "hub.challenge": script},
    )
    assert response.status_code == 403
    assert response.mimetype == "application/json"
    assert script not in response.get_data(as_text=True)


def test_the_simulator_page_shows_a_hostile_phone_escaped(client):
    response = client.get("/dev/chat", query_string={"phone": SCRIPTS[0]})
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert SCRIPTS[0] not in response.get_data(as_text=True)
    assert "&lt;script&gt;" in response.get_data(as_text=True)
