"""What the bot says, in English and Spanish, and how it is laid out as WhatsApp messages.

The words live in the packaged JSON catalogs, loaded once at import. Keys name their use, and
the prefix tells which WhatsApp limit applies to the text:
"button_" (reply button title, at most 20 characters), "label_" (a list row title and a summary
label, at most 24), "list_button_" (the label that opens a list, at most 20); every other key is
a message body (at most 1,024 characters once formatted, as interactive bodies are).
"""

from __future__ import annotations

import json
import string
from datetime import date
from importlib import resources
from typing import TYPE_CHECKING

from service.flow.model import Button, ConversationState, ListRow, Reply

if TYPE_CHECKING:  # questionnaire imports this module: annotations only, no import cycle
    from service.flow.questionnaire import Question, Questionnaire

LANGUAGES = ("en", "es")
MAX_INTERACTIVE_BODY = 1024  # Meta's limit on the body of a button or list message


def _load(language: str) -> dict[str, str]:
    source = resources.files(__package__).joinpath(f"messages_{language}.json")
    messages = json.loads(source.read_text(encoding="utf-8"))
    if not isinstance(messages, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in messages.items()
    ):
        raise ValueError(f"messages_{language}.json must map keys to strings")
    return messages


_CATALOGS: dict[str, dict[str, str]] = {language: _load(language) for language in LANGUAGES}


def text(language: str | None, key: str, **params: object) -> str:
    """Return the message `key` in `language`, formatted with params.

    With no language yet (a patient who has not chosen one) every language is given, one after
    the other, so the patient can read at least one of them.

    Raises:
        KeyError: the key (or a placeholder it needs) is missing.
        ValueError: the language is not one of LANGUAGES.
    """
    if language is None:
        return "\n\n".join(text(each, key, **params) for each in LANGUAGES)
    if language not in _CATALOGS:
        raise ValueError(f"unknown language {language!r}")
    return _CATALOGS[language][key].format(**params)


def keys(language: str) -> frozenset[str]:
    """Return every message key of a language's catalog."""
    return frozenset(_CATALOGS[language])


def has(key: str) -> bool:
    """Tell whether every language's catalog holds the key."""
    return all(key in catalog for catalog in _CATALOGS.values())


def placeholders(language: str, key: str) -> frozenset[str]:
    """Return the names of the {placeholders} a message needs."""
    fields = string.Formatter().parse(_CATALOGS[language][key])
    return frozenset(name for _, name, _, _ in fields if name is not None)


def say(language: str | None, *keys: str, **params: object) -> str:
    """Return several messages as one body, in one language or (with None) in each in turn."""
    languages = (language,) if language else LANGUAGES
    return "\n\n".join(text(each, key, **params) for each in languages for key in keys)


def question_reply(
    questionnaire: Questionnaire, state: ConversationState, question: Question, intro: str = ""
) -> Reply:
    """Return the message that asks a question, with its buttons or list."""
    if question.type == "summary":
        body = summary_body(questionnaire, state)
    else:
        body = say(state.language, *filter(None, (intro, question.prompt)))
    return choices_reply(question, state.language, body)


def choices_reply(question: Question, language: str | None, body: str) -> Reply:
    """Return body with the question's choices: buttons, or list rows when it has a list."""
    titles = language or LANGUAGES[0]  # a button has room for one language only
    options = [
        (f"{question.id}:{choice.id}", text(titles, choice.title)) for choice in question.choices
    ]
    if not options:
        return Reply(body)
    if question.list_button:
        rows = tuple(ListRow(row_id, title) for row_id, title in options)
        return Reply(body, list_button=text(titles, question.list_button), rows=rows)
    return Reply(body, buttons=tuple(Button(button_id, title) for button_id, title in options))


def summary_body(questionnaire: Questionnaire, state: ConversationState) -> str:
    """Return every answer on one screen, long answers cut so the body fits WhatsApp's limit."""
    language = state.language or LANGUAGES[0]
    labelled = [question for question in questionnaire.questions if question.label]
    labels = [f"*{text(language, question.label)}:* " for question in labelled]
    values = [_shown(question, state, language) for question in labelled]
    head = text(language, questionnaire.summary.prompt) + "\n\n"
    tail = "\n\n" + text(language, "summary_question")
    fixed = len(head) + len(tail) + sum(len(label) for label in labels) + len(labels) - 1
    values = _fit(values, MAX_INTERACTIVE_BODY - fixed)
    lines = "\n".join(label + value for label, value in zip(labels, values, strict=True))
    return head + lines + tail


def _shown(question: Question, state: ConversationState, language: str) -> str:
    """Return an answer as the patient should read it."""
    value = state.language if question.stores == "language" else state.answers.get(question.id)
    if value is None or not question.holds(value):
        return "-"
    if question.choices:
        return text(language, question.choice(value).title)
    if question.type == "list":
        return ", ".join(value) or text(language, "summary_none")
    if question.type == "date":
        return date.fromisoformat(value).strftime("%d/%m/%Y")
    return ", ".join(value.splitlines())


def _fit(values: list[str], budget: int) -> list[str]:
    """Cut the longest values, each ending in "…", until all of them fit in budget characters."""
    if sum(len(value) for value in values) <= budget:
        return values
    # The largest per-value cap that fits: short values stay whole, long ones share the rest.
    low, high = 1, max(len(value) for value in values)
    while low < high:
        cap = (low + high + 1) // 2
        if sum(min(len(value), cap) for value in values) <= budget:
            low = cap
        else:
            high = cap - 1
    return [value if len(value) <= low else value[: low - 1].rstrip() + "…" for value in values]
