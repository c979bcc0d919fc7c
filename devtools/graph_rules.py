"""Meta's documented limits on an outbound Cloud API message body, and the shapes of its answers.

No I/O, no clock and no state, so the fake Graph server and a dev-tools page can share it. The
limits come from Meta's Cloud API reference for the /messages endpoint (text, interactive reply
buttons and lists, templates); see docs/conversations.md, "Meta's rules the bot and the fake
Graph API follow".
The fake models only the message types the bot sends: text, interactive and template.

Codes follow Meta's error table: top-level Graph parameters (messaging_product, recipient_type,
to, type, context) and the text body answer 100 "Invalid parameter", a missing nested
parameter answers 131008, and an interactive or template value outside its limits answers
131009. Lengths are counted in Unicode code points, and a blank (whitespace-only) text counts as
empty, which Meta rejects as well.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from service.domain.identity import is_bsuid

INVALID_PARAMETER = 100
REQUIRED_PARAMETER_MISSING = 131008
PARAMETER_VALUE_INVALID = 131009

MAX_TEXT_BODY = 4096
MAX_INTERACTIVE_BODY = 1024
MAX_HEADER_TEXT = 60
MAX_FOOTER_TEXT = 60
MAX_REPLY_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_BUTTON_ID = 256
MAX_LIST_BUTTON = 20
MAX_LIST_SECTIONS = 10
MAX_LIST_ROWS = 10
MAX_SECTION_TITLE = 24
MAX_ROW_ID = 200
MAX_ROW_TITLE = 24
MAX_ROW_DESCRIPTION = 72

MESSAGE_TYPES = ("text", "interactive", "template")
INTERACTIVE_TYPES = ("button", "list")
BUTTON_HEADER_TYPES = ("text", "image", "video", "document")

# Titles from Meta's Cloud API error-code table; the Graph `message` is "(#code) title".
ERROR_TITLES: dict[int, str] = {
    1: "An unknown error occurred",
    2: "Service temporarily unavailable",
    4: "Application request limit reached",
    100: "Invalid parameter",
    190: "Access token has expired",
    130429: "Rate limit hit",
    131000: "Something went wrong",
    131008: "Required parameter is missing",
    131009: "Parameter value is not valid",
    131016: "Service unavailable",
    131047: "Re-engagement message",
    131056: "(Business Account, Consumer Account) pair rate limit hit",
    132001: "Template name does not exist in the translation",
}


# Meta's `details` texts for errors that do not come from body validation.
ERROR_DETAILS: dict[int, str] = {
    1: "An unknown error occurred. Retry the request.",
    2: "Temporary due to downtime or due to being overloaded.",
    130429: "Cloud API message throughput has been reached.",
    131000: "Message failed to send due to an unknown error.",
    131047: "Message failed to send because more than 24 hours have passed since the customer "
    "last replied to this number.",
    131056: "Message failed to send because there were too many messages sent from this phone "
    "number to the same phone number in a short period of time.",
}

# Graph marks these retryable on its own; the client should not have to know the codes.
TRANSIENT_CODES = frozenset({1, 2})


def error_message(code: int) -> str:
    """Return the Graph `message` Meta sends for an error code."""
    return f"(#{code}) {ERROR_TITLES.get(code, 'Unknown error')}"


def error_body(
    code: int,
    *,
    fbtrace_id: str,
    details: str | None = None,
    message: str | None = None,
    error_type: str = "OAuthException",
    subcode: int | None = None,
) -> dict[str, Any]:
    """Return Meta's error envelope; `error_data` only when there are WhatsApp details.

    Graph's own layers (token checks, unknown objects) answer without `error_data`.
    """
    error: dict[str, Any] = {
        "message": message or error_message(code),
        "type": error_type,
        "code": code,
    }
    if subcode is not None:
        error["error_subcode"] = subcode
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    if code in TRANSIENT_CODES:
        error["is_transient"] = True
    error["fbtrace_id"] = fbtrace_id
    return {"error": error}


def success_body(body: dict[str, Any], wamid: str) -> dict[str, Any]:
    """Return Meta's answer to an accepted message: the contact as given, and as a wa_id (sent
    to a phone number) or a user_id (sent to a BSUID)."""
    to = body.get("to")
    if to:
        contact = {"input": to, "wa_id": wa_id_of(to)}
    else:
        contact = {"input": body["recipient"], "user_id": body["recipient"]}
    return {"messaging_product": "whatsapp", "contacts": [contact], "messages": [{"id": wamid}]}


def recipient_of(body: dict[str, Any]) -> str:
    """Return whom Meta delivers a valid body to: the phone's digits when `to` is given (it
    takes precedence over `recipient`), else the BSUID in `recipient`."""
    to = body.get("to")
    return wa_id_of(to) if to else body["recipient"]


@dataclass(frozen=True)
class Violation:
    """One broken rule: Meta's error code, the offending field and the `details` text."""

    code: int
    field: str
    details: str


def find_violations(body: object) -> list[Violation]:
    """Return every rule the outbound message body breaks, in the order Meta checks them."""
    return list(_check_message(body))


