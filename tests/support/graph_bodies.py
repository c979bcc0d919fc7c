"""Outbound message bodies within and beyond Meta's limits, with the error each one gets.

One table serves the rules module's unit tests, the fake Graph API's and the simulator's fake
endpoint's: all three must hold a body to the same limits.
"""

from __future__ import annotations

from typing import Any

from devtools.graph_rules import (
    INVALID_PARAMETER,
    PARAMETER_VALUE_INVALID,
    REQUIRED_PARAMETER_MISSING,
)

TO = "+1 555-010-0001"


def envelope(message_type: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": TO,
        "type": message_type,
        message_type: content,
        **extra,
    }


def text(body: object) -> dict[str, Any]:
    return envelope("text", {"body": body})


def reply_buttons(*titles: str, ids: list[str] | None = None, **parts: Any) -> dict[str, Any]:
    ids = ids or [f"id-{index}" for index in range(len(titles))]
    buttons = [
        {"type": "reply", "reply": {"id": button_id, "title": title}}
        for button_id, title in zip(ids, titles, strict=True)
    ]
    interactive = {"type": "button", "body": {"text": "Pick one"}, "action": {"buttons": buttons}}
    return envelope("interactive", {**interactive, **parts})


def row(row_id: str, title: str = "Row", description: str | None = None) -> dict[str, Any]:
    return {"id": row_id, "title": title} | ({"description": description} if description else {})


def list_message(*sections: dict[str, Any], button: str = "Choose", **parts: Any) -> dict[str, Any]:
    interactive = {
        "type": "list",
        "body": {"text": "Pick a gender"},
        "action": {"button": button, "sections": list(sections)},
    }
    return envelope("interactive", {**interactive, **parts})


def section(*rows: dict[str, Any], title: str | None = "Options") -> dict[str, Any]:
    return {"rows": list(rows)} | ({"title": title} if title is not None else {})


def template(name: object = "intake_start", code: object = "en_US") -> dict[str, Any]:
    return envelope("template", {"name": name, "language": {"code": code}})


VALID_BODIES = {
    "text at the 4096 limit": text("x" * 4096),
    "text without an explicit type": {
        "messaging_product": "whatsapp",
        "to": TO,
        "text": {"body": "hi"},
    },
    "text replying to a message": envelope(
        "text", {"body": "ok"}, context={"message_id": "wamid.1"}
    ),
    "three reply buttons at their limits": reply_buttons(
        "a" * 20, "b" * 20, "Yes", ids=["i" * 256, "two", "three"]
    ),
    "buttons with text header and footer": reply_buttons(
        "Yes", header={"type": "text", "text": "h" * 60}, footer={"text": "f" * 60}
    ),
    "buttons with an image header": reply_buttons(
        "Yes", header={"type": "image", "image": {"link": "https://example.com/a.png"}}
    ),
    "interactive body at 1024": reply_buttons("Yes", body={"text": "b" * 1024}),
    "list of ten rows at their limits": list_message(
        section(*[row(f"r{index}", "t" * 24, "d" * 72) for index in range(5)], title="s" * 24),
        section(*[row(f"q{index}") for index in range(5)]),
        button="c" * 20,
    ),
    "single section list without a title": list_message(section(row("r1"), title=None)),
    "template with name and language": template(),
}

