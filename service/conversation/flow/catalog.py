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
from importlib import resources

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