def first_violation(body: object) -> Violation | None:
    """Return the violation Meta would answer with (it reports one per request), or None."""
    return next(_check_message(body), None)


def wa_id_of(to: str) -> str:
    """Return the WhatsApp id Meta derives from a `to` value: its digits."""
    return "".join(character for character in to if character.isdigit())


def _check_message(body: object) -> Iterator[Violation]:
    if not isinstance(body, dict):
        yield Violation(INVALID_PARAMETER, "", "The request body must be a JSON object")
        return
    yield from _check_envelope(body)
    # Type defaults to text in Meta's API.
    message_type = body.get("type", "text")
    if message_type not in MESSAGE_TYPES:
        allowed = ", ".join(MESSAGE_TYPES)
        yield Violation(INVALID_PARAMETER, "type", f"Param type must be one of {{{allowed}}}")
        return
    content = body.get(message_type)
    if content is None:
        yield _missing(message_type)
    elif not isinstance(content, dict):
        yield _not_object(message_type)
    elif message_type == "text":
        yield from _check_text_message(content)
    elif message_type == "interactive":
        yield from _check_interactive(content)
    else:
        yield from _check_template(content)


def _check_envelope(body: dict) -> Iterator[Violation]:
    product = body.get("messaging_product")
    if product is None:
        yield Violation(
            INVALID_PARAMETER,
            "messaging_product",
            "The parameter messaging_product is required.",
        )
    elif product != "whatsapp":
        yield Violation(
            INVALID_PARAMETER, "messaging_product", "Param messaging_product must be 'whatsapp'"
        )
    if body.get("recipient_type", "individual") != "individual":
        yield Violation(
            INVALID_PARAMETER, "recipient_type", "Param recipient_type must be 'individual'"
        )
    yield from _check_recipient(body.get("to"), body.get("recipient"))
    yield from _check_context(body.get("context"))


def _check_recipient(to: object, recipient: object) -> Iterator[Violation]:
    """`to` takes a phone number; `recipient` a business-scoped user id (BSUID), for users
    known only by one. One of the two is required; with both, Meta uses the phone number."""
    if (to is None or to == "") and (recipient is None or recipient == ""):
        yield Violation(INVALID_PARAMETER, "to", "The parameter to or recipient is required.")
        return
    if to is not None and to != "" and (not isinstance(to, str) or not wa_id_of(to)):
        yield Violation(INVALID_PARAMETER, "to", "Param to must be a phone number or WhatsApp id")
    if recipient is not None and recipient != "" and not is_bsuid(recipient):
        yield Violation(
            INVALID_PARAMETER, "recipient", "Param recipient must be a business-scoped user ID"
        )


def _check_context(context: object) -> Iterator[Violation]:
    if context is None:
        return
    message_id = context.get("message_id") if isinstance(context, dict) else None
    if not isinstance(message_id, str) or not message_id:
        yield Violation(
            INVALID_PARAMETER,
            "context.message_id",
            "Param context.message_id must be the wamid of the message replied to",
        )


def _check_text_message(text: dict) -> Iterator[Violation]:
    preview_url = text.get("preview_url", False)
    if not isinstance(preview_url, bool):
        yield Violation(
            INVALID_PARAMETER, "text.preview_url", "Param preview_url must be a boolean"
        )
    yield from _check_string(text.get("body"), "text.body", MAX_TEXT_BODY, INVALID_PARAMETER)


def _check_interactive(interactive: dict) -> Iterator[Violation]:
    kind = interactive.get("type")
    if kind is None:
        yield _missing("interactive.type")
        return
    if kind not in INTERACTIVE_TYPES:
        allowed = ", ".join(INTERACTIVE_TYPES)
        yield _invalid("interactive.type", f"must be one of {{{allowed}}}")
        return
    yield from _check_header(interactive.get("header"), kind)
    yield from _check_text_object(interactive.get("body"), "body", MAX_INTERACTIVE_BODY)
    if interactive.get("footer") is not None:
        yield from _check_text_object(interactive["footer"], "footer", MAX_FOOTER_TEXT)
    action = interactive.get("action")
    if action is None:
        yield _missing("interactive.action")
    elif not isinstance(action, dict):
        yield _not_object("interactive.action")
    elif kind == "button":
        yield from _check_reply_buttons(action.get("buttons"))
    else:
        yield from _check_list_action(action)


def _check_header(header: object, kind: str) -> Iterator[Violation]:
    if header is None:
        return
    if not isinstance(header, dict):
        yield _not_object("interactive.header")
        return
    # Lists take only a text header; reply buttons may also carry media.
    allowed = BUTTON_HEADER_TYPES if kind == "button" else ("text",)
    header_type = header.get("type")
    if header_type not in allowed:
        names = ", ".join(allowed)
        yield _invalid("interactive.header.type", f"must be one of {{{names}}}")
    elif header_type == "text":
        yield from _check_string(header.get("text"), "interactive.header.text", MAX_HEADER_TEXT)
    elif not isinstance(header.get(header_type), dict):
        yield _missing(f"interactive.header.{header_type}")


