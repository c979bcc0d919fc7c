"""Parsers for the patient's answers (pure: no clock, no I/O, no state).

Each parser takes the text the patient sent and returns the value to store, or raises
AnswerError whose `reason` picks a specific, kind re-ask. A reason never carries the answer
itself: answers are patient data and error messages end up in logs.

The limits match service.domain.record.validate, so an answer accepted here never makes the archived
record invalid later.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from datetime import date

# Reasons an answer is refused; the questionnaire maps each to a catalog key for the re-ask.
BLANK = "blank"  # nothing but spaces
NO_TEXT = "no_text"  # no letter or digit at all, e.g. only emoji or punctuation
NO_LETTER = "no_letter"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
INVALID_CHARACTERS = "invalid_characters"
FORMAT = "format"  # not a date in any form we read
SHORT_YEAR = "short_year"  # "03/02/80": the century would be a guess
IMPOSSIBLE = "impossible"  # 31/02/1980
FUTURE = "future"
TOO_OLD = "too_old"
TOO_MANY = "too_many"
ITEM_TOO_LONG = "item_too_long"

# Control characters, lone surrogates and line/paragraph separators: the record refuses them.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_EDGE_PUNCTUATION = ".!?¡¿,;: "
_EMPTY_LIST_WORDS = frozenset({"none", "no", "nil", "n/a", "nothing", "ninguno", "ninguna", "nada"})
# Split on semicolons, and on commas except between digits: "0,5 mg" is a Spanish decimal and
# "1,000 IU" an English thousands separator, not two items.
_ITEM_SEPARATOR = re.compile(r";|(?<!\d),|,(?!\d)")
_BULLETS = "-*•·"

_NUMERIC_DAY_FIRST = re.compile(r"(\d{1,2})\s*([/.-])\s*(\d{1,2})\s*\2\s*(\d+)")
_NUMERIC_YEAR_FIRST = re.compile(r"(\d{4})\s*([/.-])\s*(\d{1,2})\s*\2\s*(\d{1,2})")
# Words that may sit between the parts of a written date: "3rd of February", "3 de febrero de".
_DATE_FILLERS = frozenset({"de", "del", "of", "the", "st", "nd", "rd", "th", "o", "er"})
_MONTH_NAMES = {
    1: ("january", "jan", "enero", "ene"),
    2: ("february", "feb", "febrero"),
    3: ("march", "mar", "marzo"),
    4: ("april", "apr", "abril", "abr"),
    5: ("may", "mayo"),
    6: ("june", "jun", "junio"),
    7: ("july", "jul", "julio"),
    8: ("august", "aug", "agosto", "ago"),
    9: ("september", "sep", "sept", "septiembre", "setiembre", "set"),
    10: ("october", "oct", "octubre"),
    11: ("november", "nov", "noviembre"),
    12: ("december", "dec", "diciembre", "dic"),
}
_MONTHS = {name: number for number, names in _MONTH_NAMES.items() for name in names}


class AnswerError(ValueError):
    """An answer that cannot be used; `reason` names why, never what was sent."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def parse_answer(answer_type: str, text: str, today: date, params: Mapping[str, int]) -> object:
    """Parse a typed answer to a question of a type into its JSON-ready stored form."""
    if answer_type == "date":
        return parse_date_of_birth(text, today, **params).isoformat()
    parsers: dict[str, Callable[..., object]] = {
        "name": parse_name,
        "address": parse_address,
        "list": parse_list,
        "text": parse_text,
    }
    return parsers[answer_type](text, **params)


def normalize(text: str) -> str:
    """Fold text for matching words: no case, accents, outer punctuation or repeated spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(char for char in decomposed if not unicodedata.combining(char))
    return " ".join(bare.casefold().split()).strip(_EDGE_PUNCTUATION)


def parse_name(text: str, min_length: int = 2, max_length: int = 100) -> str:
    """Return a full name with its spaces tidied; it must hold a letter."""
    name = " ".join(text.split())
    _check_text(name, min_length, max_length)
    if not any(unicodedata.category(char).startswith("L") for char in name):
        raise AnswerError(NO_LETTER)
    return name


def parse_text(text: str, min_length: int = 1, max_length: int = 4096) -> str:
    """Return a one-line free-text answer with its spaces tidied."""
    answer = " ".join(text.split())
    _check_text(answer, min_length, max_length)
    return answer


def parse_address(text: str, min_length: int = 5, max_length: int = 300) -> str:
    """Return an address, keeping its line breaks but not blank lines or repeated spaces."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    address = "\n".join(line for line in lines if line)
    _check_text(address, min_length, max_length)
    return address


