"""Hostile webhook input, generated: a signed payload never gets a 500; an unsigned one
changes nothing. Hand-picked hostile bodies (the size limit, deep nesting, invalid UTF-8,
duplicate keys) are in test_hostile_input.py; here hypothesis makes up the shapes and bytes.

The autouse `clean_data` fixture runs once per test, and hypothesis runs every example inside
that one call: each example therefore begins with `start_empty`, so it starts from empty
stores as a test does (a conversation left by one example cannot decide the next one's
answer, and a failing example replays alike when hypothesis shrinks it)."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from blueprints.messaging import WEBHOOK_PATHS
from devtools import payloads
from service.whatsapp.webhook import sign
from tests.support.stack import APP_SECRET

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
    # Half the messages have a valid sender, id and time, so they reach the conversation and
    # the flow engine; the other half may break any of them, and the parser must skip those.
    realistic = draw(st.booleans())
    message = {
        "from": draw(st.from_regex(r"[0-9]{7,15}", fullmatch=True) if realistic else wa_ids),
        "id": draw(
            st.from_regex(r"wamid\.[A-Za-z0-9]{4,30}", fullmatch=True)
            if realistic
            else st.one_of(st.from_regex(r"wamid\.[A-Za-z0-9]{4,30}", fullmatch=True), json_leaf)
        ),
        "timestamp": draw(
            st.integers(1_600_000_000, 2_000_000_000).map(str)
            if realistic
            else st.one_of(st.integers(-5, 2**40).map(str), json_leaf)
        ),
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


def start_empty(reset_data, components) -> None:
    """Empty every store for this example, and check that nothing is left."""
    reset_data()
    assert list(components.repos.firestore.collections()) == []
    assert list(components.repos.bucket.list_blobs(prefix="intakes/")) == []


def post_signed_raw(client, raw: bytes):
    return client.post(
        "/webhook",
        data=raw,
        content_type="application/json",
        headers={"X-Hub-Signature-256": sign(APP_SECRET, raw)},
    )


@st.composite
def mutated_bodies(draw) -> bytes:
    """A real Meta payload with a few bytes replaced, inserted or cut: what a broken proxy
    or a truncated retry would deliver."""
    raw = bytearray(draw(bodies()))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(raw)))
        edit = draw(st.sampled_from(["replace", "insert", "cut"]))
        if edit == "cut":
            del raw[position : position + draw(st.integers(1, 40))]
        else:
            chunk = draw(st.binary(min_size=1, max_size=8))
            raw[position : position + (len(chunk) if edit == "replace" else 0)] = chunk
    return bytes(raw)


@st.composite
def deeply_nested_bodies(draw) -> bytes:
    """Nesting from harmless to far past the parser's recursion limit, closed or not."""
    depth = draw(st.integers(1, 150_000))  # stays under the 3 MiB limit
    opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"entry":', b"}"), (b'{"a":[', b"]}")]))
    closed = draw(st.booleans())
    return opener * depth + b"0" + (closer * depth if closed else b"")


@st.composite
def texts_with_any_code_point(draw) -> bytes:
    """A text message whose body escapes any code point, lone surrogates included
    (hypothesis' text() never makes those, but JSON's \\uD800 can)."""
    # Lone surrogates are 0.2 % of all code points: ask for them (and for ASCII) explicitly.
    code_point = st.one_of(
        st.integers(0xD800, 0xDFFF), st.integers(0, 0x7F), st.integers(0, 0x10FFFF)
    )
    code_points = draw(st.lists(code_point, min_size=1, max_size=20))
    escaped = "".join(f"\\u{cp:04x}" if cp < 0x10000 else chr(cp) for cp in code_points)
    raw = payloads.encode(
        payloads.envelope(
            [payloads.message_value("34612345678", payloads.text_message("PLACEHOLDER"))]
        )
    )
    return raw.replace(b"PLACEHOLDER", escaped.encode("utf-8", "surrogatepass"))


@FUZZ
@given(raw=bodies())
def test_a_signed_well_formed_payload_of_any_shape_gets_200(client, components, reset_data, raw):
    # DESIGN: every well-formed payload gets 200; anything else makes Meta retry for a week.
    start_empty(reset_data, components)
    response = post_signed_raw(client, raw)
    assert response.status_code == 200, response.get_data(as_text=True)


@settings(FUZZ, max_examples=20)  # each is a real conversation turn: a transaction, a reply
@given(raw=texts_with_any_code_point())
def test_a_signed_text_with_any_code_point_gets_200(client, components, reset_data, raw):
    start_empty(reset_data, components)  # the patient's first message, not one in a long chat
    response = post_signed_raw(client, raw)
    assert response.status_code == 200, response.get_data(as_text=True)


@FUZZ
@given(raw=st.one_of(st.binary(max_size=2000), mutated_bodies(), deeply_nested_bodies()))
def test_signed_raw_bytes_get_200_or_a_json_400_never_a_500(client, components, reset_data, raw):
    start_empty(reset_data, components)
    response = post_signed_raw(client, raw)
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    assert response.mimetype == "application/json"


@FUZZ
# (Header values cannot hold line breaks or NUL: the HTTP layer refuses them before the app.)
@given(
    raw=st.one_of(bodies(), st.binary(max_size=2000), mutated_bodies(), deeply_nested_bodies()),
    signature=st.one_of(
        st.none(), st.text(st.characters(blacklist_characters="\r\n\x00"), max_size=80)
    ),
    path=st.sampled_from(WEBHOOK_PATHS),
)
def test_an_unsigned_payload_changes_nothing(
    client, components, fake_graph, reset_data, raw, signature, path
):
    start_empty(reset_data, components)
    headers = {"X-Hub-Signature-256": signature} if signature is not None else {}
    response = client.post(path, data=raw, content_type="application/json", headers=headers)
    assert response.status_code == 401
    # From empty stores, "nothing" is exact: no document in any collection, no send.
    assert list(components.repos.firestore.collections()) == []
    assert fake_graph.messages == []
