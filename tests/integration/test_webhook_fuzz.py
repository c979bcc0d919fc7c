"""Hostile webhook input, generated: a signed payload never gets a 500; an unsigned one
changes nothing. (The fuller fault and fuzz work is issue 8; this guards the parser now.)"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import payloads
from service.webhook import sign

SECRET = "dev-app-secret"
FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
)
json_value = st.recursive(
    json_leaf,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
wa_ids = st.one_of(st.from_regex(r"[0-9]{7,15}", fullmatch=True), st.text(max_size=20), json_leaf)
message_types = st.sampled_from(
    [
        "text",
        "interactive",
        "button",
        "image",
        "audio",
        "location",
        "reaction",
        "unsupported",
        "order",
        "system",
        "nonsense",
    ]
)


@st.composite
def messages(draw) -> dict:
    kind = draw(message_types)
    message = {
        "from": draw(wa_ids),
        "id": draw(
            st.one_of(st.from_regex(r"wamid\.[A-Za-z0-9]{4,30}", fullmatch=True), json_leaf)
        ),
        "timestamp": draw(st.one_of(st.integers(-5, 2**40).map(str), json_leaf)),
        "type": kind,
    }
    if kind == "text":
        message["text"] = draw(
            st.one_of(st.fixed_dictionaries({"body": st.text(max_size=300)}), json_value)
        )
    elif kind == "interactive":
        reply_type = draw(st.sampled_from(["button_reply", "list_reply", "nfm_reply", "x"]))
        message["interactive"] = {
            "type": reply_type,
            reply_type: draw(
                st.one_of(
                    st.fixed_dictionaries(
                        {"id": st.text(max_size=300), "title": st.text(max_size=30)}
                    ),
                    json_value,
                )
            ),
        }
    else:
        message[kind] = draw(json_value)
    if draw(st.booleans()):
        message[draw(st.text(max_size=10))] = draw(json_value)
    return message


@st.composite
def bodies(draw) -> bytes:
    shape = draw(st.sampled_from(["meta", "statuses", "anything"]))
    if shape == "anything":
        return json.dumps(draw(json_value)).encode()
    if shape == "statuses":
        value = {
            "statuses": draw(
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "id": st.text(max_size=20),
                            "recipient_id": wa_ids,
                            "status": st.sampled_from(["sent", "delivered", "read", "failed", "x"]),
                            "timestamp": st.integers(0, 2**40).map(str),
                            "errors": st.lists(
                                st.fixed_dictionaries({"code": json_leaf}), max_size=2
                            ),
                        }
                    ),
                    max_size=3,
                )
            )
        }
    else:
        value = {"messages": draw(st.lists(messages(), min_size=1, max_size=3))}
    return payloads.encode(payloads.envelope([value]))


@FUZZ
@given(raw=bodies())
def test_a_signed_payload_of_any_shape_never_gets_a_500(client, raw):
    response = client.post(
        "/webhook",
        data=raw,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign(SECRET, raw)},
    )
    assert response.status_code in (200, 400), response.get_data(as_text=True)


@FUZZ
# (Header values cannot hold line breaks or NUL: the HTTP layer refuses them before the app.)
@given(
    raw=bodies(),
    signature=st.one_of(
        st.none(), st.text(st.characters(blacklist_characters="\r\n\x00"), max_size=80)
    ),
)
def test_an_unsigned_payload_changes_nothing(client, components, raw, signature):
    headers = {"X-Hub-Signature-256": signature} if signature is not None else {}
    response = client.post("/webhook", data=raw, content_type="application/json", headers=headers)
    assert response.status_code == 401
    assert list(components.repos.firestore.collection("conversations").limit(1).stream()) == []
