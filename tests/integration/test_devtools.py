"""The dev tools: the fake Graph endpoint, the simulator's real webhook path, the support and
provider views, and their absence from production."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from blueprints.devtools import simulator_of
from service import payloads
from service.app import create_app
from service.passwords import export_password, today_utc
from service.simulator import SUPPORT_FIELDS
from tests.conftest import GRAPH_TOKEN, PHONE_NUMBER_ID, PROJECT_ID
from tests.integration.servers import simulator_server
from tests.unit.test_graph_rules import INVALID_BODIES, VALID_BODIES

ROOT = Path(__file__).resolve().parents[2]
GRAPH_PATH = f"/dev/graph/v21.0/{PHONE_NUMBER_ID}/messages"
AUTH = {"Authorization": f"Bearer {GRAPH_TOKEN}"}
PATIENT = "+34 612 345 678"
PATIENT_WA_ID = "34612345678"
RULES_PATIENT_WA_ID = "15550100001"  # the `to` of the shared rule tables
PHI = ["Maria Fernanda Lopez", "03/02/1980", "1980-02-03", "Calle Falsa", "Madrid", "diabetes"]


def text_body(to: str = PATIENT_WA_ID, body: str = "Hello from the bot") -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body, "preview_url": False},
    }


def without_trace(answer: dict[str, Any]) -> dict[str, Any]:
    error = dict(answer["error"])
    error.pop("fbtrace_id")
    return error


# -- registration ----------------------------------------------------------------------------


def test_production_has_no_dev_tools_routes(components):
    production = dataclasses.replace(
        components, config=components.config.replace(app_env="production")
    )
    client = create_app(components=production).test_client()

    assert "devtools" not in client.application.blueprints
    assert client.get("/dev/chat").status_code == 404
    assert client.get("/dev/static/devtools/chat.js").status_code == 404
    answer = client.post(GRAPH_PATH, json=text_body(), headers=AUTH)
    assert answer.status_code == 404


def test_development_and_test_apps_have_the_simulator(app, components):
    development = dataclasses.replace(
        components, config=components.config.replace(app_env="development")
    )
    assert "devtools" in create_app(components=development).blueprints
    assert "devtools" in app.blueprints


def test_the_dev_tools_answer_only_on_a_loopback_host(client):
    assert client.get("/dev/chat", base_url="http://127.0.0.1:8080").status_code == 200
    refused = client.get("/dev/chat", base_url="http://rebound.example:8080")
    assert refused.status_code == 403
    assert "localhost" in refused.get_json()["error"]["message"]


SPOOFED_LOCAL = {"X-Forwarded-For": "127.0.0.1", "Host": "localhost"}


@pytest.mark.parametrize("proxy_hops", [1, 0])
def test_a_remote_peer_claiming_to_be_local_gets_403_and_signs_nothing(
    components, fake_graph, proxy_hops
):
    """A remote caller sending `X-Forwarded-For: 127.0.0.1` and `Host: localhost` must not
    reach the simulator, which signs webhooks as any patient it names."""
    configured = dataclasses.replace(
        components, config=components.config.replace(trusted_proxy_hops=proxy_hops)
    )
    client = create_app(components=configured).test_client()
    remote = {"environ_base": {"REMOTE_ADDR": "203.0.113.9"}, "headers": SPOOFED_LOCAL}
    assert client.get("/dev/chat", **remote).status_code == 403
    sent = client.post("/dev/chat/send", json={"wa_id": PATIENT_WA_ID, "text": "hello"}, **remote)
    assert sent.status_code == 403
    assert client.post(GRAPH_PATH, json=text_body(), **remote).status_code == 403
    assert list(components.repos.firestore.collection("conversations").stream()) == []
    assert fake_graph.messages_to(PATIENT_WA_ID) == []


def test_a_local_request_that_came_through_a_proxy_gets_403(client):
    forwarded = client.get("/dev/chat", headers={"X-Forwarded-For": "127.0.0.1"})
    assert forwarded.status_code == 403
    assert client.get("/dev/chat").status_code == 200


# -- the fake Graph endpoint -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "field"), INVALID_BODIES.values(), ids=INVALID_BODIES.keys()
)
def test_the_fake_graph_endpoint_refuses_a_body_exactly_as_the_test_fake_does(
    client, fake_graph, body, code, field
):
    ours = client.post(GRAPH_PATH, data=json.dumps(body), headers=AUTH)
    theirs = requests.post(
        f"{fake_graph.base_url}/{PHONE_NUMBER_ID}/messages", json=body, headers=AUTH, timeout=10
    )

    assert ours.status_code == theirs.status_code == 400
    assert without_trace(ours.get_json()) == without_trace(theirs.json())
    assert ours.get_json()["error"]["code"] == code
    assert field in ours.get_json()["error"]["error_data"]["details"]


@pytest.mark.parametrize("body", VALID_BODIES.values(), ids=VALID_BODIES.keys())
def test_the_fake_graph_endpoint_accepts_what_meta_accepts(app, client, body):
    simulator_of(app).inbox.record_patient(RULES_PATIENT_WA_ID, payloads.text_message("hi"))

    answer = client.post(GRAPH_PATH, json=body, headers=AUTH)

    assert answer.status_code == 200, answer.get_json()
    reply = answer.get_json()
    assert reply["contacts"] == [{"input": body["to"], "wa_id": RULES_PATIENT_WA_ID}]
    assert reply["messages"][0]["id"].startswith("wamid.")


def test_an_accepted_reply_is_kept_for_the_chat_page(app, client):
    simulator_of(app).inbox.record_patient(PATIENT_WA_ID, payloads.text_message("hi"))
    buttons = {
        **text_body(),
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": "Pick *one*"},
            "action": {"buttons": [{"type": "reply", "reply": {"id": "a", "title": "A"}}]},
        },
    }
    wamid = client.post(GRAPH_PATH, json=buttons, headers=AUTH).get_json()["messages"][0]["id"]

    shown = client.get(f"/dev/chat/messages?wa_id={PATIENT_WA_ID}&after=1").get_json()

    assert shown["messages"] == [
        {
            "seq": 2,
            "at": shown["messages"][0]["at"],
            "direction": "bot",
            "wamid": wamid,
            "status": "sent",
            "kind": "button",
            "text": "Pick *one*",
            "buttons": [{"id": "a", "title": "A"}],
        }
    ]
    assert shown["statuses"] == {wamid: "sent"}


def test_the_fake_graph_endpoint_checks_token_phone_number_window_and_template(app, client):
    wrong_token = client.post(GRAPH_PATH, json=text_body(), headers={"Authorization": "Bearer x"})
    assert wrong_token.status_code == 401
    assert wrong_token.get_json()["error"]["code"] == 190
    assert wrong_token.headers["WWW-Authenticate"].startswith('OAuth "Facebook Platform"')

    other_number = client.post(
        "/dev/graph/v21.0/999/messages", json=text_body(), headers=AUTH
    ).get_json()["error"]
    assert (other_number["code"], other_number["error_subcode"]) == (100, 33)

    outside_window = client.post(GRAPH_PATH, json=text_body(), headers=AUTH)
    assert (outside_window.status_code, outside_window.get_json()["error"]["code"]) == (
        400,
        131047,
    )

    template = {**text_body(), "type": "template"}
    del template["text"]
    template["template"] = {"name": "not_approved", "language": {"code": "en"}}
    unapproved = client.post(GRAPH_PATH, json=template, headers=AUTH)
    assert (unapproved.status_code, unapproved.get_json()["error"]["code"]) == (404, 132001)
    template["template"]["name"] = app.extensions["intake"].config.whatsapp_start_template
    assert client.post(GRAPH_PATH, json=template, headers=AUTH).status_code == 200


# -- the page --------------------------------------------------------------------------------


def test_the_page_escapes_what_it_is_given(client):
    page = client.get("/dev/chat", query_string={"phone": '"><script>alert(1)</script>'})

    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert '<label for="composer-text"' in html and 'aria-live="polite"' in html


def test_the_page_script_never_builds_html_from_text():
    lines = (ROOT / "blueprints/static/devtools/chat.js").read_text().splitlines()
    script = "\n".join(line for line in lines if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


def test_the_page_ships_no_provider_token(app, client, components):
    token = simulator_of(app).provider_token(components)

    for path in ("/dev/chat", "/dev/static/devtools/chat.js", "/dev/static/devtools/chat.css"):
        assert token not in client.get(path).get_data(as_text=True)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"wa_id": "12", "text": "hi"}, "international format"),
        ({"wa_id": PATIENT, "text": "   "}, '{"text"'),
        ({"wa_id": PATIENT, "text": "x" * 4097}, "4096"),
        ({"wa_id": PATIENT, "reply": {"type": "carousel", "id": "a"}}, "button_reply"),
        ({"wa_id": PATIENT, "reply": {"type": "list_reply", "id": ""}}, "reply.id"),
    ],
)
def test_a_malformed_message_from_the_page_is_refused(client, body, message):
    answer = client.post("/dev/chat/send", json=body)

    assert answer.status_code == 400
    assert message in answer.get_json()["error"]["message"]


def test_the_page_endpoints_take_json_only(client):
    answer = client.post("/dev/chat/send", data={"wa_id": PATIENT, "text": "hi"})
    assert answer.status_code == 400


# -- the real path, through gunicorn ---------------------------------------------------------


@pytest.fixture(scope="module")
def server(config, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    log_path = tmp_path_factory.mktemp("simulator") / "gunicorn.log"
    with simulator_server(config, log_path) as base:
        yield base, log_path


def send(base: str, wa_id: str = PATIENT, **body: Any) -> dict[str, Any]:
    answer = requests.post(f"{base}/dev/chat/send", json={"wa_id": wa_id, **body}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["message"]


def messages(base: str, wa_id: str = PATIENT_WA_ID, after: int = 0) -> dict[str, Any]:
    answer = requests.get(f"{base}/dev/chat/messages?wa_id={wa_id}&after={after}", timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_message_from_the_page_reaches_the_webhook_signed_and_the_reply_comes_back(
    server, components
):
    base, log_path = server

    sent = send(base, text="hello")

    assert (sent["direction"], sent["text"], sent["webhook_status"]) == ("patient", "hello", 200)
    shown = messages(base, after=sent["seq"])["messages"]
    assert [entry["direction"] for entry in shown] == ["bot"] * len(shown) and shown
    assert [button["title"] for button in shown[-1]["buttons"]] == ["English", "Español"]
    assert components.repos.conversations.raw(PATIENT_WA_ID)["step"] == "language"
    log = log_path.read_text()
    assert "POST /getIncomingMessages 200" in log
    assert "POST /dev/graph/<version>/<phone_number_id>/messages 200" in log


def test_a_tapped_button_and_a_picked_row_are_sent_as_meta_sends_them(server, components):
    base, _ = server
    wa_id = "34699111222"
    send(base, wa_id, text="hello")

    tapped = send(base, wa_id, reply={"type": "button_reply", "id": "language:en", "title": "x"})
    assert (tapped["kind"], tapped["choice_id"]) == ("choice", "language:en")
    assert components.repos.conversations.raw(wa_id)["step"] == "consent"
    send(base, wa_id, reply={"type": "list_reply", "id": "consent:yes", "title": "Yes"})
    assert components.repos.conversations.raw(wa_id)["step"] == "name"


def test_delivered_and_read_go_through_the_webhook_and_never_move_back(server):
    base, log_path = server
    wa_id = "34611222333"
    send(base, wa_id, text="hello")
    wamids = list(messages(base, wa_id)["statuses"])

    def post(status: str) -> dict[str, Any]:
        answer = requests.post(
            f"{base}/dev/chat/status",
            json={"wa_id": wa_id, "wamids": wamids, "status": status},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    assert post("read") == {"updated": len(wamids), "webhook_status": 200}
    assert post("delivered") == {"updated": 0, "webhook_status": 200}
    assert set(messages(base, wa_id)["statuses"].values()) == {"read"}


def test_the_support_view_shows_where_the_patient_is_but_never_the_answers(server):
    base, _ = server
    wa_id = "4915112345678"
    send(base, wa_id, text="hello")
    send(base, wa_id, reply={"type": "button_reply", "id": "language:en", "title": "English"})
    send(base, wa_id, reply={"type": "button_reply", "id": "consent:yes", "title": "Yes"})
    for answer in ("Maria Fernanda Lopez", "03/02/1980", "f", "Calle Falsa 123, 28013 Madrid"):
        send(base, wa_id, text=answer)
    send(base, wa_id, text="Type 2 diabetes")

    view = requests.get(f"{base}/dev/chat/conversation?wa_id={wa_id}", timeout=10).json()

    assert view["exists"] is True
    assert set(view["fields"]) == set(SUPPORT_FIELDS)
    fields = view["fields"]
    assert (fields["status"], fields["step"], fields["language"]) == (
        "in_progress",
        "current_medications",
        "en",
    )
    assert fields["invalid_answers"] == 0 and fields["outbox_pending"] == 0
    text = json.dumps(view)
    for secret in PHI:
        assert secret not in text


def test_an_unknown_patient_has_an_empty_support_view(server):
    base, _ = server
    view = requests.get(f"{base}/dev/chat/conversation?wa_id=12025550143", timeout=10).json()
    assert view == {"exists": False, "fields": {}}


def test_the_page_never_holds_what_a_patient_typed(server):
    base, _ = server
    typed = '<img src=x onerror="alert(1)">'
    send(base, "12025550143", text=typed)

    html = requests.get(f"{base}/dev/chat?phone=%2B12025550143", timeout=10)
    shown = requests.get(f"{base}/dev/chat/messages?wa_id=12025550143", timeout=10)

    assert typed not in html.text
    assert shown.headers["Content-Type"].startswith("application/json")
    assert shown.json()["messages"][0]["text"] == typed


def test_the_provider_panel_gets_the_password_and_an_export_link(server, config, stack):
    base, _ = server
    password = requests.get(f"{base}/dev/provider/password", timeout=10)
    assert password.status_code == 200
    assert password.json()["password"] == export_password(config.zip_password, today_utc()).password
    # The emulator's data is cleared under the running service: a new dev provider is made.
    stack.clear_firestore(PROJECT_ID)

    export = requests.post(f"{base}/dev/provider/export", json={"format": "csv"}, timeout=60)

    assert export.status_code == 200, export.text
    created = export.json()
    assert created["records"] == 0 and created["format"] == "csv"
    assert created["download_url"].startswith(f"{base}/exports/")
    refused = requests.post(f"{base}/dev/provider/export", json={"format": "pdf"}, timeout=10)
    assert refused.status_code == 400
