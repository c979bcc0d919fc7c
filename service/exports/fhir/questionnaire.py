"""The intake form as a FHIR R4 Questionnaire, generated from the form's own data.

One item per question of questionnaire_v{version}.json, in order, with linkId = the step id;
the item's text is what the patient was asked (the step's prompt) in English, with the Spanish
wording in FHIR's translation extension. The review steps (the summary and the list of
answers to edit) ask nothing new and hold no answer, so they are not items: a completed
QuestionnaireResponse is the confirmed summary.

How each kind of step becomes an item:
- a choice: `choice`, with one answerOption per choice; the language's codes are BCP 47
  (`en`, `es`), gender's are FHIR's administrative-gender codes (the form's ids are exactly
  those codes, checked here), others are the form's own codes (FORM_CODES-<step id>).
- a name or text: `string`; an address: `text` (it may hold line breaks); both with the form's
  maximum length. A date: `date`.
- a list (conditions, medications): `open-choice`, repeating: each item the patient typed is
  a string answer, and a patient who wrote "none" answers the one coded option `none`, so a
  required question is answered either way and "none" is told apart from "not asked".
Every item is required, as every question of the form must be answered.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from service.conversation.flow import catalog
from service.conversation.flow.questionnaire import Question, Questionnaire, load_questionnaire
from service.exports.fhir import systems

CURRENT_VERSION = "1"
ITEM_TYPES = {
    "choice": "choice",
    "text": "string",
    "name": "string",
    "address": "text",
    "date": "date",
    "list": "open-choice",
}
ADMINISTRATIVE_GENDERS = frozenset({"male", "female", "other", "unknown"})
NONE_CODE = "none"
# The coded answer of a list the patient answered with "none" (the catalog has no such label:
# the patient types the word, no button shows it).
_NONE_DISPLAY = {"en": "None", "es": "Ninguno"}
_BASE_LANGUAGE = "en"
_TITLE = {"en": "Patient intake (WhatsApp)", "es": "Admisión de pacientes (WhatsApp)"}


def questionnaire_resource(version: str = CURRENT_VERSION) -> dict[str, Any]:
    """Return the form of this version as a FHIR R4 Questionnaire (a fresh dict each call)."""
    return json.loads(questionnaire_json(version))


@functools.cache
def questionnaire_json(version: str = CURRENT_VERSION) -> bytes:
    """Return the Questionnaire as UTF-8 JSON, as served and shipped in every FHIR export."""
    resource = _questionnaire(load_questionnaire(version))
    return json.dumps(resource, ensure_ascii=False, indent=2).encode("utf-8")


def _questionnaire(form: Questionnaire) -> dict[str, Any]:
    return {
        "resourceType": "Questionnaire",
        "id": systems.QUESTIONNAIRE_ID,
        "language": _BASE_LANGUAGE,
        "url": systems.QUESTIONNAIRE_URL,
        "version": form.version,
        "name": "WhatsAppIntake",
        **_translated("title", _TITLE),
        "status": "active",
        "subjectType": ["Patient"],
        "item": [_item(question) for question in answered_questions(form)],
    }


def answered_questions(form: Questionnaire) -> tuple[Question, ...]:
    """Return the questions whose answers a record holds: every step but the review steps."""
    return tuple(question for question in form.questions if question.stores != "none")


def answer_system(question: Question) -> str:
    """Return the code system of a choice question's (or a list's "none") codes."""
    if question.stores == "language":
        return systems.LANGUAGE
    if question.id == "gender":
        codes = {choice.id for choice in question.choices}
        if not codes <= ADMINISTRATIVE_GENDERS:
            raise ValueError("gender choices must be administrative-gender codes")
        return systems.ADMINISTRATIVE_GENDER
    return f"{systems.FORM_CODES}-{question.id}"


def _item(question: Question) -> dict[str, Any]:
    if question.type not in ITEM_TYPES:
        raise ValueError(f"{question.id}: no FHIR item type for {question.type!r}")
    item: dict[str, Any] = {
        "linkId": question.id,
        **_translated("text", _messages(question.prompt)),
        "type": ITEM_TYPES[question.type],
        "required": True,
    }
    if question.type == "list":
        item["repeats"] = True
    longest = question.params.get("max_length") or question.params.get("max_item_length")
    if longest:
        item["maxLength"] = longest
    if question.choices:
        item["answerOption"] = [
            {"valueCoding": _coding(question, choice.id, _messages(choice.title))}
            for choice in question.choices
        ]
    elif question.type == "list":
        item["answerOption"] = [{"valueCoding": _coding(question, NONE_CODE, _NONE_DISPLAY)}]
    return item


def _coding(question: Question, code: str, display: dict[str, str]) -> dict[str, Any]:
    return {"system": answer_system(question), "code": code, **_translated("display", display)}


def _messages(key: str) -> dict[str, str]:
    return {language: catalog.text(language, key) for language in catalog.LANGUAGES}


def _translated(name: str, texts: dict[str, str]) -> dict[str, Any]:
    """Return `name` in English and `_name` carrying the other languages' wording.

    FHIR's translation extension (http://hl7.org/fhir/StructureDefinition/translation) goes on
    the primitive's `_name` element; a language whose wording is the same is left out.
    """
    base = texts[_BASE_LANGUAGE]
    translations = [
        {
            "url": systems.TRANSLATION,
            "extension": [
                {"url": "lang", "valueCode": language},
                {"url": "content", "valueString": text},
            ],
        }
        for language, text in texts.items()
        if language != _BASE_LANGUAGE and text != base
    ]
    return {name: base, f"_{name}": {"extension": translations}} if translations else {name: base}