INVALID_BODIES = {
    "not an object": ([], INVALID_PARAMETER, ""),
    "missing messaging_product": (
        {"to": TO, "type": "text", "text": {"body": "hi"}},
        INVALID_PARAMETER,
        "messaging_product",
    ),
    "wrong messaging_product": (
        {**text("hi"), "messaging_product": "sms"},
        INVALID_PARAMETER,
        "messaging_product",
    ),
    "group recipient type": (
        {**text("hi"), "recipient_type": "group"},
        INVALID_PARAMETER,
        "recipient_type",
    ),
    "missing to": ({**text("hi"), "to": ""}, INVALID_PARAMETER, "to"),
    "neither to nor recipient": (
        {key: value for key, value in text("hi").items() if key != "to"},
        INVALID_PARAMETER,
        "to",
    ),
    "recipient not a bsuid": (
        {**{k: v for k, v in text("hi").items() if k != "to"}, "recipient": "34612345678"},
        INVALID_PARAMETER,
        "recipient",
    ),
    "to without digits": ({**text("hi"), "to": "patient"}, INVALID_PARAMETER, "to"),
    "unsupported type": ({**text("hi"), "type": "sticker"}, INVALID_PARAMETER, "type"),
    "context without message id": (
        envelope("text", {"body": "hi"}, context={}),
        INVALID_PARAMETER,
        "context.message_id",
    ),
    "missing text object": (envelope("text", None), REQUIRED_PARAMETER_MISSING, "text"),
    "missing text body": (envelope("text", {}), REQUIRED_PARAMETER_MISSING, "text.body"),
    "empty text body": (text(""), INVALID_PARAMETER, "text.body"),
    "blank text body": (text("  \n"), INVALID_PARAMETER, "text.body"),
    "text body over 4096": (text("x" * 4097), INVALID_PARAMETER, "text.body"),
    "text body not a string": (text(42), INVALID_PARAMETER, "text.body"),
    "unknown interactive type": (
        envelope("interactive", {"type": "carousel"}),
        PARAMETER_VALUE_INVALID,
        "interactive.type",
    ),
    "interactive body over 1024": (
        reply_buttons("Yes", body={"text": "b" * 1025}),
        PARAMETER_VALUE_INVALID,
        "interactive.body.text",
    ),
    "interactive without body": (
        reply_buttons("Yes", body=None),
        REQUIRED_PARAMETER_MISSING,
        "interactive.body",
    ),
    "header text over 60": (
        reply_buttons("Yes", header={"type": "text", "text": "h" * 61}),
        PARAMETER_VALUE_INVALID,
        "interactive.header.text",
    ),
    "footer over 60": (
        reply_buttons("Yes", footer={"text": "f" * 61}),
        PARAMETER_VALUE_INVALID,
        "interactive.footer.text",
    ),
    "no reply buttons": (reply_buttons(), PARAMETER_VALUE_INVALID, "interactive.action.buttons"),
    "four reply buttons": (
        reply_buttons("a", "b", "c", "d"),
        PARAMETER_VALUE_INVALID,
        "interactive.action.buttons",
    ),
    "button title over 20": (
        reply_buttons("t" * 21),
        PARAMETER_VALUE_INVALID,
        "interactive.action.buttons[0].reply.title",
    ),
    "empty button title": (
        reply_buttons("Yes", ""),
        PARAMETER_VALUE_INVALID,
        "interactive.action.buttons[1].reply.title",
    ),
    "button id over 256": (
        reply_buttons("Yes", ids=["i" * 257]),
        PARAMETER_VALUE_INVALID,
        "interactive.action.buttons[0].reply.id",
    ),
    "duplicate button titles": (
        reply_buttons("Yes", "Yes"),
        PARAMETER_VALUE_INVALID,
        "interactive.action.buttons[].reply.title",
    ),
    "duplicate button ids": (
        reply_buttons("Yes", "No", ids=["same", "same"]),
        PARAMETER_VALUE_INVALID,
        "interactive.action.buttons[].reply.id",
    ),
    "button of another type": (
        envelope(
            "interactive",
            {
                "type": "button",
                "body": {"text": "Pick"},
                "action": {"buttons": [{"type": "url", "url": {}}]},
            },
        ),
        PARAMETER_VALUE_INVALID,
        "interactive.action.buttons[0].type",
    ),
    "list button label over 20": (
        list_message(section(row("r1")), button="c" * 21),
        PARAMETER_VALUE_INVALID,
        "interactive.action.button",
    ),
    "list with eleven rows": (
        list_message(section(*[row(f"r{index}") for index in range(11)])),
        PARAMETER_VALUE_INVALID,
        "interactive.action.sections[].rows",
    ),
    "eleven rows across sections": (
        list_message(
            section(*[row(f"r{index}") for index in range(6)], title="A"),
            section(*[row(f"q{index}") for index in range(5)], title="B"),
        ),
        PARAMETER_VALUE_INVALID,
        "interactive.action.sections[].rows",
    ),
    "eleven sections": (
        list_message(*[section(row(f"r{index}"), title=f"S{index}") for index in range(11)]),
        PARAMETER_VALUE_INVALID,
        "interactive.action.sections",
    ),
    "row title over 24": (
        list_message(section(row("r1", "t" * 25))),
        PARAMETER_VALUE_INVALID,
        "interactive.action.sections[0].rows[0].title",
    ),
    "row description over 72": (
        list_message(section(row("r1", "Row", "d" * 73))),
        PARAMETER_VALUE_INVALID,
        "interactive.action.sections[0].rows[0].description",
    ),
    "section title over 24": (
        list_message(section(row("r1"), title="s" * 25)),
        PARAMETER_VALUE_INVALID,
        "interactive.action.sections[0].title",
    ),
    "untitled section among several": (
        list_message(section(row("r1")), section(row("r2"), title=None)),
        REQUIRED_PARAMETER_MISSING,
        "interactive.action.sections[1].title",
    ),
    "section without rows": (
        list_message(section()),
        PARAMETER_VALUE_INVALID,
        "interactive.action.sections[0].rows",
    ),
    "duplicate row ids across sections": (
        list_message(section(row("same"), title="A"), section(row("same"), title="B")),
        PARAMETER_VALUE_INVALID,
        "interactive.action.sections[].rows[].id",
    ),
    "list header that is an image": (
        list_message(section(row("r1")), header={"type": "image", "image": {"id": "1"}}),
        PARAMETER_VALUE_INVALID,
        "interactive.header.type",
    ),
    "template without name": (template(name=""), REQUIRED_PARAMETER_MISSING, "template.name"),
    "template without language code": (
        template(code=None),
        REQUIRED_PARAMETER_MISSING,
        "template.language.code",
    ),
}