def parse_list(text: str, max_items: int = 50, max_item_length: int = 200) -> list[str]:
    """Return the items of a list split on commas, semicolons or lines; "none" is no items."""
    if normalize(text) in _EMPTY_LIST_WORDS:
        return []
    if not text.strip():
        raise AnswerError(BLANK)
    items = [
        " ".join(part.split()).lstrip(_BULLETS).strip()
        for line in text.splitlines()
        for part in _ITEM_SEPARATOR.split(line)
    ]
    items = [item for item in items if item]
    if not any(_has_letter_or_digit(item) for item in items):
        raise AnswerError(NO_TEXT)
    if any(_has_forbidden(item) for item in items):
        raise AnswerError(INVALID_CHARACTERS)
    if len(items) > max_items:
        raise AnswerError(TOO_MANY)
    if any(len(item) > max_item_length for item in items):
        raise AnswerError(ITEM_TOO_LONG)
    return items


def parse_date_of_birth(text: str, today: date, max_age_years: int = 120) -> date:
    """Return a date of birth written in any form parse_date reads, checked against today."""
    return check_date_of_birth(parse_date(text), today, max_age_years)


def check_date_of_birth(value: date, today: date, max_age_years: int = 120) -> date:
    """Refuse a birth date in the future or giving an age over max_age_years on `today`."""
    if value > today:
        raise AnswerError(FUTURE)
    # The same arithmetic as service.domain.record: dateutil's relativedelta counts a 29 February
    # birthday differently on 28 February and would accept a record the archive refuses.
    birthday_to_come = (today.month, today.day) < (value.month, value.day)
    if today.year - value.year - birthday_to_come > max_age_years:
        raise AnswerError(TOO_OLD)
    return value


def parse_date(text: str) -> date:
    """Read a date: day first when numeric (03/02/1980, 3-2-1980, 3.2.1980), ISO (1980-02-03),
    or with the month written in English or Spanish ("3 Feb 1980", "February 3, 1980",
    "3 de febrero de 1980"). The year must have four digits: nothing is guessed.
    """
    folded = normalize(text)
    if not folded:
        raise AnswerError(BLANK)
    match = _NUMERIC_YEAR_FIRST.fullmatch(folded)
    if match:
        return _make_date(match[1], match[3], match[4])
    match = _NUMERIC_DAY_FIRST.fullmatch(folded)
    if match:
        return _make_date(match[4], match[3], match[1])
    return _parse_written_date(folded)


def _parse_written_date(folded: str) -> date:
    tokens = [token for token in re.findall(r"[^\W\d_]+|\d+", folded) if token not in _DATE_FILLERS]
    if len(tokens) != 3:
        raise AnswerError(FORMAT)
    first, second, year = tokens
    if first in _MONTHS and second.isdigit():
        month, day = _MONTHS[first], second
    elif second in _MONTHS and first.isdigit():
        month, day = _MONTHS[second], first
    else:
        raise AnswerError(FORMAT)
    if len(day) > 2 or not year.isdigit():
        raise AnswerError(FORMAT)
    return _make_date(year, str(month), day)


def _make_date(year: str, month: str, day: str) -> date:
    if len(year) <= 2:
        raise AnswerError(SHORT_YEAR)
    if len(year) != 4:
        raise AnswerError(FORMAT)
    try:
        return date(int(year), int(month), int(day))
    except ValueError:
        raise AnswerError(IMPOSSIBLE) from None


def _check_text(text: str, min_length: int, max_length: int) -> None:
    if not text:
        raise AnswerError(BLANK)
    if _has_forbidden(text.replace("\n", "")):
        raise AnswerError(INVALID_CHARACTERS)
    if not _has_letter_or_digit(text):
        raise AnswerError(NO_TEXT)
    if len(text) < min_length:
        raise AnswerError(TOO_SHORT)
    if len(text) > max_length:
        raise AnswerError(TOO_LONG)


def _has_letter_or_digit(text: str) -> bool:
    return any(unicodedata.category(char)[0] in "LN" for char in text)


def _has_forbidden(text: str) -> bool:
    return any(unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in text)