def _check_text_object(value: object, name: str, max_length: int) -> Iterator[Violation]:
    field = f"interactive.{name}"
    if value is None:
        yield _missing(field)
    elif not isinstance(value, dict):
        yield _not_object(field)
    else:
        yield from _check_string(value.get("text"), f"{field}.text", max_length)


def _check_reply_buttons(buttons: object) -> Iterator[Violation]:
    field = "interactive.action.buttons"
    if buttons is None:
        yield _missing(field)
        return
    if not isinstance(buttons, list) or not 1 <= len(buttons) <= MAX_REPLY_BUTTONS:
        yield _invalid(field, f"must hold 1 to {MAX_REPLY_BUTTONS} buttons")
        return
    titles: list[object] = []
    ids: list[object] = []
    for index, button in enumerate(buttons):
        button_field = f"{field}[{index}]"
        reply = button.get("reply") if isinstance(button, dict) else None
        if not isinstance(button, dict) or button.get("type") != "reply":
            yield _invalid(f"{button_field}.type", "must be 'reply'")
        elif not isinstance(reply, dict):
            yield _missing(f"{button_field}.reply")
        else:
            yield from _check_string(reply.get("id"), f"{button_field}.reply.id", MAX_BUTTON_ID)
            yield from _check_string(
                reply.get("title"), f"{button_field}.reply.title", MAX_BUTTON_TITLE
            )
            titles.append(reply.get("title"))
            ids.append(reply.get("id"))
    yield from _check_unique(titles, f"{field}[].reply.title")
    yield from _check_unique(ids, f"{field}[].reply.id")


def _check_list_action(action: dict) -> Iterator[Violation]:
    yield from _check_string(action.get("button"), "interactive.action.button", MAX_LIST_BUTTON)
    field = "interactive.action.sections"
    sections = action.get("sections")
    if sections is None:
        yield _missing(field)
        return
    if not isinstance(sections, list) or not 1 <= len(sections) <= MAX_LIST_SECTIONS:
        yield _invalid(field, f"must hold 1 to {MAX_LIST_SECTIONS} sections")
        return
    row_ids: list[object] = []
    for index, section in enumerate(sections):
        section_field = f"{field}[{index}]"
        if not isinstance(section, dict):
            yield _not_object(section_field)
            continue
        # Meta requires a section title only when there is more than one section.
        if section.get("title") is not None or len(sections) > 1:
            yield from _check_string(
                section.get("title"), f"{section_field}.title", MAX_SECTION_TITLE
            )
        rows = section.get("rows")
        if not isinstance(rows, list) or not rows:
            yield _invalid(f"{section_field}.rows", "must hold at least one row")
            continue
        for row_index, row in enumerate(rows):
            yield from _check_row(row, f"{section_field}.rows[{row_index}]")
            row_ids.append(row.get("id") if isinstance(row, dict) else None)
    if len(row_ids) > MAX_LIST_ROWS:
        yield _invalid(f"{field}[].rows", f"must hold at most {MAX_LIST_ROWS} rows in all")
    yield from _check_unique(row_ids, f"{field}[].rows[].id")


def _check_row(row: object, field: str) -> Iterator[Violation]:
    if not isinstance(row, dict):
        yield _not_object(field)
        return
    yield from _check_string(row.get("id"), f"{field}.id", MAX_ROW_ID)
    yield from _check_string(row.get("title"), f"{field}.title", MAX_ROW_TITLE)
    if row.get("description") is not None:
        yield from _check_string(row["description"], f"{field}.description", MAX_ROW_DESCRIPTION)


def _check_template(template: dict) -> Iterator[Violation]:
    name = template.get("name")
    if not isinstance(name, str) or not name.strip():
        yield _missing("template.name")
    language = template.get("language")
    code = language.get("code") if isinstance(language, dict) else None
    if not isinstance(code, str) or not code.strip():
        yield _missing("template.language.code")
    components = template.get("components")
    if components is not None and not isinstance(components, list):
        yield _invalid("template.components", "must be a list")


def _check_string(
    value: object, field: str, max_length: int, code: int = PARAMETER_VALUE_INVALID
) -> Iterator[Violation]:
    if value is None:
        yield _missing(field)
    elif not isinstance(value, str):
        yield Violation(code, field, f"Param {field} must be a string")
    elif not value.strip():
        yield Violation(code, field, f"Param {field} must not be empty")
    elif len(value) > max_length:
        yield Violation(code, field, f"Param {field} must be at most {max_length} characters long")


def _check_unique(values: list[object], field: str) -> Iterator[Violation]:
    present = [value for value in values if value is not None]
    if len(present) != len({repr(value) for value in present}):
        yield _invalid(field, "must be unique within the message")


def _missing(field: str) -> Violation:
    return Violation(REQUIRED_PARAMETER_MISSING, field, f"Parameter {field} is required")


def _not_object(field: str) -> Violation:
    return Violation(INVALID_PARAMETER, field, f"Param {field} must be a JSON object")


def _invalid(field: str, rule: str) -> Violation:
    return Violation(PARAMETER_VALUE_INVALID, field, f"Param {field} {rule}")
