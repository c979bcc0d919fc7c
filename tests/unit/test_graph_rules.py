"""Meta's limits on outbound message bodies, checked without a server."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.graph_rules import (
    error_body,
    error_message,
    find_violations,
    first_violation,
    recipient_of,
    success_body,
    wa_id_of,
)
from tests.support.graph_bodies import INVALID_BODIES, VALID_BODIES, reply_buttons, text


@pytest.mark.parametrize("body", VALID_BODIES.values(), ids=VALID_BODIES.keys())
def test_bodies_within_meta_limits_are_accepted(body: dict[str, Any]) -> None:
    assert find_violations(body) == []


@pytest.mark.parametrize(
    ("body", "code", "field"), INVALID_BODIES.values(), ids=INVALID_BODIES.keys()
)
def test_bodies_breaking_a_limit_are_rejected_naming_the_field(
    body: object, code: int, field: str
) -> None:
    violation = first_violation(body)

    assert violation is not None
    assert (violation.code, violation.field) == (code, field)
    assert field in violation.details


def test_every_broken_rule_is_reported_when_asked_for_all() -> None:
    body = reply_buttons("t" * 21, "Yes", "Yes", footer={"text": "f" * 61})

    fields = [violation.field for violation in find_violations(body)]

    assert fields == [
        "interactive.footer.text",
        "interactive.action.buttons[0].reply.title",
        "interactive.action.buttons[].reply.title",
    ]


def test_wa_id_keeps_only_the_digits_of_the_recipient() -> None:
    assert wa_id_of("+1 (555) 010-0001") == "15550100001"


def test_error_message_carries_the_code_and_meta_title() -> None:
    assert error_message(131009) == "(#131009) Parameter value is not valid"


def test_error_body_has_meta_shape_with_whatsapp_details() -> None:
    body = error_body(131047, fbtrace_id="trace", details="window closed")

    assert body == {
        "error": {
            "message": "(#131047) Re-engagement message",
            "type": "OAuthException",
            "code": 131047,
            "error_data": {"messaging_product": "whatsapp", "details": "window closed"},
            "fbtrace_id": "trace",
        }
    }


def test_error_body_marks_temporary_codes_transient() -> None:
    assert error_body(2, fbtrace_id="trace")["error"]["is_transient"] is True


def test_success_body_echoes_the_input_and_its_wa_id() -> None:
    assert success_body({"to": "+1 555-010-0001"}, "wamid.X") == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "+1 555-010-0001", "wa_id": "15550100001"}],
        "messages": [{"id": "wamid.X"}],
    }


@pytest.mark.parametrize(
    ("address", "delivered_to"),
    [
        ({"recipient": "ES.1410018717833190"}, "ES.1410018717833190"),
        ({"to": "+34 612 34 56 78", "recipient": "ES.1410018717833190"}, "34612345678"),
        ({"recipient": "US.ENT.11815799212886844830"}, "US.ENT.11815799212886844830"),
    ],
)
def test_a_bsuid_recipient_is_accepted_and_a_phone_takes_precedence(address, delivered_to):
    body = {**{k: v for k, v in text("hi").items() if k != "to"}, **address}
    assert find_violations(body) == []
    assert recipient_of(body) == delivered_to


def test_success_body_for_a_bsuid_names_the_user_id() -> None:
    assert success_body({"recipient": "ES.1410018717833190"}, "wamid.X")["contacts"] == [
        {"input": "ES.1410018717833190", "user_id": "ES.1410018717833190"}
    ]
