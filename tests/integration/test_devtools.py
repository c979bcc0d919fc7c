"""The dev tools: the fake Graph endpoint, the simulator's real webhook path, the support and
provider views, and their absence from production."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from devtools import payloads
from devtools.blueprint import simulator_of
from devtools.simulator import (
    WEBHOOK_PATH,
    SimulatedPatient,
    post_statuses,
    send_patient_message,
)
from service.conversation.support import SUPPORT_FIELDS
from service.domain.identity import BSUID_PATTERN, PatientIdentity
from service.domain.passwords import export_password, today_utc
from service.shell.app import create_app
from service.shell.config import Config
from service.whatsapp.webhook import parse_payload, signature_valid
from tests.support.graph_bodies import INVALID_BODIES, VALID_BODIES
from tests.support.servers import simulator_server
from tests.support.stack import GRAPH_TOKEN, PHONE_NUMBER_ID, PROJECT_ID

ROOT = Path(__file__).resolve().parents[2]
GRAPH_PATH = f"/dev/graph/v21.0/{PHONE_NUMBER_ID}/messages"
AUTH = {"Authorization": f"Bearer {GRAPH_TOKEN}"}
PATIENT = "+34 612 345 678"
PATIENT_WA_ID = "34612345678"
RULES_PATIENT_WA_ID = "15550100001"  # the `to` of the shared rule tables
HIDDEN_WA_ID = "34622333444"  # a patient who writes under a username
PHI = ["Maria Fernanda Lopez", "03/02/1980", "1980-02-03", "Calle Falsa", "Madrid", "diabetes"]


def text_body(to: str = PATIENT_WA_ID, body: str = "Hello from the bot") -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"body": body, "preview_url": False},
    }


def text_to_user(recipient: str, body: str = "Hello from the bot") -> dict[str, Any]:
    """A reply addressed as the service addresses a patient known only by their BSUID."""
    reply = text_body(body=body)
    del reply["to"]
    return {**reply, "recipient": recipient}


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


def test_a_reply_addressed_by_bsuid_is_kept_in_the_chat_of_the_patient_who_wrote(app, client):
    patient = SimulatedPatient(HIDDEN_WA_ID, hides_number=True)
    simulator_of(app).inbox.record_patient(
        patient.wa_id, payloads.text_message("hi"), user_id=patient.bsuid
    )

    by_user = client.post(GRAPH_PATH, json=text_to_user(patient.bsuid, "by BSUID"), headers=AUTH)
    by_phone = client.post(GRAPH_PATH, json=text_body(HIDDEN_WA_ID, "by phone"), headers=AUTH)
    stranger = SimulatedPatient("442079460958").bsuid
    refused = client.post(GRAPH_PATH, json=text_to_user(stranger), headers=AUTH)

    assert by_user.status_code == 200, by_user.get_json()
    assert by_user.get_json()["contacts"] == [{"input": patient.bsuid, "user_id": patient.bsuid}]
    assert by_phone.status_code == 200, by_phone.get_json()
    shown = client.get(f"/dev/chat/messages?wa_id={HIDDEN_WA_ID}").get_json()["messages"]
    assert [(entry["direction"], entry["text"]) for entry in shown] == [
        ("patient", "hi"),
        ("bot", "by BSUID"),
        ("bot", "by phone"),
    ]
    # Outside the window of the person it names, a BSUID gets nothing free-form, as on Meta.
    assert (refused.status_code, refused.get_json()["error"]["code"]) == (400, 131047)


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
    lines = (ROOT / "devtools/static/devtools/chat.js").read_text().splitlines()
    script = "\n".join(line for line in lines if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


def test_the_page_has_a_labelled_toggle_to_hide_the_number(client):
    shown = client.get("/dev/chat").get_data(as_text=True)
    hidden = client.get("/dev/chat", query_string={"hide_number": "1"}).get_data(as_text=True)

    assert '<label for="hide-number">Write with a WhatsApp username (hide my number)' in shown
    assert 'type="checkbox"' in shown and "checked" not in shown
    assert 'aria-describedby="hide-number-hint" checked>' in hidden


def test_a_simulated_patient_keeps_one_bsuid_derived_from_their_number(client):
    def patient(phone: str) -> dict[str, str]:
        answer = client.get("/dev/chat/patient", query_string={"phone": phone})
        assert answer.status_code == 200, answer.get_json()
        return answer.get_json()

    spanish = patient(PATIENT)

    assert patient("34612345678") == spanish  # however the number is typed
    assert BSUID_PATTERN.fullmatch(spanish["user_id"]) and spanish["user_id"].startswith("ES.")
    assert patient("+44 20 7946 0958")["user_id"].startswith("GB.")
    assert patient("+800 1234 5678")["user_id"].startswith("US.")  # no country: the fallback
    assert patient("+34 699 111 222")["user_id"] != spanish["user_id"]
    assert PATIENT_WA_ID[-4:] not in spanish["username"]


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
        ({"wa_id": PATIENT, "text": "hi", "hide_number": "yes"}, "hide_number"),
    ],
)
def test_a_malformed_message_from_the_page_is_refused(client, body, message):
    answer = client.post("/dev/chat/send", json=body)

    assert answer.status_code == 400
    assert message in answer.get_json()["error"]["message"]


def test_the_page_endpoints_take_json_only(client):
    answer = client.post("/dev/chat/send", data={"wa_id": PATIENT, "text": "hi"})
    assert answer.status_code == 400


# -- what the page posts to the webhook -----------------------------------------------------


Posted = tuple[str, str | None, bytes]  # path, X-Hub-Signature-256, body


class _RecordingServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Recorder)
        self.received: list[Posted] = []


class _Recorder(BaseHTTPRequestHandler):
    server: _RecordingServer

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, self.headers.get("X-Hub-Signature-256"), raw))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:  # keep pytest's output quiet
        pass


@pytest.fixture
def webhook_recorder() -> Iterator[tuple[str, list[Posted]]]:
    """A webhook that records what the simulator posts to it and answers 200."""
    httpd = _RecordingServer()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.received
    finally:
        httpd.shutdown()
        httpd.server_close()


def only_post(received: list[Posted], config: Config) -> tuple[dict, bytes]:
    """Return the one change value posted (checked as signed for the webhook) and its bytes."""
    [(path, signature, raw)] = received
    assert path == WEBHOOK_PATH
    assert signature_valid(config.whatsapp_app_secret, raw, signature)
    return json.loads(raw)["entry"][0]["changes"][0]["value"], raw


def test_a_patient_who_hides_their_number_writes_with_only_a_bsuid_and_username(
    app, components, webhook_recorder
):
    base, received = webhook_recorder
    patient = SimulatedPatient(HIDDEN_WA_ID, hides_number=True)

    send_patient_message(
        components, simulator_of(app), base, patient, payloads.text_message("hello")
    )

    value, raw = only_post(received, components.config)
    [contact], [message] = value["contacts"], value["messages"]
    assert contact == {
        "profile": {"name": "Simulated patient", "username": patient.username},
        "user_id": patient.bsuid,
    }
    assert message["from_user_id"] == patient.bsuid and "from" not in message
    assert HIDDEN_WA_ID not in raw.decode() and PATIENT_WA_ID[2:] not in raw.decode()
    assert parse_payload(raw).messages[0].identity == PatientIdentity(bsuid=patient.bsuid)


def test_a_patient_who_shows_their_number_writes_with_phone_and_bsuid(
    app, components, webhook_recorder
):
    base, received = webhook_recorder
    patient = SimulatedPatient(HIDDEN_WA_ID)

    send_patient_message(
        components, simulator_of(app), base, patient, payloads.text_message("hello")
    )

    value, raw = only_post(received, components.config)
    [contact], [message] = value["contacts"], value["messages"]
    assert contact == {
        "profile": {"name": "Simulated patient"},
        "wa_id": HIDDEN_WA_ID,
        "user_id": patient.bsuid,
    }
    assert (message["from"], message["from_user_id"]) == (HIDDEN_WA_ID, patient.bsuid)
    assert parse_payload(raw).messages[0].identity == PatientIdentity(
        phone=HIDDEN_WA_ID, bsuid=patient.bsuid
    )


@pytest.mark.parametrize("hides_number", [True, False], ids=["number hidden", "number shown"])
def test_statuses_the_page_posts_name_the_recipient_as_meta_does(
    app, client, components, webhook_recorder, hides_number
):
    base, received = webhook_recorder
    patient = SimulatedPatient(HIDDEN_WA_ID, hides_number)
    simulator_of(app).inbox.record_patient(
        patient.wa_id, payloads.text_message("hi"), user_id=patient.bsuid
    )
    reply = client.post(GRAPH_PATH, json=text_to_user(patient.bsuid), headers=AUTH)
    wamid = reply.get_json()["messages"][0]["id"]

    result = post_statuses(components, simulator_of(app), base, patient, [wamid], "delivered")

    assert result == {"updated": 1, "webhook_status": 200}
    value, raw = only_post(received, components.config)
    [status] = value["statuses"]
    assert (status["id"], status["status"]) == (wamid, "delivered")
    assert status["recipient_user_id"] == patient.bsuid
    if hides_number:
        assert "recipient_id" not in status and HIDDEN_WA_ID not in raw.decode()
    else:
        assert status["recipient_id"] == HIDDEN_WA_ID


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


def bot_replies(
    base: str, wa_id: str = PATIENT_WA_ID, after: int = 0, within: float = 10.0
) -> list[dict[str, Any]]:
    """The chat's entries after `after`, once the bot's reply is among them (the webhook
    answers before its sender has sent the reply, as the page's own polling expects)."""
    deadline = time.monotonic() + within
    while True:
        shown = messages(base, wa_id, after=after)["messages"]
        if shown or time.monotonic() > deadline:
            return shown
        time.sleep(0.05)


def test_a_message_from_the_page_reaches_the_webhook_signed_and_the_reply_comes_back(
    server, components
):
    base, log_path = server

    sent = send(base, text="hello")

    assert (sent["direction"], sent["text"], sent["webhook_status"]) == ("patient", "hello", 200)
    shown = bot_replies(base, after=sent["seq"])
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
    assert bot_replies(base, wa_id)
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
    sent = send(base, wa_id, text="Type 2 diabetes")
    assert bot_replies(base, wa_id, after=sent["seq"])

    deadline = time.monotonic() + 10
    while True:  # the reply shows once sent; it is settled in Firestore a moment later
        view = requests.get(f"{base}/dev/chat/conversation?wa_id={wa_id}", timeout=10).json()
        if view["fields"]["outbox_pending"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.05)

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


def test_a_patient_who_hides_their_number_is_answered_by_bsuid_in_their_own_chat(
    server, components
):
    base, log_path = server
    patient = SimulatedPatient(HIDDEN_WA_ID, hides_number=True)

    sent = send(base, HIDDEN_WA_ID, text="hello", hide_number=True)
    shown = bot_replies(base, HIDDEN_WA_ID, after=sent["seq"])
    tapped = send(base, HIDDEN_WA_ID, reply={"type": "button_reply", "id": "language:en",
                  "title": "x"}, hide_number=True)  # fmt: skip
    assert bot_replies(base, HIDDEN_WA_ID, after=tapped["seq"])

    assert sent["webhook_status"] == 200
    assert [button["title"] for button in shown[-1]["buttons"]] == ["English", "Español"]
    conversations = components.repos.conversations
    # The service never learned the number: its replies could only go by `recipient`.
    assert conversations.find(PatientIdentity(phone=HIDDEN_WA_ID)) is None
    stored = conversations.get(PatientIdentity(bsuid=patient.bsuid))
    assert stored.fields["step"] == "consent"
    assert stored.identity == PatientIdentity(bsuid=patient.bsuid)
    wamids = list(messages(base, HIDDEN_WA_ID)["statuses"])
    read = requests.post(
        f"{base}/dev/chat/status",
        json={"wa_id": HIDDEN_WA_ID, "wamids": wamids, "status": "read", "hide_number": True},
        timeout=30,
    )
    assert read.json() == {"updated": len(wamids), "webhook_status": 200}
    view = requests.get(
        f"{base}/dev/chat/conversation?wa_id={HIDDEN_WA_ID}&hide_number=1", timeout=10
    ).json()
    assert (view["exists"], view["fields"]["step"]) == (True, "consent")
    assert HIDDEN_WA_ID not in json.dumps(view)
    log = log_path.read_text()
    assert HIDDEN_WA_ID not in log and patient.bsuid not in log


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
